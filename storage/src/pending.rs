//! Merged group commit: committed transactions wait here, in memory, until
//! the flusher writes all of them to the engine as one batch and syncs it.
//!
//! Why: with the engine written by each transaction, every writer took the
//! engine's log lock, and the flusher held that same lock for the whole
//! fsync, so writers (and the async workers they run on) stalled behind
//! every sync. Now a transaction's commit is an insert into an in-memory map;
//! the engine sees one write call and one sync per group of transactions.
//! Fewer, larger engine batches are also cheaper per key.
//!
//! Reads see pending writes first, so a committed transaction is visible at
//! once, exactly as before. A crash loses only what was never acknowledged:
//! acknowledgement still waits for the flush that writes and syncs the group,
//! and that group is one atomic engine batch holding a prefix of the commit
//! history, so recovery never sees a later transaction without an earlier one.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::StorageError;
use crate::backend::{Backend, EntryIter};

type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// One pending write: a key and its new value, `None` for a delete.
type PendingWrite = (Vec<u8>, Option<Vec<u8>>);

/// When this many bytes are pending, the writer that crosses the line
/// flushes them itself. Bounds the memory a burst of writes (a first
/// recompute, an import) can hold here; a normal group is far smaller.
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

pub(crate) struct Pending {
    engine: Arc<dyn Backend>,
    state: RwLock<State>,
    /// One flush at a time: the flusher's, or a writer's at the limit.
    flushing: Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Written by transactions since the current flush sealed its group.
    open: Writes,
    open_bytes: usize,
    /// The group the flush in progress is writing to the engine; readers
    /// still need it until the engine has it.
    sealed: Arc<Writes>,
}

impl Pending {
    pub(crate) fn new(engine: Arc<dyn Backend>) -> Self {
        Pending {
            engine,
            state: RwLock::new(State::default()),
            flushing: Mutex::new(()),
        }
    }

    /// Pending writes in `[start, end)`, newest value per key, in key order.
    fn pending_range(
        &self,
        start: &Bound<Vec<u8>>,
        end: &Bound<Vec<u8>>,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let state = self.state.read();
        if state.open.is_empty() && state.sealed.is_empty() {
            return Vec::new();
        }
        let bounds = (as_ref(start), as_ref(end));
        let mut merged: BTreeMap<&[u8], &Option<Vec<u8>>> = BTreeMap::new();
        for (k, v) in state.sealed.range::<[u8], _>(bounds) {
            merged.insert(k, v);
        }
        for (k, v) in state.open.range::<[u8], _>(bounds) {
            merged.insert(k, v);
        }
        merged
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.clone()))
            .collect()
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Backend for Pending {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        {
            let state = self.state.read();
            if let Some(v) = state.open.get(key).or_else(|| state.sealed.get(key)) {
                return Ok(v.clone());
            }
        }
        // Not pending: the engine has the latest value. A flush only clears
        // its group once the engine holds it, so nothing falls in between.
        self.engine.get(key)
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> EntryIter<'_> {
        // Pending writes first, then the engine: a group that leaves the
        // pending map in between is in the engine by then.
        let mut pending = self.pending_range(&start, &end);
        let engine = self.engine.range(start, end, reverse);
        if pending.is_empty() {
            return engine;
        }
        if reverse {
            pending.reverse();
        }
        Box::new(Merge {
            pending: pending.into_iter().peekable(),
            engine: engine.peekable(),
            reverse,
        })
    }

    fn apply(
        &self,
        writes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
    ) -> Result<(), StorageError> {
        let over = {
            let mut state = self.state.write();
            for (k, v) in writes {
                state.open_bytes += k.len() + v.map_or(0, <[u8]>::len);
                state.open.insert(k.to_vec(), v.map(<[u8]>::to_vec));
            }
            state.open_bytes > MAX_PENDING_BYTES
        };
        if over {
            // Written to the engine and synced: early, but never wrong.
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        let _one = self.flushing.lock();
        let group = {
            let mut state = self.state.write();
            let mut open = std::mem::take(&mut state.open);
            state.open_bytes = 0;
            if !state.sealed.is_empty() {
                // A group whose write failed earlier goes out again, under
                // anything newer.
                let mut retry = (*state.sealed).clone();
                retry.append(&mut open);
                open = retry;
            }
            state.sealed = Arc::new(open);
            Arc::clone(&state.sealed)
        };
        if !group.is_empty() {
            self.engine
                .apply(&mut group.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))?;
        }
        self.engine.flush()?;
        self.state.write().sealed = Arc::new(Writes::new());
        Ok(())
    }

    fn shared(&self) -> bool {
        self.engine.shared()
    }

    fn prefetch(&self, keys: &[Vec<u8>], prefixes: &[Vec<u8>]) -> Result<(), StorageError> {
        // Pending writes shadow what the engine returns, as for any read.
        self.engine.prefetch(keys, prefixes)
    }

    fn acquire_writer(&self) -> Result<bool, StorageError> {
        if self.engine.lease_due() {
            // Called under the store's writer lock, so nothing is added
            // while the held group goes out; then others get their turn.
            self.flush()?;
            self.engine.release_writer()?;
        }
        self.engine.acquire_writer()
    }

    fn release_writer(&self) -> Result<(), StorageError> {
        self.engine.release_writer()
    }

    fn foreign_writes(&self) -> Result<bool, StorageError> {
        self.engine.foreign_writes()
    }

    fn lead(&self, role: i32) -> Result<bool, StorageError> {
        self.engine.lead(role)
    }

    fn host(&self) -> Option<u32> {
        self.engine.host()
    }

    fn host_alive(&self, host: u32) -> Result<bool, StorageError> {
        self.engine.host_alive(host)
    }

    fn take_rate(
        &self,
        key: &[u8],
        now: i64,
        interval: i64,
        tolerance: i64,
    ) -> Result<Option<crate::RateDecision>, StorageError> {
        self.engine.take_rate(key, now, interval, tolerance)
    }

    fn sweep_rates(&self, now: i64) -> Result<u64, StorageError> {
        self.engine.sweep_rates(now)
    }

    fn is_clean(&self) -> bool {
        let state = self.state.read();
        state.open.is_empty() && state.sealed.is_empty()
    }
}

