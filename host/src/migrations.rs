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
    use crate::directory::keys::{DEVICES, DEVICES_BY_SERIAL};
    let mut entries = Vec::new();
    txn.for_each_prefix(DEVICES, b"", |k, v| {
        let device: serde_json::Value = cohort_storage::decode_json(DEVICES, v)?;
        let id = uuid::Uuid::from_slice(k).map_err(|_| StorageError::Corrupt {
            keyspace: DEVICES.name().to_string(),
            detail: "a device key is not a 16-byte id".into(),
        })?;
        if let Some(key) = crate::directory::serial_key(device["serial_number"].as_str(), &id) {
            entries.push(key);
        }
        Ok::<_, StorageError>(())
    })?;
    for key in entries {
        txn.put(DEVICES_BY_SERIAL, &key, Vec::new());
    }
    Ok(())
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
];
