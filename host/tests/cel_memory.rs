//! No CEL expression may make an evaluation allocate more than a fixed
//! amount, whatever functions it chains.
//!
//! The oracle is this binary's global allocator (the `cap` crate), which
//! counts the bytes live on the heap and refuses any allocation that would
//! take the heap more than [`BOUND`] past where it stood when the
//! evaluation began: it knows nothing of the metering it checks, so an
//! allocation the metering lets through aborts the test binary. Evaluations
//! run one at a time (they take a lock), so the growth is the evaluation's
//! own.

use std::sync::Mutex;

use cap::Cap;
use cohort::expression::plain::{Plain, PlainError, evaluate};
use proptest::prelude::*;

/// Counts the bytes live on the heap, and refuses an allocation past the
/// limit set around each evaluation: the process then aborts with "memory
/// allocation of N bytes failed", which fails the test.
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// One evaluation at a time, so the peak is that evaluation's.
static ONE: Mutex<()> = Mutex::new(());

/// The most one evaluation may add to the heap at its peak: the 2 MiB of
/// values an evaluation may produce, with room for what the interpreter
/// holds besides them (the tree, the environment, a builder's spare
/// capacity while it grows). The unmetered evaluator needed gigabytes for
/// the expressions below.
const BOUND: usize = 8 * 1024 * 1024;

/// Evaluates `source` with `s` bound, with the heap allowed to grow by
/// [`BOUND`] at most, and returns the outcome and how much more the heap
/// holds afterwards (the result, and nothing leaked).
fn measured(source: &str, s: &str) -> (Result<Plain, PlainError>, usize) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let variables = vec![("s".to_string(), Plain::String(s.to_string()))];
    let base = ALLOCATOR.allocated();
    ALLOCATOR
        .set_limit(base + BOUND)
        .expect("the limit is above what is allocated");
    let out = evaluate(source, &variables, false);
    let after = ALLOCATOR.allocated();
    ALLOCATOR.set_limit(usize::MAX).expect("no limit");
    (out, after.saturating_sub(base))
}

fn plain_bytes(p: &Plain) -> usize {
    match p {
        Plain::String(s) => s.len(),
        Plain::Bytes(b) => b.len(),
        Plain::List(l) => l.iter().map(plain_bytes).sum::<usize>() + l.len(),
        Plain::Map(m) => m.iter().map(|(k, v)| plain_bytes(k) + plain_bytes(v)).sum(),
        _ => 8,
    }
}

/// The outcome is a value within the per-value limit, or an error that is
/// not a crash.
fn check_outcome(source: &str, out: &Result<Plain, PlainError>, grew: usize) {
    assert!(
        grew <= BOUND,
        "{source}: the heap kept {grew} bytes (bound {BOUND})"
    );
    match out {
        Ok(v) => assert!(
            plain_bytes(v) <= 64 * 1024,
            "{source}: a result of {} bytes",
            plain_bytes(v)
        ),
        Err(PlainError::Eval(m)) => assert!(
            !m.contains("could not be compiled"),
            "{source}: the evaluation crashed: {m}"
        ),
        Err(_) => {}
    }
}

#[test]
fn the_reported_attack_is_refused_with_the_budget_error() {
    let a = |n: usize| "a".repeat(n);
    let source = format!(
        "s.replace('', '{}').replace('', '{}').replace('', '{}').replace('', '{}').replace('', '{}').size() > 0",
        a(60),
        a(57),
        a(53),
        a(40),
        a(40)
    );
    let (out, grew) = measured(&source, "alice.smith");
    check_outcome(&source, &out, grew);
    match out {
        Err(PlainError::Eval(m)) => {
            assert!(m.contains("did too much work"), "not the budget error: {m}")
        }
        other => panic!("the attack was not refused: {other:?}"),
    }
}

/// Each function whose result can outgrow its arguments, fed a 30,000-byte
/// string: unmetered, each asks for 12 MB or more in one allocation.
#[test]
fn every_amplifier_is_refused_before_it_allocates() {
    let s = "x".repeat(30_000);
    let empties = format!("[{}]", vec!["''"; 400].join(", "));
    let join_empties = format!("{empties}.join(s)");
    for source in [
        join_empties.as_str(),
        "s.replace('', s)",
        "s.replace('', s, 3000)",
        "s.split('').join(s)",
        "s.split('', 3000).join(s)",
        "s.split('').map(c, s).join()",
        "s.split('').filter(c, true).join(s)",
        "[s, s, s].join(s.replace('', s))",
    ] {
        let (out, grew) = measured(source, &s);
        check_outcome(source, &out, grew);
        match out {
            Err(PlainError::Eval(m)) => {
                assert!(m.contains("did too much work"), "{source}: {m}")
            }
            other => panic!("{source} was not refused: {other:?}"),
        }
    }
}

#[test]
fn ordinary_string_work_still_evaluates() {
    let cases = [
        (
            "s.replace('.', ' ').upperAscii()",
            Plain::String("ALICE SMITH".into()),
        ),
        (
            "s.split('.').join('-')",
            Plain::String("alice-smith".into()),
        ),
        ("s.split('', 3).size()", Plain::Int(3)),
        (
            "s.replace('', '-', 2)",
            Plain::String("-a-lice.smith".into()),
        ),
        (
            "[s, s].join(', ')",
            Plain::String("alice.smith, alice.smith".into()),
        ),
        ("'%s!'.format([s])", Plain::String("alice.smith!".into())),
        (
            "[1, 2, 3].map(i, s.substring(0, i)).join('/')",
            Plain::String("a/al/ali".into()),
        ),
    ];
    for (source, want) in cases {
        let (out, grew) = measured(source, "alice.smith");
        check_outcome(source, &out, grew);
        assert_eq!(out, Ok(want), "{source}");
    }
}

