//! A write transaction: reads see the committed state plus the transaction's
//! own writes; writes are buffered and applied as one atomic batch.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, Write};
use crate::keyspace::prefix_successor;
use crate::{Entry, Keyspace, StorageError};

/// Handed to the closure of [`crate::Store::write`]. Only one exists at a time.
pub struct WriteTxn<'a> {
    backend: &'a dyn Backend,
    /// Buffered writes by engine key; `None` is a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Last sequence number per append-only keyspace, as committed; shared
    /// by all transactions (they run one at a time).
    sequences: &'a mut crate::store::Sequences,
    /// Sequence numbers this transaction took; published on commit only.
    taken: HashMap<&'static str, u64>,
    /// Whether [`WriteTxn::checkpoint`] applied writes already.
    checkpointed: bool,
    /// Run when the transaction does not commit.
    on_abort: Vec<Box<dyn FnOnce() + Send>>,
    /// While a [`Savepoint`] is open: each buffered key's state before the
    /// write that followed it (`None`: not buffered then), to undo them.
    undo: Option<Vec<Undo>>,
    /// Savepoints open; the undo record goes when the last one closes.
    open_savepoints: usize,
    /// A rehearsal ([`crate::Store::rehearse`]): nothing it writes reaches
    /// the engine, checkpoints included.
    rehearsal: bool,
}

/// A key, and its buffered state before a write (`None`: not buffered).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A point in a transaction that [`WriteTxn::roll_back_to`] returns to.
#[must_use = "a savepoint is rolled back to or released"]
pub struct Savepoint {
    undo_len: usize,
    taken: HashMap<&'static str, u64>,
}

/// What a finished transaction hands back to the store.
pub(crate) struct Finished {
    pub(crate) writes: Vec<Write>,
    pub(crate) taken: HashMap<&'static str, u64>,
    pub(crate) checkpointed: bool,
    pub(crate) on_abort: Vec<Box<dyn FnOnce() + Send>>,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn new(
        backend: &'a dyn Backend,
        sequences: &'a mut crate::store::Sequences,
    ) -> Self {
        WriteTxn {
            backend,
            writes: BTreeMap::new(),
            sequences,
            taken: HashMap::new(),
            checkpointed: false,
            on_abort: Vec::new(),
            undo: None,
            open_savepoints: 0,
            rehearsal: false,
        }
    }

    pub(crate) fn rehearsal(
        backend: &'a dyn Backend,
        sequences: &'a mut crate::store::Sequences,
    ) -> Self {
        WriteTxn {
            rehearsal: true,
            ..WriteTxn::new(backend, sequences)
        }
    }

    /// Whether this is a rehearsal ([`crate::Store::rehearse`]), which
    /// never commits: what only a committed write needs (its audit event)
    /// can be left out of it.
    pub fn is_rehearsal(&self) -> bool {
        self.rehearsal
    }

    /// Marks this point, so that the writes after it can be undone (one
    /// record of a batch that fails its checks, say) while those before it
    /// stay. Savepoints nest; each is rolled back to or released.
    pub fn savepoint(&mut self) -> Savepoint {
        self.open_savepoints += 1;
        Savepoint {
            undo_len: self.undo.get_or_insert_with(Vec::new).len(),
            taken: self.taken.clone(),
        }
    }

    /// Undoes every write, and gives back every sequence number, since
    /// `point`.
    pub fn roll_back_to(&mut self, point: Savepoint) {
        if let Some(undo) = &mut self.undo {
            while undo.len() > point.undo_len {
                let Some((key, before)) = undo.pop() else {
                    break;
                };
                match before {
                    Some(v) => self.writes.insert(key, v),
                    None => self.writes.remove(&key),
                };
            }
        }
        self.taken = point.taken;
        self.release(Savepoint {
            undo_len: point.undo_len,
            taken: HashMap::new(),
        });
    }

