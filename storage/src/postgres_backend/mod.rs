//! The shared engine: PostgreSQL, so that several Cohort hosts can serve one
//! directory (issue #21), the way Keycloak runs over a shared SQL database.
//!
//! The whole store is one table of ordered byte keys, `cohort_kv`, because
//! everything above [`Backend`] (keyspaces, transactions, migrations,
//! backups) is built once on an ordered key-value contract. `bytea` compares
//! bytewise, which is the order every engine gives.
//!
//! Three decisions carry the rest:
//! - **Durability is PostgreSQL's commit.** Every batch is one transaction,
//!   committed with `synchronous_commit = on`, so [`Backend::flush`] has
//!   nothing left to do. The store's group commit still batches concurrent
//!   writers into one transaction, which is what keeps creates cheap.
//! - **Writers across hosts take turns under a lease**, a session-level
//!   advisory lock held by the writer connection (see [`LEASE_KEY`]). A host
//!   takes it before a write transaction reads, keeps it while its writes are
//!   pending, and gives it back once they are committed or after
//!   [`LEASE_SLICE`] when it is busy, so another host's writers are not
//!   starved. Uniqueness checks and the writes they guard therefore never
//!   interleave with another host's, exactly as on one host.
//! - **A lost lease can never lose an update.** Each batch also moves the
//!   `generation` counter on, but only from the value this host last saw. If
//!   the lease connection broke and another host wrote meanwhile, the batch
//!   fails instead of overwriting what it did not read.
//!
//! Connections use TLS when the URL's `sslmode` asks for it (see [`tls`]).
//!
//! The `postgres` client blocks on a runtime of its own, which must not run
//! on an async worker. Connections therefore live on threads of their own
//! ([`Pool`]); callers hand them jobs and wait for the answer.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::StorageError;
use crate::backend::{Backend, EntryIter};
use crate::lease_cache::{LeaseCache, Ticket};

mod pool;
mod reads;

use pool::{Conn, Pool, tls};
use reads::{Pages, prefetch_on, prefix_of};

/// The advisory lock that serializes writers across hosts. Any fixed number
/// works; this one spells "cohort" so that it is recognisable in `pg_locks`.
const LEASE_KEY: i64 = 0x636f_686f_7274;

/// Taken while the schema is created or checked, so that two hosts starting
/// at once do not race on `CREATE TABLE`.
const SCHEMA_KEY: i64 = LEASE_KEY + 1;

/// The class of the leadership locks (see [`Backend::lead`]): the first half
/// of a two-part advisory lock key, the role being the second.
const LEADER_CLASS: i32 = 0x636f_6872;

/// The class of the presence locks (see [`Backend::host`]): each host holds
/// (`HOST_CLASS`, its number) on its leader connection while it lives.
const HOST_CLASS: i32 = LEADER_CLASS + 1;

/// The layout of the tables below. Bumped when they change; a database with
/// a newer layout is refused rather than misread.
const LAYOUT: i32 = 1;

/// How long a busy host keeps the writer lease before it lets other hosts
/// in. Long enough that a burst of writes shares few hand-overs, short enough
/// that a writer on another host waits well under a request timeout.
const LEASE_SLICE: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest a writer waits for the lease (see `Conn::client`).
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Rows fetched per round trip while scanning.
const PAGE: i64 = 512;

