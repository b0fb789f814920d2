//! Import runs: pulling people from an importer plugin (HR systems, other
//! directories) into the directory, under the admin's policy.
//!
//! A run reads every page from the source, then plans: each record is
//! matched to a user (by the link a previous run of the same source
//! stored, else by email or employee id), and becomes a create, an update
//! (field by field) or nothing; users this source imported before and that
//! are gone from it may be suspended. A dry run stops at the plan. A run
//! whose updates and suspensions would touch more than a share of the
//! directory (10% by default) stops before writing, and waits for an admin
//! to approve the plan it shows: a bad feed cannot wipe out the directory.
//! Every write goes through the directory's own path (validation, audit,
//! incremental group recompute).
//!
//! This file is the service: starting, reading the source, braking and
//! approving runs. `model` holds the shapes runs are stored and shown in,
//! `plan` decides what records would change (pure, given the directory and
//! the source's links), `apply` writes a plan, and `schedule` repeats runs.

mod apply;
mod model;
mod plan;
#[cfg(test)]
mod plan_tests;
mod schedule;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cohort_storage::{Keyspace, StorageError, Store};
use uuid::Uuid;

use crate::auth::{Actor, ManageDirectory, Mutation, Origin};
use crate::clock::{Clock, Stopwatch};
use crate::directory::Directory;
use crate::directory::read as directory;
use crate::error::DomainError;
use crate::plugins::Instances;

pub use model::{
    Brake, Change, ChangePage, Changed, Counts, ImportInput, ImportRun, MatchOn, Missing, NewUsers,
    RecordError, RunState,
};
pub use schedule::{Schedule, ScheduleInput};

use model::count_plan;
use plan::Source;

/// Run id → `ImportRun` JSON.
const RUNS: Keyspace = Keyspace::new("import_runs");
/// Run id → the planned changes, for dry runs and runs awaiting approval.
const PLANS: Keyspace = Keyspace::new("import_plans");
/// `instance id \0 external id` → user id: who a source's record is.
const LINKS: Keyspace = Keyspace::new("import_links");
/// Schedule id → `Schedule` JSON.
const SCHEDULES: Keyspace = Keyspace::new("import_schedules");
/// Run id → the number of the host running it, for the runs that are
/// running: what the look for runs of stopped hosts reads, where the run
/// history (never pruned) would be a scan of every run ever made.
const RUNNING: Keyspace = Keyspace::new("import_running");

/// Migration 6: [`RUNNING`] for the runs already stored, so that a run left
/// running before the index existed is found, and closed, like any other
/// (and its schedule, which waits for it, runs again).
pub(crate) fn build_running_index(
    txn: &mut cohort_storage::WriteTxn<'_>,
) -> Result<(), StorageError> {
    let mut running = Vec::new();
    txn.for_each_prefix(RUNS, b"", |k, v| {
        let run: serde_json::Value = cohort_storage::decode_json(RUNS, v)?;
        if run["state"] == "running" {
            running.push((k.to_vec(), run["host"].as_u64().map(|h| h as u32)));
        }
        Ok::<_, StorageError>(())
    })?;
    for (id, host) in running {
        txn.put_json(RUNNING, &id, &host)?;
    }
    Ok(())
}

/// Stores `run`, and keeps [`RUNNING`] in step with its state. Every write
/// of a run goes through here.
fn put_run(txn: &mut cohort_storage::WriteTxn, run: &ImportRun) -> Result<(), StorageError> {
    txn.put_json(RUNS, run.id.as_bytes(), run)?;
    if run.state == RunState::Running {
        txn.put_json(RUNNING, run.id.as_bytes(), &run.host)
    } else {
        txn.delete(RUNNING, run.id.as_bytes());
        Ok(())
    }
}

/// Record errors kept on a run.
const MAX_ERRORS: usize = 1000;

/// Import runs.
#[derive(Clone)]
pub struct Imports {
    store: Store,
    clock: Arc<dyn Clock>,
    directory: Directory,
    instances: Instances,
}

fn link_key(instance: &str, external: &str) -> Vec<u8> {
    [instance.as_bytes(), &[0], external.as_bytes()].concat()
}

