//! Schema versions and the start-up migration hook. The version lives in the
//! storage layer's own keyspace; the steps are the domain's, because only the
//! domain knows what its keys mean.

use crate::keyspace::Keyspace;
use crate::{StorageError, Store, WriteTxn};

pub(crate) const META: Keyspace = Keyspace::reserved("__meta");
const SCHEMA_VERSION: &[u8] = b"schema_version";
/// Present while a restore into a database runs (see `backup.rs`).
pub(crate) const RESTORING: &[u8] = b"restoring";

/// One step from `version - 1` to `version`. Each step runs in its own
/// transaction together with the version bump, so a crash mid-upgrade
/// resumes at the first step that did not land.
pub struct Migration {
    /// The schema version this step produces.
    pub version: u32,
    /// Logged when the step runs.
    pub description: &'static str,
    /// The step itself; an error aborts start-up with nothing of it written.
    pub apply: fn(&mut WriteTxn<'_>) -> Result<(), StorageError>,
}

impl Store {
    /// The stored schema version; 0 for a new, empty store.
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        Ok(self.get_json::<u32>(META, SCHEMA_VERSION)?.unwrap_or(0))
    }

    /// Brings the store to the last version in `steps` (which must be sorted
    /// by version) and returns it. Refuses a store newer than this build.
    pub fn migrate(&self, steps: &[Migration]) -> Result<u32, StorageError> {
        if self.get(META, RESTORING)?.is_some() {
            return Err(StorageError::InterruptedRestore);
        }
        let latest = steps.last().map_or(0, |m| m.version);
        let current = self.schema_version()?;
        if current > latest {
            return Err(StorageError::SchemaTooNew {
                found: current,
                supported: latest,
            });
        }
        for step in steps.iter().filter(|m| m.version > current) {
            tracing::info!(
                version = step.version,
                description = step.description,
                "migrating storage schema"
            );
            let ran = self
                .write(|txn| {
                    // Another host sharing the database may have run this step
                    // since the version was read above.
                    let now = txn.get_json::<u32>(META, SCHEMA_VERSION)?.unwrap_or(0);
                    if now >= step.version {
                        return Ok(false);
                    }
                    (step.apply)(txn).map_err(|e| StorageError::Migration {
                        version: step.version,
                        detail: e.to_string(),
                    })?;
                    txn.put_json(META, SCHEMA_VERSION, &step.version)?;
                    Ok::<_, StorageError>(true)
                })?
                .durable_blocking()?;
            if !ran {
                tracing::info!(version = step.version, "another host ran this step");
            }
        }
        Ok(latest.max(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpenOptions;

    const KS: Keyspace = Keyspace::new("m");

    fn step1(t: &mut WriteTxn<'_>) -> Result<(), StorageError> {
        t.put(KS, b"one", vec![1]);
        Ok(())
    }

    fn step2(_: &mut WriteTxn<'_>) -> Result<(), StorageError> {
        Err(StorageError::Engine("nope".into()))
    }

    #[test]
    fn steps_run_once_in_order_and_failures_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &OpenOptions::default()).unwrap();
        let s1 = Migration {
            version: 1,
            description: "one",
            apply: step1,
        };
        assert_eq!(store.migrate(&[s1]).unwrap(), 1);
        assert_eq!(store.schema_version().unwrap(), 1);
        let s1 = Migration {
            version: 1,
            description: "one",
            apply: step1,
        };
        let s2 = Migration {
            version: 2,
            description: "two",
            apply: step2,
        };
        assert!(matches!(
            store.migrate(&[s1, s2]),
            Err(StorageError::Migration { version: 2, .. })
        ));
        assert_eq!(store.schema_version().unwrap(), 1);
        assert!(matches!(
            store.migrate(&[]),
            Err(StorageError::SchemaTooNew {
                found: 1,
                supported: 0
            })
        ));
    }
}