/// A string-valued expression built from the whole function table.
fn string_expr() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("s".to_string()),
        Just("''".to_string()),
        (0usize..64).prop_map(|n| format!("'{}'", "ab".repeat(n))),
    ];
    leaf.prop_recursive(6, 48, 3, |inner| {
        let list = list_expr(inner.clone());
        prop_oneof![
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("{a}.replace({b}, {c})")),
            (inner.clone(), inner.clone(), inner.clone(), -1i64..4)
                .prop_map(|(a, b, c, n)| format!("{a}.replace({b}, {c}, {n})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} + {b}")),
            (list.clone(), inner.clone()).prop_map(|(l, s)| format!("{l}.join({s})")),
            list.clone().prop_map(|l| format!("{l}.join()")),
            inner.clone().prop_map(|a| format!("{a}.lowerAscii()")),
            inner.clone().prop_map(|a| format!("{a}.upperAscii()")),
            inner.clone().prop_map(|a| format!("{a}.trim()")),
            inner.clone().prop_map(|a| format!("{a}.reverse()")),
            inner.clone().prop_map(|a| format!("strings.quote({a})")),
            inner.clone().prop_map(|a| format!("{a}.substring(0)")),
            inner.clone().prop_map(|a| format!("string(bytes({a}))")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("'%s:%s'.format([{a}, {b}])")),
            (list.clone(), inner.clone()).prop_map(|(l, s)| format!("{l}.map(x, x + {s}).join()")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("{{'k': {a}, 'j': {b}}}['k']")),
            inner.clone().prop_map(|a| format!("({a}).charAt(0)")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("(size({a}) > 3 ? {a} : {b})")),
        ]
    })
    .boxed()
}

fn list_expr(s: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![
        (s.clone(), s.clone()).prop_map(|(a, b)| format!("{a}.split({b})")),
        (s.clone(), s.clone(), -1i64..5).prop_map(|(a, b, n)| format!("{a}.split({b}, {n})")),
        (s.clone(), s.clone()).prop_map(|(a, b)| format!("[{a}, {b}, {a}]")),
        (1usize..40, s.clone())
            .prop_map(|(n, a)| format!("{:?}.map(i, {a})", (0..n).collect::<Vec<_>>())),
        (s.clone(), s.clone()).prop_map(|(a, b)| format!("({a}).split('') + ({b}).split('')")),
        s.prop_map(|a| format!("{a}.split('').filter(c, c != 'a')")),
    ]
    .boxed()
}

/// Wraps a string expression into each kind of result the table gives.
fn any_expr() -> impl Strategy<Value = String> {
    let s = string_expr();
    prop_oneof![
        s.clone(),
        s.clone().prop_map(|a| format!("size({a}) > 0")),
        (s.clone(), s.clone()).prop_map(|(a, b)| format!("{a}.indexOf({b})")),
        (s.clone(), s.clone()).prop_map(|(a, b)| format!("{a}.contains({b})")),
        list_expr(s.clone()),
        list_expr(s).prop_map(|l| format!("{l}.exists(x, size(x) > 2)")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn no_expression_allocates_past_the_bound(
        source in any_expr(),
        s in "[a-z.]{0,3000}",
    ) {
        let (out, grew) = measured(&source, &s);
        check_outcome(&source, &out, grew);
    }
}

/// Patterns built at run time (issue #23, review A): each distinct
/// `\w{20}…` compiles to about a megabyte, and compiled patterns are kept
/// in a per-thread cache that outlives the evaluation, so the heap the
/// oracle measures afterwards includes it. Unbounded, a hundred distinct
/// patterns held ~110 MB.
#[test]
fn patterns_built_at_run_time_are_bounded_in_memory() {
    let digits = "[0,1,2,3,4,5,6,7,8,9]";
    for source in [
        format!(
            "{digits}.all(i, {digits}.all(j, !s.matches(r'\\w{{20}}' + string(i) + string(j))))"
        ),
        format!(
            "{digits}.all(i, {digits}.all(j, !s.matches(r'[a-z]{{3}}' + string(i) + string(j))))"
        ),
    ] {
        // Twice: the second evaluation meets the first one's cache.
        for _ in 0..2 {
            let (out, grew) = measured(&source, "alice.smith");
            check_outcome(&source, &out, grew);
            match &out {
                Err(PlainError::Eval(m)) => {
                    assert!(m.contains("did too much work"), "{source}: {m}")
                }
                other => panic!("{source} was not refused: {other:?}"),
            }
        }
    }
}

/// A few run-time patterns still evaluate, with the crate's answers.
#[test]
fn a_few_run_time_patterns_still_match() {
    for (source, want) in [
        ("s.matches('^' + 'alice' + '\\\\.')", true),
        ("['a', 'b', 'c'].exists(x, s.matches('^' + x))", true),
        ("s.matches(r'\\w+' + '@')", false),
        ("['x', 'y'].all(x, !s.matches(r'\\w{2}' + x))", true),
    ] {
        let (out, grew) = measured(source, "alice.smith");
        check_outcome(source, &out, grew);
        assert_eq!(out, Ok(Plain::Bool(want)), "{source}");
    }
}
