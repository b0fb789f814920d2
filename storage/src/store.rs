//! The store handle the domain holds: reads, write transactions, durability.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{Backend, EntryIter};
use crate::durability::{AfterFlush, Durability};
use crate::fjall_backend::FjallBackend;
use crate::keyspace::prefix_successor;
use crate::pending::Pending;
use crate::postgres_backend::PostgresBackend;
use crate::sled_backend::SledBackend;
use crate::txn::WriteTxn;
use crate::{Entry, Keyspace, StorageError};

/// Tuning for [`Store::open`]. The defaults suit a directory of a few hundred
/// thousand subjects on a small machine.
#[derive(Clone)]
pub struct OpenOptions {
    /// Bytes of page cache the engine may keep in memory.
    pub cache_bytes: u64,
    /// Which engine holds the data.
    pub engine: Engine,
    /// The database for [`Engine::Postgres`]: a `postgres://` URL.
    pub url: Option<String>,
    /// Connections [`Engine::Postgres`] opens for reads; writes use one more.
    pub connections: usize,
}

/// The URL without its password (see [`crate::redact_url`]).
impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("cache_bytes", &self.cache_bytes)
            .field("engine", &self.engine)
            .field("url", &self.url.as_deref().map(crate::redact_url))
            .field("connections", &self.connections)
            .finish()
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: 256 * 1024 * 1024,
            engine: Engine::default(),
            url: None,
            connections: 8,
        }
    }
}

/// The storage engines. A data directory is written by one embedded engine
/// and opened only by that engine; `cohort migrate` (or a backup and a
/// restore) moves a directory from one engine to another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// fjall, a log-structured merge tree: the default, because it meets the
    /// durability, memory and disk goals that sled 0.34 does not (see
    /// docs/PERFORMANCE.md, "Storage engines").
    #[default]
    Fjall,
    /// sled 0.34, the first engine; kept for existing data directories.
    Sled,
    /// PostgreSQL 15 or later, shared by several Cohort hosts: the engine
    /// for deployments that must survive the loss of one machine.
    Postgres,
}

impl Engine {
    /// The name used in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Fjall => "fjall",
            Engine::Sled => "sled",
            Engine::Postgres => "postgres",
        }
    }

    /// The engine whose files are in `dir`, if any.
    fn found_in(dir: &Path) -> Option<Engine> {
        if dir.join(FJALL_SUBDIR).exists() {
            Some(Engine::Fjall)
        } else if dir.join("conf").exists() && dir.join("db").exists() {
            Some(Engine::Sled)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fjall" => Ok(Engine::Fjall),
            "sled" => Ok(Engine::Sled),
            "postgres" => Ok(Engine::Postgres),
            other => Err(format!(
                "unknown storage engine {other:?} (fjall, sled or postgres)"
            )),
        }
    }
}

/// fjall keeps its files in a folder of its own inside the data directory,
/// beside the other files Cohort keeps there (the secret key, the compiled
/// plugin cache). sled's files sit in the data directory itself, where the
/// first versions put them.
const FJALL_SUBDIR: &str = "fjall";

/// What [`Store::live_size`] counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSize {
    /// Entries (keys) in every keyspace.
    pub entries: u64,
    /// Bytes of keys and values together.
    pub bytes: u64,
}

/// How long [`Store::open`] waits for a lock this process may still hold.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The last committed sequence number of each append-only keyspace.
pub(crate) type Sequences = HashMap<&'static str, u64>;

/// A cloneable handle to one open data directory.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    /// Serializes write transactions (and consistent exports). Held only for
    /// the in-memory part of a commit, never across the fsync. Guards the
    /// committed sequence numbers of append-only keyspaces.
    pub(crate) writer: Arc<Mutex<Sequences>>,
    durability: Arc<Durability>,
    /// Told when another process sharing the engine has written.
    foreign: Mutex<Vec<ForeignWrite>>,
    /// See [`Store::host`].
    host: u32,
}

/// See [`Store::on_foreign_write`].
type ForeignWrite = Arc<dyn Fn() + Send + Sync>;

impl Drop for Inner {
    fn drop(&mut self) {
        self.durability.stop();
    }
}

