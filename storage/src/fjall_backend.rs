//! The embedded default engine: fjall, a log-structured merge tree.
//!
//! Why fjall and not sled (measured in issue #15, docs/PERFORMANCE.md):
//! - sled 0.34 makes its log durable with `sync_file_range`, which neither
//!   flushes the drive's write cache nor the file's metadata, so an
//!   acknowledged write could be lost on power failure. fjall's journal is
//!   made durable with `fdatasync`.
//! - sled's memory grows far past its configured cache while absorbing large
//!   batches (19 GB for the first recompute of a 100,000-user directory);
//!   fjall's memory is its block cache plus bounded memtables.
//! - sled reclaims disk only from its timer flusher, which group commit
//!   switches off; fjall compacts in the background regardless.
//!
//! All keyspaces share one fjall keyspace (one LSM tree), as they share one
//! sled tree: fjall batches are atomic across a crash, and one tree keeps a
//! Cohort keyspace one contiguous range.

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use crate::StorageError;
use crate::backend::{Backend, EntryIter};

/// The one fjall keyspace that holds every Cohort keyspace.
const TREE: &str = "cohort";

pub(crate) struct FjallBackend {
    db: Database,
    tree: fjall::Keyspace,
}

impl FjallBackend {
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            // Group commit (`durability`) decides when the journal reaches
            // the disk; flushing it to the OS after every batch would only
            // add write calls that nobody waits for.
            .manual_journal_persist(true)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StorageError::Locked(dir.to_path_buf()),
                other => StorageError::Engine(other.to_string()),
            })?;
        let tree = db
            .keyspace(TREE, || {
                KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(MAX_MEMTABLE)
            })
            .map_err(engine)?;
        Ok(FjallBackend { db, tree })
    }
}

/// Memtable size: large enough that flushes are infrequent, small enough
/// that a full one is a short flush and a small part of the memory budget
/// (fjall stalls writers while too many full memtables wait for their
/// flush, so memtables cannot pile up while a large change streams in).
const MAX_MEMTABLE: u64 = 32 * 1024 * 1024;

fn engine(e: fjall::Error) -> StorageError {
    StorageError::Engine(e.to_string())
}

impl Backend for FjallBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.tree.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> EntryIter<'_> {
        let iter = self.tree.range::<Vec<u8>, _>((start, end));
        let map = |g: fjall::Guard| {
            g.into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine)
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
        let mut batch = self.db.batch();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(&self.tree, k, v),
                None => batch.remove(&self.tree, k),
            }
        }
        batch.commit().map_err(engine)
    }

    fn flush(&self) -> Result<(), StorageError> {
        // fdatasync: the journal is only ever appended to, and fdatasync
        // also writes the file size that reading the appended data needs.
        self.db.persist(PersistMode::SyncData).map_err(engine)
    }
}
