//! Creating groups: from an admin's input, whole from provisioning (a static
//! user group with exactly the given members), or as a copy of another group
//! with its exemptions and manual members.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::super::layout::{EXEMPTIONS, MANUAL, MEMBERS, STATUS, pair};
use super::super::model::{GroupInput, GroupType, GroupView, Source};
use super::super::{Groups, apply};
use super::{build, load};
use crate::auth::{ManageDirectory, Mutation};
use crate::directory::SubjectKind;
use crate::directory::Versioned;
use crate::error::DomainError;

impl Groups {
    /// Creates a group; a dynamic group's members are computed before this
    /// returns.
    pub async fn create_group(
        &self,
        cap: &ManageDirectory<'_>,
        input: GroupInput,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let group = build(input, None, this.now())?;
            this.create_in(txn, &actor, &group)?;
            this.view(&*txn, group)
        })
        .await
    }

    /// Creates (`id` none) or changes a static user group so that its name
    /// is `name` and its manual members are exactly `members`, in one
    /// transaction: for provisioning, where a group arrives whole (a SCIM
    /// PUT or PATCH). Refuses dynamic groups and device groups.
    pub async fn put_static(
        &self,
        cap: &ManageDirectory<'_>,
        id: Option<Uuid>,
        name: String,
        members: BTreeSet<Uuid>,
        if_match: Option<u64>,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let group = match id {
                None => {
                    let input = GroupInput {
                        name,
                        subject: SubjectKind::User,
                        description: None,
                        group_type: GroupType::Static,
                        rule: None,
                        exclusion: None,
                        evaluator: None,
                        review: false,
                        member_states: None,
                    };
                    let group = build(input, None, this.now())?;
                    this.create_in(txn, &actor, &group)?;
                    group
                }
                Some(id) => {
                    let before = load(&*txn, &id)?;
                    if before.is_dynamic() || before.subject != SubjectKind::User {
                        return Err(DomainError::not_found("static user group", id));
                    }
                    before.check_version(if_match)?;
                    if before.name == name {
                        before
                    } else {
                        let mut input = GroupInput::from(&before);
                        input.name = name;
                        let after = build(input, Some(&before), this.now())?;
                        if before.name.to_lowercase() != after.name.to_lowercase() {
                            this.check_not_named(&*txn, &before)?;
                        }
                        this.put_group(txn, &actor, "group.update", Some(&before), &after)?;
                        after
                    }
                }
            };
            let current: BTreeSet<Uuid> = txn
                .scan_prefix(MANUAL, group.id.as_bytes())?
                .iter()
                .filter_map(|(k, _)| crate::id_pair::second(k))
                .collect();
            for gone in current.difference(&members) {
                this.remove_manual_in(txn, &actor, &group, *gone)?;
            }
            for new in members.difference(&current) {
                this.add_manual_in(txn, &actor, &group, *new)?;
            }
            this.view(&*txn, group)
        })
        .await
    }

    /// Copies a group under a new name: rule, exclusion, settings, exemptions
    /// and manual members. The copy is never built-in.
    pub async fn copy_group(
        &self,
        cap: &ManageDirectory<'_>,
        id: Uuid,
        name: String,
    ) -> Result<GroupView, DomainError> {
        let actor = cap.actor().clone();
        self.write(move |this, txn| {
            let source = load(&*txn, &id)?;
            let mut input = GroupInput::from(&source);
            input.name = name;
            let now = this.now();
            let mut group = build(input, None, now)?;
            group.built_in = false;
            // Exemptions and manual members first, so the first evaluation
            // already honours them.
            for ks in [EXEMPTIONS, MANUAL] {
                for (k, v) in txn.scan_prefix(ks, id.as_bytes())? {
                    if let Some(subject) = crate::id_pair::second(&k) {
                        let key = pair(&group.id, &subject);
                        this.note_special(&group.id, &subject);
                        txn.put(ks, &key, v);
                    }
                }
            }
            this.create_in(txn, &actor, &group)?;
            if !group.is_dynamic() {
                // A static copy has its manual members as members.
                for (k, _) in txn.scan_prefix(MANUAL, group.id.as_bytes())? {
                    if let Some(subject) = crate::id_pair::second(&k) {
                        this.record_membership(
                            txn,
                            now,
                            &actor,
                            &group.id,
                            &subject,
                            None,
                            Some(Source::Manual),
                            &format!("copied from group {id}"),
                        )?;
                    }
                }
                let count = txn.scan_prefix(MEMBERS, group.id.as_bytes())?.len() as u64;
                let mut status = apply::load_status(txn, &group.id)?;
                status.member_count = count;
                txn.put_json(STATUS, group.id.as_bytes(), &status)?;
            }
            this.view(&*txn, group)
        })
        .await
    }
}
