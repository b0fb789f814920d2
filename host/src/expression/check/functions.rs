//! The library functions Cohort's CEL supports, with their signatures, and
//! the checks of literal arguments that would otherwise fail only at
//! evaluation (a regular expression that does not compile, a timestamp or
//! duration that does not parse).
//!
//! Kept apart from the walk so that adding a function is one arm of
//! [`signature`] and one name in [`FUNCTIONS`], and so that the signatures can
//! be tested without parsing an expression.

use cel::common::ast::{CallExpr, Expr, LiteralValue};

use super::{Checker, Type};
use crate::expression::closest;

/// The functions the checker knows, for suggestions.
const FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "exists",
    "all",
    "exists_one",
    "map",
    "filter",
    "has",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "dyn",
    "type",
    "timestamp",
    "duration",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "join",
    "substring",
    "indexOf",
    "lastIndexOf",
    "charAt",
    "equalsIgnoreCase",
    "in_group",
];

/// The result type of a function call, or why it does not apply.
pub(super) fn signature(name: &str, target: Option<&Type>, args: &[Type]) -> Result<Type, String> {
    use Type::*;
    let any = |t: &Type| t.is_dyn();
    let is = |t: &Type, want: &Type| t == want || any(t);
    let signature = |want: &str| {
        let got: Vec<std::string::String> = target
            .into_iter()
            .chain(args)
            .map(|t| t.to_string())
            .collect();
        format!("`{name}` takes {want}, not ({})", got.join(", "))
    };
    match (name, target, args) {
        ("size", None, [t]) | ("size", Some(t), []) => match t {
            String | Bytes | List(_) | Map(..) | Dyn => Ok(Int),
            _ => Err(signature("a string, bytes, a list or a map")),
        },
        ("contains" | "startsWith" | "endsWith", Some(t), [a]) => {
            if is(t, &String) && is(a, &String) {
                Ok(Bool)
            } else if matches!(t, List(_)) && name == "contains" {
                Err(format!(
                    "`contains` is for strings; for a list, write `x in list`, not \
                     `list.contains(x)` ({t})"
                ))
            } else {
                Err(signature("a string and a string"))
            }
        }
        ("matches", Some(t), [a]) | ("matches", None, [t, a]) => {
            if is(t, &String) && is(a, &String) {
                Ok(Bool)
            } else {
                Err(signature("a string and a regular expression"))
            }
        }
        ("equalsIgnoreCase", Some(t), [a]) => {
            if is(t, &String) && is(a, &String) {
                Ok(Bool)
            } else {
                Err(signature("a string and a string"))
            }
        }
        ("lowerAscii" | "upperAscii" | "trim", Some(t), []) => {
            if is(t, &String) {
                Ok(String)
            } else {
                Err(signature("a string"))
            }
        }
        ("replace", Some(t), [a, b]) if is(t, &String) && is(a, &String) && is(b, &String) => {
            Ok(String)
        }
        ("replace", Some(t), [a, b, n])
            if is(t, &String) && is(a, &String) && is(b, &String) && is(n, &Int) =>
        {
            Ok(String)
        }
        ("split", Some(t), [a]) if is(t, &String) && is(a, &String) => Ok(List(Box::new(String))),
        ("split", Some(t), [a, n]) if is(t, &String) && is(a, &String) && is(n, &Int) => {
            Ok(List(Box::new(String)))
        }
        ("join", Some(List(_) | Dyn), []) => Ok(String),
        ("join", Some(List(_) | Dyn), [a]) if is(a, &String) => Ok(String),
        ("substring", Some(t), [a]) if is(t, &String) && is(a, &Int) => Ok(String),
        ("substring", Some(t), [a, b]) if is(t, &String) && is(a, &Int) && is(b, &Int) => {
            Ok(String)
        }
        ("charAt", Some(t), [a]) if is(t, &String) && is(a, &Int) => Ok(String),
        ("indexOf" | "lastIndexOf", Some(t), [a]) if is(t, &String) && is(a, &String) => Ok(Int),
        ("indexOf" | "lastIndexOf", Some(t), [a, n])
            if is(t, &String) && is(a, &String) && is(n, &Int) =>
        {
            Ok(Int)
        }
        ("replace" | "split" | "join" | "substring" | "charAt" | "indexOf" | "lastIndexOf", ..) => {
            Err(format!("`{name}` does not apply to these arguments"))
        }
        ("int", None, [t]) => match t {
            Int | Uint | Double | String | Timestamp | Dyn => Ok(Int),
            _ => Err(signature("a number, a string or a timestamp")),
        },
        ("uint", None, [t]) => match t {
            Int | Uint | Double | String | Dyn => Ok(Uint),
            _ => Err(signature("a number or a string")),
        },
        ("double", None, [t]) => match t {
            Int | Uint | Double | String | Dyn => Ok(Double),
            _ => Err(signature("a number or a string")),
        },
        ("string", None, [t]) => match t {
            Int | Uint | Double | String | Bytes | Bool | Timestamp | Duration | Dyn => Ok(String),
            _ => Err(signature("a scalar value")),
        },
        ("bool", None, [t]) => match t {
            Bool | String | Dyn => Ok(Bool),
            _ => Err(signature("a bool or a string")),
        },
        ("bytes", None, [t]) => match t {
            Bytes | String | Dyn => Ok(Bytes),
            _ => Err(signature("bytes or a string")),
        },
        ("dyn", None, [_]) => Ok(Dyn),
        ("type", None, [_]) => Ok(Meta),
        ("timestamp", None, [t]) => match t {
            String | Int | Timestamp | Dyn => Ok(Timestamp),
            _ => Err(signature("a string (RFC 3339) or an int (seconds)")),
        },
        ("duration", None, [t]) => match t {
            String | Duration | Dyn => Ok(Duration),
            _ => Err(signature("a string such as '720h'")),
        },
        (
            "getFullYear" | "getMonth" | "getDayOfYear" | "getDayOfMonth" | "getDate"
            | "getDayOfWeek",
            Some(t),
            tz,
        ) if is(t, &Timestamp) && tz.len() <= 1 && tz.iter().all(|z| is(z, &String)) => Ok(Int),
        ("getHours" | "getMinutes" | "getSeconds" | "getMilliseconds", Some(t), tz)
            if (is(t, &Timestamp) && tz.len() <= 1 && tz.iter().all(|z| is(z, &String)))
                || (*t == Duration && tz.is_empty()) =>
        {
            Ok(Int)
        }
        _ => {
            if FUNCTIONS.contains(&name) {
                let how = if target.is_some() {
                    "as a method here"
                } else {
                    "this way"
                };
                Err(format!(
                    "`{name}` cannot be called {how} with ({})",
                    target
                        .into_iter()
                        .chain(args)
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                let hint = closest(name, FUNCTIONS.iter().copied())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                Err(format!("unknown function `{name}`{hint}"))
            }
        }
    }
}

impl Checker<'_, '_> {
    /// A literal pattern must compile, within the size limits evaluation
    /// uses.
    pub(super) fn check_regex(&mut self, call: &CallExpr) {
        let pattern = match (&call.target, call.args.as_slice()) {
            (Some(_), [p]) | (None, [_, p]) => p,
            _ => return,
        };
        if let Expr::Literal(LiteralValue::String(s)) = &pattern.expr
            && let Err(e) = crate::expression::pattern::check(s.inner())
        {
            let message = e.to_string();
            let first = message
                .lines()
                .last()
                .unwrap_or(&message)
                .trim()
                .to_string();
            self.problem(pattern.id, format!("invalid regular expression: {first}"));
        }
    }

    pub(super) fn check_time_literal(&mut self, id: u64, name: &str, s: &str) {
        let ok = match name {
            "timestamp" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            _ => parse_duration(s),
        };
        if !ok {
            let want = if name == "timestamp" {
                "an RFC 3339 time such as '2026-01-31T09:00:00Z'"
            } else {
                "a duration such as '720h', '90m' or '1h30m'"
            };
            self.problem(id, format!("`{s}` is not {want}"));
        }
    }
}

/// Whether `s` is a CEL duration literal: a sign, then numbers with units.
pub(super) fn parse_duration(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        any = true;
    }
    any
}
