//! Bulk loading of groups for benchmarks: stored with their name index,
//! without evaluation, so that the first full recompute computes every
//! membership at once. Compiled only with the `fixtures` feature.

use cohort_storage::WriteTxn;

use super::Group;
use super::layout::{GROUP_NAMES, GROUPS, name_key};
use crate::error::DomainError;

/// Stores a new group and claims its name.
pub fn insert_group(txn: &mut WriteTxn<'_>, group: &Group) -> Result<(), DomainError> {
    txn.put(
        GROUP_NAMES,
        &name_key(group.subject, &group.name),
        group.id.as_bytes().to_vec(),
    );
    txn.put_json(GROUPS, group.id.as_bytes(), group)?;
    Ok(())
}
