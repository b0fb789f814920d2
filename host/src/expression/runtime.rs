//! Evaluating compiled expressions.
//!
//! One [`Runtime`] (the standard library, Cohort's functions and the
//! metering hooks) is built once and shared by every thread. A subject's
//! values are bound once into a child scope ([`Runtime::scope`]) and every
//! expression of a rule set is evaluated against it, so the environment is
//! never rebuilt per subject and the subject's record is built once per
//! batch, not once per rule. Attribute strings are borrowed from the
//! subject, not copied.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::IdedExpr;
use cel::common::types::{
    CelBool, CelDouble, CelList, CelMap, CelMapKey, CelString, CelTimestamp, DYN_TYPE, INT_TYPE,
    STRING_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, Value};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BUDGET, Expression, Part, meter, pattern, scan, sized};
use crate::directory::{AttrRef, AttrType, SubjectKind};

thread_local! {
    /// The groups named by `in_group` that the subject being evaluated on
    /// this thread is in.
    static IN_GROUPS: RefCell<Vec<Uuid>> = const { RefCell::new(Vec::new()) };
}

/// Why an expression gave no verdict for a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    /// For the admin.
    pub message: String,
    /// It read an attribute the subject does not have. As with conditions,
    /// a missing attribute never satisfies a rule, and this is not worth
    /// reporting as an error.
    pub missing_attribute: bool,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Something with attributes: a subject, or one related to it.
pub trait Related {
    /// The value of attribute `name`, if set.
    fn attribute(&self, name: &str) -> Option<AttrRef<'_>>;
}

/// What one subject's evaluation sees.
pub struct Bindings<'a> {
    /// Whose rule: decides the variable's name (`user` / `device`).
    pub kind: SubjectKind,
    /// The subject.
    pub subject: &'a dyn Related,
    /// Its attributes to bind, with their types: those the expressions read.
    pub attributes: &'a [(String, AttrType)],
    /// The groups it is in, `(id, name)`, when an expression reads `.groups`.
    pub groups: Option<Vec<(Uuid, &'a str)>>,
    /// Its related subjects, when an expression reads them.
    pub related: Option<Vec<&'a dyn Related>>,
    /// The related subjects' attributes to bind.
    pub related_attributes: &'a [(String, AttrType)],
    /// Of the groups named by `in_group`, those it is in.
    pub in_groups: Vec<Uuid>,
    /// The evaluation time.
    pub now: DateTime<Utc>,
}

/// The shared evaluation environment.
pub struct Runtime {
    env: Arc<Env>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

impl Runtime {
    /// Builds the environment: CEL's standard library, the strings
    /// extension, Cohort's functions and the metering hooks.
    pub fn new() -> Runtime {
        let mut env = Env::stdlib();
        // Registration fails only for a name declared twice, which is a bug
        // here that every expression test would show; it is logged rather
        // than allowed to stop the server, and the function is then missing.
        let registered = |what: &str, r: Result<(), cel::DeclarationError>| {
            if let Err(e) = r {
                tracing::error!(function = what, error = %e, "a CEL function could not be registered");
            }
        };
        registered("strings", env.add_extension(cel::extensions::strings));
        registered(
            "@meter",
            env.add_overload("@meter", "@meter", vec![DYN_TYPE, INT_TYPE], meter::meter),
        );
        // The other hooks the rewrite in `meter` calls, with the arities each
        // is called with; every argument is dynamic.
        let hooks: [(
            &str,
            cel::common::functions::Function,
            std::ops::RangeInclusive<usize>,
        ); 11] = [
            ("@grow", meter::grow, 1..=1),
            ("@out", sized::out, 1..=1),
            ("@replace", sized::replace, 3..=4),
            ("@join", sized::join, 1..=2),
            ("@split", sized::split, 2..=3),
            ("@tick", scan::tick, 1..=1),
            ("@indexOf", scan::index_of, 2..=3),
            ("@lastIndexOf", scan::last_index_of, 2..=3),
            ("@contains", scan::contains, 2..=2),
            ("@startsWith", scan::starts_with, 2..=2),
            ("@endsWith", scan::ends_with, 2..=2),
        ];
        for (name, f, arities) in hooks {
            let single = arities.start() == arities.end();
            for n in arities {
                let id = if single {
                    name.to_string()
                } else {
                    format!("{name}/{n}")
                };
                let types = (0..n).map(|_| DYN_TYPE).collect();
                registered(name, env.add_overload(name, &id, types, f));
            }
        }
        registered(
            "@in_group",
            env.add_overload("@in_group", "@in_group", vec![STRING_TYPE], in_group),
        );
        registered(
            "@matches",
            env.add_overload(
                "@matches",
                "@matches",
                vec![STRING_TYPE, STRING_TYPE],
                pattern::matches,
            ),
        );
        registered(
            "equalsIgnoreCase",
            cel::add_member_overload!(env, fn equals_ignore_case: (CelString, CelString) -> CelBool),
        );
        Runtime { env: Arc::new(env) }
    }

