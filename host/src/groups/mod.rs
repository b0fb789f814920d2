//! Groups of users and of devices, and the engine that keeps dynamic groups'
//! memberships in line with their rules.
//!
//! Memberships change in the same transaction as whatever caused them: the
//! directory tells the engine about every change (it is the directory's
//! [`ChangeListener`]), and the engine re-evaluates only the subjects the
//! change can affect, against a compiled plan of every dynamic group that it
//! keeps between changes. A full recompute walks everything with the same
//! code, so the two paths cannot disagree by construction; a test checks it.

mod apply;
mod crud;
mod defaults;
mod expiry;
mod explanation;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod inspect;
mod layout;
mod members;
pub mod model;
mod plan;
pub mod read;
mod readiness;
mod recomputes;
mod replica;
pub mod rule;
mod run;
mod subjects;
mod universe;

pub use apply::Counts;
pub use explanation::Explanation;
pub use inspect::{Preview, PreviewInput};
pub use model::{
    ExemptionInput, Group, GroupInput, GroupStatus, GroupType, GroupView, Member, Membership,
    Source, Suggestion,
};
pub use readiness::WaitingGroup;
pub use recomputes::{RecomputeRun, RunState};

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use cohort_storage::{Store, WriteTxn};
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use uuid::Uuid;

use crate::auth::Actor;
use crate::clock::Clock;
use crate::directory::{self, Change, ChangeListener, SubjectKind};
use crate::error::DomainError;
use crate::plugins::Registry;
use cohort_storage::Reader;
use layout::{GROUPS, MEMBERS, SUBJECT_GROUPS, pair};
use plan::{Plan, Schema};
use replica::Replica;
use run::{Mode, Run};
use universe::Universe;

/// The groups service. Cheap to clone.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    registry: Registry,
    /// Bumped whenever a group changes; the cached plan is for one value.
    generation: AtomicU64,
    cache: Mutex<Option<Cached>>,
    /// The in-memory copy of subjects and memberships; `None` until first
    /// used, and again after a transaction that touched it failed.
    replica: Mutex<Option<Replica>>,
    /// The full recompute in progress, if any.
    running: Mutex<Option<Uuid>>,
    /// Compiled CEL expressions.
    expressions: Arc<rule::ExpressionCache>,
    /// The dynamic groups that call an evaluator (readiness).
    needs: Mutex<Option<readiness::Needs>>,
    /// Previews running at once. A preview evaluates a rule the caller
    /// wrote over the whole directory, and every reader may ask for one:
    /// without a bound, a reader's key firing many at once would take every
    /// core from sign-ins, recomputes and `/readyz`. As many as there are
    /// cores; the rest wait their turn.
    previews: Arc<tokio::sync::Semaphore>,
    /// When the next exemption lapses (see `expiry`).
    lapses: Mutex<expiry::Lapses>,
    /// Set when another host sharing the store wrote: the replica and the
    /// compiled plan may be behind, and are rebuilt before their next use.
    stale: Arc<AtomicBool>,
    /// The same news for the scheduler's next expiry: another host may
    /// have set an exemption that lapses sooner.
    lapses_stale: Arc<AtomicBool>,
}

/// Which subjects a run covers.
pub(super) enum Scope {
    /// Every user and device.
    Everything,
    /// These users and devices, and what depends on them; only the given
    /// groups when the change can affect no other.
    Around(BTreeSet<Uuid>, BTreeSet<Uuid>, Option<HashSet<Uuid>>),
}

struct Cached {
    generation: u64,
    schema: Schema,
    plan: Arc<Plan>,
}

