//! What a PostgreSQL host has read, kept in memory for as long as it is
//! exact: while this host holds the writer lease and no other host has
//! written since it last looked.
//!
//! Why: write transactions run one at a time, and each of their reads is a
//! round trip to the database. Creates were capped near 1,100/s by eight
//! such reads per create (docs/PERFORMANCE.md). Under the lease no other
//! host can write, and every write of this host passes through
//! [`LeaseCache::applied`], so a value read once stays the database's value
//! until the lease is given back. On taking the lease again, the writes'
//! `generation` counter tells whether another host wrote meanwhile; if it
//! did, everything here is dropped before anything reads it.
//!
//! A read that raced a write is never kept. A read takes a [`Ticket`]
//! before it goes to the database: the lease epoch (which moves on whenever
//! the lease changes hands or the cache is dropped) and the number of the
//! last batch applied. Its answer is stored only if the epoch is unchanged
//! and no batch applied since wrote the key, or into the range. Batches are
//! checked by their keys rather than by a counter alone, because this
//! host's own batches land every millisecond or so under load, and a
//! counter would throw away nearly every read.
//!
//! Two kinds of entries: single keys (including "absent"), and whole prefix
//! ranges that fit in one page (a kind's attribute schema, an identity's
//! confusable neighbours). A write invalidates the prefix ranges it falls in
//! by looking up each of its own prefixes, so invalidation costs the key's
//! length in lookups, not the number of cached ranges.
//!
//! Memory is bounded by two generations of each map: when the young one is
//! full, the old one is dropped and the young one becomes old. An entry used
//! from the old one moves back to the young one, so what is in use stays.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Entry;

/// How long after the last sign that this host still holds the lease (it
/// took it, or a fenced batch of its own landed) the cache may answer. A
/// lease can be lost without this host noticing (the database ended its
/// session); then another host may write, and only this host's next batch
/// would find out. Past this, reads go to the database until the next sign.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(1);

/// A batch with more keys than this (a recompute, an import) is not
/// remembered key by key: it ends every read in flight instead, and what
/// it wrote is forgotten rather than kept, so that it cannot fill the cache.
const LARGE_BATCH: usize = 4096;

/// Batches remembered for checking reads that were in flight when they
/// landed; a read older than all of them is not kept.
const RECENT_BATCHES: usize = 64;

/// Entries larger than this are not kept: a cache of huge values would
/// hold memory that a page of small ones uses better.
const MAX_VALUE: usize = 64 * 1024;

type Map<V> = HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// Two generations of one map, bounded by bytes.
struct Generations<V> {
    young: Map<V>,
    old: Map<V>,
    young_bytes: usize,
    /// Bytes a generation may hold before it is retired.
    limit: usize,
}

impl<V: Clone> Generations<V> {
    fn new(limit: usize) -> Self {
        Generations {
            young: Map::default(),
            old: Map::default(),
            young_bytes: 0,
            limit,
        }
    }

    fn get(&mut self, k: &[u8], size: impl Fn(&[u8], &V) -> usize) -> Option<V> {
        if let Some(v) = self.young.get(k) {
            return Some(v.clone());
        }
        let v = self.old.remove(k)?;
        self.insert(k.to_vec(), v.clone(), size(k, &v));
        Some(v)
    }