    /// Keeps the writes since `point`. Closing the last open savepoint
    /// drops the undo record, so that a long transaction of many small
    /// savepoints does not hold every write twice.
    pub fn release(&mut self, point: Savepoint) {
        let _ = point;
        self.open_savepoints = self.open_savepoints.saturating_sub(1);
        if self.open_savepoints == 0 {
            self.undo = None;
        }
    }

    /// Buffers one write, noting what it replaces while a savepoint is open.
    fn buffer(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let before = self.writes.insert(key.clone(), value);
        if let Some(undo) = &mut self.undo {
            undo.push((key, before));
        }
    }

    /// The buffered writes, the sequence numbers to publish once they are
    /// applied, and what to run if they are not.
    pub(crate) fn finish(self) -> Finished {
        Finished {
            writes: self.writes.into_iter().collect(),
            taken: self.taken,
            checkpointed: self.checkpointed,
            on_abort: self.on_abort,
        }
    }

    /// Registers `f` to run if this transaction does not commit (its closure
    /// fails, or applying fails). State kept in memory beside the store
    /// (caches the transaction updated as it went) uses it to start over.
    pub fn on_abort(&mut self, f: impl FnOnce() + Send + 'static) {
        self.on_abort.push(Box::new(f));
    }

    /// Applies the writes buffered so far as one atomic batch, while keeping
    /// the writer lock, so that a very large derived change (a full
    /// recompute of group memberships) does not hold all its writes in
    /// memory at once. The transaction is then no longer atomic as a whole:
    /// if it fails later, what was checkpointed stays. Use it only where each
    /// checkpointed part is valid on its own. Reads keep seeing everything.
    ///
    /// Does nothing in a rehearsal, which must not write, or while a
    /// savepoint is open, which must be able to undo what it buffered.
    pub fn checkpoint(&mut self) -> Result<(), StorageError> {
        if self.writes.is_empty() || self.rehearsal || self.undo.is_some() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.writes);
        self.backend
            .apply(&mut writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))?;
        for (ks, n) in self.taken.drain() {
            self.sequences.insert(ks, n);
        }
        self.checkpointed = true;
        Ok(())
    }

    /// Number of writes buffered since the start or the last checkpoint.
    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// The next key of an append-only keyspace whose keys are 8-byte
    /// big-endian sequence numbers (a log). Numbers grow in commit order and
    /// survive restarts (the last key is read once); an aborted transaction
    /// leaves no gap. This costs no extra read or write per append, which
    /// matters because every change appends an audit event.
    pub fn next_sequence(&mut self, ks: Keyspace) -> Result<u64, StorageError> {
        let last = match self.taken.get(ks.name()) {
            Some(n) => *n,
            None => match self.sequences.get(ks.name()) {
                Some(n) => *n,
                None => {
                    let lo = ks.encode(b"");
                    let hi = prefix_successor(&lo).map_or(Bound::Unbounded, Bound::Excluded);
                    let last = match self.backend.range(Bound::Included(lo), hi, true).next() {
                        Some(entry) => {
                            let (k, _) = entry?;
                            let rel = ks.strip(&k);
                            let bytes: [u8; 8] =
                                rel.try_into().map_err(|_| StorageError::Corrupt {
                                    keyspace: ks.name().to_string(),
                                    detail: "sequence key is not 8 bytes".into(),
                                })?;
                            u64::from_be_bytes(bytes)
                        }
                        None => 0,
                    };
                    self.sequences.insert(ks.name(), last);
                    last
                }
            },
        };
        self.taken.insert(ks.name(), last + 1);
        Ok(last + 1)
    }

    /// Says which keys (`keys`) and whole prefix ranges (`prefixes`) the
    /// transaction is about to read, so that the engine can fetch them
    /// together: on PostgreSQL, one round trip instead of one per read
    /// (uniqueness checks on a create). Reads then happen as usual; the
    /// answer is the same with or without this call.
    pub fn prefetch(
        &self,
        keys: &[(Keyspace, &[u8])],
        prefixes: &[(Keyspace, &[u8])],
    ) -> Result<(), StorageError> {
        let keys: Vec<Vec<u8>> = keys
            .iter()
            .map(|(ks, k)| ks.encode(k))
            .filter(|k| !self.writes.contains_key(k))
            .collect();
        let prefixes: Vec<Vec<u8>> = prefixes.iter().map(|(ks, p)| ks.encode(p)).collect();
        self.backend.prefetch(&keys, &prefixes)
    }

    /// The value of `key` as this transaction sees it.
    pub fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let full = ks.encode(key);
        match self.writes.get(&full) {
            Some(v) => Ok(v.clone()),
            None => self.backend.get(&full),
        }
    }

    /// Decodes a JSON value written with [`WriteTxn::put_json`].
    pub fn get_json<T: DeserializeOwned>(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.get(ks, key)?
            .map(|bytes| decode_json(ks, &bytes))
            .transpose()
    }

    /// True when `key` exists as this transaction sees it.
    pub fn contains(&self, ks: Keyspace, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.get(ks, key)?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, ks: Keyspace, key: &[u8], value: Vec<u8>) {
        self.buffer(ks.encode(key), Some(value));
    }

    /// Sets `key` to the JSON encoding of `value`.
    pub fn put_json<T: Serialize>(
        &mut self,
        ks: Keyspace,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageError::Corrupt {
            keyspace: ks.name().to_string(),
            detail: format!("cannot encode value: {e}"),
        })?;
        self.put(ks, key, bytes);
        Ok(())
    }

    /// Removes `key` (a no-op when it does not exist).
    pub fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.buffer(ks.encode(key), None);
    }

    /// All entries of `ks` under `prefix`, merged with this transaction's own
    /// writes. Meant for bounded sets (a user's devices), not whole tables;
    /// walk whole tables with [`WriteTxn::for_each_prefix`].
    pub fn scan_prefix(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        self.for_each_prefix(ks, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok::<_, StorageError>(())
        })?;
        Ok(out)
    }

    /// Calls `f` for every entry of `ks` under `prefix` in key order, as
    /// this transaction sees them (committed state merged with its own
    /// writes), without materializing the range: a walk over a whole table
    /// costs one entry of memory at a time.
    pub fn for_each_prefix<E: From<StorageError>>(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let lo = ks.encode(prefix);
        let hi = prefix_successor(&lo);
        let end = match &hi {
            Some(h) => Bound::Excluded(h.clone()),
            None => Bound::Unbounded,
        };
        let mut committed = self
            .backend
            .range(Bound::Included(lo.clone()), end.clone(), false)
            .peekable();
        let mut own = self.writes.range((Bound::Included(lo), end)).peekable();
        loop {
            let take_own = match (committed.peek(), own.peek()) {
                (None, None) => return Ok(()),
                (Some(Err(_)), _) => {
                    return Err(committed
                        .next()
                        .and_then(|r| r.err())
                        .expect("peeked an error")
                        .into());
                }
                (Some(Ok((ck, _))), Some((ok, _))) => match ck.as_slice().cmp(ok.as_slice()) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => {
                        // The transaction's write shadows the committed value.
                        committed.next();
                        true
                    }
                    std::cmp::Ordering::Greater => true,
                },
                (Some(Ok(_)), None) => false,
                (None, Some(_)) => true,
            };
            if take_own {
                let (k, v) = own.next().expect("peeked");
                if let Some(v) = v {
                    f(ks.strip(k), v)?;
                }
            } else {
                let (k, v) = committed.next().expect("peeked")?;
                f(ks.strip(&k), &v)?;
            }
        }
    }
}

/// Decodes a JSON record read by a scan, naming the keyspace when it is corrupt.
pub fn decode_json<T: DeserializeOwned>(ks: Keyspace, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        keyspace: ks.name().to_string(),
        detail: e.to_string(),
    })
}
