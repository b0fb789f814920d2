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

/// Version 2: the serial-number index of devices, which enrollment uses to
/// recognise a device that enrolls again. Built from the stored devices; it
/// reads the JSON field alone, so later changes to `Device` cannot break it.
fn devices_by_serial(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    crate::directory::build_serial_index(txn)
}

/// Version 3: the username and email indexes re-keyed under the identity
/// normalisation (RFC 8265 usernames, NFKC-caseless emails with IDNA
/// domains) instead of `to_lowercase`. Users it finds sharing one identity
/// are kept and written down, not merged; see `directory/collisions.rs`.
fn identity_keys(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    crate::directory::rekey_identities(txn)
}

/// Version 4: the email index re-keyed again, now that email keys drop
/// every default-ignorable code point (the combining grapheme joiner,
/// variation selectors, Hangul fillers), not only format characters.
/// Addresses stored with one now share the key of the visible address;
/// the same step finds them, and the earlier collisions stay reported.
fn identity_keys_without_ignorables(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    crate::directory::rekey_identities(txn)
}

/// Version 5: the confusable-skeleton index (UTS #39) of usernames and
/// emails, which refuses a new identity that looks like another; see
/// `directory/confusables.rs`.
fn identity_skeletons(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    crate::directory::build_skeleton_index(txn)
}

/// Version 6: the index of running import runs, which the host that runs
/// the scheduled work reads to close the runs of stopped hosts; see
/// `provisioning/imports`.
fn running_imports(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    crate::provisioning::imports::build_running_index(txn)
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial layout",
        apply: initial_layout,
    },
    Migration {
        version: 2,
        description: "devices by serial number",
        apply: devices_by_serial,
    },
    Migration {
        version: 3,
        description: "identity keys for usernames and emails",
        apply: identity_keys,
    },
    Migration {
        version: 4,
        description: "identity keys without default-ignorable code points",
        apply: identity_keys_without_ignorables,
    },
    Migration {
        version: 5,
        description: "confusable skeletons of usernames and emails",
        apply: identity_skeletons,
    },
    Migration {
        version: 6,
        description: "running import runs by host",
        apply: running_imports,
    },
];
