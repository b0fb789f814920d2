//! `matches`, with compiled patterns cached and charged.
//!
//! Compiling a pattern is the one thing an evaluation does whose memory is
//! not a value: `\w{20}` compiles to over a megabyte, and a pattern can be
//! built from strings at run time, so one evaluation could compile hundreds
//! of distinct ones. So every pattern compiles under a small size limit
//! first and a larger one only if it must ([`Tier`]); each tier has a fixed
//! cost in bytes (what its limits let the compiled program and its search
//! caches reach), and:
//!
//! - the first use of each distinct pattern in an evaluation charges that
//!   cost to the evaluation's pattern bytes
//!   ([`crate::limits::MAX_EXPRESSION_PATTERN_BYTES`]) and a share of it to
//!   the work
//!   budget, whether or not the pattern was cached: the charge depends on
//!   the expression and the subject only, never on what ran before on the
//!   thread, so a rule gives the same verdict on every subject and every
//!   run;
//! - the per-thread cache holds at most [`CACHE_BYTES`] of those costs, so
//!   what outlives an evaluation is bounded too;
//! - each call charges the text it scans, weighted by the tier: a search
//!   that falls back from the lazy DFA to the PikeVM costs time in
//!   proportion to the program for each byte of text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cel::ExecutionError;
use cel::common::types::{CelBool, CelString};
use cel::common::value::CowVal;

use super::meter::{charge, charge_pattern};
use super::scan::scan_units;

/// A size class of compiled patterns: tier `k` compiles under
/// `MAX_PATTERN_PROGRAM_BYTES >> (TIERS - 1 - k)`, so 32, 64, 128 and
/// 256 KiB. Patterns are tried in the smallest tier first: an ordinary
/// pattern is charged what it may hold, not what the largest may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tier(u8);

const TIERS: u8 = 4;

impl Tier {
    /// The compiled program's and the lazy DFA's limits.
    fn limits(self) -> usize {
        crate::limits::MAX_PATTERN_PROGRAM_BYTES >> (TIERS - 1 - self.0)
    }

    /// What a compiled pattern of this tier may hold: the forward and
    /// reverse programs and their lazy DFA caches are each held to the
    /// limit, and the other engines' state is smaller than the program.
    /// Measured with the counting allocator: `\w{4}` under 256 KiB peaks
    /// at about 4.4 times the limit.
    fn cost(self) -> u64 {
        6 * self.limits() as u64
    }

    /// What this tier costs beyond the one below it.
    fn extra(self) -> u64 {
        match self.0 {
            0 => self.cost(),
            k => self.cost() - Tier(k - 1).cost(),
        }
    }

    /// The work units per [`super::scan::SCAN_BYTES_PER_UNIT`] bytes of
    /// text: a search that falls back from the lazy DFA to the PikeVM costs
    /// time in proportion to the program.
    fn weight(self) -> u64 {
        1 << self.0
    }
}

/// A compiled pattern, or why it does not compile.
struct Compiled {
    regex: Result<regex::Regex, String>,
    tier: Tier,
}

/// Compiles `pattern` under the limits of `tier`.
fn build(pattern: &str, tier: Tier) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(tier.limits())
        .dfa_size_limit(tier.limits())
        .build()
}

/// Compiles `pattern` in the smallest tier it fits.
fn compile(pattern: &str) -> Compiled {
    let mut tier = Tier(0);
    loop {
        match build(pattern, tier) {
            Err(regex::Error::CompiledTooBig(_)) if tier.0 + 1 < TIERS => tier = Tier(tier.0 + 1),
            regex => {
                return Compiled {
                    regex: regex.map_err(|e| e.to_string()),
                    tier,
                };
            }
        }
    }
}

/// Checks a pattern the way evaluation will compile it: for rules, when
/// they are saved.
pub(crate) fn check(pattern: &str) -> Result<(), regex::Error> {
    build(pattern, Tier(TIERS - 1)).map(|_| ())
}

/// Bytes of compiled patterns (counted at their tier's cost) each thread
/// keeps between evaluations; the cache is emptied when a new pattern would
/// pass it. Twice what one evaluation may use, so a rule's patterns stay
/// cached from one subject to the next.
pub(crate) const CACHE_BYTES: u64 = 2 * crate::limits::MAX_EXPRESSION_PATTERN_BYTES;

/// Bytes of compiled patterns (at tier cost) all threads together keep
/// cached. Evaluations run on a bounded number of threads (the preview
/// permits, the recompute workers, the async workers for routing), but the
/// blocking pool can hold many more idle threads, each with its cache: past
/// this, a thread empties its own cache and, if that is not enough, uses a
/// new pattern without caching it.
pub(crate) const GLOBAL_CACHE_BYTES: u64 = 8 * CACHE_BYTES;

/// What all threads' caches hold, at tier cost.
static CACHED_EVERYWHERE: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct Cache {
    patterns: HashMap<String, Compiled>,
    bytes: u64,
}

impl Cache {
    fn clear(&mut self) {
        self.patterns.clear();
        CACHED_EVERYWHERE.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
    }

