//! Call and failure counters of one plugin, and the health the API reports
//! from them: a plugin that keeps failing is marked unhealthy so that the
//! admin sees it before its users do.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::plugins::limits::PluginError;

/// Call and failure counters of one plugin. Consecutive failures are
/// counted per function: a plugin whose `evaluate` always traps is unhealthy
/// even though its `compile` keeps succeeding in between.
#[derive(Default)]
pub(super) struct Health {
    calls: AtomicU64,
    failures: AtomicU64,
    consecutive: Mutex<std::collections::HashMap<&'static str, u32>>,
    last_error: Mutex<Option<LastError>>,
}

/// The most recent failed call.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LastError {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The error code, e.g. `plugin_cpu_limit`.
    pub code: String,
    /// The error message.
    pub message: String,
}

/// A plugin's health as the API reports it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `healthy`, or `unhealthy` after too many consecutive failed calls.
    pub status: &'static str,
    /// Calls made since the server started.
    pub calls: u64,
    /// Calls that failed because the plugin misbehaved (trap, limit, bad output).
    pub failures: u64,
    /// Failures since the last successful call.
    pub consecutive_failures: u32,
    /// The most recent failure.
    pub last_error: Option<LastError>,
}

impl Health {
    /// Counts one call; a failure is stamped with the server's clock.
    pub(super) fn record(
        &self,
        call: &'static str,
        error: Option<&PluginError>,
        clock: &dyn Clock,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match error {
            Some(e) if e.is_plugin_fault() => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *self.consecutive.lock().entry(call).or_default() += 1;
                *self.last_error.lock() = Some(LastError {
                    at: clock.now(),
                    code: e.code().to_owned(),
                    message: e.to_string(),
                });
            }
            Some(_) => {}
            None => {
                self.consecutive.lock().remove(call);
            }
        }
    }

    pub(super) fn report(&self, unhealthy_after: u32) -> HealthReport {
        let consecutive = self.consecutive.lock().values().copied().max().unwrap_or(0);
        HealthReport {
            status: if consecutive >= unhealthy_after {
                "unhealthy"
            } else {
                "healthy"
            },
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: consecutive,
            last_error: self.last_error.lock().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::clock::TestClock;

    fn cpu() -> PluginError {
        PluginError::CpuLimit {
            plugin: "p".into(),
            limit_ms: 5,
        }
    }

    #[test]
    fn a_failure_is_stamped_with_the_injected_clock() {
        let t = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        let clock = TestClock::at(t);
        let health = Health::default();
        health.record("evaluate", Some(&cpu()), &*clock);
        clock.advance(chrono::Duration::hours(1));
        health.record("evaluate", None, &*clock);
        let last = health.report(3).last_error.expect("a failure was recorded");
        assert_eq!(last.at, t);
        assert_eq!(last.code, "plugin_cpu_limit");
    }

    #[test]
    fn consecutive_failures_count_per_function_and_a_success_clears_them() {
        let clock = TestClock::at(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        let health = Health::default();
        for _ in 0..3 {
            health.record("evaluate", Some(&cpu()), &*clock);
            health.record("compile", None, &*clock);
        }
        let report = health.report(3);
        assert_eq!(report.status, "unhealthy");
        assert_eq!(
            (report.calls, report.failures, report.consecutive_failures),
            (6, 3, 3)
        );
        health.record("evaluate", None, &*clock);
        let report = health.report(3);
        assert_eq!((report.status, report.consecutive_failures), ("healthy", 0));
        assert_eq!(report.failures, 3);
    }

    #[test]
    fn errors_that_are_not_the_plugins_fault_are_counted_as_calls_only() {
        let clock = TestClock::at(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        let health = Health::default();
        let busy = PluginError::Busy;
        let too_large = PluginError::InputTooLarge { size: 2, limit: 1 };
        health.record("fetch-page", Some(&busy), &*clock);
        health.record("fetch-page", Some(&too_large), &*clock);
        let report = health.report(1);
        assert_eq!((report.calls, report.failures), (2, 0));
        assert_eq!(report.status, "healthy");
        assert!(report.last_error.is_none());
    }
}
