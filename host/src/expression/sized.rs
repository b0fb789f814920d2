//! Bounding the memory of an evaluation.
//!
//! The step budget of [`super::meter`] bounds time, not size: one
//! `s.replace('', t)` multiplies the length of `s` by the length of `t`, so
//! five chained calls on a short username reach gigabytes in a handful of
//! steps. So every value an evaluation produces is charged, in bytes, to a
//! second per-evaluation budget ([`MAX_EVAL_BYTES`]), and no single value may
//! pass [`MAX_VALUE_BYTES`]:
//!
//! - the functions whose result can be much larger than their arguments
//!   (`replace`, `join`, `split`) are replaced by versions here that compute
//!   the size of their result from their arguments and refuse *before*
//!   allocating it;
//! - every other function whose result may be a string, bytes, a list or a
//!   map goes through `@out`, which charges the result: those results are at
//!   most a small constant times the size of their (already charged)
//!   arguments, so the check after the call bounds the allocation too;
//! - every element of a list or map literal goes through `@out` as well,
//!   which charges what the `map` and `filter` macros accumulate, step by
//!   step.
//!
//! The rewrite that inserts these calls is in [`super::meter`].

use cel::ExecutionError;
use cel::common::types::{CelBytes, CelInt, CelList, CelMap, CelString};
use cel::common::value::{CowVal, Val};

use super::meter::charge_bytes;

/// See [`crate::limits::MAX_EXPRESSION_VALUE_BYTES`].
pub(crate) const MAX_VALUE_BYTES: u64 = crate::limits::MAX_EXPRESSION_VALUE_BYTES;
/// See [`crate::limits::MAX_EXPRESSION_EVAL_BYTES`].
pub(crate) const MAX_EVAL_BYTES: u64 = crate::limits::MAX_EXPRESSION_EVAL_BYTES;

/// What one boxed element of a list or map costs besides its contents: the
/// box and its slot. Charging it keeps a list of a million empty strings
/// from being free.
const SLOT_BYTES: u64 = 16;

/// The functions whose result is never a string, bytes, list or map (or is
/// one of their arguments, already charged), which `@out` need not wrap.
/// Anything not listed here is wrapped, so a function added to the runtime
/// later is charged by default.
pub(crate) fn is_scalar(function: &str) -> bool {
    matches!(
        function,
        "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "_&&_"
            | "_||_"
            | "!_"
            | "-_"
            | "_-_"
            | "_*_"
            | "_/_"
            | "_%_"
            | "_?_:_"
            | "_[_]"
            | "@in"
            | "@not_strictly_false"
            | "size"
            | "contains"
            | "startsWith"
            | "endsWith"
            | "matches"
            | "equalsIgnoreCase"
            | "indexOf"
            | "lastIndexOf"
            | "in_group"
            | "int"
            | "uint"
            | "double"
            | "bool"
            | "dyn"
            | "type"
            | "timestamp"
            | "duration"
            | "getFullYear"
            | "getMonth"
            | "getDayOfYear"
            | "getDayOfMonth"
            | "getDate"
            | "getDayOfWeek"
            | "getHours"
            | "getMinutes"
            | "getSeconds"
            | "getMilliseconds"
    )
}

/// The member functions replaced by a sized version here: `t.f(args)` is
/// rewritten to `@f(t, args)`.
pub(crate) fn sized_name(function: &str) -> Option<&'static str> {
    match function {
        "replace" => Some("@replace"),
        "join" => Some("@join"),
        "split" => Some("@split"),
        _ => None,
    }
}

/// The size of `v` in bytes, counted deeply: string and bytes contents, and
/// a slot per value. Iterative, as a value can nest as deep as the
/// expression that built it.
pub(crate) fn bytes_of<'v>(v: &(dyn Val + 'v)) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<&(dyn Val + 'v)> = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(SLOT_BYTES);
        if let Some(s) = v.downcast_ref::<CelString>() {
            total = total.saturating_add(s.len() as u64);
        } else if let Some(b) = v.downcast_ref::<CelBytes>() {
            total = total.saturating_add(b.inner().len() as u64);
        } else if let Some(m) = v.downcast_ref::<CelMap>() {
            for (k, x) in m.inner() {
                stack.push(k.inner());
                stack.push(&**x);
            }
        } else if let Some(l) = v.downcast_ref::<CelList>() {
            stack.extend(l.inner().iter().map(|x| &**x));
        } else if let Some(it) = v.as_iterable() {
            let mut items = it.iter();
            while let Some(x) = items.next() {
                stack.push(x);
            }
        }
    }
    total
}

fn one<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if args.len() != 1 {
        return Err(ExecutionError::InvalidArgumentCount {
            expected: 1,
            actual: args.len(),
        });
    }
    Ok(args.swap_remove(0))
}

/// `@out(value)`: charges a produced value, and hands it back.
pub(crate) fn out<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let v = one(args)?;
    charge_bytes(bytes_of(v.as_ref()))?;
    Ok(v)
}

fn types(args: &[CowVal<'_, '_>]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().get_type().name().to_owned())
        .collect()
}

fn string<'a, 'b, 'v>(
    function: &str,
    args: &'a [CowVal<'b, 'v>],
    i: usize,
) -> Result<&'a CelString<'v>, ExecutionError> {
    args.get(i)
        .and_then(|a| a.as_ref().downcast_ref::<CelString>())
        .ok_or_else(|| ExecutionError::no_such_member_overload(function, types(args)))
}