    /// Keeps `compiled` if this thread's and all threads' bounds allow.
    fn keep(&mut self, pattern: &str, compiled: Compiled) -> Result<(), Compiled> {
        let cost = compiled.tier.cost();
        if self.bytes + cost > CACHE_BYTES
            || CACHED_EVERYWHERE.load(Ordering::Relaxed) + cost > GLOBAL_CACHE_BYTES
        {
            self.clear();
        }
        if CACHED_EVERYWHERE.fetch_add(cost, Ordering::Relaxed) + cost > GLOBAL_CACHE_BYTES {
            CACHED_EVERYWHERE.fetch_sub(cost, Ordering::Relaxed);
            return Err(compiled);
        }
        self.bytes += cost;
        self.patterns.insert(pattern.to_string(), compiled);
        Ok(())
    }
}

impl Drop for Cache {
    /// A thread that ends gives its share back.
    fn drop(&mut self) {
        CACHED_EVERYWHERE.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static USED: RefCell<Used> = RefCell::new(Used::default());
}

/// The patterns (and tiers) the evaluation running on this thread has
/// used: each is charged once per evaluation. Patterns are kept whole, not
/// as hashes, so that no two can share a charge; and the map outlives the
/// evaluation (an entry counts only for the evaluation it was marked in),
/// so a rule's patterns are not copied again for every subject.
#[derive(Default)]
struct Used {
    evaluation: u64,
    /// Pattern → the evaluation it was last used in, and a bit per tier
    /// charged in that evaluation.
    patterns: HashMap<String, (u64, u8)>,
}

/// Patterns remembered per thread before the map starts afresh.
const USED_PATTERNS: usize = 1024;

/// Starts a new evaluation on this thread: no pattern is charged in it yet.
pub(crate) fn begin_evaluation() {
    USED.with(|u| {
        let mut u = u.borrow_mut();
        u.evaluation += 1;
        if u.patterns.len() > USED_PATTERNS {
            u.patterns.clear();
        }
    });
}

/// Bytes the cache of this thread, and of all threads, hold, counted at
/// tier cost.
#[cfg(test)]
pub(crate) fn cached_bytes() -> (u64, u64) {
    (
        CACHE.with(|c| c.borrow().bytes),
        CACHED_EVERYWHERE.load(Ordering::Relaxed),
    )
}

/// `@matches(text, pattern)`: RE2 syntax, as CEL specifies.
pub(crate) fn matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = args.first().and_then(|a| a.downcast_ref::<CelString>());
    let pattern = args.get(1).and_then(|a| a.downcast_ref::<CelString>());
    let (Some(text), Some(pattern)) = (text, pattern) else {
        return Err(ExecutionError::function_error(
            "matches",
            "matches takes a string and a pattern",
        ));
    };
    let (text, pattern) = (text.inner(), pattern.inner());
    let found = CACHE.with(|cache| -> Result<Result<bool, String>, ExecutionError> {
        let mut cache = cache.borrow_mut();
        let mut uncached = None;
        if !cache.patterns.contains_key(pattern) {
            // Charged before compiling: a pattern the budget has no room
            // for is not compiled at all. Its tier is not known yet, so the
            // small tier's cost is charged first, the rest once known.
            first_use(pattern, Tier(0))?;
            if let Err(compiled) = cache.keep(pattern, compile(pattern)) {
                uncached = Some(compiled);
            }
        }
        let Some(compiled) = uncached.as_ref().or_else(|| cache.patterns.get(pattern)) else {
            return Ok(Err("the pattern is not cached".into()));
        };
        search(compiled, pattern, text)
    })?;
    match found {
        Ok(b) => Ok(CowVal::Owned(Box::new(CelBool::from(b)))),
        Err(e) => Err(ExecutionError::function_error("matches", e)),
    }
}

/// Charges a use of `compiled` and searches `text` with it.
fn search(
    compiled: &Compiled,
    pattern: &str,
    text: &str,
) -> Result<Result<bool, String>, ExecutionError> {
    first_use(pattern, compiled.tier)?;
    charge(scan_units(text.len() as u64).saturating_mul(compiled.tier.weight()))?;
    Ok(compiled
        .regex
        .as_ref()
        .map(|re| re.is_match(text))
        .map_err(Clone::clone))
}

/// Charges the first use of `pattern` in this evaluation at each tier up
/// to `upto`, as what each tier costs beyond the one below: each pattern is
/// charged once per evaluation at the cost of its tier, whatever the order
/// of the calls and the cache. Compiling takes time in proportion to the
/// program, so a share is charged as work too. One look-up serves every
/// tier, since a rule calls this once per subject.
fn first_use(pattern: &str, upto: Tier) -> Result<(), ExecutionError> {
    let wanted = u8::MAX >> (7 - upto.0);
    let fresh = USED.with(|u| {
        let mut u = u.borrow_mut();
        let evaluation = u.evaluation;
        match u.patterns.get_mut(pattern) {
            Some((seen, tiers)) => {
                if *seen != evaluation {
                    (*seen, *tiers) = (evaluation, 0);
                }
                let fresh = wanted & !*tiers;
                *tiers |= wanted;
                fresh
            }
            None => {
                u.patterns.insert(pattern.to_string(), (evaluation, wanted));
                wanted
            }
        }
    });
    for k in (0..=upto.0).filter(|k| fresh & (1 << k) != 0) {
        let tier = Tier(k);
        charge_pattern(tier.extra())?;
        charge(tier.extra() / 4096 + pattern.len() as u64 / 64)?;
    }
    Ok(())
}
