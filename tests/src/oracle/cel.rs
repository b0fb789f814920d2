//! The subset of CEL the reference evaluator decides by itself: a small
//! expression tree that renders to CEL source for the server and evaluates
//! here, with CEL's three-valued logic. A test registers every expression
//! it saves, so the oracle never parses CEL (and shares no code with the
//! `cel` crate or Cohort's expression module).

use std::collections::HashMap;

use super::{Kind, Subject};

/// Whose attribute an expression reads: the rule's subject (`user`,
/// `device`), or the element a macro iterates over (`d`, `u`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    Subject,
    Each,
}

/// An expression of the subset.
#[derive(Clone, Debug)]
pub enum Cel {
    /// `x.attr == 'value'`
    Eq(Var, String, String),
    /// `x.attr != 'value'`
    Ne(Var, String, String),
    /// `x.attr in ['a', 'b']`
    In(Var, String, Vec<String>),
    /// `x.attr.startsWith('prefix')`
    StartsWith(Var, String, String),
    /// `has(x.attr)`
    Has(Var, String),
    And(Box<Cel>, Box<Cel>),
    Or(Box<Cel>, Box<Cel>),
    Not(Box<Cel>),
    /// `user.devices.exists(d, …)` / `device.users.exists(u, …)`
    Exists(Box<Cel>),
    /// `user.devices.all(d, …)` / `device.users.all(u, …)`
    All(Box<Cel>),
    /// `size(user.devices) > 0`
    AnyRelated,
    /// `in_group('Name')`
    InGroup(String),
}

/// CEL's result for a boolean expression: a missing attribute is an error
/// value, which `&&`, `||` and the macros absorb as the spec says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Error,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Cel {
    pub fn and(a: Cel, b: Cel) -> Cel {
        Cel::And(Box::new(a), Box::new(b))
    }
    pub fn or(a: Cel, b: Cel) -> Cel {
        Cel::Or(Box::new(a), Box::new(b))
    }
    pub fn negate(a: Cel) -> Cel {
        Cel::Not(Box::new(a))
    }
    pub fn exists(a: Cel) -> Cel {
        Cel::Exists(Box::new(a))
    }
    pub fn all(a: Cel) -> Cel {
        Cel::All(Box::new(a))
    }
    pub fn eq(attr: &str, value: &str) -> Cel {
        Cel::Eq(Var::Subject, attr.into(), value.into())
    }
    pub fn each_eq(attr: &str, value: &str) -> Cel {
        Cel::Eq(Var::Each, attr.into(), value.into())
    }

    /// The CEL source for a rule about `kind`.
    pub fn render(&self, kind: Kind) -> String {
        let name = |v: Var| match (v, kind) {
            (Var::Subject, Kind::User) => "user",
            (Var::Subject, Kind::Device) => "device",
            (Var::Each, Kind::User) => "d",
            (Var::Each, Kind::Device) => "u",
        };
        let related = match kind {
            Kind::User => "user.devices",
            Kind::Device => "device.users",
        };
        match self {
            Cel::Eq(v, a, x) => format!("{}.{a} == {}", name(*v), quote(x)),
            Cel::Ne(v, a, x) => format!("{}.{a} != {}", name(*v), quote(x)),
            Cel::In(v, a, xs) => {
                let xs: Vec<String> = xs.iter().map(|x| quote(x)).collect();
                format!("{}.{a} in [{}]", name(*v), xs.join(", "))
            }
            Cel::StartsWith(v, a, x) => format!("{}.{a}.startsWith({})", name(*v), quote(x)),
            Cel::Has(v, a) => format!("has({}.{a})", name(*v)),
            Cel::And(a, b) => format!("({} && {})", a.render(kind), b.render(kind)),
            Cel::Or(a, b) => format!("({} || {})", a.render(kind), b.render(kind)),
            Cel::Not(a) => format!("!({})", a.render(kind)),
            Cel::Exists(body) => format!(
                "{related}.exists({}, {})",
                name(Var::Each),
                body.render(kind)
            ),
            Cel::All(body) => format!("{related}.all({}, {})", name(Var::Each), body.render(kind)),
            Cel::AnyRelated => format!("size({related}) > 0"),
            Cel::InGroup(g) => format!("in_group({})", quote(g)),
        }
    }
}