/// Rows per statement when a batch is written; bounds one message's size.
const CHUNK: usize = 4096;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS cohort_kv (
        k bytea PRIMARY KEY,
        v bytea NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cohort_meta (
        id int PRIMARY KEY CHECK (id = 1),
        layout int NOT NULL,
        generation bigint NOT NULL
    );
    ALTER TABLE cohort_meta ADD COLUMN IF NOT EXISTS stamp bigint NOT NULL DEFAULT 0;
    CREATE UNLOGGED TABLE IF NOT EXISTS cohort_rate (
        k bytea PRIMARY KEY,
        tat bigint NOT NULL
    );
";

/// Whether this host holds the writer lease, and what it knows of the
/// database's write history.
#[derive(Default)]
struct Lease {
    held_since: Option<std::time::Instant>,
    /// The `generation` this host last saw: after its own batch, or when it
    /// took the lease.
    ///
    /// With the `stamp` the batch that reached it wrote: a database restored
    /// to an earlier point, or failed over to a replica that missed the
    /// last commits, can reach the same generation again by other writes,
    /// and only the stamp tells the two histories apart.
    seen: Option<(i64, i64)>,
    /// The writer connection (`Conn::connects`) the lease was taken on: a
    /// reconnect loses the session lock, and with it the lease.
    on_connection: u64,
    /// The `generation` last reported by [`Backend::foreign_writes`] (or
    /// reached by this host's own batch), so each foreign write is
    /// reported once.
    observed: Option<i64>,
}

pub(crate) struct PostgresBackend {
    readers: Arc<Pool>,
    /// One connection: the lease is a session lock, and batches are written
    /// on the session that holds it.
    writer: Pool,
    lease: Mutex<Lease>,
    /// One connection holding the leadership locks this host won, for as
    /// long as it lives; a host that dies lets go of them with it.
    leader: Pool,
    /// Roles led, with the connection (`Conn::connects`) that won each.
    leading: Arc<Mutex<HashMap<i32, u64>>>,
    /// This host's number, and the leader connection (`Conn::connects`)
    /// that holds its presence lock.
    /// Whether taking it back failed and was reported.
    presence: Arc<Mutex<(u32, u64, bool)>>,
    /// Reads answered from memory while the lease makes them exact (see
    /// [`crate::lease_cache`]).
    cache: Arc<Mutex<LeaseCache>>,
    /// Seeded per process: each batch's stamp (see `Lease::seen`) is a
    /// number no other host's batch has.
    stamps: foldhash::fast::RandomState,
    batches: AtomicU64,
}

impl PostgresBackend {
    /// Connects, then creates the tables or checks that their layout is one
    /// this build reads.
    pub(crate) fn open(
        url: &str,
        connections: usize,
        cache_bytes: u64,
    ) -> Result<Self, StorageError> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StorageError::Engine(format!("postgres: the storage URL is not usable: {e}"))
        })?;
        // A database that went away fails requests within seconds instead
        // of when the kernel gives up on the connection.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.keepalives_idle(std::time::Duration::from_secs(30));
        let tls = tls()?;
        let writer = Pool::start(&config, &tls, 1, "writer")?;
        writer.run(false, |conn| {
            let client = conn.client()?;
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_KEY])?;
            tx.batch_execute(SCHEMA)?;
            tx.execute(
                "INSERT INTO cohort_meta (id, layout, generation) VALUES (1, $1, 0)
                 ON CONFLICT (id) DO NOTHING",
                &[&LAYOUT],
            )?;
            tx.commit()
        })?;
        let (layout, generation): (i32, i64) = writer.run(true, |conn| {
            conn.client()?
                .query_one(
                    "SELECT layout, generation FROM cohort_meta WHERE id = 1",
                    &[],
                )
                .map(|row| (row.get(0), row.get(1)))
        })?;
        if layout > LAYOUT {
            return Err(StorageError::Engine(format!(
                "postgres: the database has table layout {layout}, but this build reads at most {LAYOUT}; upgrade Cohort"
            )));
        }
        let readers = Arc::new(Pool::start(&config, &tls, connections.max(1), "reader")?);
        let leader = Pool::start(&config, &tls, 1, "leader")?;
        let presence = leader.run(true, |conn| {
            // A number no live host holds: the lock says which are taken.
            for _ in 0..64 {
                let number = crate::store::process_number();
                conn.client()?;
                let connects = conn.connects;
                if take_presence(conn, number)? {
                    return Ok(Some((number, connects, false)));
                }
            }
            Ok(None)
        })?;
        let presence = presence.ok_or_else(|| {
            StorageError::Engine("postgres: no free host number after 64 tries".into())
        })?;
        Ok(PostgresBackend {
            readers,
            writer,
            leader,
            leading: Arc::default(),
            presence: Arc::new(Mutex::new(presence)),
            // A quarter of the engine cache: PostgreSQL keeps its own pages,
            // and this holds only what the lease makes exact.
            cache: Arc::new(Mutex::new(LeaseCache::new(cache_bytes / 4))),
            stamps: foldhash::fast::RandomState::default(),
            batches: AtomicU64::new(0),
            // What the domain loads at start-up is the database as of now.
            lease: Mutex::new(Lease {
                observed: Some(generation),
                ..Lease::default()
            }),
        })
    }
}

