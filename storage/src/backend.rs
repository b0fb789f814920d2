//! The contract an engine fulfils. It is deliberately small, so that adding
//! an engine means implementing four methods; locking, overlays, group commit,
//! migrations and backups are built once on top of it in [`crate::Store`].

use std::ops::Bound;

use crate::{Entry, StorageError};

/// An iterator over engine keys and values.
pub(crate) type EntryIter<'a> = Box<dyn Iterator<Item = Result<Entry, StorageError>> + Send + 'a>;

/// One write in an atomic batch: `None` deletes the key.
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

/// An ordered byte-key store with atomic batches and an explicit flush.
pub(crate) trait Backend: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Keys in `[start, end)` bounds order, or reversed.
    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> EntryIter<'_>;

    /// Applies all writes or none, also across a crash. Visible to readers
    /// at once; durable only after [`Backend::flush`]. Borrowed, because the
    /// engines copy keys and values into their own buffers anyway.
    fn apply(
        &self,
        writes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
    ) -> Result<(), StorageError>;

    /// [`Backend::apply`] for a list of owned writes.
    fn apply_all(&self, writes: &[Write]) -> Result<(), StorageError> {
        self.apply(&mut writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
    }

    /// Reads `keys` and the whole ranges under `prefixes` ahead of the
    /// transaction that is about to ask for them one by one, so that an
    /// engine whose every read is a round trip (PostgreSQL) makes one. The
    /// embedded engines read from memory and ignore it.
    fn prefetch(&self, _keys: &[Vec<u8>], _prefixes: &[Vec<u8>]) -> Result<(), StorageError> {
        Ok(())
    }

    /// Makes every applied batch durable (fsync).
    fn flush(&self) -> Result<(), StorageError>;

    /// True when other processes write to the same data (PostgreSQL), so
    /// that writers must take the lease below. The embedded engines are
    /// opened by one process only.
    fn shared(&self) -> bool {
        false
    }

    /// Takes the writer lease that serializes write transactions across
    /// processes, waiting for it if another holds it. True when another
    /// process may have written since this one last held it, so that state
    /// cached from earlier transactions (sequence numbers) must be re-read.
    fn acquire_writer(&self) -> Result<bool, StorageError> {
        Ok(false)
    }

    /// True when this process has held the lease long enough that it should
    /// let others in once its pending writes are out.
    fn lease_due(&self) -> bool {
        false
    }

    /// Gives the lease back. Only called once nothing written under it is
    /// still pending.
    fn release_writer(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// True when no write applied here is waiting for the engine (see
    /// `Pending`); the writer lease may only be given back then.
    fn is_clean(&self) -> bool {
        true
    }

    /// True when this process leads `role`: runs the scheduled work of that
    /// name, which must run on one host only. The first host to ask wins
    /// and keeps it until it dies; then the next to ask wins. The embedded
    /// engines have one process, which always leads.
    fn lead(&self, _role: i32) -> Result<bool, StorageError> {
        Ok(true)
    }

    /// The number this process holds among the processes sharing the
    /// engine, for as long as it lives: work it starts is marked with it, so
    /// that another process can tell whether that work still has a runner
    /// ([`Backend::host_alive`]). `None` on the embedded engines, where the
    /// store picks a number of its own.
    fn host(&self) -> Option<u32> {
        None
    }

    /// Whether the process that holds `host` (another one's [`Backend::host`])
    /// is alive. On the embedded engines only this process opens the data,
    /// so every other number is a process that is gone.
    fn host_alive(&self, _host: u32) -> Result<bool, StorageError> {
        Ok(false)
    }

    /// Takes one event from the rate bucket `key` shared by every process
    /// on the engine (GCRA: `interval` between events at the steady rate,
    /// `tolerance` the burst, all in microseconds). `None` when the engine
    /// is not shared, and the caller's own bucket is the only one.
    fn take_rate(
        &self,
        _key: &[u8],
        _now: i64,
        _interval: i64,
        _tolerance: i64,
    ) -> Result<Option<crate::RateDecision>, StorageError> {
        Ok(None)
    }

    /// Forgets rate buckets whose time has passed (they are as good as new).
    fn sweep_rates(&self, _now: i64) -> Result<u64, StorageError> {
        Ok(0)
    }

    /// True when another process has written since this one last looked
    /// (its own writes do not count).
    fn foreign_writes(&self) -> Result<bool, StorageError> {
        Ok(false)
    }
}