/// The result of a write transaction that has been applied but may not yet be
/// durable. Await [`Committed::durable`] before acknowledging the write.
#[must_use = "a write is not durable until `durable()` resolves"]
pub struct Committed<T> {
    value: T,
    seq: u64,
    store: Store,
}

impl<T> Committed<T> {
    /// Waits until the write is on stable storage and returns the
    /// transaction's value. Fails only if the flush fails, in which case the
    /// store refuses further writes.
    pub async fn durable(self) -> Result<T, StorageError> {
        if self.seq > 0 {
            self.store.inner.durability.wait(self.seq).await?;
        }
        Ok(self.value)
    }

    /// Replaces the value while keeping the durability promise, for callers
    /// that build their answer from what the transaction returned.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Committed<U> {
        Committed {
            value: f(self.value),
            seq: self.seq,
            store: self.store,
        }
    }

    /// For synchronous callers (start-up, command-line tools): flushes on the
    /// calling thread.
    pub fn durable_blocking(self) -> Result<T, StorageError> {
        if self.seq > 0 {
            self.store.inner.backend.flush()?;
        }
        Ok(self.value)
    }
}

impl Store {
    /// Opens (creating if needed) the embedded store in `dir`.
    /// With [`Engine::Postgres`] the data lives in the database named by
    /// `options.url`, and `dir` is not touched.
    pub fn open(dir: &Path, options: &OpenOptions) -> Result<Store, StorageError> {
        if options.engine == Engine::Postgres {
            let url = options.url.as_deref().ok_or_else(|| {
                StorageError::Engine("the postgres engine needs a postgres:// URL".into())
            })?;
            let backend = PostgresBackend::open(url, options.connections, options.cache_bytes)?;
            return Ok(Store::with_backend(Arc::new(backend)));
        }
        std::fs::create_dir_all(dir)?;
        if let Some(found) = Engine::found_in(dir)
            && found != options.engine
        {
            return Err(StorageError::WrongEngine {
                dir: dir.to_path_buf(),
                found: found.name(),
                configured: options.engine.name(),
            });
        }
        if options.engine == Engine::Fjall {
            let backend = FjallBackend::open(&dir.join(FJALL_SUBDIR), options.cache_bytes)?;
            return Ok(Store::with_backend(Arc::new(backend)));
        }
        // sled releases its file lock when its last background thread lets
        // go of the page cache, a moment after the previous handle in this
        // process was dropped (a restore followed by an open, say). A lock
        // held by another process is still reported, after this grace.
        let mut waited = std::time::Duration::ZERO;
        let step = std::time::Duration::from_millis(50);
        let sled = loop {
            match SledBackend::open(dir, options.cache_bytes) {
                Err(StorageError::Locked(_)) if waited < LOCK_GRACE => {
                    #[allow(clippy::disallowed_methods)] // Waiting for sled's own thread.
                    std::thread::sleep(step);
                    waited += step;
                }
                other => break other?,
            }
        };
        Ok(Store::with_backend(Arc::new(sled)))
    }

    pub(crate) fn with_backend(engine: Arc<dyn Backend>) -> Store {
        let backend: Arc<dyn Backend> = Arc::new(Pending::new(engine));
        let writer = Arc::new(Mutex::new(Sequences::new()));
        let after_flush: Option<AfterFlush> = backend.shared().then(|| {
            let writer = Arc::clone(&writer);
            let backend = Arc::clone(&backend);
            Box::new(move |durability: &Durability, flushed: u64| {
                // Under the writer lock no transaction is half-way, so
                // "nothing committed since the flush" means nothing pending.
                let _writer = writer.lock();
                if durability.last_committed() == flushed && backend.is_clean() {
                    release_lease(backend.as_ref());
                }
            }) as AfterFlush
        });
        let durability = Durability::start(Arc::clone(&backend), after_flush);
        let host = backend.host().unwrap_or_else(process_number);
        Store {
            inner: Arc::new(Inner {
                backend,
                writer,
                durability,
                foreign: Mutex::new(Vec::new()),
                host,
            }),
        }
    }

