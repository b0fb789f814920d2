//! Time is injected, so that tests can move it and every timestamp in one
//! request comes from one place.
//!
//! Two kinds of time are read here and nowhere else (`clippy.toml` forbids
//! `Utc::now`, `SystemTime::now` and `Instant::now` elsewhere):
//!
//! - *Business time* — when something happened, when a session, lockout,
//!   exemption or cached key runs out — comes from a [`Clock`], which the
//!   server builds once and hands to every module. A test or an embedding
//!   application gives a [`TestClock`] instead and moves it.
//! - *Elapsed time* for resource limits — how long an expression, a plugin
//!   call or a connection has been running — is measured with a
//!   [`Stopwatch`] or bounded by a [`Deadline`]. Those protect the server's
//!   cores and must follow the real monotonic clock whatever a test does to
//!   business time, so they are not injected.

use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, truncated to microseconds so that stored and returned timestamps
    /// round-trip exactly through JSON.
    fn now(&self) -> DateTime<Utc>;
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        #[allow(clippy::disallowed_methods)] // The one reading of the wall clock.
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that stands still until its owner moves it.
///
/// Public and outside `cfg(test)` because integration tests (the in-process
/// harness in `host/tests/common`) and applications embedding the server
/// need it too, not only unit tests: it is how a test sees an exemption
/// lapse or a lockout end without waiting.
#[derive(Debug)]
pub struct TestClock(parking_lot::Mutex<DateTime<Utc>>);

impl TestClock {
    /// A clock at `t`.
    pub fn at(t: DateTime<Utc>) -> std::sync::Arc<TestClock> {
        std::sync::Arc::new(TestClock(parking_lot::Mutex::new(t.trunc_subsecs(6))))
    }

    /// A clock at the real time of the call, for tests whose peers (a fake
    /// provider signing tokens, say) read the real clock.
    pub fn at_system_time() -> std::sync::Arc<TestClock> {
        TestClock::at(SystemClock.now())
    }

    /// Moves the clock on by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

/// Real elapsed time since it was started, for resource limits and
/// reported durations; immune to a test moving the [`Clock`].
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts measuring now.
    pub fn start() -> Stopwatch {
        #[allow(clippy::disallowed_methods)] // The one reading of the monotonic clock.
        Stopwatch(Instant::now())
    }

    /// A stopwatch that has already run for `d` (so that tests of a limit
    /// need not wait for it); saturates at the monotonic clock's origin.
    pub fn started_ago(d: Duration) -> Stopwatch {
        let now = Stopwatch::start().0;
        Stopwatch(now.checked_sub(d).unwrap_or(now))
    }

    /// Real time since the start.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    /// The deadline `d` after the start.
    pub fn deadline(&self, d: Duration) -> Deadline {
        Deadline(self.0 + d)
    }
}

/// A point in real (monotonic) time after which work is refused: the
/// deadline of a rule preview or a routing expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Stopwatch::start().deadline(d)
    }

    /// A deadline that has already passed.
    pub fn passed() -> Deadline {
        Deadline::after(Duration::ZERO)
    }

    /// Whether it has passed.
    pub fn is_past(&self) -> bool {
        Stopwatch::start().0 >= self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_moves_only_when_told() {
        let t = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = TestClock::at(t);
        assert_eq!(c.now(), t.trunc_subsecs(6));
        c.advance(chrono::Duration::seconds(90));
        assert_eq!(c.now() - t.trunc_subsecs(6), chrono::Duration::seconds(90));
    }

    #[test]
    fn deadlines_pass_with_real_time() {
        assert!(Deadline::passed().is_past());
        assert!(!Deadline::after(Duration::from_secs(3600)).is_past());
        let sw = Stopwatch::started_ago(Duration::from_secs(60));
        assert!(sw.elapsed() >= Duration::from_secs(60));
        assert!(sw.deadline(Duration::from_secs(30)).is_past());
        assert!(!sw.deadline(Duration::from_secs(3600)).is_past());
    }
}