impl Groups {
    /// The service over `store`; creates the built-in groups on first use.
    pub fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        registry: Registry,
    ) -> Result<Groups, DomainError> {
        let now = clock.now();
        let next_lapse = expiry::due(&store, now, now)?.1;
        let stale = Arc::new(AtomicBool::new(false));
        let lapses_stale = Arc::new(AtomicBool::new(false));
        store.on_foreign_write({
            let stale = Arc::clone(&stale);
            let lapses_stale = Arc::clone(&lapses_stale);
            move || {
                stale.store(true, Ordering::SeqCst);
                lapses_stale.store(true, Ordering::SeqCst);
            }
        });
        let groups = Groups {
            inner: Arc::new(Inner {
                store,
                clock,
                registry,
                generation: AtomicU64::new(0),
                cache: Mutex::new(None),
                replica: Mutex::new(None),
                expressions: Arc::default(),
                running: Mutex::new(None),
                needs: Mutex::new(None),
                previews: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                lapses: Mutex::new(expiry::Lapses::at(now, next_lapse)),
                stale,
                lapses_stale,
            }),
        };
        groups.seed_defaults()?;
        Ok(groups)
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops what another host's writes may have made stale (see
    /// `Inner::stale`). Called before the replica or the plan is used, never
    /// with either lock held.
    fn catch_up(&self) {
        if self.inner.stale.swap(false, Ordering::SeqCst) {
            self.invalidate();
            *self.inner.replica.lock() = None;
        }
    }

    fn schema(&self) -> Result<Schema, DomainError> {
        Ok(Schema {
            by_kind: [
                directory::schema(self.store(), SubjectKind::User)?,
                directory::schema(self.store(), SubjectKind::Device)?,
            ],
        })
    }

    /// What CEL expressions compile against: the schema, and every group's
    /// name for `in_group(...)`.
    fn expression_context(&self, schema: &Schema, all: &[Arc<Group>]) -> rule::ExpressionContext {
        let mut ctx = rule::ExpressionContext {
            users: schema.of(SubjectKind::User).to_vec(),
            devices: schema.of(SubjectKind::Device).to_vec(),
            cache: Arc::clone(&self.inner.expressions),
            ..Default::default()
        };
        for g in all {
            ctx.names.insert((g.subject, g.name.to_lowercase()), g.id);
            ctx.groups.insert(g.id, (g.subject, g.name.clone()));
        }
        ctx.cache.prepare(&ctx);
        ctx
    }

    /// Every stored group.
    fn all_groups(&self, r: &impl Reader) -> Result<Vec<Arc<Group>>, DomainError> {
        r.scan(GROUPS, b"")?
            .iter()
            .map(|(_, v)| Ok(Arc::new(cohort_storage::decode_json(GROUPS, v)?)))
            .collect()
    }

    /// The compiled plan of every dynamic group, rebuilt when a group or the
    /// attribute schema changed since it was built.
    fn full_plan(&self, r: &impl Reader) -> Result<Arc<Plan>, DomainError> {
        self.catch_up();
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let schema = self.schema()?;
        let mut cache = self.inner.cache.lock();
        if let Some(c) = cache.as_ref()
            && c.generation == generation
            && c.schema == schema
        {
            return Ok(Arc::clone(&c.plan));
        }
        let all = self.all_groups(r)?;
        let ctx = self.expression_context(&schema, &all);
        let targets: Vec<Arc<Group>> = all.into_iter().filter(|g| g.is_dynamic()).collect();
        let plan = Arc::new(plan::build(
            &self.inner.registry,
            &schema,
            &ctx,
            targets,
            false,
            plan::parallelism(),
        )?);
        for (group, reason) in &plan.failed {
            tracing::warn!(group = %group, reason = %reason, "group left out of evaluation");
        }
        *cache = Some(Cached {
            generation,
            schema,
            plan: Arc::clone(&plan),
        });
        Ok(plan)
    }

    fn drop_plan(&self) {
        *self.inner.cache.lock() = None;
    }

    /// The replica, loaded first if needed, for use inside `txn`: if the
    /// transaction does not commit, the replica is dropped and loaded again
    /// next time, since it may hold the transaction's changes.
    fn replica_in(
        &self,
        txn: &mut WriteTxn<'_>,
    ) -> Result<MappedMutexGuard<'_, Replica>, DomainError> {
        self.catch_up();
        let inner = Arc::clone(&self.inner);
        txn.on_abort(move || *inner.replica.lock() = None);
        let mut guard = self.inner.replica.lock();
        if guard.is_none() {
            *guard = Some(Replica::load(&*txn)?);
        }
        Ok(MutexGuard::map(guard, |r| {
            r.as_mut().expect("loaded above")
        }))
    }

    /// The replica for reading outside a transaction (previews, explanations).
    fn replica_read(&self) -> Result<MappedMutexGuard<'_, Replica>, DomainError> {
        self.catch_up();
        let mut guard = self.inner.replica.lock();
        if guard.is_none() {
            *guard = Some(Replica::load(self.store())?);
        }
        Ok(MutexGuard::map(guard, |r| {
            r.as_mut().expect("loaded above")
        }))
    }

    /// Records in the replica that `subject` has state beside membership in
    /// `group` (call with every write of a manual membership, exemption,
    /// suggestion or evaluation error).
    fn note_special(&self, group: &Uuid, subject: &Uuid) {
        if let Some(rep) = self.inner.replica.lock().as_mut() {
            rep.note_special(group, subject);
        }
    }

    /// Runs `plan` over the subjects of `scope` and writes the result.
    #[allow(clippy::too_many_arguments)]
    fn run_and_apply(
        &self,
        txn: &mut WriteTxn<'_>,
        plan: &Plan,
        scope: Scope,
        actor: &Actor,
        now: DateTime<Utc>,
        reason: &str,
        full: bool,
    ) -> Result<Counts, DomainError> {
        let outcome = {
            let rep = self.replica_in(txn)?;
            let (universe, only) = match scope {
                Scope::Everything => (Universe::everything(&rep), None),
                Scope::Around(users, devices, only) => (
                    Universe::around(
                        &rep,
                        &users,
                        &devices,
                        plan.has_related(SubjectKind::User),
                        plan.has_related(SubjectKind::Device),
                    ),
                    only,
                ),
            };
            Run::new(&*txn, &*rep, plan, &universe, now, Mode::Apply, false)
                .only(only)
                .run()?
        };
        if outcome.poisoned {
            self.drop_plan();
        }
        self.apply(txn, outcome, actor, now, reason, full)
    }

    /// Recomputes every dynamic group over the whole directory and writes
    /// what differs. Gives the same memberships as the incremental path.
    pub async fn recompute_all(&self, actor: &Actor) -> Result<Counts, DomainError> {
        let actor = actor.clone();
        self.write(move |this, txn| {
            let now = this.now();
            let plan = this.full_plan(&*txn)?;
            let counts = this.run_and_apply(
                txn,
                &plan,
                Scope::Everything,
                &actor,
                now,
                "full recompute",
                true,
            )?;
            this.record_failures(txn, &plan)?;
            Ok(counts)
        })
        .await
    }

    /// Runs a write transaction off the async threads (it may evaluate rules
    /// over the whole directory) and waits until it is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Groups, &mut WriteTxn<'_>) -> Result<T, DomainError> + Send + 'static,
    ) -> Result<T, DomainError> {
        let this = self.clone();
        let committed = match tokio::task::spawn_blocking(move || {
            this.store().write(|txn| {
                // The replica follows this transaction's writes as they are
                // made; if it does not commit, start over from the store.
                let inner = Arc::clone(&this.inner);
                txn.on_abort(move || *inner.replica.lock() = None);
                f(&this, txn)
            })
        })
        .await
        {
            Ok(c) => c?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        Ok(committed.durable().await?)
    }

    /// Keeps the reason a group could not be compiled on its status.
    fn record_failures(&self, txn: &mut WriteTxn<'_>, plan: &Plan) -> Result<(), DomainError> {
        for (group, reason) in &plan.failed {
            let mut status = apply::load_status(txn, group)?;
            if status.evaluator_error.as_deref() != Some(reason) {
                status.evaluator_error = Some(reason.clone());
                txn.put_json(layout::STATUS, group.as_bytes(), &status)?;
            }
        }
        Ok(())
    }

    /// Removes a deleted subject from every group, with audit events.
    fn forget_subject(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        subject: &Uuid,
    ) -> Result<(), DomainError> {
        for (k, _) in txn.scan_prefix(SUBJECT_GROUPS, subject.as_bytes())? {
            let Some(group) = crate::id_pair::second(&k) else {
                continue;
            };
            let before =
                Membership::read(txn.get(MEMBERS, &pair(&group, subject))?)?.map(|m| m.source);
            self.record_membership(
                txn,
                now,
                actor,
                &group,
                subject,
                before,
                None,
                "the subject was deleted",
            )?;
            let mut status = apply::load_status(txn, &group)?;
            status.member_count = status.member_count.saturating_sub(1);
            txn.put_json(layout::STATUS, group.as_bytes(), &status)?;
        }
        for g in self.all_groups(&*txn)? {
            let key = pair(&g.id, subject);
            for ks in [layout::MANUAL, layout::EXEMPTIONS, layout::ERRORS] {
                txn.delete(ks, &key);
            }
            if let Some(s) = txn.get_json::<Suggestion>(layout::SUGGESTIONS, &key)? {
                txn.delete(layout::SUGGESTIONS, &key);
                if !s.dismissed {
                    let mut status = apply::load_status(txn, &g.id)?;
                    status.pending_suggestions = status.pending_suggestions.saturating_sub(1);
                    txn.put_json(layout::STATUS, g.id.as_bytes(), &status)?;
                }
            }
        }
        Ok(())
    }
}