    /// The number naming this process among those that share the store,
    /// for as long as it lives. Long-running work (an import, a recompute)
    /// records it, so that the host that runs the scheduled work can tell a
    /// run whose process died, and close it, from one still going
    /// ([`Store::host_alive`]).
    pub fn host(&self) -> u32 {
        self.inner.host
    }

    /// Whether the process that was `host` is still alive. On PostgreSQL
    /// each host holds a lock named by its number for as long as its
    /// session lives; on the embedded engines only this process opens the
    /// data, so any other number is a process that stopped.
    pub fn host_alive(&self, host: u32) -> Result<bool, StorageError> {
        if host == self.inner.host {
            return Ok(true);
        }
        self.inner.backend.host_alive(host)
    }

    /// Registers `f` to be called when another process sharing the engine
    /// (another host on PostgreSQL) has written: whoever keeps a copy of
    /// stored data in memory marks it stale. It is called with the store's
    /// writer lock held, before the next write transaction runs, and from
    /// [`Store::poll_foreign_writes`]; so it must only set a flag, never
    /// take a lock or touch the store.
    pub fn on_foreign_write(&self, f: impl Fn() + Send + Sync + 'static) {
        self.inner.foreign.lock().push(Arc::new(f));
    }

    /// Asks the engine whether another process wrote since the last look,
    /// and tells the [`Store::on_foreign_write`] listeners if so. Always
    /// false on the embedded engines, which only this process writes.
    pub fn poll_foreign_writes(&self) -> Result<bool, StorageError> {
        if !self.inner.backend.shared() || !self.inner.backend.foreign_writes()? {
            return Ok(false);
        }
        self.tell_foreign_write();
        Ok(true)
    }

    /// True when this process should run the scheduled work named `role`
    /// (import schedules, exemption expiry, the daily recompute), which
    /// must run on one host at a time. On PostgreSQL, the first host to ask
    /// wins and keeps the role until it dies, when the next host to ask
    /// takes it over; on the embedded engines, always true.
    pub fn lead(&self, role: &str) -> Result<bool, StorageError> {
        // FNV-1a: a stable number for the role across hosts and builds.
        let mut h: u32 = 0x811c_9dc5;
        for b in role.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        self.inner.backend.lead(h as i32)
    }

    /// Takes one event from a rate bucket that every host sharing the
    /// engine counts against (sign-in limits), with the GCRA arithmetic of
    /// an in-memory bucket: `interval` microseconds between events at the
    /// steady rate, `tolerance` the burst. `None` on the embedded engines,
    /// where the caller's in-memory bucket is the whole count. Buckets are
    /// not durable (PostgreSQL: an UNLOGGED table): a limit, not a record.
    pub fn take_rate(
        &self,
        key: &[u8],
        now: i64,
        interval: i64,
        tolerance: i64,
    ) -> Result<Option<crate::RateDecision>, StorageError> {
        self.inner.backend.take_rate(key, now, interval, tolerance)
    }

    /// Forgets shared rate buckets whose time has passed; returns how many.
    pub fn sweep_rates(&self, now: i64) -> Result<u64, StorageError> {
        self.inner.backend.sweep_rates(now)
    }

    /// True when other processes may write to the same data (PostgreSQL).
    /// Each read is then a round trip to the server, so naming reads ahead
    /// ([`Store::prefetch`]) pays for the work of naming them.
    pub fn is_shared(&self) -> bool {
        self.inner.backend.shared()
    }

    fn tell_foreign_write(&self) {
        let listeners: Vec<ForeignWrite> = self.inner.foreign.lock().clone();
        for f in listeners {
            f();
        }
    }

    /// Takes a shared engine's writer lease for a transaction (or an
    /// export), with the writer lock held. When another host wrote since
    /// this one last held it, the cached sequence numbers are dropped and
    /// the in-memory copies of stored data are marked stale, before
    /// anything reads them.
    pub(crate) fn take_lease(&self, sequences: &mut Sequences) -> Result<(), StorageError> {
        if self.inner.backend.shared() && self.inner.backend.acquire_writer()? {
            sequences.clear();
            self.tell_foreign_write();
        }
        Ok(())
    }

