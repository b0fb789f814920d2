//! Time is injected, so that tests can move it and every timestamp in one
//! request comes from one place.

use chrono::{DateTime, SubsecRound, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, truncated to microseconds so that stored and returned timestamps
    /// round-trip exactly through JSON.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that stands still until a test moves it.
#[cfg(test)]
pub struct TestClock(parking_lot::Mutex<DateTime<Utc>>);

#[cfg(test)]
impl TestClock {
    /// A clock at `t`.
    pub fn at(t: DateTime<Utc>) -> std::sync::Arc<TestClock> {
        std::sync::Arc::new(TestClock(parking_lot::Mutex::new(t.trunc_subsecs(6))))
    }

    /// Moves the clock on by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock() += d;
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}