    /// The environment, for evaluations outside rules ([`super::plain`]).
    pub(crate) fn env(&self) -> Arc<Env> {
        Arc::clone(&self.env)
    }

    /// Binds one subject's values, for evaluating expressions over it.
    pub fn scope<'a>(&self, b: &'a Bindings<'a>) -> Scope<'a> {
        // A root scope per subject costs an `Arc` clone and two empty maps:
        // every function lives in the shared `Env`.
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        let own = match b.kind {
            SubjectKind::User => "user",
            SubjectKind::Device => "device",
        };
        let mut own_record = record(b.subject, b.attributes);
        if let Some(groups) = &b.groups {
            let list: Vec<Box<dyn Val + 'a>> = groups
                .iter()
                .map(|(id, name)| {
                    let mut m: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> =
                        HashMap::with_capacity(2);
                    m.insert(
                        CelMapKey::from("id"),
                        Box::new(CelString::from(id.to_string())),
                    );
                    m.insert(CelMapKey::from("name"), Box::new(CelString::from(*name)));
                    Box::new(CelMap::from(m)) as Box<dyn Val + 'a>
                })
                .collect();
            own_record.insert(CelMapKey::from("groups"), Box::new(CelList::from(list)));
        }
        if let Some(related) = &b.related {
            let list: Vec<Box<dyn Val + 'a>> = related
                .iter()
                .map(|r| {
                    Box::new(CelMap::from(record(*r, b.related_attributes))) as Box<dyn Val + 'a>
                })
                .collect();
            let name = match b.kind {
                SubjectKind::User => "devices",
                SubjectKind::Device => "users",
            };
            own_record.insert(CelMapKey::from(name), Box::new(CelList::from(list)));
        }
        ctx.add_variable_as_val(own, Box::new(CelMap::from(own_record)));
        ctx.add_variable_as_val("now", Box::new(CelTimestamp::from(b.now.fixed_offset())));
        Scope {
            ctx,
            in_groups: b.in_groups.clone(),
        }
    }
}

/// One subject's bound values.
pub struct Scope<'a> {
    ctx: Context<'a, 'a>,
    in_groups: Vec<Uuid>,
}

impl Scope<'_> {
    /// Whether `expr` holds for the subject.
    pub fn evaluate(&self, expr: &Expression) -> Result<bool, EvalError> {
        self.run(&expr.expr)
    }

    /// The value of each part of `expr`'s top-level chain, for explanations.
    pub fn evaluate_parts(&self, expr: &Expression) -> Vec<Result<bool, EvalError>> {
        expr.parts
            .iter()
            .map(|p: &Part| self.run(&p.expr))
            .collect()
    }

    fn run(&self, expr: &IdedExpr) -> Result<bool, EvalError> {
        IN_GROUPS.with(|g| g.borrow_mut().clone_from(&self.in_groups));
        let result = meter::with_budget(BUDGET, || Value::resolve(expr, &self.ctx));
        match result {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError {
                message: format!(
                    "the expression gave {} instead of true or false",
                    describe(&other)
                ),
                missing_attribute: false,
            }),
            Err(e) => Err(error(e)),
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Int(i) => format!("the number {i}"),
        Value::UInt(i) => format!("the number {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::List(_) => "a list".into(),
        Value::Map(_) => "a map".into(),
        _ => "a value".into(),
    }
}

