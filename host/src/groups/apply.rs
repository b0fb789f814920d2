//! Writing a run's decisions: the membership delta, review suggestions,
//! per-subject evaluation errors and the group status, each membership change
//! with its audit event, all in the caller's transaction.

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Groups;
use super::layout::{ERRORS, MEMBERS, STATUS, SUBJECT_GROUPS, SUGGESTIONS, pair};
use super::model::{GroupStatus, Membership, Source, Suggestion};
use super::run::{GroupResult, Outcome};
use crate::audit::{self, Record};
use crate::auth::Actor;
use crate::error::DomainError;

/// How many membership changes a write made.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[schema(as = MembershipCounts)]
pub struct Counts {
    /// Memberships added.
    pub added: u64,
    /// Memberships removed.
    pub removed: u64,
    /// Suggestions created or changed.
    pub suggested: u64,
}

impl Groups {
    /// Records one membership change, in the store and in the replica.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_membership(
        &self,
        txn: &mut WriteTxn<'_>,
        now: DateTime<Utc>,
        actor: &Actor,
        group: &Uuid,
        subject: &Uuid,
        before: Option<Source>,
        after: Option<Source>,
        reason: &str,
    ) -> Result<(), DomainError> {
        let key = pair(group, subject);
        if let Some(rep) = self.inner.replica.lock().as_mut() {
            rep.set_member(group, subject, after);
        }
        match after {
            Some(source) => {
                txn.put(MEMBERS, &key, Membership { source, since: now }.encode());
                txn.put(SUBJECT_GROUPS, &pair(subject, group), Vec::new());
            }
            None => {
                txn.delete(MEMBERS, &key);
                txn.delete(SUBJECT_GROUPS, &pair(subject, group));
            }
        }
        let action = match (before, after) {
            (None, Some(_)) => "group.member_add",
            (Some(_), None) => "group.member_remove",
            _ => "group.member_update",
        };
        let src = |s: Option<Source>| s.map_or(Value::Null, |s| json!(s.as_str()));
        let changes = audit::changes(&[
            ("subject_id", Value::Null, json!(subject.to_string())),
            ("source", src(before), src(after)),
            ("reason", Value::Null, json!(reason)),
        ]);
        audit::record(
            txn,
            now,
            actor,
            Record {
                action,
                resource_type: "group",
                resource_id: group.to_string(),
                changes,
            },
        )?;
        Ok(())
    }
}

/// Reads a group's status (default when none was written yet).
pub fn load_status(txn: &WriteTxn<'_>, group: &Uuid) -> Result<GroupStatus, DomainError> {
    Ok(txn.get_json(STATUS, group.as_bytes())?.unwrap_or_default())
}

/// Writes beyond which a run's changes are applied before it ends, so a
/// run that changes a million memberships does not hold them all in memory.
const CHECKPOINT_WRITES: usize = 50_000;

impl Groups {
    /// Writes every group's decisions from `outcome`. `reason` says what caused
    /// the run, for the audit log.
    pub(super) fn apply(
        &self,
        txn: &mut WriteTxn<'_>,
        outcome: Outcome,
        actor: &Actor,
        now: DateTime<Utc>,
        reason: &str,
        full: bool,
    ) -> Result<Counts, DomainError> {
        let mut counts = Counts::default();
        let mut groups: Vec<(Uuid, GroupResult)> = outcome.groups.into_iter().collect();
        groups.sort_by_key(|(id, _)| *id);
        for (group, result) in groups {
            self.apply_group(txn, &group, result, actor, now, reason, full, &mut counts)?;
            if txn.pending_writes() > CHECKPOINT_WRITES {
                txn.checkpoint()?;
            }
        }
        Ok(counts)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_group(
        &self,
        txn: &mut WriteTxn<'_>,
        group: &Uuid,
        result: GroupResult,
        actor: &Actor,
        now: DateTime<Utc>,
        reason: &str,
        full: bool,
        counts: &mut Counts,
    ) -> Result<(), DomainError> {
        // Status counters move by deltas; the status is read only when one moved.
        let mut status = Delta::default();
        for c in &result.changes {
            let why = match c.after {
                Some(Source::Rule) => format!("the rule matches ({reason})"),
                Some(Source::Exemption) => format!("an 'always' exemption applies ({reason})"),
                Some(Source::Manual) => format!("added by hand ({reason})"),
                None if c.excluded => format!("the exclusion rule matches ({reason})"),
                None if c.rule_match => {
                    format!(
                        "an exemption, review mode or the group's state scoping leaves it out ({reason})"
                    )
                }
                None => format!("the rule no longer matches ({reason})"),
            };
            self.record_membership(txn, now, actor, group, &c.subject, c.before, c.after, &why)?;
            if txn.pending_writes() > CHECKPOINT_WRITES {
                txn.checkpoint()?;
            }
            match (c.before.is_some(), c.after.is_some()) {
                (false, true) => {
                    counts.added += 1;
                    status.member_count += 1;
                }
                (true, false) => {
                    counts.removed += 1;
                    status.member_count -= 1;
                }
                _ => {}
            }
        }
        for c in &result.suggestions {
            let key = pair(group, &c.subject);
            if c.before.as_ref().is_some_and(|s| !s.dismissed) {
                status.pending_suggestions -= 1;
            }
            match c.after {
                None => txn.delete(SUGGESTIONS, &key),
                Some(action) => {
                    // Without this a later change to the subject skips the
                    // group and leaves the suggestion standing.
                    self.note_special(group, &c.subject);
                    txn.put_json(
                        SUGGESTIONS,
                        &key,
                        &Suggestion {
                            subject_id: c.subject,
                            action,
                            since: now,
                            dismissed: false,
                        },
                    )?;
                    status.pending_suggestions += 1;
                    counts.suggested += 1;
                }
            }
        }
        for s in &result.errors_cleared {
            txn.delete(ERRORS, &pair(group, s));
            status.evaluation_errors -= 1;
        }
        let mut new_errors = 0u64;
        for (s, message) in &result.errors {
            self.note_special(group, s);
            txn.put(ERRORS, &pair(group, s), message.clone().into_bytes());
            status.evaluation_errors += 1;
            new_errors += 1;
        }
        if new_errors > 0 {
            let example = result
                .errors
                .iter()
                .next()
                .map(|(s, m)| format!("{s}: {m}"));
            let changes = audit::changes(&[
                ("evaluation_errors", Value::Null, json!(new_errors)),
                ("example", Value::Null, json!(example)),
            ]);
            audit::record(
                txn,
                now,
                actor,
                Record {
                    action: "group.warning",
                    resource_type: "group",
                    resource_id: group.to_string(),
                    changes,
                },
            )?;
        }
        if status == Delta::default() && !full && result.failure.is_none() {
            return Ok(());
        }
        let mut current = load_status(txn, group)?;
        let before = current.clone();
        let add = |v: u64, d: i64| (v as i64 + d).max(0) as u64;
        current.member_count = add(current.member_count, status.member_count);
        current.pending_suggestions = add(current.pending_suggestions, status.pending_suggestions);
        current.evaluation_errors = add(current.evaluation_errors, status.evaluation_errors);
        if full || result.failure.is_some() {
            current.evaluator_error = result.failure.clone();
        }
        if full && result.failure.is_none() {
            current.evaluated_at = Some(now);
        }
        if current != before {
            txn.put_json(STATUS, group.as_bytes(), &current)?;
        }
        Ok(())
    }
}

/// Changes to a group's status counters.
#[derive(Default, PartialEq)]
struct Delta {
    member_count: i64,
    pending_suggestions: i64,
    evaluation_errors: i64,
}
