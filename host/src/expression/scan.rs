//! Functions whose time grows with the size of their arguments, metered.
//!
//! The work budget of [`super::meter`] counts loop steps and calls, which
//! bounds time only if each call is cheap. The string searches are not:
//! the strings extension's `indexOf` compares every window of code points
//! (60 KB against 30 KB took 46 ms a call), and even a linear `contains`
//! scans 64 KiB. So these are replaced by versions here that charge the
//! bytes they scan ([`scan_units`]) before scanning, and search in linear
//! time (`str::find`, then the code-point index of the byte offset), with
//! the crate's results and errors. The charge is in work units, not time:
//! a rule costs the same on every run, so recomputes, which have no
//! deadline, are bounded without a clock.
//!
//! `@tick` checks the deadline at every loop step, for the work that does
//! not charge anything ([`super::meter`] inserts it).

use cel::ExecutionError;
use cel::common::types::{CelBool, CelInt, CelString};
use cel::common::value::CowVal;

use super::meter::{charge, check_deadline};

/// See [`crate::limits::EXPRESSION_SCAN_BYTES_PER_UNIT`].
pub(crate) const SCAN_BYTES_PER_UNIT: u64 = crate::limits::EXPRESSION_SCAN_BYTES_PER_UNIT;

/// The work units of scanning `bytes`: one per call, and one more per
/// [`SCAN_BYTES_PER_UNIT`].
pub(crate) fn scan_units(bytes: u64) -> u64 {
    1 + bytes / SCAN_BYTES_PER_UNIT
}

/// The functions replaced by a version here: `t.f(args)` becomes
/// `@f(t, args)`.
pub(crate) fn scan_name(function: &str) -> Option<&'static str> {
    match function {
        "indexOf" => Some("@indexOf"),
        "lastIndexOf" => Some("@lastIndexOf"),
        "contains" => Some("@contains"),
        "startsWith" => Some("@startsWith"),
        "endsWith" => Some("@endsWith"),
        _ => None,
    }
}

fn strings<'a>(
    function: &str,
    args: &'a [CowVal<'_, '_>],
) -> Result<(&'a str, &'a str), ExecutionError> {
    let s = |i: usize| {
        args.get(i)
            .and_then(|a| a.as_ref().downcast_ref::<CelString>())
            .map(|s| s.inner())
    };
    match (s(0), s(1)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(ExecutionError::no_such_overload(
            function,
            args.iter()
                .map(|a| a.as_ref().get_type().name().to_owned())
                .collect(),
        )),
    }
}

fn out_of_range(function: &str, idx: i64) -> ExecutionError {
    ExecutionError::function_error(function, format!("index out of range: {idx}"))
}

fn boolean<'b, 'v>(b: bool) -> CowVal<'b, 'v> {
    CowVal::owned(CelBool::from(b))
}

fn int<'b, 'v>(i: i64) -> CowVal<'b, 'v> {
    CowVal::owned(CelInt::from(i))
}

fn chars(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}

/// The byte offset of code point `n` of `s` (its length past the end).
fn byte_of(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// `@contains(s, t)`.
pub(crate) fn contains<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (s, t) = strings("contains", &args)?;
    charge(scan_units((s.len() + t.len()) as u64))?;
    Ok(boolean(s.contains(t)))
}

/// `@startsWith(s, t)`: compares `t`'s length at most.
pub(crate) fn starts_with<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (s, t) = strings("startsWith", &args)?;
    charge(scan_units(t.len() as u64))?;
    Ok(boolean(s.starts_with(t)))
}

/// `@endsWith(s, t)`: compares `t`'s length at most.
pub(crate) fn ends_with<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (s, t) = strings("endsWith", &args)?;
    charge(scan_units(t.len() as u64))?;
    Ok(boolean(s.ends_with(t)))
}

/// The optional code-point offset of `indexOf` / `lastIndexOf`.
fn offset(function: &str, args: &[CowVal<'_, '_>]) -> Result<Option<i64>, ExecutionError> {
    match args.get(2) {
        None => Ok(None),
        Some(a) => a
            .as_ref()
            .downcast_ref::<CelInt>()
            .map(|n| Some(*n.inner()))
            .ok_or_else(|| {
                ExecutionError::no_such_overload(
                    function,
                    args.iter()
                        .map(|a| a.as_ref().get_type().name().to_owned())
                        .collect(),
                )
            }),
    }
}

/// `@indexOf(s, t[, offset])`: the code-point index of the first `t` in
/// `s` at or after `offset`, or -1.
pub(crate) fn index_of<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (s, t) = strings("indexOf", &args)?;
    let offset = offset("indexOf", &args)?;
    charge(scan_units((s.len() + t.len()) as u64))?;
    let Some(offset) = offset else {
        return Ok(int(s.find(t).map_or(-1, |b| chars(&s[..b]))));
    };
    let len = chars(s);
    if offset < 0 {
        return Err(out_of_range("indexOf", offset));
    }
    if t.is_empty() {
        return Ok(int(offset.min(len)));
    }
    if offset >= len {
        return Err(out_of_range("indexOf", offset));
    }
    // `offset` is below the length, so it fits a usize.
    let from = byte_of(s, usize::try_from(offset).unwrap_or(usize::MAX));
    Ok(int(s[from..]
        .find(t)
        .map_or(-1, |b| offset + chars(&s[from..from + b]))))
}

/// `@lastIndexOf(s, t[, offset])`: the code-point index of the last `t` in
/// `s` that starts at or before `offset`, or -1.
pub(crate) fn last_index_of<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (s, t) = strings("lastIndexOf", &args)?;
    let offset = offset("lastIndexOf", &args)?;
    charge(scan_units((s.len() + t.len()) as u64))?;
    let Some(offset) = offset else {
        return Ok(int(s.rfind(t).map_or(-1, |b| chars(&s[..b]))));
    };
    let len = chars(s);
    if offset < 0 {
        return Err(out_of_range("lastIndexOf", offset));
    }
    if t.is_empty() {
        return Ok(int(offset.min(len)));
    }
    if offset >= len {
        return Err(out_of_range("lastIndexOf", offset));
    }
    // A match starting at or before code point `offset` ends at or before
    // code point `offset + chars(t)`.
    let last = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = byte_of(s, last.saturating_add(t.chars().count()));
    Ok(int(s[..end].rfind(t).map_or(-1, |b| chars(&s[..b]))))
}

/// `@tick(value)`: refused once the deadline has passed, else `value`.
pub(crate) fn tick<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    check_deadline()?;
    if args.len() != 1 {
        return Err(ExecutionError::InvalidArgumentCount {
            expected: 1,
            actual: args.len(),
        });
    }
    Ok(args.swap_remove(0))
}