impl ChangeListener for Groups {
    fn changed(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        change: &Change,
    ) -> Result<(), DomainError> {
        // The replica follows every change, whether or not a rule reads it.
        {
            let mut rep = self.replica_in(txn)?;
            match change {
                Change::Subject { kind, id, .. } => rep.refresh(&*txn, *kind, id)?,
                Change::Binding { user, device } => rep.refresh_binding(&*txn, user, device)?,
            }
        }
        let plan = self.full_plan(&*txn)?;
        let (mut users, mut devices) = (BTreeSet::new(), BTreeSet::new());
        let mut only = None;
        let reason = match change {
            Change::Subject {
                kind,
                id,
                attributes,
            } => {
                let exists = directory::read::subject_exists(&*txn, *kind, id)?;
                if !exists {
                    return self.forget_subject(txn, actor, now, id);
                }
                if let Some(attrs) = attributes {
                    let affected = plan.affected_by(*kind, attrs);
                    if affected.is_empty() {
                        return Ok(());
                    }
                    only = Some(affected);
                }
                match kind {
                    SubjectKind::User => users.insert(*id),
                    SubjectKind::Device => devices.insert(*id),
                };
                format!("{} {id} changed", kind.as_str())
            }
            Change::Binding { user, device } => {
                if plan.has_related(SubjectKind::User) {
                    users.insert(*user);
                }
                if plan.has_related(SubjectKind::Device) {
                    devices.insert(*device);
                }
                if users.is_empty() && devices.is_empty() {
                    return Ok(());
                }
                format!("binding of user {user} and device {device} changed")
            }
        };
        self.run_and_apply(
            txn,
            &plan,
            Scope::Around(users, devices, only),
            actor,
            now,
            &reason,
            false,
        )?;
        Ok(())
    }
}