/// What an expression needs from the world around the subject.
pub trait Scope {
    /// The subjects bound to `subject` (its devices, or its users).
    fn related(&self, subject: &Subject) -> Vec<&Subject>;
    /// Whether `subject` is in the group called `name` (any case).
    fn in_group(&self, name: &str, subject: &Subject) -> bool;
}

/// Evaluates `cel` for `subject`; `each` is the macro's current element.
pub fn eval(cel: &Cel, subject: &Subject, each: Option<&Subject>, scope: &dyn Scope) -> Truth {
    let pick = |v: &Var| match v {
        Var::Subject => subject,
        Var::Each => each.expect("an iteration variable outside a macro"),
    };
    let text = |v: &Var, a: &str| {
        pick(v)
            .attrs
            .get(a)
            .and_then(|x| x.as_str().map(str::to_string))
    };
    let of = |b: bool| if b { Truth::True } else { Truth::False };
    match cel {
        Cel::Eq(v, a, x) => text(v, a).map_or(Truth::Error, |s| of(&s == x)),
        Cel::Ne(v, a, x) => text(v, a).map_or(Truth::Error, |s| of(&s != x)),
        Cel::In(v, a, xs) => text(v, a).map_or(Truth::Error, |s| of(xs.contains(&s))),
        Cel::StartsWith(v, a, x) => text(v, a).map_or(Truth::Error, |s| of(s.starts_with(x))),
        Cel::Has(v, a) => of(pick(v).attrs.contains_key(a)),
        Cel::And(a, b) => combine(Truth::False, [a, b].map(|x| eval(x, subject, each, scope))),
        Cel::Or(a, b) => combine(Truth::True, [a, b].map(|x| eval(x, subject, each, scope))),
        Cel::Not(a) => match eval(a, subject, each, scope) {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Error => Truth::Error,
        },
        Cel::Exists(body) | Cel::All(body) => {
            let decisive = if matches!(cel, Cel::Exists(_)) {
                Truth::True
            } else {
                Truth::False
            };
            let results: Vec<Truth> = scope
                .related(subject)
                .into_iter()
                .map(|r| eval(body, subject, Some(r), scope))
                .collect();
            combine(decisive, results)
        }
        Cel::AnyRelated => of(!scope.related(subject).is_empty()),
        Cel::InGroup(name) => of(scope.in_group(name, subject)),
    }
}

/// `&&` and `all` (`decisive` false), `||` and `exists` (`decisive`
/// true): one decisive result decides, whatever errors the others gave;
/// otherwise an error, if any, is the result.
fn combine(decisive: Truth, results: impl IntoIterator<Item = Truth>) -> Truth {
    let results: Vec<Truth> = results.into_iter().collect();
    if results.contains(&decisive) {
        decisive
    } else if results.contains(&Truth::Error) {
        Truth::Error
    } else if decisive == Truth::True {
        Truth::False
    } else {
        Truth::True
    }
}

/// Every expression a test saved, by its source text, so that the oracle
/// knows what a rule read back from the API means.
#[derive(Default, Clone)]
pub struct Expressions(HashMap<String, Cel>);

impl Expressions {
    /// Registers `cel` for rules about `kind` and returns its source.
    pub fn add(&mut self, kind: Kind, cel: Cel) -> String {
        let source = cel.render(kind);
        self.0.insert(source.clone(), cel);
        source
    }

    pub fn get(&self, source: &str) -> &Cel {
        self.0.get(source).unwrap_or_else(|| {
            panic!("the reference evaluator does not know the expression {source:?}: register it")
        })
    }
}
