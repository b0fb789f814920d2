//! Index builders the schema migrations call (`crate::migrations`), kept
//! here because only the directory knows its key layout.

use cohort_storage::{StorageError, WriteTxn};

use super::layout::{DEVICES, DEVICES_BY_SERIAL};

/// Builds the serial-number index from the stored devices. It reads the JSON
/// field alone, so later changes to `Device` cannot break the migration.
pub(crate) fn build_serial_index(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    let mut entries = Vec::new();
    txn.for_each_prefix(DEVICES, b"", |k, v| {
        let device: serde_json::Value = cohort_storage::decode_json(DEVICES, v)?;
        let id = uuid::Uuid::from_slice(k).map_err(|_| StorageError::Corrupt {
            keyspace: DEVICES.name().to_string(),
            detail: "a device key is not a 16-byte id".into(),
        })?;
        if let Some(key) = super::devices::serial_key(device["serial_number"].as_str(), &id) {
            entries.push(key);
        }
        Ok::<_, StorageError>(())
    })?;
    for key in entries {
        txn.put(DEVICES_BY_SERIAL, &key, Vec::new());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::super::layout::{DEVICES, DEVICES_BY_SERIAL};

    #[test]
    fn the_serial_index_is_built_from_stored_devices() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_support::open_store(dir.path());
        let (with, without) = (Uuid::now_v7(), Uuid::now_v7());
        store
            .write(|txn| {
                txn.put_json(DEVICES, with.as_bytes(), &json!({"serial_number": "C02XK"}))?;
                txn.put_json(DEVICES, without.as_bytes(), &json!({"serial_number": null}))?;
                Ok::<_, cohort_storage::StorageError>(())
            })
            .unwrap()
            .durable_blocking()
            .unwrap();
        store
            .write(super::build_serial_index)
            .unwrap()
            .durable_blocking()
            .unwrap();
        let keys: Vec<Vec<u8>> = store
            .scan(DEVICES_BY_SERIAL, b"", None, false)
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(
            keys,
            vec![crate::directory::devices::serial_key(Some("c02xk"), &with).unwrap()]
        );
    }
}