    /// Gives a shared engine's writer lease back when nothing written under
    /// it is pending. Call with the writer lock held.
    pub(crate) fn release_lease_if_idle(&self) {
        if self.inner.backend.shared()
            && self.inner.durability.last_committed() == self.inner.durability.last_flushed()
            && self.inner.backend.is_clean()
        {
            release_lease(self.inner.backend.as_ref());
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Reads `keys` and the whole ranges under `prefixes` ahead of a write
    /// transaction that will, off the writer lock: on PostgreSQL, while
    /// this host holds the writer lease, the answers are kept in memory
    /// (exactly: see `lease_cache`), and the transaction finds them there
    /// instead of making each read a round trip with the lock held. A hint:
    /// it does nothing on the embedded engines or without the lease, and
    /// no answer depends on it.
    pub fn prefetch(
        &self,
        keys: &[(Keyspace, &[u8])],
        prefixes: &[(Keyspace, &[u8])],
    ) -> Result<(), StorageError> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|(ks, k)| ks.encode(k)).collect();
        let prefixes: Vec<Vec<u8>> = prefixes.iter().map(|(ks, p)| ks.encode(p)).collect();
        self.inner.backend.prefetch(&keys, &prefixes)
    }

    /// Reads one key's current value.
    pub fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.backend.get(&ks.encode(key))
    }

    /// Reads and decodes a JSON value written with [`WriteTxn::put_json`].
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        self.get(ks, key)?
            .map(|bytes| crate::txn::decode_json(ks, &bytes))
            .transpose()
    }

    /// Keys of `ks` that start with `prefix`, in key order (or reversed),
    /// strictly after `after` in the direction of travel when given. `after`
    /// is how cursor pagination resumes; it is a full key, not a suffix.
    pub fn scan(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<Entry, StorageError>> + Send + '_ {
        let (start, end) = scan_bounds(ks, prefix, after, reverse);
        let iter: EntryIter<'_> = self.inner.backend.range(start, end, reverse);
        iter.map(move |r| r.map(|(k, v)| (ks.strip(&k).to_vec(), v)))
    }

    /// True when the store holds nothing at all, in any keyspace.
    pub fn is_empty(&self) -> Result<bool, StorageError> {
        Ok(self
            .inner
            .backend
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .next()
            .transpose()?
            .is_none())
    }

    /// True when `ks` holds no key.
    pub fn keyspace_is_empty(&self, ks: Keyspace) -> Result<bool, StorageError> {
        Ok(self
            .scan(ks, b"", None, false)
            .next()
            .transpose()?
            .is_none())
    }

    /// Runs `f` as a serializable write transaction. When `f` returns `Ok`,
    /// its writes are applied atomically and become visible to readers; await
    /// the returned [`Committed::durable`] before telling anyone. When `f`
    /// returns `Err`, nothing is written.
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, E>,
    ) -> Result<Committed<T>, E>
    where
        E: From<StorageError>,
    {
        let mut sequences = self.inner.writer.lock();
        if let Some(msg) = self.inner.durability.failure() {
            // Checked under the lock: the flusher gives the lease back
            // without it, so a writer that took the lease again since must
            // not keep it, for no flush will come to release it.
            release_lease(self.inner.backend.as_ref());
            return Err(StorageError::Poisoned(msg.to_string()).into());
        }
        self.take_lease(&mut sequences)?;
        let mut txn = WriteTxn::new(self.inner.backend.as_ref(), &mut sequences);
        let value = match f(&mut txn) {
            Ok(v) => v,
            Err(e) => {
                let finished = txn.finish();
                if finished.checkpointed {
                    // What the checkpoints applied stays (see
                    // `WriteTxn::checkpoint`); it must reach the engine
                    // like any commit, and hold the lease until it has.
                    let _ = self.inner.durability.committed();
                } else {
                    // Nothing to flush, so no flush gives the lease back:
                    // a refused write on an idle host would otherwise keep
                    // every other host's writers waiting.
                    self.release_lease_if_idle();
                }
                for abort in finished.on_abort {
                    abort();
                }
                return Err(e);
            }
        };
        let finished = txn.finish();
        let seq = if finished.writes.is_empty() && !finished.checkpointed {
            // Read-only: no flush will come to give the lease back.
            self.release_lease_if_idle();
            0
        } else {
            if !finished.writes.is_empty()
                && let Err(e) = self.inner.backend.apply_all(&finished.writes)
            {
                for abort in finished.on_abort {
                    abort();
                }
                return Err(e.into());
            }
            sequences.extend(finished.taken);
            let seq = self.inner.durability.committed();
            if self.inner.durability.failure().is_some() {
                // The flusher stopped during this transaction: see above.
                release_lease(self.inner.backend.as_ref());
            }
            seq
        };
        Ok(Committed {
            value,
            seq,
            store: self.clone(),
        })
    }

    /// Runs `f` in a transaction that never commits: it reads the store
    /// and its own writes like any other, and what it wrote is dropped at
    /// the end, after which its `on_abort` callbacks run. The dry run of an
    /// import goes through the same write path as the real one this way,
    /// and finds the same errors. It takes neither the writer lock nor, on
    /// a shared engine, the lease, so a long rehearsal does not hold other
    /// writers back; it sees their commits as they land.
    pub fn rehearse<T, E>(&self, f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        // Numbering of its own, read from the engine as it goes (no lock to
        // copy the writers'): numbers it takes are never used.
        let mut sequences = Sequences::new();
        let mut txn = WriteTxn::rehearsal(self.inner.backend.as_ref(), &mut sequences);
        let result = f(&mut txn);
        for abort in txn.finish().on_abort {
            abort();
        }
        result
    }

    /// Flushes everything applied so far, on the calling thread. Used at
    /// shutdown; request handlers use [`Committed::durable`] instead.
    pub fn flush(&self) -> Result<(), StorageError> {
        let _ = self.inner.durability.last_committed();
        self.inner.backend.flush()
    }

    /// How much data the store holds now: entries, and bytes of their keys
    /// and values. This is the live data that the engine's disk use is
    /// compared against (space amplification); it walks everything, so it
    /// is for benchmarks and diagnostics, not request paths.
    pub fn live_size(&self) -> Result<LiveSize, StorageError> {
        let mut size = LiveSize::default();
        for entry in self
            .inner
            .backend
            .range(Bound::Unbounded, Bound::Unbounded, false)
        {
            let (k, v) = entry?;
            size.entries += 1;
            size.bytes += (k.len() + v.len()) as u64;
        }
        Ok(size)
    }

    /// `Some(reason)` once a flush has failed and writes are refused.
    pub fn failure(&self) -> Option<String> {
        self.inner.durability.failure().map(|s| s.to_string())
    }
}

