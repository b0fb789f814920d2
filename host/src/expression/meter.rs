//! Bounding the work of an evaluation.
//!
//! The interpreter has no step counter, so the checked tree is rewritten
//! before it is evaluated: every comprehension's range goes through
//! `@meter(range, weight)`, which charges `size(range) × weight` (the size of
//! the loop body) to a budget, and every concatenation goes through
//! `@grow(a + b)`, which charges the size of its result, so doubling a string
//! or a list in a loop cannot exhaust memory either. Names starting with `@`
//! cannot be written in CEL, so rules cannot call or shadow them.
//!
//! Nested comprehensions meter their range once per outer step, so the
//! charge is the real work. The `+` steps that the `map` and `filter`
//! macros generate (`@result + [x]`) are left alone: the interpreter
//! recognises that shape and appends in place.
//!
//! Memory is bounded by a second budget, in bytes, charged by the calls that
//! [`super::sized`] provides (`@out`, `@replace`, `@join`, `@split`), which
//! this rewrite inserts too; compiled `matches` patterns by a third
//! ([`super::pattern`]). The searches whose time grows with their input
//! (`indexOf`, `contains`, …) are replaced by versions that charge the bytes
//! they scan ([`super::scan`]). All budgets share one error and check the
//! deadline of the work they run in ([`with_deadline`]).
//!
//! `@meter` charges a comprehension's whole range before its first step, so
//! a step that charges nothing (a comparison of two long strings, say)
//! would never see the clock: every step also runs through `@tick`, which
//! only checks the deadline. Checking there stops a slow preview within a
//! step of its deadline without a watchdog thread or a check in the
//! interpreter's own loop. The deadline is for previews, explanations and
//! routing; the budgets, in work and bytes, are what bound a recompute,
//! the same on every run.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use cel::ExecutionError;
use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::CelInt;
use cel::common::value::CowVal;
use uuid::Uuid;

use crate::clock::Deadline;

use super::{pattern, scan, sized};

thread_local! {
    /// Work left in the evaluation running on this thread.
    static LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Bytes of values the evaluation running on this thread may still
    /// produce.
    static BYTES_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Bytes of compiled patterns it may still use.
    static PATTERN_BYTES_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// When the work running on this thread must stop, if it must.
    static DEADLINE: Cell<Option<Deadline>> = const { Cell::new(None) };
    /// The first refusal of the evaluation running on this thread, if any.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` with a budget of `units` and of [`sized::MAX_EVAL_BYTES`];
/// evaluation is synchronous, so the budget is this thread's for the
/// duration.
///
/// A refusal is final: CEL lets `||` and `&&` (and `all`, `exists`) absorb
/// an error beside a deciding value, so a refused step could otherwise end
/// in a verdict that depends on where the budget or the clock ran out.
pub(crate) fn with_budget<T>(
    units: u64,
    f: impl FnOnce() -> Result<T, ExecutionError>,
) -> Result<T, ExecutionError> {
    let before = LEFT.replace(units);
    let bytes_before = BYTES_LEFT.replace(sized::MAX_EVAL_BYTES);
    let patterns_before = PATTERN_BYTES_LEFT.replace(crate::limits::MAX_EXPRESSION_PATTERN_BYTES);
    let refused_before = REFUSED.take();
    pattern::begin_evaluation();
    let out = f();
    LEFT.set(before);
    BYTES_LEFT.set(bytes_before);
    PATTERN_BYTES_LEFT.set(patterns_before);
    match REFUSED.replace(refused_before) {
        Some(message) => Err(ExecutionError::function_error("budget", message)),
        None => out,
    }
}

/// Runs `f` with evaluations on this thread refused once `deadline` has
/// passed. Threads `f` starts must call this themselves.
pub fn with_deadline<T>(deadline: Option<Deadline>, f: impl FnOnce() -> T) -> T {
    let before = DEADLINE.replace(deadline);
    let out = f();
    DEADLINE.set(before);
    out
}

/// Sets the deadline of the work on this thread until the guard drops: for
/// loops that evaluate many subjects on threads of their own.
pub fn deadline_guard(deadline: Option<Deadline>) -> DeadlineGuard {
    DeadlineGuard(DEADLINE.replace(deadline))
}

/// Restores the previous deadline of its thread when dropped.
pub struct DeadlineGuard(Option<Deadline>);

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.set(self.0);
    }
}