impl Backend for PostgresBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let ticket = {
            let mut cache = self.cache.lock();
            if let Some(known) = cache.get(key) {
                return Ok(known);
            }
            cache.ticket()
        };
        let k = key.to_vec();
        let value = self.readers.run(true, move |conn| {
            let s = conn.statement("SELECT v FROM cohort_kv WHERE k = $1")?;
            Ok(conn
                .client()?
                .query_opt(&s, &[&k])?
                .map(|row| row.get::<_, Vec<u8>>(0)))
        })?;
        self.cache.lock().put(ticket, key.to_vec(), value.clone());
        Ok(value)
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> EntryIter<'_> {
        let mut keep = None;
        if let Some(prefix) = prefix_of(&start, &end) {
            let mut cache = self.cache.lock();
            if let Some(entries) = cache.range(prefix) {
                let entries: Vec<crate::Entry> = if reverse {
                    entries.iter().rev().cloned().collect()
                } else {
                    entries.to_vec()
                };
                return Box::new(entries.into_iter().map(Ok));
            }
            keep = Some((cache.ticket(), prefix.to_vec()));
        }
        Box::new(Pages {
            pool: Arc::clone(&self.readers),
            start,
            end,
            reverse,
            buffered: VecDeque::new(),
            done: false,
            keep: keep.map(|(ticket, prefix)| (Arc::clone(&self.cache), ticket, prefix)),
        })
    }

    fn prefetch(&self, keys: &[Vec<u8>], prefixes: &[Vec<u8>]) -> Result<(), StorageError> {
        let ticket = {
            let mut cache = self.cache.lock();
            let ticket = cache.ticket();
            if ticket == Ticket::STALE {
                // Nothing read now could be kept.
                return Ok(());
            }
            let keys: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| cache.get(k).is_none())
                .cloned()
                .collect();
            let prefixes: Vec<Vec<u8>> = prefixes
                .iter()
                .filter(|p| crate::keyspace::prefix_successor(p).is_some())
                .filter(|p| cache.range(p).is_none())
                .cloned()
                .collect();
            if keys.is_empty() && prefixes.is_empty() {
                return Ok(());
            }
            (ticket, keys, prefixes)
        };
        let (ticket, keys, prefixes) = ticket;
        let (points, ranges) = self.readers.run(true, move |conn| {
            prefetch_on(conn, keys.clone(), prefixes.clone())
        })?;
        let mut cache = self.cache.lock();
        for (k, v) in points {
            cache.put(ticket, k, v);
        }
        for (p, entries) in ranges {
            cache.put_range(ticket, p, entries);
        }
        Ok(())
    }

    fn apply(
        &self,
        writes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
    ) -> Result<(), StorageError> {
        // Later writes to a key win, as in the embedded engines.
        let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        for (k, v) in writes {
            last.insert(k.to_vec(), v.map(<[u8]>::to_vec));
        }
        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut deletes: Vec<Vec<u8>> = Vec::new();
        for (k, v) in last {
            match v {
                Some(v) => puts.push((k, v)),
                None => deletes.push(k),
            }
        }
        let stamp = self
            .stamps
            .hash_one(self.batches.fetch_add(1, Ordering::Relaxed)) as i64;
        let ((seen, seen_stamp), on_connection) = {
            let lease = self.lease.lock();
            match (lease.held_since, lease.seen) {
                (Some(_), Some(seen)) => (seen, lease.on_connection),
                // Fail closed: a batch written without the lease could
                // overwrite what another host wrote.
                _ => {
                    return Err(StorageError::Engine(
                        "postgres: a batch reached the database without the writer lease; not written"
                            .into(),
                    ));
                }
            }
        };
        let puts = Arc::new(puts);
        let deletes = Arc::new(deletes);
        let (p, d) = (Arc::clone(&puts), Arc::clone(&deletes));
        let written = self.writer.run(false, move |conn| {
            let written = write_batch(
                conn,
                on_connection,
                (seen, seen_stamp, stamp),
                &puts,
                &deletes,
            );
            if matches!(written, Ok(None)) && conn.connects == on_connection {
                // The fence failed on the session that holds the lock:
                // end the session, and the lock with it, rather than keep
                // a lock this host no longer believes it holds.
                conn.client = None;
            }
            written
        });
        fn write_batch(
            conn: &mut Conn,
            on_connection: u64,
            (seen, seen_stamp, stamp): (i64, i64, i64),
            puts: &[(Vec<u8>, Vec<u8>)],
            deletes: &[Vec<u8>],
        ) -> Result<Option<i64>, postgres::Error> {
            conn.client()?;
            if conn.connects != on_connection {
                // The session that held the lease is gone, and the lock
                // with it.
                return Ok(None);
            }
            if deletes.len() <= CHUNK && puts.len() <= CHUNK {
                // One statement, committed on its own: one round trip,
                // where BEGIN, the fence, the writes and COMMIT took four.
                // The writes see the fence's row only when it moved.
                let whole = conn.statement(
                    "WITH bump AS (
                         UPDATE cohort_meta SET generation = generation + 1, stamp = $6
                         WHERE id = 1 AND generation = $1 AND stamp = $5
                         RETURNING generation),
                     gone AS (
                         DELETE FROM cohort_kv
                         WHERE k = ANY($2::bytea[]) AND EXISTS (SELECT 1 FROM bump)),
                     put AS (
                         INSERT INTO cohort_kv (k, v)
                         SELECT w.k, w.v FROM unnest($3::bytea[], $4::bytea[]) AS w (k, v)
                         WHERE EXISTS (SELECT 1 FROM bump)
                         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v)
                     SELECT generation FROM bump",
                )?;
                let gone: Vec<&[u8]> = deletes.iter().map(Vec::as_slice).collect();
                let keys: Vec<&[u8]> = puts.iter().map(|(k, _)| k.as_slice()).collect();
                let values: Vec<&[u8]> = puts.iter().map(|(_, v)| v.as_slice()).collect();
                return Ok(conn
                    .client()?
                    .query_opt(&whole, &[&seen, &gone, &keys, &values, &seen_stamp, &stamp])?
                    .map(|row| row.get::<_, i64>(0)));
            }
            let upsert = conn.statement(
                "INSERT INTO cohort_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            )?;
            let delete = conn.statement("DELETE FROM cohort_kv WHERE k = ANY($1::bytea[])")?;
            let bump = conn.statement(
                "UPDATE cohort_meta SET generation = generation + 1, stamp = $3
                 WHERE id = 1 AND generation = $1 AND stamp = $2
                 RETURNING generation",
            )?;
            let mut tx = conn.client()?.transaction()?;
            let Some(row) = tx.query_opt(&bump, &[&seen, &seen_stamp, &stamp])? else {
                // Rolled back when `tx` drops: nothing of the batch lands.
                return Ok(None);
            };
            for chunk in deletes.chunks(CHUNK) {
                let keys: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                tx.execute(&delete, &[&keys])?;
            }
            for chunk in puts.chunks(CHUNK) {
                let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
                let values: Vec<&[u8]> = chunk.iter().map(|(_, v)| v.as_slice()).collect();
                tx.execute(&upsert, &[&keys, &values])?;
            }
            tx.commit()?;
            Ok(Some(row.get::<_, i64>(0)))
        }
        let generation = match written {
            Ok(g) => g,
            Err(e) => {
                // Committed or not, nobody can tell: what is kept of the
                // written keys may be wrong either way, and the session may
                // be gone with the lock. Nothing is answered from memory
                // until the lease is taken again.
                self.cache.lock().lease_lost();
                return Err(e);
            }
        };
        match generation {
            Some(g) => {
                #[allow(clippy::disallowed_methods)] // A freshness bound, not domain time.
                let now = std::time::Instant::now();
                self.cache.lock().applied(
                    now,
                    d.iter()
                        .map(|k| (k.as_slice(), None))
                        .chain(p.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice())))),
                );
                let mut lease = self.lease.lock();
                // Another host's write since the last look shows up as a
                // gap before our own number.
                if lease.observed == Some(g - 1) {
                    lease.observed = Some(g);
                }
                lease.seen = Some((g, stamp));
                Ok(())
            }
            None => {
                self.lease.lock().held_since = None;
                self.cache.lock().lease_lost();
                Err(StorageError::Engine(
                    "postgres: this host lost the writer lease (its connection broke) and another \
                     host may have written since; the batch was not written"
                        .into(),
                ))
            }
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        // Every batch was committed by `apply`, synchronously.
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    fn acquire_writer(&self) -> Result<bool, StorageError> {
        if self.lease.lock().held_since.is_some() {
            return Ok(false);
        }
        let (generation, on_connection): (Option<(i64, i64)>, u64) =
            self.writer.run(false, |conn| {
                conn.client()?;
                let connects = conn.connects;
                // One round trip for both. In read committed each statement
                // takes its own snapshot, so the second reads the generation as
                // of after the lock was granted: what the last holder wrote.
                let read = conn.client()?.simple_query(&format!(
                    "SELECT pg_advisory_lock({LEASE_KEY}); \
                 SELECT generation, stamp FROM cohort_meta WHERE id = 1"
                ));
                let seen = read.as_ref().ok().and_then(|messages| {
                    messages.iter().find_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(row) => {
                            let number = |c: &str| {
                                row.try_get(c)
                                    .ok()
                                    .flatten()
                                    .and_then(|g: &str| g.parse::<i64>().ok())
                            };
                            Some((number("generation")?, number("stamp")?))
                        }
                        _ => None,
                    })
                });
                if seen.is_none() {
                    // The lock may be held (a session lock outlives the failed
                    // statement after it): end the session to let go of it.
                    conn.client = None;
                }
                read?;
                Ok((seen, connects))
            })?;
        let Some(generation) = generation else {
            return Err(StorageError::Engine(
                "postgres: cohort_meta has no generation; the table was changed by hand".into(),
            ));
        };
        let mut lease = self.lease.lock();
        #[allow(clippy::disallowed_methods)] // A scheduling bound, not domain time.
        let now = std::time::Instant::now();
        lease.held_since = Some(now);
        lease.on_connection = on_connection;
        let moved = lease.seen != Some(generation);
        lease.seen = Some(generation);
        self.cache.lock().lease_taken(moved, now);
        Ok(moved)
    }

    fn lease_due(&self) -> bool {
        self.lease
            .lock()
            .held_since
            .is_some_and(|since| since.elapsed() >= LEASE_SLICE)
    }

    fn lead(&self, role: i32) -> Result<bool, StorageError> {
        let leading = Arc::clone(&self.leading);
        let presence = Arc::clone(&self.presence);
        self.leader.run(true, move |conn| {
            let won_on = leading.lock().get(&role).copied();
            // Connects first if needed, so that `connects` names the
            // connection the lock would be on.
            conn.client()?;
            let connects = conn.connects;
            // Every host asks every few seconds, so a lost session's
            // presence comes back that soon.
            let (number, held_on, warned) = *presence.lock();
            if held_on != connects {
                if take_presence(conn, number)? {
                    *presence.lock() = (number, connects, false);
                } else if !warned {
                    // Once: until the server ends the old session (its
                    // keepalives), this repeats every tick.
                    presence.lock().2 = true;
                    tracing::warn!(
                        host = number,
                        "this host's number is still held, by its own old session or by \
                         another host, so other hosts may count it as stopped and close its runs"
                    );
                }
            }
            let client = conn.client()?;
            let client = match won_on {
                // Still the connection that won: the lock is held as long
                // as it lives, which this round trip checks.
                Some(c) if c == connects => {
                    client.simple_query("SELECT 1")?;
                    return Ok(true);
                }
                _ => client,
            };
            let won: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&LEADER_CLASS, &role],
                )?
                .get(0);
            if won {
                leading.lock().insert(role, connects);
            } else {
                leading.lock().remove(&role);
            }
            Ok(won)
        })
    }

    fn host(&self) -> Option<u32> {
        Some(self.presence.lock().0)
    }

    fn host_alive(&self, host: u32) -> Result<bool, StorageError> {
        let number = host as i32;
        self.readers.run(true, move |conn| {
            // Free means nobody holds it: taken and given back at once, in
            // one statement (CASE fixes the order of the two calls).
            let s = conn.statement(
                "SELECT CASE WHEN pg_try_advisory_lock($1, $2) \
                 THEN NOT pg_advisory_unlock($1, $2) ELSE true END",
            )?;
            conn.client()?
                .query_one(&s, &[&HOST_CLASS, &number])
                .map(|row| row.get(0))
        })
    }

    fn take_rate(
        &self,
        key: &[u8],
        now: i64,
        interval: i64,
        tolerance: i64,
    ) -> Result<Option<crate::RateDecision>, StorageError> {
        let key = key.to_vec();
        self.readers.run(true, move |conn| {
            // One statement, so that two hosts taking from one bucket at
            // once are ordered by the row lock: the theoretical arrival
            // time moves on only when the event is allowed.
            let take = conn.statement(
                "INSERT INTO cohort_rate AS r (k, tat) VALUES ($1, $2::bigint + $3::bigint)
                 ON CONFLICT (k) DO UPDATE SET tat = GREATEST(r.tat, $2::bigint) + $3::bigint
                 WHERE GREATEST(r.tat, $2::bigint) - $4::bigint <= $2::bigint
                 RETURNING tat",
            )?;
            let read = conn.statement("SELECT tat FROM cohort_rate WHERE k = $1")?;
            let client = conn.client()?;
            if client
                .query_opt(&take, &[&key, &now, &interval, &tolerance])?
                .is_some()
            {
                return Ok(Some(crate::RateDecision::Allowed));
            }
            let tat: i64 = client
                .query_opt(&read, &[&key])?
                .map_or(now, |row| row.get(0));
            Ok(Some(crate::RateDecision::Wait(
                (tat.max(now) - tolerance - now).max(1),
            )))
        })
    }

    fn sweep_rates(&self, now: i64) -> Result<u64, StorageError> {
        self.readers.run(true, move |conn| {
            conn.client()?
                .execute("DELETE FROM cohort_rate WHERE tat < $1", &[&now])
        })
    }

    fn foreign_writes(&self) -> Result<bool, StorageError> {
        let generation: i64 = self.readers.run(true, |conn| {
            let s = conn.statement("SELECT generation FROM cohort_meta WHERE id = 1")?;
            conn.client()?.query_one(&s, &[]).map(|row| row.get(0))
        })?;
        let mut lease = self.lease.lock();
        if lease.held_since.is_some() && lease.seen.is_some_and(|(g, _)| g != generation) {
            // Written by another host while this one believes it holds the
            // lease (or its own batch landed a moment ago): what it keeps
            // may be stale, so it stops answering from memory until it
            // takes the lease again.
            self.cache.lock().lease_gone();
        }
        let before = lease.observed.replace(generation);
        Ok(before != Some(generation))
    }

    fn release_writer(&self) -> Result<(), StorageError> {
        if self.lease.lock().held_since.take().is_none() {
            return Ok(());
        }
        // Before the lock goes: from then on another host may write.
        self.cache.lock().lease_gone();
        self.writer.run(false, |conn| {
            conn.client()?
                .execute("SELECT pg_advisory_unlock($1)", &[&LEASE_KEY])
                .map(|_| ())
        })
    }
}

/// Takes the presence lock of `number` on the leader connection; false when
/// a live host holds it.
fn take_presence(conn: &mut Conn, number: u32) -> Result<bool, postgres::Error> {
    let number = number as i32;
    conn.client()?
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&HOST_CLASS, &number],
        )
        .map(|row| row.get(0))
}
