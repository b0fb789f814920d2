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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use cohort_storage::{StorageError, Store};

use crate::clock::{Clock, Stopwatch};

/// The role under which one host runs the scheduled work (import
/// schedules, exemption expiry, the daily recompute) when several share a
/// database; see [`Store::lead`].
pub const SCHEDULES: &str = "schedules";

/// How often a host asks whether another one wrote.
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// A host further behind than this is not ready: it has not reached the
/// database for several periods.
pub const MAX_LAG_MS: i64 = 10_000;

/// The least time a host must have looked stopped, on every look, before
/// its runs are closed. After the database itself restarts, every host's
/// number is free until that host's scheduler next asks for its roles
/// (within one tick), and a run must not be closed while its host is still
/// running it; see [`StoppedHosts::new`].
pub const STOPPED_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// The hosts of running runs that looked stopped, and since when.
pub struct StoppedHosts {
    since: HashMap<Option<u32>, Stopwatch>,
    window: std::time::Duration,
}

impl StoppedHosts {
    /// For a scheduler that looks every `tick`: a host must look stopped
    /// for [`STOPPED_FOR`] or three ticks, whichever is longer, so that it
    /// has had several chances to take its number back. Every host should
    /// use the same `[schedules] tick_ms`.
    pub fn new(tick: std::time::Duration) -> StoppedHosts {
        StoppedHosts {
            since: HashMap::new(),
            window: STOPPED_FOR.max(tick * 3),
        }
    }

    /// Asks the store about `hosts` (those of running runs) and returns the
    /// ones that have looked stopped on every look for the window. A run
    /// recorded without a host counts as stopped; no release wrote one. On
    /// the embedded engines only this process opens the data, so any other
    /// host is stopped at once.
    pub fn confirm(
        &mut self,
        store: &Store,
        hosts: impl IntoIterator<Item = Option<u32>>,
    ) -> Result<HashSet<Option<u32>>, StorageError> {
        let shared = store.is_shared();
        self.confirm_with(
            |host| match host {
                Some(h) => store.host_alive(h),
                None => Ok(false),
            },
            !shared,
            hosts,
        )
    }

    /// [`StoppedHosts::confirm`] with the question asked by `alive`;
    /// `at_once` when a host that looks stopped is stopped.
    fn confirm_with(
        &mut self,
        alive: impl Fn(Option<u32>) -> Result<bool, StorageError>,
        at_once: bool,
        hosts: impl IntoIterator<Item = Option<u32>>,
    ) -> Result<HashSet<Option<u32>>, StorageError> {
        let (mut looked, mut dead, mut stopped) = (HashSet::new(), HashSet::new(), HashSet::new());
        for host in hosts {
            if !looked.insert(host) || alive(host)? {
                continue;
            }
            dead.insert(host);
            let since = self.since.entry(host).or_insert_with(Stopwatch::start);
            if at_once || since.elapsed() >= self.window {
                stopped.insert(host);
            }
        }
        // A host that looked alive, or has no running run any more, starts
        // again from zero.
        self.since.retain(|h, _| dead.contains(h));
        Ok(stopped)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A host is stopped only after it looked stopped on every look for the
    /// whole window; looking alive once starts it from zero.
    #[test]
    fn a_host_is_stopped_only_after_looking_stopped_for_the_window() {
        let mut hosts = StoppedHosts::new(std::time::Duration::from_secs(1));
        assert_eq!(hosts.window, STOPPED_FOR);
        assert_eq!(
            StoppedHosts::new(std::time::Duration::from_secs(60)).window,
            std::time::Duration::from_secs(180)
        );
        let alive = |h: Option<u32>| Ok(h == Some(1));
        let none = HashSet::new();
        // 1 is alive, 2 looks stopped: not yet.
        assert_eq!(
            hosts
                .confirm_with(alive, false, [Some(1), Some(2), Some(2)])
                .unwrap(),
            none
        );
        // Looked stopped for longer than the window.
        hosts
            .since
            .insert(Some(2), Stopwatch::started_ago(STOPPED_FOR));
        assert_eq!(
            hosts
                .confirm_with(alive, false, [Some(1), Some(2)])
                .unwrap(),
            HashSet::from([Some(2)])
        );
        // Alive again: starts from zero.
        assert_eq!(
            hosts.confirm_with(|_| Ok(true), false, [Some(2)]).unwrap(),
            none
        );
        assert!(hosts.since.is_empty());
        assert_eq!(hosts.confirm_with(alive, false, [Some(2)]).unwrap(), none);
        // No running run any more: forgotten.
        assert_eq!(hosts.confirm_with(alive, false, []).unwrap(), none);
        assert!(hosts.since.is_empty());
        // On one process's data: at once, and a run without a host too.
        assert_eq!(
            hosts.confirm_with(alive, true, [Some(2), None]).unwrap(),
            HashSet::from([Some(2), None])
        );
    }
}