/// Who a run's changes are audited as: the importer instance, under the
/// run's id (which correlates them), from where the run was started or
/// approved.
fn run_actor(instance: &str, run: &ImportRun, from: &Origin) -> Actor {
    Actor::named(
        format!("import:{instance}"),
        Origin {
            request_id: run.id.to_string(),
            ..from.clone()
        },
    )
}

impl Imports {
    /// The service.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Directory,
        instances: Instances,
    ) -> Imports {
        Imports {
            store,
            clock,
            directory,
            instances,
        }
    }

    /// Starts a run in the background and returns it (running).
    pub async fn start(
        &self,
        cap: &ManageDirectory<'_>,
        input: ImportInput,
    ) -> Result<ImportRun, DomainError> {
        let origin = &cap.actor().origin;
        self.start_as(&cap.actor().name, origin, input).await
    }

    /// Starts a run; its changes are audited with the address and user
    /// agent of the request that started it (none for schedules).
    async fn start_as(
        &self,
        started_by: &str,
        started_from: &Origin,
        input: ImportInput,
    ) -> Result<ImportRun, DomainError> {
        if !(0.0..=1.0).contains(&input.max_change_share) {
            return Err(DomainError::invalid(
                "max_change_share",
                "a share of the directory, from 0 to 1",
            ));
        }
        let instance = self
            .instances
            .list()?
            .into_iter()
            .find(|i| i.id == input.instance || i.name == input.instance)
            .ok_or_else(|| {
                DomainError::invalid(
                    "instance",
                    format!("no plugin instance {:?}", input.instance),
                )
            })?;
        let run = ImportRun {
            id: Uuid::now_v7(),
            input,
            instance_id: instance.id,
            state: RunState::Running,
            counts: Counts::default(),
            errors: Vec::new(),
            failure: None,
            brake: None,
            started_by: started_by.to_string(),
            approved_by: None,
            started_at: self.clock.now(),
            finished_at: None,
            duration_ms: None,
            host: Some(self.store.host()),
        };
        self.save(&run).await?;
        let this = self.clone();
        let actor = run_actor(&instance.name, &run, started_from);
        let started = run.clone();
        tokio::spawn(async move {
            let t = Stopwatch::start();
            let id = started.id;
            let finished = this.execute(started, &actor, t).await;
            if let Err(e) = finished {
                tracing::error!(run = %id, error = %e, "import run failed");
                if let Ok(Some(mut run)) = this.store.get_json::<ImportRun>(RUNS, id.as_bytes()) {
                    run.state = RunState::Failed;
                    run.failure = Some(e.to_string());
                    this.finish(&mut run, t);
                    let _ = this.save(&run).await;
                }
            }
        });
        Ok(run)
    }

    async fn save(&self, run: &ImportRun) -> Result<(), DomainError> {
        self.store.write(|txn| put_run(txn, run))?.durable().await?;
        Ok(())
    }

    fn finish(&self, run: &mut ImportRun, t: Stopwatch) {
        run.finished_at = Some(self.clock.now());
        run.duration_ms = Some(t.elapsed().as_millis() as u64);
    }

    /// One run.
    pub fn get(&self, id: &Uuid) -> Result<ImportRun, DomainError> {
        self.store
            .get_json(RUNS, id.as_bytes())?
            .ok_or_else(|| DomainError::not_found("import run", id))
    }

    /// The newest runs first.
    pub fn list(&self, limit: usize) -> Result<Vec<ImportRun>, DomainError> {
        let mut out = Vec::new();
        for entry in self.store.scan(RUNS, b"", None, true) {
            let (_, v) = entry?;
            out.push(cohort_storage::decode_json(RUNS, &v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A page of a run's planned changes (dry runs and runs awaiting
    /// approval).
    pub fn changes(
        &self,
        id: &Uuid,
        offset: usize,
        limit: usize,
    ) -> Result<ChangePage, DomainError> {
        self.get(id)?;
        let plan: Vec<Change> = self
            .store
            .get_json(PLANS, id.as_bytes())?
            .unwrap_or_default();
        let shown: Vec<Change> = plan
            .into_iter()
            .filter(|c| !matches!(c, Change::Link { .. } | Change::LinkDevice { .. }))
            .collect();
        Ok(ChangePage {
            total: shown.len(),
            items: shown.into_iter().skip(offset).take(limit).collect(),
        })
    }

    /// Applies the plan of a run the brake stopped.
    pub async fn approve(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
    ) -> Result<ImportRun, DomainError> {
        let run = self.get(id)?;
        let instance_name = self
            .instances
            .list()?
            .into_iter()
            .find(|i| i.id == run.instance_id)
            .map_or_else(|| run.instance_id.clone(), |i| i.name);
        let actor = run_actor(&instance_name, &run, &cap.actor().origin);
        let (approver, host) = (cap.actor().name.clone(), self.store.host());
        // Checked and moved on in one transaction: two approvals at once
        // apply the plan once.
        let run = self
            .store
            .write(|txn| {
                let mut run = txn
                    .get_json::<ImportRun>(RUNS, id.as_bytes())?
                    .ok_or_else(|| DomainError::not_found("import run", id))?;
                if run.state != RunState::AwaitingApproval {
                    return Err(DomainError::Conflict {
                        code: "not_awaiting_approval",
                        field: None,
                        message: format!("the run is {:?}, not awaiting approval", run.state),
                    });
                }
                run.state = RunState::Running;
                // This host applies it now, whichever host planned it.
                run.host = Some(host);
                run.approved_by = Some(approver);
                // From planned counts to done counts.
                run.counts = run.counts.before_writes();
                put_run(txn, &run)?;
                Ok(run)
            })?
            .durable()
            .await?;
        let plan: Vec<Change> = self
            .store
            .get_json(PLANS, id.as_bytes())?
            .unwrap_or_default();
        // In a task of its own: a caller that goes away (a closed
        // connection drops this future) does not stop the apply half-way
        // and leave the run "running" on a live host.
        let this = self.clone();
        tokio::spawn(async move { this.apply_approved(run, &actor, plan).await })
            .await
            .map_err(|e| DomainError::Internal(format!("the approved run stopped: {e}")))?
    }

    /// Applies an approved plan and records how it ended.
    async fn apply_approved(
        &self,
        mut run: ImportRun,
        actor: &Actor,
        plan: Vec<Change>,
    ) -> Result<ImportRun, DomainError> {
        let t = Stopwatch::start();
        if let Err(e) = self.apply(&mut run, actor, plan).await {
            run.state = RunState::Failed;
            run.failure = Some(e.to_string());
            self.finish(&mut run, t);
            self.save(&run).await?;
            return Err(e);
        }
        run.state = RunState::Completed;
        self.finish(&mut run, t);
        self.store
            .write(|txn| {
                txn.delete(PLANS, run.id.as_bytes());
                put_run(txn, &run)
            })?
            .durable()
            .await?;
        Ok(run)
    }

    async fn execute(
        &self,
        mut run: ImportRun,
        actor: &Actor,
        t: Stopwatch,
    ) -> Result<(), DomainError> {
        let instance = run.instance_id.clone();
        let records = match self.read_all(&instance, &mut run).await {
            Ok(r) => r,
            Err(message) => {
                run.state = RunState::Failed;
                run.failure = Some(message);
                self.finish(&mut run, t);
                return self.save(&run).await;
            }
        };
        let mut plan = self.plan(&run, records)?;
        let size = directory::subject_count(&self.store)?;
        let touches = plan
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Change::Update { .. } | Change::Suspend { .. } | Change::UpdateDevice { .. }
                )
            })
            .count();
        count_plan(&mut run.counts, &plan);
        let braked = size > 0 && touches as f64 > run.input.max_change_share * size as f64;
        if run.input.dry_run {
            // Counted as the real run counts: what its writes would do.
            run.counts = run.counts.before_writes();
            let this = self.clone();
            let actor = actor.clone();
            let (rehearsed, kept, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = this.rehearse(&mut run, &actor, &plan);
                (run, plan, outcome)
            })
            .await
            .map_err(|e| DomainError::Internal(format!("the dry run stopped: {e}")))?;
            (run, plan) = (rehearsed, kept);
            outcome?;
        }
        if run.input.dry_run || braked {
            if braked && !run.input.dry_run {
                run.state = RunState::AwaitingApproval;
                run.brake = Some(Brake {
                    changes: touches,
                    directory_size: size,
                    max_change_share: run.input.max_change_share,
                });
            } else {
                run.state = RunState::Completed;
            }
            self.finish(&mut run, t);
            self.store
                .write(|txn| {
                    txn.put_json(PLANS, run.id.as_bytes(), &plan)?;
                    put_run(txn, &run)
                })?
                .durable()
                .await?;
            return Ok(());
        }
        run.counts = run.counts.before_writes();
        self.apply(&mut run, actor, plan).await?;
        run.state = RunState::Completed;
        self.finish(&mut run, t);
        self.save(&run).await
    }

    /// Every page of the source. Rate limits are waited out (up to five
    /// times a page, at most a minute each); other source errors fail the
    /// run.
    async fn read_all(&self, instance: &str, run: &mut ImportRun) -> Result<Vec<Source>, String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut retries = 0;
        loop {
            let instances = self.instances.clone();
            let (id, c) = (instance.to_string(), cursor.clone());
            let page =
                tokio::task::spawn_blocking(move || instances.preview(&id, c.as_deref(), false))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            let page = match page {
                Ok(p) => p,
                Err(e) if e.retry_after.is_some() && retries < 5 => {
                    retries += 1;
                    let wait = u64::from(e.retry_after.unwrap_or(1)).min(60);
                    #[allow(clippy::disallowed_methods)] // The source asked us to back off.
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    continue;
                }
                Err(e) => return Err(format!("the source failed ({}): {}", e.kind, e.message)),
            };
            retries = 0;
            for p in page.problems {
                push_error(run, p.external_id, p.message);
            }
            for r in page.records {
                let device = r.kind == "device";
                if !seen.insert((device, r.external_id.clone())) {
                    push_error(
                        run,
                        Some(r.external_id),
                        "the source lists this id twice; the later record is skipped".into(),
                    );
                    continue;
                }
                out.push(Source {
                    device,
                    external_id: r.external_id,
                    attributes: r.attributes,
                });
            }
            match page.next_cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                Some(_) => return Err("the source returned the same cursor twice".into()),
                None => break,
            }
        }
        run.counts.records = out.len();
        Ok(out)
    }

    /// The hosts of the runs that are running (`None`: a run recorded
    /// without one), for [`Imports::fail_interrupted`] to ask about.
    pub fn running_hosts(&self) -> Result<Vec<Option<u32>>, DomainError> {
        let mut hosts = Vec::new();
        for entry in self.store.scan(RUNNING, b"", None, false) {
            let (_, v) = entry?;
            hosts.push(cohort_storage::decode_json(RUNNING, &v)?);
        }
        Ok(hosts)
    }

    /// Marks as failed the runs still "running" whose host `stopped` says
    /// is gone (see `replication::StoppedHosts`). Returns how many it
    /// closed.
    pub fn fail_interrupted(
        &self,
        stopped: &dyn Fn(Option<u32>) -> bool,
    ) -> Result<usize, DomainError> {
        let mut stale = Vec::new();
        for entry in self.store.scan(RUNNING, b"", None, false) {
            let (k, v) = entry?;
            let host: Option<u32> = cohort_storage::decode_json(RUNNING, &v)?;
            if stopped(host) {
                stale.push(k);
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        Ok(self
            .store
            .write(|txn| {
                let mut closed = 0;
                for id in stale {
                    // Read again inside the transaction: the run may have
                    // finished since the scan, and its end must not be undone.
                    let Some(mut run) = txn.get_json::<ImportRun>(RUNS, &id)? else {
                        txn.delete(RUNNING, &id);
                        continue;
                    };
                    if run.state != RunState::Running {
                        // Out of step (nothing should leave it so): mend it.
                        txn.delete(RUNNING, &id);
                        continue;
                    }
                    if !stopped(run.host) {
                        continue;
                    }
                    run.state = RunState::Failed;
                    run.failure = Some(format!(
                        "interrupted: the server running it stopped (host {})",
                        run.host.map_or("unknown".into(), |h| h.to_string())
                    ));
                    put_run(txn, &run)?;
                    closed += 1;
                }
                Ok::<_, DomainError>(closed)
            })?
            .durable_blocking()?)
    }
}

fn push_error(run: &mut ImportRun, external_id: Option<String>, message: String) {
    run.counts.errors += 1;
    if run.errors.len() < MAX_ERRORS {
        run.errors.push(RecordError {
            external_id,
            message,
        });
    }
}
