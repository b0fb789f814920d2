//! Keeping one host's in-memory state in step with the other hosts that
//! share its PostgreSQL database.
//!
//! Domain services that keep copies of stored data in memory (the groups
//! replica and compiled rules, the session signing keys) register with
//! [`cohort_storage::Store::on_foreign_write`] and mark their copies stale;
//! they rebuild them before the next use. The store tells them when this
//! host takes the writer lease after another host wrote, so a write never
//! runs on stale copies, and when [`Replication::poll`] finds that another
//! host wrote, so that a host that only reads catches up within one period.
//!
//! The lag reported on `/readyz` and `/metrics` is the time since the last
//! successful look: with invalidation on notice, a host is never further
//! behind than that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use cohort_storage::{StorageError, Store};

use crate::clock::Clock;

/// The role under which one host runs the scheduled work (import
/// schedules, exemption expiry, the daily recompute) when several share a
/// database; see [`Store::lead`].
pub const SCHEDULES: &str = "schedules";

/// How often a host asks whether another one wrote.
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// A host further behind than this is not ready: it has not reached the
/// database for several periods.
pub const MAX_LAG_MS: i64 = 10_000;

/// The host's replication state.
pub struct Replication {
    store: Store,
    clock: Arc<dyn Clock>,
    /// When the last look at the database succeeded (Unix milliseconds).
    last_caught_up: AtomicI64,
    /// Whether this host ran the scheduled work at the scheduler's last
    /// look (see `server::SCHEDULES`).
    runs_scheduled_work: AtomicBool,
}

impl Replication {
    /// Caught up as of now: everything in memory was loaded from the store.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Replication {
        let now = clock.now().timestamp_millis();
        Replication {
            store,
            clock,
            last_caught_up: AtomicI64::new(now),
            runs_scheduled_work: AtomicBool::new(false),
        }
    }

    /// Asks the store whether another host wrote and, if so, has the
    /// in-memory copies marked stale.
    pub fn poll(&self) -> Result<bool, StorageError> {
        let foreign = self.store.poll_foreign_writes()?;
        self.last_caught_up
            .store(self.clock.now().timestamp_millis(), Ordering::SeqCst);
        Ok(foreign)
    }

    /// Records whether this host runs the scheduled work; true when that
    /// changed.
    pub fn set_runs_scheduled_work(&self, runs: bool) -> bool {
        self.runs_scheduled_work.swap(runs, Ordering::SeqCst) != runs
    }

    /// Whether this host ran the scheduled work at the scheduler's last
    /// look. With several hosts, exactly one does once they have all
    /// looked.
    pub fn runs_scheduled_work(&self) -> bool {
        self.runs_scheduled_work.load(Ordering::SeqCst)
    }

    /// Milliseconds since this host last knew it was caught up; `None` on
    /// an embedded engine, which no other host writes.
    pub fn lag_ms(&self) -> Option<i64> {
        self.store.is_shared().then(|| {
            (self.clock.now().timestamp_millis() - self.last_caught_up.load(Ordering::SeqCst))
                .max(0)
        })
    }
}

/// Polls every [`PERIOD`] while the server runs, on a shared engine only.
// The loop's period is real time between looks; the lag reads the clock.
#[allow(clippy::disallowed_methods)]
pub fn spawn(replication: Arc<Replication>) {
    if replication.lag_ms().is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PERIOD).await;
            let r = Arc::clone(&replication);
            match tokio::task::spawn_blocking(move || r.poll()).await {
                Ok(Ok(true)) => {
                    tracing::debug!("another host wrote; in-memory copies marked stale")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not check for other hosts' writes"),
                Err(e) => tracing::warn!(error = %e, "the replication check panicked"),
            }
        }
    });
}