/// Whether the deadline of the work on this thread has passed.
pub fn past_deadline() -> bool {
    DEADLINE.get().is_some_and(|d| d.is_past())
}

/// The message of the error an exhausted budget gives; the errors of the
/// byte budget start with it too.
pub(crate) const EXHAUSTED: &str = "the expression did too much work for one subject";

/// The message of the error a passed deadline gives.
pub const LATE: &str = "the evaluation ran past its deadline";

fn refuse(message: String) -> ExecutionError {
    REFUSED.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_none() {
            *r = Some(message.clone());
        }
    });
    ExecutionError::function_error("budget", message)
}

pub(crate) fn check_deadline() -> Result<(), ExecutionError> {
    if past_deadline() {
        return Err(refuse(LATE.to_string()));
    }
    Ok(())
}

/// Charges a value of `bytes` about to be (or just) produced: refused if it
/// alone passes [`sized::MAX_VALUE_BYTES`] or the evaluation's bytes run out.
pub(crate) fn charge_bytes(bytes: u64) -> Result<(), ExecutionError> {
    check_deadline()?;
    if bytes > sized::MAX_VALUE_BYTES {
        return Err(refuse(format!(
            "{EXHAUSTED}: one value would take {bytes} bytes (limit {} per value)",
            sized::MAX_VALUE_BYTES
        )));
    }
    let left = BYTES_LEFT.get();
    if bytes > left {
        BYTES_LEFT.set(0);
        return Err(refuse(format!(
            "{EXHAUSTED} (limit {} bytes of values per evaluation)",
            sized::MAX_EVAL_BYTES
        )));
    }
    BYTES_LEFT.set(left - bytes);
    Ok(())
}

/// Charges the memory of a compiled pattern to the evaluation's pattern
/// bytes ([`crate::limits::MAX_EXPRESSION_PATTERN_BYTES`]).
pub(crate) fn charge_pattern(bytes: u64) -> Result<(), ExecutionError> {
    check_deadline()?;
    let left = PATTERN_BYTES_LEFT.get();
    if bytes > left {
        PATTERN_BYTES_LEFT.set(0);
        return Err(refuse(format!(
            "{EXHAUSTED} (limit {} bytes of compiled patterns per evaluation)",
            crate::limits::MAX_EXPRESSION_PATTERN_BYTES
        )));
    }
    PATTERN_BYTES_LEFT.set(left - bytes);
    Ok(())
}

/// Charges `units` of work.
pub(crate) fn charge(units: u64) -> Result<(), ExecutionError> {
    check_deadline()?;
    let left = LEFT.get();
    if units > left {
        LEFT.set(0);
        return Err(refuse(format!(
            "{EXHAUSTED} (limit {} units)",
            super::BUDGET
        )));
    }
    LEFT.set(left - units);
    Ok(())
}

fn size_of(v: &CowVal<'_, '_>) -> u64 {
    v.as_sizer()
        .map_or(1, |s| u64::try_from(*s.size().inner()).unwrap_or(0))
}

/// `@meter(range, weight)`: charges, then hands the range back untouched.
pub(crate) fn meter<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if args.len() != 2 {
        return Err(ExecutionError::InvalidArgumentCount {
            expected: 2,
            actual: args.len(),
        });
    }
    let weight = args[1]
        .downcast_ref::<CelInt>()
        .map_or(1, |w| u64::try_from(*w.inner()).unwrap_or(1));
    charge(size_of(&args[0]).saturating_mul(weight).max(1))?;
    Ok(args.swap_remove(0))
}

/// `@grow(value)`: charges the size of a concatenation's result.
pub(crate) fn grow<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if args.len() != 1 {
        return Err(ExecutionError::InvalidArgumentCount {
            expected: 1,
            actual: args.len(),
        });
    }
    charge(size_of(&args[0]) / 16 + 1)?;
    charge_bytes(sized::bytes_of(args[0].as_ref()))?;
    Ok(args.swap_remove(0))
}

/// Rewrites a checked tree for evaluation: metering, and `in_group('name')`
/// to `@in_group('<id>')` through `groups` (resolved when checked).
pub(crate) fn instrument(mut expr: IdedExpr, groups: &HashMap<String, Uuid>) -> IdedExpr {
    let mut next = max_id(&expr) + 1;
    rewrite(&mut expr, groups, &mut next, None);
    expr
}

fn max_id(e: &IdedExpr) -> u64 {
    let mut max = e.id;
    let mut stack = vec![e];
    while let Some(n) = stack.pop() {
        max = max.max(n.id);
        stack.extend(super::children(n));
    }
    max
}

