//! The metered searches and patterns (issue #23, review holes A and B):
//! same answers as the crate's own functions, work and bytes charged in
//! proportion to the input, and a deadline seen at every loop step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cel::{Context, Env, Program, Value};
use proptest::prelude::*;

use super::{BUDGET, meter, pattern, runtime};

/// Evaluates `source` metered, with `h` and `n` bound, and says what it
/// cost: (result, work units, bytes of patterns).
fn metered(source: &str, h: &str, n: &str) -> (Result<Value, String>, u64, u64) {
    let (expr, _) = super::parse(source).expect("parses");
    let expr = meter::instrument(expr, &HashMap::new());
    let rt = runtime::Runtime::new();
    let mut ctx = Context::with_env(rt.env());
    ctx.add_variable_from_value("h", h.to_string());
    ctx.add_variable_from_value("n", n.to_string());
    let mut spent = (0, 0);
    let out = meter::with_budget(BUDGET, || {
        let v = Value::resolve(&expr, &ctx);
        let (units, _, patterns) = meter::left();
        spent = (
            BUDGET - units,
            crate::limits::MAX_EXPRESSION_PATTERN_BYTES - patterns,
        );
        v
    });
    (out.map_err(|e| e.to_string()), spent.0, spent.1)
}

/// The crate's own evaluation, unmetered: the oracle of the answers.
fn unmetered(source: &str, h: &str, n: &str) -> Result<Value, String> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension");
    let mut ctx = Context::with_env(Arc::new(env));
    ctx.add_variable_from_value("h", h.to_string());
    ctx.add_variable_from_value("n", n.to_string());
    Program::compile(source)
        .expect("parses")
        .execute(&ctx)
        .map_err(|e| e.to_string())
}

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just('é'), Just('日')],
        0..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn searches_answer_as_the_crate_does(h in text(), n in text(), offset in -2i64..14) {
        for source in [
            "h.indexOf(n)".to_string(),
            "h.lastIndexOf(n)".to_string(),
            format!("h.indexOf(n, {offset})"),
            format!("h.lastIndexOf(n, {offset})"),
            "h.contains(n)".to_string(),
            "h.startsWith(n)".to_string(),
            "h.endsWith(n)".to_string(),
            "h.matches(n)".to_string(),
            "h.matches('^' + n)".to_string(),
            "[h, n].exists(x, x.indexOf(n) > 0)".to_string(),
            "[h, n].map(x, x.lastIndexOf('a')).filter(i, i >= 0)".to_string(),
        ] {
            let (got, _, _) = metered(&source, &h, &n);
            let want = unmetered(&source, &h, &n);
            match (&got, &want) {
                (Ok(g), Ok(w)) => prop_assert_eq!(g, w, "{} h={:?} n={:?}", source, h, n),
                (Err(g), Err(w)) if source.contains("matches") => {
                    prop_assert!(!g.is_empty() && !w.is_empty())
                }
                (Err(g), Err(w)) => prop_assert_eq!(g, w, "{} h={:?} n={:?}", source, h, n),
                _ => prop_assert!(false, "{} h={:?} n={:?}: {:?} vs {:?}", source, h, n, got, want),
            }
        }
    }

    /// The work a search charges grows with what it scans, whatever the
    /// answer: at least one unit per KiB of haystack and needle.
    #[test]
    fn searches_charge_what_they_scan(k in 0usize..48, j in 0usize..16) {
        let h = "ab".repeat(k * 512);
        let n = "b".repeat(j * 256 + 1);
        for f in ["indexOf", "lastIndexOf", "contains"] {
            let source = format!("h.{f}(n)");
            let (_, small, _) = metered(&source, "ab", "b");
            let (out, units, _) = metered(&source, &h, &n);
            prop_assert!(out.is_ok(), "{}: {:?}", source, out);
            let scanned = (h.len() + n.len()) as u64;
            prop_assert!(units >= scanned / 1024, "{} charged {} for {} bytes", source, units, scanned);
            prop_assert!(units <= small + scanned / 1024 + 1, "{} charged {}", source, units);
        }
        let (_, units, _) = metered("h.matches(n)", &h, &n);
        prop_assert!(units >= h.len() as u64 / 1024);
    }
}

