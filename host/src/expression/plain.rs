//! Evaluating an expression on its own, over plain values: what the CEL
//! conformance suite needs, without the `cel` crate's types leaking out of
//! this module.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Value};
use chrono::{DateTime, FixedOffset};

use super::{Environment, Problem, check, meter, runtime};
use crate::directory::SubjectKind;

/// A CEL value.
#[derive(Clone, Debug, PartialEq)]
pub enum Plain {
    /// `null`
    Null,
    /// `bool`
    Bool(bool),
    /// `int`
    Int(i64),
    /// `uint`
    Uint(u64),
    /// `double`
    Double(f64),
    /// `string`
    String(String),
    /// `bytes`
    Bytes(Vec<u8>),
    /// `list`
    List(Vec<Plain>),
    /// `map`, in no particular order.
    Map(Vec<(Plain, Plain)>),
    /// `timestamp`
    Timestamp(DateTime<FixedOffset>),
    /// `duration`
    Duration(chrono::Duration),
    /// Anything else (types, messages), as debug text.
    Other(String),
}

/// Why an evaluation gave no value.
#[derive(Clone, Debug, PartialEq)]
pub enum PlainError {
    /// The source does not parse, or is too large or deep.
    Syntax(Vec<Problem>),
    /// The checker refused it.
    Check(Vec<Problem>),
    /// Evaluation failed.
    Eval(String),
    /// A variable's value has no CEL equivalent here.
    Unsupported(String),
}

/// Evaluates `source` with `variables` bound, through the same parser,
/// limits, metering and runtime as rules. With `check`, the checker runs
/// first, with no attributes in scope (so only for sources without
/// variables).
pub fn evaluate(
    source: &str,
    variables: &[(String, Plain)],
    check: bool,
) -> Result<Plain, PlainError> {
    super::on_big_stack(|| evaluate_here(source, variables, check))
        .unwrap_or_else(|e| Err(PlainError::Eval(e.to_string())))
}

fn evaluate_here(
    source: &str,
    variables: &[(String, Plain)],
    check: bool,
) -> Result<Plain, PlainError> {
    let (expr, info) = super::parse(source).map_err(PlainError::Syntax)?;
    let offset_of = |id: u64| info.offset_for(id).map_or(0, |(start, _)| start as usize);
    let mut groups = HashMap::new();
    if check {
        let none = |_: &str| None;
        let env = Environment {
            kind: SubjectKind::User,
            users: &[],
            devices: &[],
            group: &none,
            related_only: false,
        };
        let checked =
            check::check(&expr, &env, source, &offset_of, false).map_err(PlainError::Check)?;
        groups = checked.groups;
    }
    let expr = meter::instrument(expr, &groups);
    let runtime = runtime::Runtime::new();
    let mut ctx = Context::with_env(runtime.env());
    for (name, value) in variables {
        ctx.add_variable_from_value(name.clone(), to_value(value)?);
    }
    meter::with_budget(super::BUDGET, || Value::resolve(&expr, &ctx))
        .map(|v| from_value(&v))
        .map_err(|e| PlainError::Eval(e.to_string()))
}

fn to_value(p: &Plain) -> Result<Value, PlainError> {
    Ok(match p {
        Plain::Null => Value::Null,
        Plain::Bool(b) => Value::Bool(*b),
        Plain::Int(i) => Value::Int(*i),
        Plain::Uint(u) => Value::UInt(*u),
        Plain::Double(d) => Value::Float(*d),
        Plain::String(s) => Value::String(Arc::new(s.clone())),
        Plain::Bytes(b) => Value::Bytes(Arc::new(b.clone())),
        Plain::List(l) => Value::List(Arc::new(
            l.iter().map(to_value).collect::<Result<Vec<_>, _>>()?,
        )),
        Plain::Map(entries) => {
            let mut m = HashMap::new();
            for (k, v) in entries {
                let key = match k {
                    Plain::Int(i) => Key::Int(*i),
                    Plain::Uint(u) => Key::Uint(*u),
                    Plain::Bool(b) => Key::Bool(*b),
                    Plain::String(s) => Key::String(Arc::new(s.clone())),
                    other => {
                        return Err(PlainError::Unsupported(format!("map key {other:?}")));
                    }
                };
                m.insert(key, to_value(v)?);
            }
            Value::Map(Map { map: Arc::new(m) })
        }
        Plain::Timestamp(t) => Value::Timestamp(*t),
        Plain::Duration(d) => Value::Duration(*d),
        Plain::Other(s) => return Err(PlainError::Unsupported(s.clone())),
    })
}

fn from_value(v: &Value) -> Plain {
    match v {
        Value::Null => Plain::Null,
        Value::Bool(b) => Plain::Bool(*b),
        Value::Int(i) => Plain::Int(*i),
        Value::UInt(u) => Plain::Uint(*u),
        Value::Float(f) => Plain::Double(*f),
        Value::String(s) => Plain::String(s.to_string()),
        Value::Bytes(b) => Plain::Bytes(b.to_vec()),
        Value::List(l) => Plain::List(l.iter().map(from_value).collect()),
        Value::Map(m) => Plain::Map(
            m.map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Key::Int(i) => Plain::Int(*i),
                        Key::Uint(u) => Plain::Uint(*u),
                        Key::Bool(b) => Plain::Bool(*b),
                        Key::String(s) => Plain::String(s.to_string()),
                    };
                    (key, from_value(v))
                })
                .collect(),
        ),
        Value::Timestamp(t) => Plain::Timestamp(*t),
        Value::Duration(d) => Plain::Duration(*d),
        other => Plain::Other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements each under the per-value limit, in one literal past it (the
    /// shape the `cel_memory` property test found): the meter refuses the
    /// literal as a whole.
    #[test]
    fn a_literal_of_large_elements_is_held_to_the_value_limit() {
        let numbers: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let part = format!(
            "[{}].map(i, '{}').join()",
            numbers.join(", "),
            "a".repeat(200)
        );
        let four = format!("[{part}, {part}, {part}, {part}]");
        let err = evaluate(&four, &[], false).unwrap_err();
        assert!(
            matches!(&err, PlainError::Eval(m) if m.contains("one value would take")),
            "{err:?}"
        );
        // Three of them (60,003 bytes with their slots) are within it.
        let three = format!("[{part}, {part}, {part}]");
        let Ok(Plain::List(items)) = evaluate(&three, &[], false) else {
            panic!("three parts should evaluate");
        };
        assert_eq!(items.len(), 3);
    }
}