    fn insert(&mut self, k: Vec<u8>, v: V, bytes: usize) {
        if self.young_bytes + bytes > self.limit {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.old.remove(&k);
        self.young_bytes += bytes;
        self.young.insert(k, v);
    }

    fn remove(&mut self, k: &[u8]) {
        self.young.remove(k);
        self.old.remove(k);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_bytes = 0;
    }

    fn is_empty(&self) -> bool {
        self.young.is_empty() && self.old.is_empty()
    }
}

fn point_size(k: &[u8], v: &Option<Vec<u8>>) -> usize {
    // The map's slot and the two allocations, roughly.
    k.len() + v.as_ref().map_or(0, Vec::len) + 96
}

fn range_size(k: &[u8], v: &Arc<Vec<Entry>>) -> usize {
    k.len() + v.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>() + 48
}

/// The cache (see the module documentation). Not thread-safe by itself;
/// the engine keeps it behind a mutex.
pub(crate) struct LeaseCache {
    /// Whether the cache may answer reads now: this host holds the lease.
    valid: bool,
    /// The last sign that it still does (see [`FRESH_FOR`]).
    confirmed: Option<Instant>,
    /// Moves on when the lease changes hands or everything is dropped, so
    /// that a read begun before is not stored after.
    epoch: u64,
    /// Batches applied so far.
    batches: u64,
    /// The keys of the last [`RECENT_BATCHES`] batches, sorted, by number.
    recent: VecDeque<(u64, Arc<Vec<Vec<u8>>>)>,
    points: Generations<Option<Vec<u8>>>,
    /// Whole prefix ranges, by prefix (engine key), in key order.
    ranges: Generations<Arc<Vec<Entry>>>,
    /// The lengths of the prefixes put in `ranges` since it was last
    /// cleared (a superset of those still there), so that a write looks up
    /// only its own prefixes of those lengths: a handful, where every
    /// length of a 50-byte key would be 50.
    range_lengths: std::collections::BTreeSet<usize>,
}

/// Where a read begun: store what it found only if nothing changed since.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Ticket(Option<(u64, u64)>);

impl Ticket {
    /// A ticket taken without the lease: nothing read with it is kept.
    pub(crate) const STALE: Ticket = Ticket(None);
}

impl LeaseCache {
    /// A cache that holds at most about `bytes` (both generations of both
    /// maps together).
    pub(crate) fn new(bytes: u64) -> Self {
        let per_generation = usize::try_from(bytes / 4).unwrap_or(usize::MAX).max(1);
        LeaseCache {
            valid: false,
            confirmed: None,
            epoch: 0,
            batches: 0,
            recent: VecDeque::new(),
            points: Generations::new(per_generation),
            ranges: Generations::new(per_generation),
            range_lengths: Default::default(),
        }
    }

    /// The lease was taken. `moved`: another host wrote since this one last
    /// held it, so nothing kept is known to be current.
    pub(crate) fn lease_taken(&mut self, moved: bool, now: Instant) {
        self.confirmed = Some(now);
        if moved {
            self.points.clear();
            self.ranges.clear();
            self.range_lengths.clear();
        }
        self.valid = true;
        self.epoch += 1;
    }

    /// The lease was given back or lost: another host may write from now
    /// on. What is kept stays for the next time, if nobody writes meanwhile.
    pub(crate) fn lease_gone(&mut self) {
        self.valid = false;
        self.epoch += 1;
    }

    /// A batch failed, or the lease was lost: nothing kept may be current,
    /// and nothing is answered until the lease is taken again.
    pub(crate) fn lease_lost(&mut self) {
        self.lease_gone();
        self.forget();
    }

    /// Drops everything: a batch whose outcome is unknown.
    fn forget(&mut self) {
        self.points.clear();
        self.ranges.clear();
        self.range_lengths.clear();
        self.epoch += 1;
    }

    /// True when the cache may answer: the lease is held, and was known to
    /// be a moment ago.
    fn usable(&self) -> bool {
        #[allow(clippy::disallowed_methods)] // A freshness bound, not domain time.
        let now = Instant::now();
        self.valid
            && self
                .confirmed
                .is_some_and(|at| now.saturating_duration_since(at) < FRESH_FOR)
    }

    /// What a read about to go to the database needs to store its answer.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.usable().then_some((self.epoch, self.batches)))
    }

    /// True when what was read with `ticket` may be kept: same lease
    /// epoch, and no batch since wrote a key `touched` says it depends on.
    fn current(&self, ticket: Ticket, touched: impl Fn(&[Vec<u8>]) -> bool) -> bool {
        let Some((epoch, batches)) = ticket.0 else {
            return false;
        };
        if !self.usable() || epoch != self.epoch {
            return false;
        }
        if batches == self.batches {
            return true;
        }
        // Every batch since the ticket must still be remembered.
        match self.recent.front() {
            Some((first, _)) if *first <= batches + 1 => {}
            _ => return false,
        }
        !self
            .recent
            .iter()
            .filter(|(n, _)| *n > batches)
            .any(|(_, keys)| touched(keys))
    }