/// The reported quadratic search: 600 searches of 30 KB in 61 KB ran
/// 28 s. Charged by what they scan, they pass the budget after a few
/// dozen, in milliseconds.
#[test]
fn the_reported_search_loop_is_refused_by_the_budget() {
    let h = "a".repeat(61_000);
    let zeros = vec!["0"; 600].join(",");
    let source =
        format!("[h.substring(0, 30000) + 'b'].all(n, [{zeros}].all(i, h.indexOf(n) < 0))");
    let started = crate::clock::Stopwatch::start();
    let (out, _, _) = metered(&source, &h, "");
    let err = out.expect_err("refused");
    assert!(err.contains(meter::EXHAUSTED), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A refused step cannot be absorbed by `||` or by a later `false` in
/// `all`: the verdict would depend on where the budget ran out.
#[test]
fn a_refusal_is_final() {
    let h = "a".repeat(61_000);
    let zeros = vec!["0"; 600].join(",");
    let source = format!("[{zeros}].exists(i, h.indexOf(h + 'b') >= 0) || true");
    let (out, _, _) = metered(&source, &h, "");
    assert!(out.expect_err("refused").contains(meter::EXHAUSTED));
}

/// Each distinct pattern is charged once per evaluation, the same whether
/// or not the thread had it cached, and the cache stays within its bytes.
#[test]
fn patterns_are_charged_per_evaluation_and_the_cache_is_bounded() {
    let source = "['1', '2', '3'].all(x, !h.matches('^[a-z]+' + x + n))";
    let first = metered(source, "alice", "z");
    let second = metered(source, "alice", "z");
    assert_eq!(first.0, Ok(Value::Bool(true)));
    assert_eq!(
        (first.1, first.2),
        (second.1, second.2),
        "cached or not, the same charge"
    );
    assert_eq!(first.2, 3 * 6 * 32 * 1024, "three small patterns");
    // A large pattern costs more than a small one.
    let (out, _, large) = metered("h.matches(r'\\w{3}' + n)", "alice", "z");
    assert_eq!(out, Ok(Value::Bool(false)));
    assert!(large > first.2 / 3, "large {large}, small {}", first.2 / 3);
    // Many distinct patterns: refused, and the cache keeps its bound.
    for round in 0..20 {
        let source = format!(
            "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22].all(i, !h.matches('^[a-z]{{2}}' + string(i) + '{round}'))"
        );
        let (out, _, _) = metered(&source, "alice", "");
        assert!(out.expect_err("refused").contains(meter::EXHAUSTED));
        let (here, everywhere) = pattern::cached_bytes();
        assert!(here <= pattern::CACHE_BYTES, "{here}");
        assert!(everywhere <= pattern::GLOBAL_CACHE_BYTES, "{everywhere}");
    }
    // A pattern too large for any tier is refused, not compiled.
    let (out, _, _) = metered("h.matches(r'\\w{20}' + n)", "alice", "");
    assert!(out.is_err());
}

/// A loop whose steps charge nothing still stops at the deadline: `@tick`
/// runs at every step.
#[test]
fn every_step_checks_the_deadline() {
    let (expr, _) = super::parse("[1, 2, 3].all(i, i > 0) && [1].exists(i, i > 0) && [1].exists_one(i, i > 0) && [1].filter(i, i > 0).size() == 1").expect("parses");
    let expr = meter::instrument(expr, &HashMap::new());
    let mut ticks = 0;
    let mut stack = vec![&expr];
    while let Some(e) = stack.pop() {
        if let cel::common::ast::Expr::Call(c) = &e.expr
            && c.func_name == "@tick"
        {
            ticks += 1;
        }
        stack.extend(super::children(e));
    }
    assert_eq!(ticks, 4, "one tick per comprehension step");
    // Past the deadline, the step refuses, and the answer is the refusal.
    let rt = runtime::Runtime::new();
    let ctx = Context::with_env(rt.env());
    let out = meter::with_deadline(Some(crate::clock::Deadline::passed()), || {
        meter::with_budget(BUDGET, || Value::resolve(&expr, &ctx))
    });
    assert!(out.expect_err("late").to_string().contains(meter::LATE));
}

/// Threads together keep no more than the global bound cached, however
/// many of them fill their own caches; a thread that ends gives its share
/// back.
#[test]
fn all_threads_together_keep_the_global_bound() {
    let threads = 12;
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let barrier = &barrier;
            scope.spawn(move || {
                // 40 small patterns: 7.5 MiB at tier cost, within the
                // thread's bound; twelve such threads would pass the global one.
                for round in 0..2 {
                    let list = (0..20).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                    let source = format!(
                        "[{list}].all(i, !h.matches('^[a-z]{{2}}' + string(i) + '-{t}-{round}'))"
                    );
                    let (out, _, _) = metered(&source, "alice", "");
                    assert_eq!(out, Ok(Value::Bool(true)), "{source}");
                }
                barrier.wait();
                let (here, everywhere) = pattern::cached_bytes();
                assert!(here <= pattern::CACHE_BYTES, "{here}");
                assert!(everywhere <= pattern::GLOBAL_CACHE_BYTES, "{everywhere}");
                barrier.wait();
            });
        }
    });
}
