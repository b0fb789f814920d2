//! Storage schema migrations, run at start-up before the server listens.
//! Append a step for every change to the key layout or record encoding; never
//! edit a released step. `cohort backup` files record the schema version, so a
//! restored backup is migrated by the same steps.

use cohort_storage::{Migration, StorageError, WriteTxn};

/// Version 1: the initial layout (users, devices, bindings, attribute
/// definitions, API keys, audit log). Nothing to convert; it stamps new data
/// directories so later steps know where they start.
fn initial_layout(_: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    Ok(())
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "initial layout",
    apply: initial_layout,
}];
