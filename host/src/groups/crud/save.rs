//! Saving a group: validating a dynamic group's rule completely (structure,
//! references, and the evaluator's own compile), writing the group with its
//! name and reference indexes and its audit event, and computing the members
//! of a group whose rule or settings changed, with the groups that depend on
//! it, in the same transaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use uuid::Uuid;

use super::super::layout::{GROUP_NAMES, GROUPS, REFERENCED_BY, STATUS, name_key, pair};
use super::super::model::Group;
use super::super::plan::{self, Parsed};
use super::super::rule::Warning;
use super::super::{Groups, Scope, apply};
use super::load;
use crate::audit::{self, Record};
use crate::auth::Actor;
use crate::error::DomainError;
use cohort_storage::Reader;

impl Groups {
    /// Validates a dynamic group's rule and returns the warnings to keep.
    pub(in crate::groups) fn validate_rule(
        &self,
        r: &impl Reader,
        group: &Group,
    ) -> Result<Vec<Warning>, DomainError> {
        Ok(self.validate_and_compile(r, group, 1)?.0)
    }

    /// Validates a dynamic group's rule and compiles it alone (`copies`
    /// instances per program), for runs of just this group.
    pub(in crate::groups) fn validate_and_compile(
        &self,
        r: &impl Reader,
        group: &Group,
        copies: usize,
    ) -> Result<(Vec<Warning>, plan::Plan), DomainError> {
        let schema = self.schema()?;
        let ctx = self.expression_context(&schema, &self.all_groups(r)?);
        let parsed = Parsed::of(group, &ctx)?;
        self.check_references(r, group, &parsed)?;
        // Compiling the group alone finds every problem with its position.
        let compiled = plan::build(
            &self.inner.registry,
            &schema,
            &ctx,
            vec![Arc::new(group.clone())],
            true,
            copies,
        )?;
        let types = schema.types(group.subject);
        let mut warnings = Vec::new();
        if !group.built_in {
            for (field, model) in [("rule", &parsed.rule), ("exclusion", &parsed.exclusion)] {
                if let Some(m) = model {
                    warnings.extend(m.warnings(field, group.subject, &types));
                }
            }
        }
        Ok((warnings, compiled))
    }

    /// Writes a group with its indexes and audit event.
    pub(in crate::groups) fn put_group(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        action: &str,
        before: Option<&Group>,
        after: &Group,
    ) -> Result<(), DomainError> {
        let new_name = name_key(after.subject, &after.name);
        if before.is_none_or(|b| name_key(b.subject, &b.name) != new_name) {
            if txn.contains(GROUP_NAMES, &new_name)? {
                return Err(DomainError::Conflict {
                    code: "group_name_taken",
                    field: Some("name".into()),
                    message: format!(
                        "another {} group is already named {:?}",
                        after.subject.as_str(),
                        after.name
                    ),
                });
            }
            if let Some(b) = before {
                txn.delete(GROUP_NAMES, &name_key(b.subject, &b.name));
            }
            txn.put(GROUP_NAMES, &new_name, after.id.as_bytes().to_vec());
        }
        let ctx = self.expression_context(&self.schema()?, &self.all_groups(&*txn)?);
        let refs = |g: Option<&Group>| -> BTreeSet<Uuid> {
            g.filter(|g| g.is_dynamic())
                .and_then(|g| Parsed::of(g, &ctx).ok().map(|p| (g.subject, p)))
                .map(|(k, p)| p.references(k).iter().map(|r| r.group).collect())
                .unwrap_or_default()
        };
        let (old_refs, new_refs) = (refs(before), refs(Some(after)));
        for r in old_refs.difference(&new_refs) {
            txn.delete(REFERENCED_BY, &pair(r, &after.id));
        }
        for r in new_refs.difference(&old_refs) {
            txn.put(REFERENCED_BY, &pair(r, &after.id), Vec::new());
        }
        txn.put_json(GROUPS, after.id.as_bytes(), after)?;
        audit::record(
            txn,
            after.updated_at,
            actor,
            Record {
                action,
                resource_type: "group",
                resource_id: after.id.to_string(),
                changes: audit::diff(before, Some(after)),
            },
        )?;
        self.invalidate();
        Ok(())
    }

    /// Recomputes `id` (and every group depending on it) over the whole
    /// directory, after its rule or settings changed.
    pub(super) fn evaluate_group(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        id: &Uuid,
    ) -> Result<(), DomainError> {
        let mut ids = vec![*id];
        ids.extend(self.dependents(&*txn, id)?);
        let targets: Vec<Arc<Group>> = ids
            .iter()
            .map(|g| load(&*txn, g).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|g| g.is_dynamic())
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let schema = self.schema()?;
        let ctx = self.expression_context(&schema, &self.all_groups(&*txn)?);
        let plan = plan::build(
            &self.inner.registry,
            &schema,
            &ctx,
            targets,
            false,
            plan::parallelism(),
        )?;
        let reason = format!("group {id} changed");
        self.run_and_apply(txn, &plan, Scope::Everything, actor, now, &reason, true)?;
        self.record_failures(txn, &plan)?;
        Ok(())
    }

    pub(super) fn save_warnings(
        txn: &mut WriteTxn<'_>,
        id: &Uuid,
        warnings: Vec<Warning>,
    ) -> Result<(), DomainError> {
        let mut status = apply::load_status(txn, id)?;
        if status.warnings != warnings {
            status.warnings = warnings;
            txn.put_json(STATUS, id.as_bytes(), &status)?;
        }
        Ok(())
    }

    pub(super) fn create_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        group: &Group,
    ) -> Result<(), DomainError> {
        let warnings = if group.is_dynamic() {
            self.validate_rule(&*txn, group)?
        } else {
            Vec::new()
        };
        self.put_group(txn, actor, "group.create", None, group)?;
        Self::save_warnings(txn, &group.id, warnings)?;
        if group.is_dynamic() {
            self.evaluate_group(txn, actor, group.updated_at, &group.id)?;
        }
        Ok(())
    }
}