    /// The value of `key`: `Some(None)` when it is known to be absent,
    /// `None` when the database must be asked.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if !self.usable() {
            return None;
        }
        self.points.get(key, point_size)
    }

    /// Keeps what a read found, if still current.
    pub(crate) fn put(&mut self, ticket: Ticket, key: Vec<u8>, value: Option<Vec<u8>>) {
        if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE)
            || !self.current(ticket, |keys| keys.binary_search(&key).is_ok())
        {
            return;
        }
        let size = point_size(&key, &value);
        self.points.insert(key, value, size);
    }

    /// The whole range under `prefix`, when known.
    pub(crate) fn range(&mut self, prefix: &[u8]) -> Option<Arc<Vec<Entry>>> {
        if !self.usable() {
            return None;
        }
        self.ranges.get(prefix, range_size)
    }

    /// Keeps a whole prefix range a read found, if still current.
    pub(crate) fn put_range(&mut self, ticket: Ticket, prefix: Vec<u8>, entries: Vec<Entry>) {
        let in_range = |keys: &[Vec<u8>]| {
            let at = keys.partition_point(|k| k.as_slice() < prefix.as_slice());
            keys.get(at).is_some_and(|k| k.starts_with(&prefix))
        };
        if entries.iter().any(|(_, v)| v.len() > MAX_VALUE) || !self.current(ticket, in_range) {
            return;
        }
        let entries = Arc::new(entries);
        let size = range_size(&prefix, &entries);
        self.range_lengths.insert(prefix.len());
        self.ranges.insert(prefix, entries, size);
    }

    /// This host committed `writes`: the cache takes their values, and
    /// forgets the ranges they fall in.
    pub(crate) fn applied<'a>(
        &mut self,
        now: Instant,
        writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) {
        // The fence passed: the lease was held a moment ago.
        self.confirmed = Some(now);
        // The lower bound is the count for the slices the engine passes.
        if writes.size_hint().0 > LARGE_BATCH {
            self.epoch += 1;
            for (k, _) in writes {
                self.forget_key(k);
            }
            return;
        }
        let mut keys = Vec::new();
        for (k, v) in writes {
            keys.push(k.to_vec());
            match v {
                Some(v) if v.len() > MAX_VALUE => self.forget_key(k),
                v => {
                    self.forget_ranges_of(k);
                    let (k, v) = (k.to_vec(), v.map(<[u8]>::to_vec));
                    let size = point_size(&k, &v);
                    self.points.insert(k, v, size);
                }
            }
        }
        keys.sort_unstable();
        self.batches += 1;
        self.recent.push_back((self.batches, Arc::new(keys)));
        if self.recent.len() > RECENT_BATCHES {
            self.recent.pop_front();
        }
    }
}

impl LeaseCache {
    fn forget_key(&mut self, k: &[u8]) {
        self.points.remove(k);
        self.forget_ranges_of(k);
    }

    fn forget_ranges_of(&mut self, k: &[u8]) {
        if !self.ranges.is_empty() {
            for &end in self.range_lengths.range(..=k.len()) {
                self.ranges.remove(&k[..end]);
            }
        }
    }
}