fn error(e: ExecutionError) -> EvalError {
    let missing = matches!(e, ExecutionError::NoSuchKey(_));
    let message = match &e {
        ExecutionError::NoSuchKey(k) => format!("the subject has no value for `{k}`"),
        ExecutionError::FunctionError { function, message } if function == "budget" => {
            message.clone()
        }
        other => other.to_string(),
    };
    EvalError {
        message,
        missing_attribute: missing,
    }
}

/// A record of `subject`'s `attributes` that are set.
fn record<'a>(
    subject: &'a dyn Related,
    attributes: &[(String, AttrType)],
) -> HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> {
    let mut m: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> =
        HashMap::with_capacity(attributes.len() + 2);
    for (name, ty) in attributes {
        let Some(v) = subject.attribute(name) else {
            continue;
        };
        if let Some(val) = value(v, *ty) {
            m.insert(CelMapKey::from(name.clone()), val);
        }
    }
    m
}

fn value<'a>(v: AttrRef<'a>, ty: AttrType) -> Option<Box<dyn Val + 'a>> {
    Some(match v {
        AttrRef::Text(s) if ty == AttrType::Date => {
            Box::new(CelTimestamp::from(parse_date(s)?.fixed_offset()))
        }
        AttrRef::Text(s) => Box::new(CelString::from(s)),
        AttrRef::Id(id) => Box::new(CelString::from(id.to_string())),
        AttrRef::Time(t) => Box::new(CelTimestamp::from(t.fixed_offset())),
        AttrRef::Number(n) => Box::new(CelDouble::from(n)),
        AttrRef::Bool(b) => Box::new(CelBool::from(b)),
        AttrRef::List(items) => Box::new(CelList::from(
            items
                .iter()
                .map(|s| Box::new(CelString::from(s.as_str())) as Box<dyn Val + 'a>)
                .collect::<Vec<_>>(),
        )),
    })
}

/// A parsed tree with the offsets of its nodes.
pub(crate) type Parsed = (IdedExpr, cel::common::ast::SourceInfo);

/// A syntax error: 1-based line and column, and the message.
pub(crate) type SyntaxError = (usize, usize, String);

/// Parses `source`, expanding the standard macros.
pub(crate) fn parse(source: &str) -> Result<Parsed, Vec<SyntaxError>> {
    let env = Env::stdlib().with_optional_support(false);
    env.parser()
        .max_recursion_depth(super::MAX_DEPTH as u16)
        .parse_with_source_info(source)
        .map_err(|errors| {
            errors
                .errors
                .into_iter()
                .map(|e| {
                    let (line, column) = e.pos;
                    let message = e
                        .msg
                        .strip_prefix("Syntax error: ")
                        .unwrap_or(&e.msg)
                        .to_string();
                    (line.max(1) as usize, column.max(1) as usize, message)
                })
                .collect()
        })
}

/// A custom date as stored: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// `@in_group('<id>')`: whether the subject is in the group.
fn in_group<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let id = args
        .first()
        .and_then(|a| a.downcast_ref::<CelString>())
        .and_then(|s| Uuid::parse_str(s.inner()).ok())
        .ok_or_else(|| ExecutionError::function_error("in_group", "a group id was expected"))?;
    let member = IN_GROUPS.with(|g| g.borrow().contains(&id));
    Ok(CowVal::Owned(Box::new(CelBool::from(member))))
}

fn equals_ignore_case(this: &CelString<'_>, other: &CelString<'_>) -> CelBool {
    let (a, b) = (this.inner(), other.inner());
    CelBool::from(a == b || a.to_lowercase() == b.to_lowercase())
}
