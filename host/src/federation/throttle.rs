//! Rate limits on starting a sign-in, per client address and per
//! identifier.
//!
//! Each start costs Cohort something (a password hash of 19 MiB and a core,
//! a routing decision, a durable write, a call to the provider), and anyone
//! can ask for one. The password lockout protects one account's password;
//! these limits protect the server and slow down guessing across accounts.
//!
//! Each key (an address, or an identifier) gets a GCRA bucket (the generic
//! cell rate algorithm): `limit` starts at once, refilled steadily over the
//! period. Its whole state is one instant, the "theoretical arrival time",
//! so an entry is a few bytes; a key whose instant has passed is the same as
//! a key never seen, and can be forgotten. The map is capped: when it is
//! full, forgotten first are those, then the keys closest to being allowed
//! again, so a flood of new addresses cannot push out the ones being held
//! back. Memory stays bounded whatever arrives; time comes from the caller
//! (the injected clock).
//!
//! With several hosts over PostgreSQL, the buckets are the database's
//! ([`cohort_storage::Store::take_rate`]), with the same arithmetic, so N
//! hosts allow what one would, not N times as much. A host that cannot
//! reach them counts on its own buckets until it can.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// What the sign-in limits allow. A limit of 0 is off.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Starts per client address per period.
    pub per_address: u32,
    /// Starts per identifier per period.
    pub per_identifier: u32,
    /// The period over which a bucket refills.
    pub period: chrono::Duration,
    /// Most keys each limiter remembers.
    pub max_tracked: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            per_address: 60,
            per_identifier: 20,
            period: chrono::Duration::minutes(1),
            max_tracked: 100_000,
        }
    }
}

/// Which limit refused a start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The client address made too many.
    Address,
    /// The identifier was tried too often.
    Identifier,
}

/// A refused start: which limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The limit that was reached.
    pub scope: Scope,
    /// Whole seconds until the next start is allowed (at least 1).
    pub retry_after: u64,
}

/// One GCRA limiter over keys `K`, with a bounded number of keys.
struct Limiter<K> {
    /// Microseconds between starts at the steady rate.
    interval: i64,
    /// How far ahead of now a key's arrival time may run: `limit - 1`
    /// intervals, which is the burst.
    tolerance: i64,
    max_tracked: usize,
    /// Key → theoretical arrival time, in microseconds since the epoch.
    arrivals: Mutex<HashMap<K, i64>>,
}

