//! Bulk loading for benchmarks that build a large directory in seconds:
//! users, devices and bindings stored with every index the API would
//! write, but without validation, audit events or change notification.
//! Compiled only with the `fixtures` feature, so the server never has it.

use cohort_storage::WriteTxn;

use super::{Binding, Device, User};
use crate::error::DomainError;

/// Stores a new user with its indexes. Fails like the API on a duplicate
/// username or email.
pub fn insert_user(txn: &mut WriteTxn<'_>, user: &User) -> Result<(), DomainError> {
    super::users::store_user(txn, None, user)
}

/// Stores a new device with its indexes.
pub fn insert_device(txn: &mut WriteTxn<'_>, device: &Device) -> Result<(), DomainError> {
    super::devices::store_device(txn, None, device)
}

/// Binds a stored user to a stored device (both directions of the index).
pub fn insert_binding(txn: &mut WriteTxn<'_>, binding: &Binding) -> Result<(), DomainError> {
    super::bindings::store_binding(txn, binding)
}
