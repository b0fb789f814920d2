//! Changing a group with a JSON merge patch: what a change of type does to
//! the members (kept as manual members) and to the state only dynamic groups
//! have, and when the members are computed again.

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde_json::Value;
use uuid::Uuid;

use super::super::layout::{ERRORS, EXEMPTIONS, MANUAL, MEMBERS, STATUS, SUGGESTIONS, pair};
use super::super::model::{Group, GroupInput, GroupType, GroupView, Membership, Source};
use super::super::{Groups, apply};
use super::input::READ_ONLY;
use super::{build, load};
use crate::auth::{Actor, ManageDirectory, Mutation};
use crate::directory::Versioned;
use crate::directory::decode_patch;
use crate::error::DomainError;

impl Groups {
    /// Applies a JSON merge patch to a group. A changed rule is validated and
    /// the members recomputed (with the groups depending on this one) before
    /// this returns.
    pub async fn update_group(
        &self,
        cap: &ManageDirectory<'_>,
        id: Uuid,
        patch: Value,
        if_match: Option<u64>,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let before = load(&*txn, &id)?;
            before.check_version(if_match)?;
            let input: GroupInput = decode_patch(&GroupInput::from(&before), &patch, READ_ONLY)?;
            let after = build(input, Some(&before), this.now())?;
            let unchanged = Group {
                updated_at: after.updated_at,
                version: after.version,
                ..before.clone()
            } == after;
            if unchanged {
                return this.view(&*txn, before);
            }
            if before.name.to_lowercase() != after.name.to_lowercase() {
                this.check_not_named(&*txn, &before)?;
            }
            let now = after.updated_at;
            let warnings = if after.is_dynamic() {
                this.validate_rule(&*txn, &after)?
            } else {
                Vec::new()
            };
            this.put_group(txn, &actor, "group.update", Some(&before), &after)?;
            Self::save_warnings(txn, &id, warnings)?;
            match (before.group_type, after.group_type) {
                (GroupType::Static, GroupType::Dynamic) => {
                    this.keep_members_as_manual(txn, &actor, now, &id)?;
                }
                (GroupType::Dynamic, GroupType::Static) => {
                    this.keep_members_as_manual(txn, &actor, now, &id)?;
                    this.clear_dynamic_state(txn, &id)?;
                }
                _ => {}
            }
            let recompute = after.is_dynamic()
                && (before.rule != after.rule
                    || before.exclusion != after.exclusion
                    || before.evaluator != after.evaluator
                    || before.review != after.review
                    || before.member_states != after.member_states
                    || before.group_type != after.group_type);
            if recompute {
                this.evaluate_group(txn, &actor, now, &id)?;
            }
            this.view(&*txn, after)
        })
        .await
    }

    /// Keeps the current members as manual members (a static group turning
    /// dynamic keeps them, as in JumpCloud) or makes them manual (dynamic
    /// turning static).
    fn keep_members_as_manual(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        group: &Uuid,
    ) -> Result<(), DomainError> {
        for (k, v) in txn.scan_prefix(MEMBERS, group.as_bytes())? {
            let Some(subject) = crate::id_pair::second(&k) else {
                continue;
            };
            let m = Membership::decode(&v)?;
            self.note_special(group, &subject);
            txn.put(MANUAL, &pair(group, &subject), Vec::new());
            if m.source != Source::Manual {
                self.record_membership(
                    txn,
                    now,
                    actor,
                    group,
                    &subject,
                    Some(m.source),
                    Some(Source::Manual),
                    "the group became static; its members were kept",
                )?;
            }
        }
        Ok(())
    }

    /// Drops exemptions, suggestions and evaluation errors of a group that
    /// became static.
    fn clear_dynamic_state(&self, txn: &mut WriteTxn<'_>, id: &Uuid) -> Result<(), DomainError> {
        for ks in [EXEMPTIONS, SUGGESTIONS, ERRORS] {
            for (k, _) in txn.scan_prefix(ks, id.as_bytes())? {
                txn.delete(ks, &k);
            }
        }
        let mut status = apply::load_status(txn, id)?;
        status.pending_suggestions = 0;
        status.evaluation_errors = 0;
        status.warnings.clear();
        status.evaluator_error = None;
        txn.put_json(STATUS, id.as_bytes(), &status)?;
        Ok(())
    }
}
