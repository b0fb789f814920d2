//! The embedded default engine. All keyspaces share one sled tree, because
//! sled's `apply_batch` is crash-atomic within a tree: that gives multi-
//! keyspace transactions without sled's optimistic multi-tree transactions
//! (which retry under contention and cannot scan).

use std::ops::Bound;
use std::path::Path;

use crate::StorageError;
use crate::backend::{Backend, EntryIter};

pub(crate) struct SledBackend {
    db: sled::Db,
    /// sled's log file, opened a second time: sled makes its writes durable
    /// with `sync_file_range`, which neither flushes the drive's write cache
    /// nor the file's metadata, so an acknowledged write could be lost on a
    /// power cut. `fdatasync` on this handle after sled's flush closes that
    /// gap (it applies to the file, whichever descriptor asks).
    log: std::fs::File,
}

impl SledBackend {
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Cohort flushes itself (group commit in `durability`); a timer
            // flush would only add fsyncs nobody waits for.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StorageError::Locked(dir.to_path_buf())
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StorageError::Locked(dir.to_path_buf())
                }
                other => StorageError::from(other),
            })?;
        let log = std::fs::File::open(dir.join("db"))?;
        Ok(SledBackend { db, log })
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> EntryIter<'_> {
        let iter = self.db.range::<Vec<u8>, _>((start, end));
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StorageError::from)
        };
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn apply(
        &self,
        writes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        self.log.sync_data()?;
        Ok(())
    }
}
