//! Deleting a group with everything stored about it: memberships, manual
//! members, exemptions, suggestions, errors, its reference and name indexes
//! and the access grants that name it. Refused while anything still uses it.

use serde_json::Value;
use uuid::Uuid;

use super::super::Groups;
use super::super::apply;
use super::super::layout::{
    ERRORS, EXEMPTIONS, GROUP_NAMES, GROUPS, MANUAL, MEMBERS, REFERENCED_BY, STATUS,
    SUBJECT_GROUPS, SUGGESTIONS, name_key, pair,
};
use super::super::plan::Parsed;
use super::load;
use crate::audit::{self, Record};
use crate::auth::{ManageDirectory, Mutation};
use crate::directory::Versioned;
use crate::error::DomainError;

impl Groups {
    /// Deletes a group with its memberships, exemptions and suggestions.
    /// Refused while another group's rule refers to it, or for built-in groups.
    pub async fn delete_group(
        &self,
        cap: &ManageDirectory<'_>,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<(), DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let group = load(&*txn, &id)?;
            group.check_version(if_match)?;
            if group.built_in {
                return Err(DomainError::Conflict {
                    code: "built_in_group",
                    field: None,
                    message: format!("{:?} is a built-in group and cannot be deleted", group.name),
                });
            }
            let users: Vec<String> = txn
                .scan_prefix(REFERENCED_BY, id.as_bytes())?
                .iter()
                .filter_map(|(k, _)| crate::id_pair::second(k))
                .filter_map(|g| {
                    load(&*txn, &g)
                        .ok()
                        .map(|g| format!("{:?} ({})", g.name, g.id))
                })
                .collect();
            if !users.is_empty() {
                return Err(DomainError::Conflict {
                    code: "group_in_use",
                    field: None,
                    message: format!(
                        "the rules of {} refer to this group; change them first",
                        users.join(", ")
                    ),
                });
            }
            if let Some(place) = crate::federation::routing::uses_group(&*txn, &id)? {
                return Err(DomainError::Conflict {
                    code: "group_in_use",
                    field: None,
                    message: format!(
                        "sign-in routing uses this group ({place}); change the routing first"
                    ),
                });
            }
            let status = apply::load_status(txn, &id)?;
            for (k, _) in txn.scan_prefix(MEMBERS, id.as_bytes())? {
                if let Some(subject) = crate::id_pair::second(&k) {
                    txn.delete(SUBJECT_GROUPS, &pair(&subject, &id));
                }
                txn.delete(MEMBERS, &k);
            }
            for ks in [MANUAL, EXEMPTIONS, SUGGESTIONS, ERRORS] {
                for (k, _) in txn.scan_prefix(ks, id.as_bytes())? {
                    txn.delete(ks, &k);
                }
            }
            let ctx = this.expression_context(&this.schema()?, &this.all_groups(&*txn)?);
            if let Ok(p) = Parsed::of(&group, &ctx) {
                for r in p.references(group.subject) {
                    txn.delete(REFERENCED_BY, &pair(&r.group, &id));
                }
            }
            if let Some(rep) = this.inner.replica.lock().as_mut() {
                rep.drop_group(&id);
            }
            crate::access::forget_group(txn, &id)?;
            txn.delete(STATUS, id.as_bytes());
            txn.delete(GROUP_NAMES, &name_key(group.subject, &group.name));
            txn.delete(GROUPS, id.as_bytes());
            let mut changes = audit::diff(Some(&group), None);
            changes.insert(
                "member_count".into(),
                audit::Change {
                    before: serde_json::json!(status.member_count),
                    after: Value::Null,
                },
            );
            audit::record(
                txn,
                this.now(),
                &actor,
                Record {
                    action: "group.delete",
                    resource_type: "group",
                    resource_id: id.to_string(),
                    changes,
                },
            )?;
            this.invalidate();
            Ok(())
        })
        .await
    }
}
