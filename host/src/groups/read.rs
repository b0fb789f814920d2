//! The groups' reads for other modules (access, federation routing and
//! sign-in, SCIM). How groups and memberships are stored is private to
//! this module; these functions take a [`Reader`] so that a caller inside a
//! transaction reads through it.

use cohort_storage::{Reader, StorageError, Store};
use uuid::Uuid;

use super::Group;
use super::layout::{GROUPS, MANUAL, MEMBERS, SUBJECT_GROUPS};
use crate::id_pair;

/// A group, if there is one with this id.
pub fn group(r: &impl Reader, id: &Uuid) -> Result<Option<Group>, StorageError> {
    r.get_json(GROUPS, id.as_bytes())
}

/// Calls `f` with every group, in id order.
pub fn for_each_group<E: From<StorageError>>(
    r: &impl Reader,
    mut f: impl FnMut(Group) -> Result<(), E>,
) -> Result<(), E> {
    r.for_each(GROUPS, b"", |_, v| {
        f(cohort_storage::decode_json(GROUPS, v)?)
    })
}

/// Whether `subject` is a member of `group` now, however it became one.
pub fn is_member(r: &impl Reader, group: &Uuid, subject: &Uuid) -> Result<bool, StorageError> {
    r.contains(MEMBERS, &id_pair::key(group, subject))
}

/// The groups `subject` is a member of, in id order.
pub fn groups_of(r: &impl Reader, subject: &Uuid) -> Result<Vec<Uuid>, StorageError> {
    Ok(r.scan(SUBJECT_GROUPS, subject.as_bytes())?
        .iter()
        .filter_map(|(k, _)| id_pair::second(k))
        .collect())
}

/// The members added to `group` by hand (SCIM groups are made of these).
pub fn manual_members(r: &impl Reader, group: &Uuid) -> Result<Vec<Uuid>, StorageError> {
    Ok(r.scan(MANUAL, group.as_bytes())?
        .iter()
        .filter_map(|(k, _)| id_pair::second(k))
        .collect())
}

/// Up to `limit` members of `group` in id order, starting just after
/// `after`: one page of a merge across groups costs about `limit` reads.
pub fn members_after(
    store: &Store,
    group: &Uuid,
    after: Option<&Uuid>,
    limit: usize,
) -> Result<Vec<Uuid>, StorageError> {
    let start = after.map(|a| id_pair::key(group, a));
    let mut out = Vec::new();
    for e in store
        .scan(
            MEMBERS,
            group.as_bytes(),
            start.as_ref().map(|s| s.as_slice()),
            false,
        )
        .take(limit)
    {
        let (k, _) = e?;
        out.extend(id_pair::second(&k));
    }
    Ok(out)
}