fn call(id: &mut u64, name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    *id += 1;
    IdedExpr {
        id: *id,
        expr: Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: None,
            args,
        }),
    }
}

fn int(id: &mut u64, v: i64) -> IdedExpr {
    *id += 1;
    IdedExpr {
        id: *id,
        expr: Expr::Literal(LiteralValue::Int(v.into())),
    }
}

fn count(e: &IdedExpr) -> i64 {
    let mut n = 0;
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        n += 1;
        stack.extend(super::children(x));
    }
    n
}

/// `accu` is the accumulator of the comprehension whose step is being
/// rewritten, if any.
fn rewrite(e: &mut IdedExpr, groups: &HashMap<String, Uuid>, next: &mut u64, accu: Option<&str>) {
    let mut wrap = false;
    let mut out = false;
    match &mut e.expr {
        Expr::Comprehension(c) => {
            let ComprehensionExpr {
                iter_range,
                accu_init,
                loop_cond,
                loop_step,
                result,
                accu_var,
                ..
            } = &mut **c;
            rewrite(iter_range, groups, next, None);
            rewrite(accu_init, groups, next, None);
            rewrite(loop_cond, groups, next, None);
            rewrite(loop_step, groups, next, Some(accu_var.as_str()));
            rewrite(result, groups, next, None);
            tick_step(c, next);
            let ComprehensionExpr {
                iter_range,
                accu_init,
                loop_cond,
                loop_step,
                ..
            } = &mut **c;
            let weight = (count(loop_cond) + count(loop_step)).max(1);
            let range = std::mem::take(iter_range);
            let w = int(next, weight);
            *iter_range = call(next, "@meter", vec![range, w]);
            // What `map` and `filter` build (their accumulator starts as a
            // list) is one value: charged whole, so it is held to the
            // per-value limit like any other. `all`, `exists` and
            // `exists_one` give a bool or a count and need no charge.
            out = matches!(accu_init.expr, Expr::List(_));
        }
        Expr::Call(c) => {
            // `matches` through a cache of compiled patterns: the crate's own
            // compiles the pattern on every call, 100 times slower.
            if c.func_name == "matches" {
                match (c.target.take(), c.args.len()) {
                    (Some(t), 1) => {
                        c.args.insert(0, *t);
                        c.func_name = "@matches".into();
                    }
                    (None, 2) => c.func_name = "@matches".into(),
                    (t, _) => c.target = t,
                }
            }
            if c.func_name == "in_group"
                && c.target.is_none()
                && let [
                    IdedExpr {
                        expr: Expr::Literal(LiteralValue::String(name)),
                        ..
                    },
                ] = c.args.as_slice()
                && let Some(id) = groups.get(name.inner())
            {
                let id = id.to_string();
                c.func_name = "@in_group".into();
                c.args[0].expr = Expr::Literal(LiteralValue::String(id.into()));
                return;
            }
            // The functions whose result size is known from their
            // arguments are replaced by versions that charge it first.
            if let Some(sized) =
                sized::sized_name(&c.func_name).or_else(|| scan::scan_name(&c.func_name))
                && let Some(t) = c.target.take()
            {
                c.args.insert(0, *t);
                c.func_name = sized.into();
            }
            out = !c.func_name.starts_with('@')
                && c.func_name != "_+_"
                && !sized::is_scalar(&c.func_name);
            let appends_to_accu = c.func_name == "_+_"
                && matches!(c.args.first(), Some(IdedExpr { expr: Expr::Ident(n), .. }) if Some(n.as_str()) == accu);
            // The `?:` and `+` a macro step is made of keep the accumulator
            // context; everything below them is ordinary.
            let inner_accu = if c.func_name == "_?_:_" { accu } else { None };
            if let Some(t) = c.target.as_mut() {
                rewrite(t, groups, next, None);
            }
            for (i, a) in c.args.iter_mut().enumerate() {
                // The step's `[x]` of `map` and `filter` stays a bare list,
                // the shape the interpreter appends in place; its element
                // is charged, and the accumulator is charged whole.
                if appends_to_accu
                    && i == 1
                    && let Expr::List(l) = &mut a.expr
                {
                    for x in l.elements.iter_mut() {
                        rewrite(x, groups, next, None);
                        charge_element(x, next);
                    }
                    continue;
                }
                rewrite(a, groups, next, inner_accu);
            }
            wrap = c.func_name == "_+_" && !appends_to_accu;
        }
        Expr::Select(s) => {
            rewrite(&mut s.operand, groups, next, None);
            // `x.f` on a variable becomes `x['f']`: the same lookup (a
            // missing key is the same error), without the interpreter first
            // looking for a variable literally named "x.f", which costs a
            // string join per evaluation.
            if !s.test && matches!(s.operand.expr, Expr::Ident(_)) {
                let operand = std::mem::take(&mut *s.operand);
                *next += 1;
                let key = IdedExpr {
                    id: *next,
                    expr: Expr::Literal(LiteralValue::String(s.field.clone().into())),
                };
                e.expr = Expr::Call(CallExpr {
                    func_name: "_[_]".into(),
                    target: None,
                    args: vec![operand, key],
                });
            }
        }
        Expr::List(l) => {
            for x in l.elements.iter_mut() {
                rewrite(x, groups, next, None);
                charge_element(x, next);
            }
            // Elements each under the per-value limit can add up past it:
            // the literal is one value, held to the limit whole. One of
            // constants only is bounded by the source and costs nothing.
            out = !l
                .elements
                .iter()
                .all(|x| matches!(x.expr, Expr::Literal(_)));
        }
        Expr::Map(m) => {
            let mut constant = true;
            for en in m.entries.iter_mut() {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &mut en.expr {
                    rewrite(&mut me.key, groups, next, None);
                    rewrite(&mut me.value, groups, next, None);
                    charge_element(&mut me.key, next);
                    charge_element(&mut me.value, next);
                    constant &= matches!(me.key.expr, Expr::Literal(_))
                        && matches!(me.value.expr, Expr::Literal(_));
                } else {
                    constant = false;
                }
            }
            out = !constant;
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    if wrap {
        let sum = std::mem::take(e);
        *e = call(next, "@grow", vec![sum]);
    } else if out {
        let value = std::mem::take(e);
        *e = call(next, "@out", vec![value]);
    }
}

/// Checks the deadline at every step of a comprehension, as `@tick`
/// around the part of the step that runs every time, keeping the shapes the
/// interpreter recognises: the `&&` / `||` fold of `all` and `exists` (its
/// errors are deferred as CEL specifies) and the append of `map` and
/// `filter` (built in place). An unguarded append needs no tick: its
/// elements are charged (`@out` checks the deadline) or charge themselves.
fn tick_step(c: &mut ComprehensionExpr, next: &mut u64) {
    let accu = c.accu_var.as_str();
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == accu);
    let target = match &mut c.loop_step.expr {
        Expr::Call(call)
            if call.target.is_none()
                && (call.func_name == "_&&_" || call.func_name == "_||_")
                && call.args.len() == 2
                && is_accu(&call.args[0]) =>
        {
            &mut call.args[1]
        }
        Expr::Call(call)
            if call.target.is_none()
                && call.func_name == "_?_:_"
                && call.args.len() == 3
                && is_accu(&call.args[2])
                && matches!(&call.args[1].expr, Expr::Call(a) if a.func_name == "_+_") =>
        {
            &mut call.args[0]
        }
        Expr::Call(call)
            if call.func_name == "_+_"
                && call.args.first().is_some_and(is_accu)
                && matches!(call.args.get(1).map(|a| &a.expr), Some(Expr::List(_))) =>
        {
            return;
        }
        _ => &mut c.loop_step,
    };
    let inner = std::mem::take(target);
    *target = call(next, "@tick", vec![inner]);
}

/// Charges an element of a list or map literal, which may be a copy of a
/// large value: in the step of a `map` or `filter` macro (`@result + [x]`),
/// that is one copy per loop step. Literals are bounded by the source and
/// the `@` calls charge their own results.
fn charge_element(x: &mut IdedExpr, next: &mut u64) {
    let charged = match &x.expr {
        Expr::Literal(_) => true,
        Expr::Call(c) => c.func_name.starts_with('@'),
        _ => false,
    };
    if !charged {
        let value = std::mem::take(x);
        *x = call(next, "@out", vec![value]);
    }
}

/// What the evaluation on this thread has left: (work units, bytes of
/// values, bytes of patterns).
#[cfg(test)]
pub(crate) fn left() -> (u64, u64, u64) {
    (LEFT.get(), BYTES_LEFT.get(), PATTERN_BYTES_LEFT.get())
}