/// The engine's entries with pending writes laid over them, in the
/// direction of travel. A pending `None` hides the key.
struct Merge<'a> {
    pending: Peekable<std::vec::IntoIter<PendingWrite>>,
    engine: Peekable<EntryIter<'a>>,
    reverse: bool,
}

impl Iterator for Merge<'_> {
    type Item = Result<crate::Entry, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_pending = match (self.engine.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.engine.next(),
                (Some(Ok(_)), None) => false,
                (None, Some(_)) => true,
                (Some(Ok((ek, _))), Some((pk, _))) => {
                    let order = ek.as_slice().cmp(pk.as_slice());
                    let order = if self.reverse { order.reverse() } else { order };
                    match order {
                        std::cmp::Ordering::Less => false,
                        std::cmp::Ordering::Equal => {
                            // The pending write shadows the engine's value.
                            self.engine.next();
                            true
                        }
                        std::cmp::Ordering::Greater => true,
                    }
                }
            };
            if take_pending {
                let (k, v) = self.pending.next()?;
                if let Some(v) = v {
                    return Some(Ok((k, v)));
                }
            } else {
                return self.engine.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fjall_backend::FjallBackend;

    fn entries(b: &dyn Backend, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        b.range(Bound::Unbounded, Bound::Unbounded, reverse)
            .map(|r| r.unwrap())
            .collect()
    }

    fn put(b: &dyn Backend, writes: &[(&[u8], Option<&[u8]>)]) {
        b.apply(&mut writes.iter().copied()).unwrap();
    }

    #[test]
    fn pending_writes_shadow_the_engine_in_gets_and_scans() {
        let dir = tempfile::tempdir().unwrap();
        let engine: Arc<dyn Backend> = Arc::new(FjallBackend::open(dir.path(), 1 << 20).unwrap());
        let p = Pending::new(Arc::clone(&engine));
        put(
            &p,
            &[(b"a", Some(b"1")), (b"c", Some(b"1")), (b"e", Some(b"1"))],
        );
        p.flush().unwrap();
        assert_eq!(engine.get(b"c").unwrap(), Some(b"1".to_vec()));
        // Pending: a new key, an overwrite and a delete.
        put(&p, &[(b"b", Some(b"2")), (b"c", Some(b"2")), (b"e", None)]);
        assert_eq!(
            engine.get(b"b").unwrap(),
            None,
            "not in the engine before a flush"
        );
        assert_eq!(p.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(p.get(b"e").unwrap(), None);
        let expect = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"2".to_vec()),
        ];
        assert_eq!(entries(&p, false), expect);
        let mut rev = expect.clone();
        rev.reverse();
        assert_eq!(entries(&p, true), rev);
        let from_b: Vec<_> = p
            .range(Bound::Excluded(b"b".to_vec()), Bound::Unbounded, false)
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(from_b, vec![b"c".to_vec()]);
        p.flush().unwrap();
        assert_eq!(entries(engine.as_ref(), false), expect);
        assert_eq!(entries(&p, false), expect);
    }

    #[test]
    fn a_burst_past_the_limit_is_flushed_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let engine: Arc<dyn Backend> = Arc::new(FjallBackend::open(dir.path(), 1 << 20).unwrap());
        let p = Pending::new(Arc::clone(&engine));
        let big = vec![7u8; 1 << 20];
        for i in 0..20u8 {
            put(&p, &[(&[i], Some(&big))]);
        }
        assert!(p.state.read().open_bytes <= MAX_PENDING_BYTES);
        assert_eq!(engine.get(&[0]).unwrap().map(|v| v.len()), Some(1 << 20));
    }
}