#[cfg(test)]
// The freshness bound is real time, so the tests use it.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn cache() -> LeaseCache {
        let mut c = LeaseCache::new(1 << 20);
        c.lease_taken(false, Instant::now());
        c
    }

    #[test]
    fn answers_nothing_without_the_lease() {
        let mut c = cache();
        let t = c.ticket();
        c.put(t, b"k".to_vec(), Some(b"v".to_vec()));
        assert_eq!(c.get(b"k"), Some(Some(b"v".to_vec())));
        c.lease_gone();
        assert_eq!(c.get(b"k"), None);
        // Taken again with nobody else writing: still exact.
        c.lease_taken(false, Instant::now());
        assert_eq!(c.get(b"k"), Some(Some(b"v".to_vec())));
        // Taken again after another host wrote: dropped.
        c.lease_gone();
        c.lease_taken(true, Instant::now());
        assert_eq!(c.get(b"k"), None);
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let mut c = cache();
        let t = c.ticket();
        c.applied(Instant::now(), [(&b"k"[..], Some(&b"new"[..]))].into_iter());
        c.put(t, b"k".to_vec(), Some(b"old".to_vec()));
        assert_eq!(c.get(b"k"), Some(Some(b"new".to_vec())));
        let t = c.ticket();
        c.lease_gone();
        c.lease_taken(false, Instant::now());
        c.put(t, b"j".to_vec(), None);
        assert_eq!(c.get(b"j"), None);
        // Without the lease, a read keeps nothing either.
        c.lease_gone();
        let t = c.ticket();
        c.put(t, b"i".to_vec(), None);
        c.lease_taken(false, Instant::now());
        assert_eq!(c.get(b"i"), None);
    }

    #[test]
    fn a_read_across_batches_is_kept_unless_a_batch_wrote_what_it_read() {
        let mut c = cache();
        let t = c.ticket();
        c.applied(
            Instant::now(),
            [(&b"other"[..], Some(&b"x"[..]))].into_iter(),
        );
        c.applied(Instant::now(), [(&b"pz1"[..], None)].into_iter());
        c.put(t, b"k".to_vec(), None);
        assert_eq!(c.get(b"k"), Some(None));
        c.put(t, b"other".to_vec(), None);
        assert_eq!(c.get(b"other"), Some(Some(b"x".to_vec())));
        c.put_range(t, b"pz".to_vec(), vec![]);
        assert!(c.range(b"pz").is_none());
        c.put_range(t, b"py".to_vec(), vec![]);
        assert!(c.range(b"py").is_some());
        // A read older than every remembered batch is not kept.
        let old = c.ticket();
        for i in 0..=RECENT_BATCHES as u32 {
            c.applied(Instant::now(), [(&i.to_be_bytes()[..], None)].into_iter());
        }
        c.put(old, b"j".to_vec(), None);
        assert_eq!(c.get(b"j"), None);
    }

    #[test]
    fn answers_stop_a_moment_after_the_last_sign_of_the_lease() {
        let mut c = LeaseCache::new(1 << 20);
        let long_ago = Instant::now() - FRESH_FOR - Duration::from_millis(1);
        c.lease_taken(false, long_ago);
        assert_eq!(c.ticket(), Ticket::STALE);
        c.applied(Instant::now(), [(&b"k"[..], None)].into_iter());
        assert_eq!(c.get(b"k"), Some(None));
        c.applied(long_ago, std::iter::empty());
        assert_eq!(c.get(b"k"), None);
    }

    #[test]
    fn a_large_batch_is_forgotten_not_kept() {
        let mut c = cache();
        let t = c.ticket();
        c.put(t, b"k0".to_vec(), Some(b"old".to_vec()));
        let keys: Vec<Vec<u8>> = (0..=LARGE_BATCH)
            .map(|i| format!("k{i}").into_bytes())
            .collect();
        c.applied(
            Instant::now(),
            keys.iter().map(|k| (k.as_slice(), Some(&b"v"[..]))),
        );
        assert_eq!(c.get(b"k0"), None);
        assert_eq!(c.get(b"k1"), None);
        // And ends every read in flight.
        c.put(t, b"j".to_vec(), None);
        assert_eq!(c.get(b"j"), None);
    }

    #[test]
    fn a_write_forgets_the_ranges_it_falls_in_and_only_those() {
        let mut c = cache();
        let t = c.ticket();
        c.put_range(t, b"ab".to_vec(), vec![(b"abc".to_vec(), b"1".to_vec())]);
        c.put_range(t, b"ax".to_vec(), vec![]);
        c.put_range(t, b"a".to_vec(), vec![(b"abc".to_vec(), b"1".to_vec())]);
        c.applied(Instant::now(), [(&b"abd"[..], None)].into_iter());
        assert!(c.range(b"ab").is_none());
        assert!(c.range(b"a").is_none());
        assert_eq!(c.range(b"ax").map(|r| r.len()), Some(0));
        assert_eq!(c.get(b"abd"), Some(None));
    }

    #[test]
    fn memory_is_bounded_and_what_is_used_stays() {
        let mut c = LeaseCache::new(4 * 1000);
        c.lease_taken(false, Instant::now());
        let t = c.ticket();
        c.put(t, b"hot".to_vec(), Some(vec![0; 10]));
        for i in 0..1000u32 {
            c.put(t, i.to_be_bytes().to_vec(), None);
            assert!(c.get(b"hot").is_some(), "evicted after {i}");
        }
        let kept = c.points.young.len() + c.points.old.len();
        assert!(kept < 40, "{kept} entries kept in 4,000 bytes");
    }
}
