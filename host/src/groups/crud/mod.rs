//! Creating, changing, copying and deleting groups. Saving a dynamic group
//! checks its rule completely (structure, references, cycles, and the
//! evaluator's own compile) and computes its members in the same transaction.
//!
//! Each operation has its file (`create`, `update`, `delete`); what they
//! share is in `input` (checking the fields), `references` (what a rule may
//! refer to) and `save` (writing a group and computing its members). Reads
//! of groups are here.

mod create;
mod delete;
mod input;
mod references;
mod save;
mod update;

pub(super) use input::build;

use uuid::Uuid;

use super::Groups;
use super::layout::{ERRORS, GROUPS, STATUS};
use super::model::{ErrorExample, Group, GroupStatus, GroupType, GroupView};
use crate::auth::Read;
use crate::directory::{SubjectKind, Versioned};
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest};
use cohort_storage::Reader;

pub(super) fn load(r: &impl Reader, id: &Uuid) -> Result<Group, DomainError> {
    r.get_json(GROUPS, id.as_bytes())?
        .ok_or_else(|| DomainError::not_found("group", id))
}

/// Groups take `If-Match` like the directory's resources.
impl Versioned for Group {
    fn version(&self) -> u64 {
        self.version
    }
}

impl Groups {
    pub(super) fn view(&self, r: &impl Reader, group: Group) -> Result<GroupView, DomainError> {
        let mut status: GroupStatus = r.get_json(STATUS, group.id.as_bytes())?.unwrap_or_default();
        for (k, v) in r.scan(ERRORS, group.id.as_bytes())?.into_iter().take(5) {
            if let Some(subject) = crate::id_pair::second(&k) {
                status.error_examples.push(ErrorExample {
                    subject_id: subject,
                    message: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        Ok(GroupView { group, status })
    }

    /// One group with its status.
    pub fn get_group(&self, _: &Read, id: &Uuid) -> Result<GroupView, DomainError> {
        let group = load(self.store(), id)?;
        self.view(self.store(), group)
    }

    /// A page of groups, optionally of one kind and type, in creation order.
    pub fn list_groups(
        &self,
        _: &Read,
        subject: Option<SubjectKind>,
        group_type: Option<GroupType>,
        req: &PageRequest,
    ) -> Result<Page<GroupView>, DomainError> {
        let tag = format!(
            "groups:{}:{}",
            subject.map_or("", |s| s.as_str()),
            match group_type {
                Some(GroupType::Static) => "static",
                Some(GroupType::Dynamic) => "dynamic",
                None => "",
            }
        );
        let resume = req.resume_key(&tag)?;
        let entries = self.store().scan(GROUPS, b"", resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            let g: Group = cohort_storage::decode_json(GROUPS, v)?;
            let keep = subject.is_none_or(|s| s == g.subject)
                && group_type.is_none_or(|t| t == g.group_type);
            if !keep {
                return Ok(page::Visit::Skip);
            }
            Ok(page::Visit::Item(self.view(self.store(), g)?))
        })
    }
}