/// The optional count argument at `i`: `None` for "all", as a negative count
/// means.
fn count(
    function: &str,
    args: &[CowVal<'_, '_>],
    i: usize,
) -> Result<Option<usize>, ExecutionError> {
    match args.get(i) {
        None => Ok(None),
        Some(a) => a
            .as_ref()
            .downcast_ref::<CelInt>()
            .map(|n| usize::try_from(*n.inner()).ok())
            .ok_or_else(|| ExecutionError::no_such_member_overload(function, types(args))),
    }
}

/// `@replace(s, from, to[, n])`: `s.replace(from, to[, n])`, refused before
/// allocating when the result would be too large.
pub(crate) fn replace<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if !(3..=4).contains(&args.len()) {
        return Err(ExecutionError::no_such_member_overload(
            "replace",
            types(&args),
        ));
    }
    let this = string("replace", &args, 0)?.inner();
    let from = string("replace", &args, 1)?.inner();
    let to = string("replace", &args, 2)?.inner();
    let limit = count("replace", &args, 3)?;
    // An empty pattern matches before every character and at the end.
    let found = if from.is_empty() {
        this.chars().count() + 1
    } else {
        this.matches(from).count()
    };
    let n = limit.map_or(found, |l| l.min(found)) as u64;
    let size = (this.len() as u64)
        .saturating_sub(n.saturating_mul(from.len() as u64))
        .saturating_add(n.saturating_mul(to.len() as u64));
    charge_bytes(size.saturating_add(SLOT_BYTES))?;
    let out = match limit {
        Some(l) => this.replacen(from, to, l),
        None => this.replace(from, to),
    };
    Ok(CowVal::owned(CelString::from(out)))
}

/// `@join(list[, sep])`: `list.join([sep])`, refused before allocating when
/// the result would be too large.
pub(crate) fn join<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if !(1..=2).contains(&args.len()) {
        return Err(ExecutionError::no_such_member_overload(
            "join",
            types(&args),
        ));
    }
    let sep = if args.len() == 2 {
        string("join", &args, 1)?.inner()
    } else {
        ""
    };
    let list = args[0]
        .as_ref()
        .as_iterable()
        .ok_or_else(|| ExecutionError::no_such_member_overload("join", types(&args)))?;
    let mut parts: Vec<&str> = Vec::new();
    let mut size = 0u64;
    let mut items = list.iter();
    while let Some(item) = items.next() {
        let s = item
            .downcast_ref::<CelString>()
            .ok_or_else(|| ExecutionError::UnexpectedType {
                got: item.get_type().name().to_owned(),
                want: "string".to_owned(),
            })?;
        if !parts.is_empty() {
            size = size.saturating_add(sep.len() as u64);
        }
        size = size.saturating_add(s.len() as u64);
        // Refuse as soon as the sum passes the value limit, before the list
        // of parts itself grows with a long list.
        if size > MAX_VALUE_BYTES {
            charge_bytes(size)?;
        }
        parts.push(s.inner());
    }
    charge_bytes(size.saturating_add(SLOT_BYTES))?;
    Ok(CowVal::owned(CelString::from(parts.join(sep))))
}

/// `@split(s, sep[, n])`: `s.split(sep[, n])`, refused before allocating when
/// the list would be too large. Same semantics as the strings extension: at
/// most `n` parts (none when zero, all when negative), the last holding the
/// rest; an empty separator splits between code points.
pub(crate) fn split<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if !(2..=3).contains(&args.len()) {
        return Err(ExecutionError::no_such_member_overload(
            "split",
            types(&args),
        ));
    }
    let this = string("split", &args, 0)?.inner();
    let sep = string("split", &args, 1)?.inner();
    let zero = matches!(
        args.get(2).and_then(|a| a.as_ref().downcast_ref::<CelInt>()),
        Some(n) if *n.inner() == 0
    );
    let limit = count("split", &args, 2)?;
    let found = if zero {
        0
    } else if sep.is_empty() {
        this.chars().count()
    } else {
        this.matches(sep).count() + 1
    };
    let parts = limit.map_or(found, |l| l.min(found)) as u64;
    // Each part is a boxed string of its own; together they hold at most
    // the whole string.
    let size = (this.len() as u64)
        .saturating_add(parts.saturating_mul(2 * SLOT_BYTES))
        .saturating_add(SLOT_BYTES);
    charge_bytes(size)?;
    let pieces: Vec<&str> = match (limit, sep.is_empty()) {
        _ if zero => Vec::new(),
        (Some(n), true) => {
            let mut pieces: Vec<&str> = Vec::new();
            let mut rest: &str = this;
            while let Some(c) = rest.chars().next() {
                if pieces.len() + 1 == n {
                    break;
                }
                let (head, tail) = rest.split_at(c.len_utf8());
                pieces.push(head);
                rest = tail;
            }
            if !rest.is_empty() {
                pieces.push(rest);
            }
            pieces
        }
        (Some(n), false) => this.splitn(n, sep).collect(),
        (None, true) => this
            .char_indices()
            .map(|(i, c)| &this[i..i + c.len_utf8()])
            .collect(),
        (None, false) => this.split(sep).collect(),
    };
    let list: Vec<Box<dyn Val>> = pieces
        .into_iter()
        .map(|s| Box::new(CelString::from(s.to_owned())) as Box<dyn Val>)
        .collect();
    Ok(CowVal::owned(CelList::from(list)))
}