impl<K: Hash + Eq> Limiter<K> {
    fn new(limit: u32, period: chrono::Duration, max_tracked: usize) -> Option<Limiter<K>> {
        if limit == 0 {
            return None;
        }
        let period = period.num_microseconds().unwrap_or(i64::MAX).max(1);
        let interval = (period / i64::from(limit)).max(1);
        Some(Limiter {
            interval,
            tolerance: interval * (i64::from(limit) - 1),
            max_tracked: max_tracked.max(1),
            arrivals: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one start for `key` at `now`, or says how long to wait.
    fn take(&self, key: K, now: i64) -> Result<(), i64> {
        let mut arrivals = self.arrivals.lock();
        let tat = arrivals.get(&key).copied().unwrap_or(now).max(now);
        let allowed_at = tat - self.tolerance;
        if now < allowed_at {
            return Err(allowed_at - now);
        }
        if !arrivals.contains_key(&key) && arrivals.len() >= self.max_tracked {
            self.make_room(&mut arrivals, now);
        }
        arrivals.insert(key, tat + self.interval);
        Ok(())
    }

    /// Forgets keys until a quarter of the room is free: first those whose
    /// time has come (they are as good as new), then those closest to it.
    /// Linear in the map, and then not needed for a quarter of its size
    /// again, so constant per start on average.
    fn make_room(&self, arrivals: &mut HashMap<K, i64>, now: i64) {
        arrivals.retain(|_, tat| *tat > now);
        let keep = self.max_tracked - self.max_tracked.div_ceil(4);
        if arrivals.len() <= keep {
            return;
        }
        let mut times: Vec<i64> = arrivals.values().copied().collect();
        let cut = times.len() - keep;
        let (_, threshold, _) = times.select_nth_unstable(cut);
        let threshold = *threshold;
        arrivals.retain(|_, tat| *tat > threshold);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.arrivals.lock().len()
    }
}

/// The key of an address: its client group ([`crate::net::client_group`]),
/// packed so that IPv4 and IPv6 keys never meet.
fn address_key(ip: IpAddr) -> u128 {
    match crate::net::client_group(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

/// The sign-in limits.
pub struct SignInLimits {
    per_address: Option<Limiter<u128>>,
    per_identifier: Option<Limiter<u64>>,
    /// Identifiers are kept as keyed hashes: a fixed size per entry whatever
    /// was typed, and no collisions an outsider can aim for.
    hasher: std::collections::hash_map::RandomState,
    /// The store whose buckets every host shares, when it is shared.
    shared: Option<cohort_storage::Store>,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn seconds(micros: i64) -> u64 {
    (micros.max(1) as u64).div_ceil(1_000_000)
}

impl SignInLimits {
    /// Limits as `policy` says.
    pub fn new(policy: &Policy) -> SignInLimits {
        SignInLimits {
            per_address: Limiter::new(policy.per_address, policy.period, policy.max_tracked),
            per_identifier: Limiter::new(policy.per_identifier, policy.period, policy.max_tracked),
            hasher: Default::default(),
            shared: None,
        }
    }

    /// Counts against `store`'s buckets when other hosts share it (see the
    /// module's documentation); on an embedded store, nothing changes.
    pub fn shared_through(mut self, store: cohort_storage::Store) -> SignInLimits {
        self.shared = store.is_shared().then_some(store);
        self
    }

    /// One event from `limiter`: from the shared bucket `shared_key` when
    /// there is one, else from the local bucket `key`.
    fn take<K: Hash + Eq>(
        &self,
        limiter: &Limiter<K>,
        key: K,
        shared_key: impl FnOnce() -> Vec<u8>,
        now: i64,
    ) -> Result<(), i64> {
        if let Some(store) = &self.shared {
            match store.take_rate(&shared_key(), now, limiter.interval, limiter.tolerance) {
                Ok(Some(cohort_storage::RateDecision::Allowed)) => return Ok(()),
                Ok(Some(cohort_storage::RateDecision::Wait(wait))) => return Err(wait),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "shared sign-in limits unreachable; counting on this host");
                }
            }
        }
        limiter.take(key, now)
    }

    /// Takes one start from `address` (when known) for `identifier` (when
    /// there is one), or says which limit refuses it. The address is
    /// checked first, and a start it refuses costs the identifier nothing,
    /// so one noisy address cannot lock an account's identifier for
    /// everyone.
    pub fn check(
        &self,
        now: DateTime<Utc>,
        address: Option<IpAddr>,
        identifier: Option<&str>,
    ) -> Result<(), Limited> {
        let now = micros(now);
        if let (Some(limiter), Some(ip)) = (&self.per_address, address) {
            let key = address_key(ip);
            let shared = || [&b"address/"[..], &key.to_be_bytes()].concat();
            self.take(limiter, key, shared, now)
                .map_err(|wait| Limited {
                    scope: Scope::Address,
                    retry_after: seconds(wait),
                })?;
        }
        let identifier = identifier.map(str::trim).filter(|i| !i.is_empty());
        if let (Some(limiter), Some(id)) = (&self.per_identifier, identifier) {
            // Every spelling of one person (case, width, Kelvin sign) shares
            // one bucket, or an attacker could multiply the budget.
            let identity = crate::directory::identity::identifier_key(id);
            let key = self.hasher.hash_one(&identity);
            // Shared between hosts, so not keyed by this process's hasher:
            // a digest, in the same database as the identifiers themselves.
            let shared = || {
                use sha2::Digest;
                [
                    &b"identifier/"[..],
                    &sha2::Sha256::digest(identity.as_bytes()),
                ]
                .concat()
            };
            self.take(limiter, key, shared, now)
                .map_err(|wait| Limited {
                    scope: Scope::Identifier,
                    retry_after: seconds(wait),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(second: i64, micro: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
            + chrono::Duration::microseconds(micro)
    }

    fn policy(per_address: u32, per_identifier: u32) -> Policy {
        Policy {
            per_address,
            per_identifier,
            period: chrono::Duration::minutes(1),
            max_tracked: 1000,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Two hosts over one PostgreSQL database share the limits: together
    /// they allow what one host would, for addresses and for identifiers
    /// (any spelling of one).
    #[test]
    fn hosts_sharing_a_database_share_the_limits() {
        let options = cohort_storage::OpenOptions {
            engine: cohort_storage::Engine::Postgres,
            url: Some(cohort_tests::postgres::fresh_database()),
            connections: 1,
            ..Default::default()
        };
        let host = || {
            let store = cohort_storage::Store::open(std::path::Path::new(""), &options).unwrap();
            SignInLimits::new(&policy(3, 2)).shared_through(store)
        };
        let (a, b) = (host(), host());
        for l in [&a, &b, &a] {
            assert!(l.check(at(0, 0), ip("192.0.2.1"), None).is_ok());
        }
        let refused = b.check(at(0, 0), ip("192.0.2.1"), None).unwrap_err();
        assert_eq!(refused.scope, Scope::Address);
        assert_eq!(refused.retry_after, 20);
        assert!(a.check(at(0, 0), None, Some("Ada@Example.com")).is_ok());
        assert!(b.check(at(0, 0), None, Some("ada@example.com")).is_ok());
        let refused = a
            .check(at(0, 0), None, Some("ADA@EXAMPLE.COM"))
            .unwrap_err();
        assert_eq!(refused.scope, Scope::Identifier);
    }

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let l = SignInLimits::new(&policy(3, 0));
        for _ in 0..3 {
            assert!(l.check(at(0, 0), ip("192.0.2.1"), None).is_ok());
        }
        let refused = l.check(at(0, 0), ip("192.0.2.1"), None).unwrap_err();
        assert_eq!(refused.scope, Scope::Address);
        assert_eq!(
            refused.retry_after, 20,
            "one start every 20 s at 3 a minute"
        );
        // Another address is not affected.
        assert!(l.check(at(0, 0), ip("192.0.2.2"), None).is_ok());
        // Just before the interval: still refused; at it: one more.
        assert!(l.check(at(19, 999_999), ip("192.0.2.1"), None).is_err());
        assert!(l.check(at(20, 0), ip("192.0.2.1"), None).is_ok());
        assert!(l.check(at(20, 0), ip("192.0.2.1"), None).is_err());
        // After a quiet minute the whole burst is back.
        for _ in 0..3 {
            assert!(l.check(at(200, 0), ip("192.0.2.1"), None).is_ok());
        }
    }

    #[test]
    fn identifiers_are_limited_case_insensitively_across_addresses() {
        let l = SignInLimits::new(&policy(100, 2));
        assert!(l.check(at(0, 0), ip("192.0.2.1"), Some("Ada")).is_ok());
        assert!(l.check(at(0, 0), ip("192.0.2.2"), Some(" ada ")).is_ok());
        let refused = l.check(at(0, 0), ip("192.0.2.3"), Some("ADA")).unwrap_err();
        assert_eq!(refused.scope, Scope::Identifier);
        assert_eq!(refused.retry_after, 30);
        assert!(l.check(at(0, 0), ip("192.0.2.3"), Some("grace")).is_ok());
        // No identifier (the callback): only the address counts.
        assert!(l.check(at(0, 0), ip("192.0.2.3"), None).is_ok());
    }

    #[test]
    fn an_address_refusal_costs_the_identifier_nothing() {
        let l = SignInLimits::new(&policy(1, 1));
        assert!(l.check(at(0, 0), ip("192.0.2.1"), Some("x")).is_ok());
        let refused = l.check(at(0, 0), ip("192.0.2.1"), Some("ada")).unwrap_err();
        assert_eq!(refused.scope, Scope::Address);
        assert!(l.check(at(0, 0), ip("192.0.2.9"), Some("ada")).is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_zero_turns_a_limit_off() {
        let l = SignInLimits::new(&policy(1, 0));
        assert!(l.check(at(0, 0), ip("2001:db8:1:2::1"), Some("a")).is_ok());
        assert!(
            l.check(at(0, 0), ip("2001:db8:1:2::ffff"), Some("a"))
                .is_err()
        );
        assert!(l.check(at(0, 0), ip("2001:db8:1:3::1"), Some("a")).is_ok());
        // IPv4 and its mapped IPv6 form are one client.
        assert!(l.check(at(0, 0), ip("192.0.2.1"), None).is_ok());
        assert!(l.check(at(0, 0), ip("::ffff:192.0.2.1"), None).is_err());
        // Without an address (no socket), nothing to limit by.
        let off = SignInLimits::new(&policy(0, 0));
        for _ in 0..1000 {
            assert!(off.check(at(0, 0), ip("192.0.2.1"), Some("a")).is_ok());
            assert!(l.check(at(0, 0), None, None).is_ok());
        }
    }

    #[test]
    fn memory_stays_bounded_and_held_back_keys_are_kept() {
        let limiter: Limiter<u128> = Limiter::new(2, chrono::Duration::minutes(1), 100).unwrap();
        let now = micros(at(0, 0));
        // One address uses its whole burst and is held back.
        assert!(limiter.take(7, now).is_ok());
        assert!(limiter.take(7, now).is_ok());
        assert!(limiter.take(7, now).is_err());
        // A flood of new addresses, each trying once.
        for k in 1000..101_000u128 {
            assert!(limiter.take(k, now + (k as i64)).is_ok());
            assert!(limiter.tracked() <= 100);
        }
        // The held-back address is still held back.
        assert!(limiter.take(7, now + 101_000).is_err());
        // Once everything's time has come, all of it is forgotten as needed.
        let later = now + 10 * 60 * 1_000_000;
        for k in 0..100u128 {
            assert!(limiter.take(1_000_000 + k, later).is_ok());
        }
        assert!(limiter.tracked() <= 100);
    }
}