/// Gives a shared engine's writer lease back. A failure is logged, not
/// returned: the lease is a session lock that ends with its connection, and
/// a lost lease is caught by the engine before it could lose a write.
fn release_lease(backend: &dyn Backend) {
    if let Err(e) = backend.release_writer() {
        tracing::warn!(error = %e, "giving back the writer lease failed");
    }
}

fn scan_bounds(
    ks: Keyspace,
    prefix: &[u8],
    after: Option<&[u8]>,
    reverse: bool,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lo = ks.encode(prefix);
    let hi = prefix_successor(&lo);
    let mut start = Bound::Included(lo.clone());
    let mut end = match hi.clone() {
        Some(h) => Bound::Excluded(h),
        None => Bound::Unbounded,
    };
    if let Some(after) = after {
        let a = ks.encode(after);
        if reverse {
            if hi.as_ref().is_none_or(|h| &a < h) {
                end = Bound::Excluded(a);
            }
        } else if a >= lo {
            start = Bound::Excluded(a);
        }
    }
    (start, end)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

/// A number for this process that an earlier process on the same data is
/// unlikely to have had (one in two billion): the hasher's per-process seed
/// mixed with the time of day. 31 bits, so that it is a non-negative
/// 32-bit integer wherever it is shown.
pub(crate) fn process_number() -> u32 {
    use std::hash::BuildHasher;
    // Only a source of variety between processes, not a time anything uses.
    #[allow(clippy::disallowed_methods)]
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = foldhash::fast::RandomState::default().hash_one(nanos);
    ((mixed ^ (mixed >> 32)) as u32) & 0x7fff_ffff
}
