//! Static checking of expressions against the attribute schema.
//!
//! The `cel` crate has no type checker, so a misspelt attribute or a string
//! compared with a number would only fail when evaluated, subject by subject.
//! This checker infers a type for every node, bottom-up, from the schema's
//! attribute types and a table of the functions Cohort supports, and refuses
//! what cannot work for any subject. Where it cannot know (`dyn(...)`, map
//! values of mixed types), it says `dyn` and lets evaluation decide.

use std::collections::{BTreeSet, HashMap};

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use uuid::Uuid;

use super::{Environment, Problem, Reads, closest};
use crate::directory::{AttrType, SubjectKind};

/// A static type.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `uint`
    Uint,
    /// `double`; number attributes have it.
    Double,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `null`
    Null,
    /// `timestamp`; date attributes and `now` have it.
    Timestamp,
    /// `duration`
    Duration,
    /// `list(T)`
    List(Box<Type>),
    /// `map(K, V)`
    Map(Box<Type>, Box<Type>),
    /// The subject of the rule: its attributes plus `groups` and its related
    /// subjects.
    Subject(SubjectKind),
    /// A related subject (an element of `user.devices` / `device.users`): its
    /// attributes only.
    Related(SubjectKind),
    /// An element of `.groups`: `id` and `name`.
    Group,
    /// A type value, from `type(x)`.
    Meta,
    /// Unknown until evaluated.
    Dyn,
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Int => f.write_str("int"),
            Type::Uint => f.write_str("uint"),
            Type::Double => f.write_str("double"),
            Type::String => f.write_str("string"),
            Type::Bytes => f.write_str("bytes"),
            Type::Null => f.write_str("null"),
            Type::Timestamp => f.write_str("timestamp"),
            Type::Duration => f.write_str("duration"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Map(k, v) => write!(f, "map({k}, {v})"),
            Type::Subject(k) | Type::Related(k) => f.write_str(k.as_str()),
            Type::Group => f.write_str("group"),
            Type::Meta => f.write_str("type"),
            Type::Dyn => f.write_str("dyn"),
        }
    }
}

impl Type {
    fn of_attribute(t: AttrType) -> Type {
        match t {
            AttrType::String => Type::String,
            AttrType::Number => Type::Double,
            AttrType::Boolean => Type::Bool,
            AttrType::Date => Type::Timestamp,
            AttrType::StringList => Type::List(Box::new(Type::String)),
        }
    }

    fn is_dyn(&self) -> bool {
        *self == Type::Dyn
    }

    fn is_number(&self) -> bool {
        matches!(self, Type::Int | Type::Uint | Type::Double)
    }

    /// Whether values of the two types can be compared with `==`: CEL
    /// compares numbers across their types, and anything with `null`.
    fn comparable(&self, other: &Type) -> bool {
        if self.is_dyn() || other.is_dyn() || *self == Type::Null || *other == Type::Null {
            return true;
        }
        if self.is_number() && other.is_number() {
            return true;
        }
        match (self, other) {
            (Type::List(a), Type::List(b)) => a.comparable(b),
            (Type::Map(ka, va), Type::Map(kb, vb)) => ka.comparable(kb) && va.comparable(vb),
            (Type::Subject(a) | Type::Related(a), Type::Subject(b) | Type::Related(b)) => a == b,
            _ => self == other,
        }
    }

    /// Whether `<` and friends apply between the two types.
    fn orderable(&self, other: &Type) -> bool {
        if self.is_dyn() || other.is_dyn() {
            return true;
        }
        if self.is_number() && other.is_number() {
            return true;
        }
        self == other
            && matches!(
                self,
                Type::String | Type::Bytes | Type::Bool | Type::Timestamp | Type::Duration
            )
    }

    /// One type for two branches or list elements: the same one, or `dyn`.
    fn join(&self, other: &Type) -> Type {
        if self == other {
            self.clone()
        } else if *self == Type::Null {
            other.clone()
        } else if *other == Type::Null {
            self.clone()
        } else {
            Type::Dyn
        }
    }
}

/// What checking found out besides the problems.
pub(crate) struct Checked {
    /// What the expression reads.
    pub reads: Reads,
    /// `in_group` arguments as written → the group they name.
    pub groups: HashMap<String, Uuid>,
}

/// Checks `expr`, collecting every problem.
pub(crate) fn check(
    expr: &IdedExpr,
    env: &Environment<'_>,
    source: &str,
    offset_of: &dyn Fn(u64) -> usize,
    expect_bool: bool,
) -> Result<Checked, Vec<Problem>> {
    let mut c = Checker {
        env,
        source,
        offset_of,
        problems: Vec::new(),
        reads: Reads::default(),
        groups: HashMap::new(),
        scope: Vec::new(),
    };
    let t = c.expr(expr);
    if expect_bool && !matches!(t, Type::Bool | Type::Dyn) {
        c.problem(
            expr.id,
            format!("the expression must be a bool (true or false), but it is a {t}"),
        );
    }
    if c.problems.is_empty() {
        Ok(Checked {
            reads: c.reads,
            groups: c.groups,
        })
    } else {
        c.problems.sort_by_key(|p| (p.line, p.column));
        c.problems.dedup();
        Err(c.problems)
    }
}

struct Checker<'a, 'e> {
    env: &'a Environment<'e>,
    source: &'a str,
    offset_of: &'a dyn Fn(u64) -> usize,
    problems: Vec<Problem>,
    reads: Reads,
    groups: HashMap<String, Uuid>,
    /// Comprehension variables, innermost last.
    scope: Vec<(String, Type)>,
}

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

impl Checker<'_, '_> {
    fn problem(&mut self, id: u64, message: impl Into<String>) {
        let offset = (self.offset_of)(id);
        self.problems
            .push(Problem::at(self.source, offset, message));
    }

    fn problem_at(&mut self, offset: usize, message: impl Into<String>) {
        self.problems
            .push(Problem::at(self.source, offset, message));
    }

    fn expr(&mut self, e: &IdedExpr) -> Type {
        match &e.expr {
            Expr::Literal(l) => literal(l),
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(s) => {
                let field_offset = (self.offset_of)(e.id) + 1;
                let t = self.operand(&s.operand);
                let field = self.field(&t, &s.field, field_offset);
                if s.test { Type::Bool } else { field }
            }
            Expr::Call(call) => self.call(e, call),
            Expr::List(l) => {
                let mut elem: Option<Type> = None;
                for x in &l.elements {
                    let t = self.expr(x);
                    elem = Some(match elem {
                        None => t,
                        Some(prev) => prev.join(&t),
                    });
                }
                Type::List(Box::new(elem.unwrap_or(Type::Dyn)))
            }
            Expr::Map(m) => {
                let (mut key, mut value): (Option<Type>, Option<Type>) = (None, None);
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        let k = self.expr(&me.key);
                        if !matches!(
                            k,
                            Type::String | Type::Int | Type::Uint | Type::Bool | Type::Dyn
                        ) {
                            self.problem(me.key.id, format!("a map key cannot be a {k}"));
                        }
                        let v = self.expr(&me.value);
                        key = Some(key.map_or(k.clone(), |p| p.join(&k)));
                        value = Some(value.map_or(v.clone(), |p| p.join(&v)));
                    }
                }
                Type::Map(
                    Box::new(key.unwrap_or(Type::Dyn)),
                    Box::new(value.unwrap_or(Type::Dyn)),
                )
            }
            Expr::Struct(_) => {
                self.problem(e.id, "message literals are not supported in Cohort rules");
                Type::Dyn
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Unspecified => Type::Dyn,
        }
    }

    /// A node used as the operand of a field selection or index: the
    /// subject variables are not "read whole" there.
    fn operand(&mut self, e: &IdedExpr) -> Type {
        if let Expr::Ident(name) = &e.expr
            && let Some(t) = self.lookup(name)
        {
            return t;
        }
        self.expr(e)
    }

    fn lookup(&self, name: &str) -> Option<Type> {
        if let Some((_, t)) = self.scope.iter().rev().find(|(n, _)| n == name) {
            return Some(t.clone());
        }
        let own = |kind| {
            if self.env.related_only {
                Type::Related(kind)
            } else {
                Type::Subject(kind)
            }
        };
        match name {
            "user" if self.env.kind == SubjectKind::User => Some(own(SubjectKind::User)),
            "device" if self.env.kind == SubjectKind::Device => Some(own(SubjectKind::Device)),
            "now" => Some(Type::Timestamp),
            _ => None,
        }
    }

    fn ident(&mut self, e: &IdedExpr, name: &str) -> Type {
        match self.lookup(name) {
            Some(t) => {
                // The whole subject as a value (compared, passed to a
                // function): it may read any attribute.
                match &t {
                    Type::Subject(kind) => self.read_everything(*kind, false),
                    Type::Related(kind) => self.read_everything(*kind, true),
                    _ => {}
                }
                t
            }
            None => {
                let own = match self.env.kind {
                    SubjectKind::User => "user",
                    SubjectKind::Device => "device",
                };
                let mut known: Vec<&str> = vec![own, "now"];
                known.extend(self.scope.iter().map(|(n, _)| n.as_str()));
                let hint = match name {
                    "user" | "device" => format!(
                        "; a {} group's rule reads `{own}` (and `{own}.{}` for the related {}s)",
                        own,
                        if own == "user" { "devices" } else { "users" },
                        if own == "user" { "device" } else { "user" }
                    ),
                    _ => closest(name, known.into_iter())
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default(),
                };
                self.problem(e.id, format!("unknown variable `{name}`{hint}"));
                Type::Dyn
            }
        }
    }

    fn read_everything(&mut self, kind: SubjectKind, related: bool) {
        let names: BTreeSet<String> = self
            .env
            .attributes(kind)
            .iter()
            .map(|a| a.name.clone())
            .collect();
        if related {
            self.reads.related.extend(names);
            self.reads.reads_related = true;
        } else {
            self.reads.own.extend(names);
            self.reads.reads_groups = true;
            self.reads.reads_related = true;
            let other = match kind {
                SubjectKind::User => SubjectKind::Device,
                SubjectKind::Device => SubjectKind::User,
            };
            let others: BTreeSet<String> = self
                .env
                .attributes(other)
                .iter()
                .map(|a| a.name.clone())
                .collect();
            self.reads.related.extend(others);
        }
    }

    /// The type of `operand.field`, noting what is read.
    fn field(&mut self, operand: &Type, field: &str, offset: usize) -> Type {
        match operand {
            Type::Subject(kind) | Type::Related(kind) => {
                let related = matches!(operand, Type::Related(_));
                let relation = match kind {
                    SubjectKind::User => "devices",
                    SubjectKind::Device => "users",
                };
                if !related && field == "groups" {
                    self.reads.reads_groups = true;
                    return Type::List(Box::new(Type::Group));
                }
                if !related && field == relation {
                    self.reads.reads_related = true;
                    let other = match kind {
                        SubjectKind::User => SubjectKind::Device,
                        SubjectKind::Device => SubjectKind::User,
                    };
                    return Type::List(Box::new(Type::Related(other)));
                }
                let attrs = self.env.attributes(*kind);
                if let Some(a) = attrs.iter().find(|a| a.name == field) {
                    if related {
                        self.reads.related.insert(field.to_string());
                    } else {
                        self.reads.own.insert(field.to_string());
                    }
                    return Type::of_attribute(a.attr_type);
                }
                let mut names: Vec<&str> = attrs.iter().map(|a| a.name.as_str()).collect();
                if !related {
                    names.push("groups");
                    names.push(relation);
                }
                let hint = closest(field, names.iter().copied())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                let which = if related {
                    format!("a related {}", kind.as_str())
                } else {
                    kind.as_str().to_string()
                };
                let note = if related && (field == "groups" || field == relation) {
                    format!(
                        "; related {}s carry their attributes only, not `groups` or `{relation}`",
                        kind.as_str()
                    )
                } else {
                    String::new()
                };
                self.problem_at(
                    offset,
                    format!("unknown attribute `{field}` of {which}{hint}{note}"),
                );
                Type::Dyn
            }
            Type::Group => match field {
                "id" | "name" => Type::String,
                _ => {
                    self.problem_at(
                        offset,
                        format!("a group has `id` and `name`, not `{field}`"),
                    );
                    Type::Dyn
                }
            },
            Type::Map(k, v) => {
                if !matches!(**k, Type::String | Type::Dyn) {
                    self.problem_at(
                        offset,
                        format!("`.{field}` needs string keys, but this map's keys are {k}"),
                    );
                }
                (**v).clone()
            }
            Type::Dyn => Type::Dyn,
            other => {
                self.problem_at(offset, format!("a {other} has no field `{field}`"));
                Type::Dyn
            }
        }
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Type {
        let range = self.expr(&c.iter_range);
        let (var, var2) = match &range {
            Type::List(t) => ((**t).clone(), Type::Int),
            Type::Map(k, v) => ((**k).clone(), (**v).clone()),
            Type::Dyn => (Type::Dyn, Type::Dyn),
            other => {
                self.problem(
                    c.iter_range.id,
                    format!("only a list or a map can be iterated, not a {other}"),
                );
                (Type::Dyn, Type::Dyn)
            }
        };
        let accu = self.expr(&c.accu_init);
        let depth = self.scope.len();
        // With two variables, the first is the index (or key) and the second
        // the element (or value).
        match &c.iter_var2 {
            Some(v2) => {
                let first = if matches!(range, Type::List(_)) {
                    Type::Int
                } else {
                    var.clone()
                };
                self.scope.push((c.iter_var.clone(), first));
                self.scope.push((
                    v2.clone(),
                    if matches!(range, Type::List(_)) {
                        var
                    } else {
                        var2
                    },
                ));
            }
            None => self.scope.push((c.iter_var.clone(), var)),
        }
        // The accumulator of `map` starts as an empty list whose element
        // type only the step reveals: treat its elements as unknown.
        let accu = match accu {
            Type::List(_) => Type::List(Box::new(Type::Dyn)),
            other => other,
        };
        self.scope.push((c.accu_var.clone(), accu));
        let cond = self.expr(&c.loop_cond);
        if !matches!(cond, Type::Bool | Type::Dyn) {
            self.problem(
                c.loop_cond.id,
                format!("a condition must be a bool, not a {cond}"),
            );
        }
        self.expr(&c.loop_step);
        let result = self.expr(&c.result);
        self.scope.truncate(depth);
        result
    }

    fn call(&mut self, e: &IdedExpr, call: &CallExpr) -> Type {
        let name = call.func_name.as_str();
        // Operators and macro internals first.
        match (name, call.target.is_some(), call.args.len()) {
            ("_&&_" | "_||_", false, 2) => {
                for a in &call.args {
                    let t = self.expr(a);
                    if !matches!(t, Type::Bool | Type::Dyn) {
                        let op = if name == "_&&_" { "&&" } else { "||" };
                        self.problem(a.id, format!("`{op}` needs bools on both sides, not a {t}"));
                    }
                }
                return Type::Bool;
            }
            ("!_", false, 1) | ("@not_strictly_false", false, 1) => {
                let t = self.expr(&call.args[0]);
                if !matches!(t, Type::Bool | Type::Dyn) {
                    self.problem(call.args[0].id, format!("`!` needs a bool, not a {t}"));
                }
                return Type::Bool;
            }
            ("-_", false, 1) => {
                let t = self.expr(&call.args[0]);
                return match t {
                    Type::Int | Type::Double | Type::Duration | Type::Dyn => t,
                    other => {
                        self.problem(e.id, format!("a {other} cannot be negated"));
                        Type::Dyn
                    }
                };
            }
            ("_==_" | "_!=_", false, 2) => {
                let a = self.expr(&call.args[0]);
                let b = self.expr(&call.args[1]);
                if !a.comparable(&b) {
                    self.problem(
                        e.id,
                        format!("a {a} is never equal to a {b}; compare values of the same type"),
                    );
                }
                return Type::Bool;
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", false, 2) => {
                let a = self.expr(&call.args[0]);
                let b = self.expr(&call.args[1]);
                if !a.orderable(&b) {
                    self.problem(e.id, format!("a {a} cannot be ordered against a {b}"));
                }
                return Type::Bool;
            }
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", false, 2) => {
                let a = self.expr(&call.args[0]);
                let b = self.expr(&call.args[1]);
                return self.arithmetic(e, name, a, b);
            }
            ("_?_:_", false, 3) => {
                let cond = self.expr(&call.args[0]);
                if !matches!(cond, Type::Bool | Type::Dyn) {
                    self.problem(
                        call.args[0].id,
                        format!("a condition must be a bool, not a {cond}"),
                    );
                }
                let a = self.expr(&call.args[1]);
                let b = self.expr(&call.args[2]);
                return a.join(&b);
            }
            ("_[_]", false, 2) => return self.index(e, &call.args[0], &call.args[1]),
            ("@in", false, 2) => {
                let x = self.expr(&call.args[0]);
                let c = self.expr(&call.args[1]);
                match &c {
                    Type::List(t) | Type::Map(t, _) => {
                        if !x.comparable(t) {
                            self.problem(e.id, format!("a {x} is never in a {c}"));
                        }
                    }
                    Type::Dyn => {}
                    other => self.problem(
                        call.args[1].id,
                        format!("`in` needs a list or a map on its right, not a {other}"),
                    ),
                }
                return Type::Bool;
            }
            _ => {}
        }
        if name.starts_with('_') || name.starts_with('@') {
            self.problem(e.id, format!("`{name}` is not supported"));
            return Type::Dyn;
        }
        let target = call.target.as_ref().map(|t| self.expr(t));
        if name == "in_group" {
            return self.in_group(e, call);
        }
        let args: Vec<Type> = call.args.iter().map(|a| self.expr(a)).collect();
        match self.function(name, target.as_ref(), &args) {
            Ok(t) => {
                if name == "matches" {
                    self.check_regex(call);
                }
                if matches!(name, "timestamp" | "duration")
                    && target.is_none()
                    && let Some(IdedExpr {
                        expr: Expr::Literal(LiteralValue::String(s)),
                        id,
                    }) = call.args.first()
                {
                    self.check_time_literal(*id, name, s.inner());
                }
                t
            }
            Err(message) => {
                self.problem(e.id, message);
                Type::Dyn
            }
        }
    }

    fn arithmetic(&mut self, e: &IdedExpr, op: &str, a: Type, b: Type) -> Type {
        use Type::*;
        if a.is_dyn() || b.is_dyn() {
            return match (op, &a, &b) {
                ("_-_", Timestamp, _) | ("_-_", _, Timestamp) => Dyn,
                _ if a.is_dyn() => b,
                _ => a,
            };
        }
        let t = match (op, &a, &b) {
            (_, Int, Int) | (_, Uint, Uint) => Some(a.clone()),
            ("_%_", Double, Double) => None,
            (_, Double, Double) => Some(Double),
            ("_+_", String, String) | ("_+_", Bytes, Bytes) => Some(a.clone()),
            ("_+_", List(x), List(y)) => Some(List(Box::new(x.join(y)))),
            ("_+_", Timestamp, Duration) | ("_+_", Duration, Timestamp) => Some(Timestamp),
            ("_+_" | "_-_", Duration, Duration) => Some(Duration),
            ("_-_", Timestamp, Timestamp) => Some(Duration),
            ("_-_", Timestamp, Duration) => Some(Timestamp),
            _ => None,
        };
        t.unwrap_or_else(|| {
            let symbol = &op[1..op.len() - 1];
            let hint = if a.is_number() && b.is_number() {
                "; convert one side with int(...) or double(...)"
            } else {
                ""
            };
            self.problem(
                e.id,
                format!("`{symbol}` does not apply to a {a} and a {b}{hint}"),
            );
            Dyn
        })
    }

    fn index(&mut self, e: &IdedExpr, container: &IdedExpr, key: &IdedExpr) -> Type {
        let c = self.operand(container);
        if let (
            Type::Subject(_) | Type::Related(_) | Type::Group,
            Expr::Literal(LiteralValue::String(s)),
        ) = (&c, &key.expr)
        {
            let offset = (self.offset_of)(key.id);
            return self.field(&c, s.inner(), offset);
        }
        let k = self.expr(key);
        match &c {
            Type::List(t) => {
                if !matches!(k, Type::Int | Type::Uint | Type::Dyn) {
                    self.problem(key.id, format!("a list index must be an int, not a {k}"));
                }
                (**t).clone()
            }
            Type::Map(kt, v) => {
                if !kt.comparable(&k) {
                    self.problem(key.id, format!("this map's keys are {kt}, not {k}"));
                }
                (**v).clone()
            }
            Type::Subject(kind) => {
                // A computed attribute name: anything may be read.
                self.read_everything(*kind, false);
                Type::Dyn
            }
            Type::Related(kind) => {
                self.read_everything(*kind, true);
                Type::Dyn
            }
            Type::Dyn => Type::Dyn,
            other => {
                self.problem(e.id, format!("a {other} cannot be indexed"));
                Type::Dyn
            }
        }
    }

    fn in_group(&mut self, e: &IdedExpr, call: &CallExpr) -> Type {
        if call.target.is_some() || call.args.len() != 1 {
            self.problem(
                e.id,
                "in_group takes one argument: a group's name or id, as a string",
            );
            return Type::Bool;
        }
        let arg = &call.args[0];
        let Expr::Literal(LiteralValue::String(name)) = &arg.expr else {
            self.problem(
                arg.id,
                "in_group needs a group's name or id written as a string literal, so that the \
                 group is known when the rule is saved",
            );
            return Type::Bool;
        };
        let name = name.inner();
        match (self.env.group)(name) {
            Some(id) => {
                self.reads.in_groups.insert(id);
                self.groups.insert(name.to_string(), id);
            }
            None => self.problem(
                arg.id,
                format!("no {} group is named `{name}`", self.env.kind.as_str()),
            ),
        }
        Type::Bool
    }

    /// The result type of a function call, or why it does not apply.
    fn function(&self, name: &str, target: Option<&Type>, args: &[Type]) -> Result<Type, String> {
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
            ("split", Some(t), [a]) if is(t, &String) && is(a, &String) => {
                Ok(List(Box::new(String)))
            }
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
            ("indexOf" | "lastIndexOf", Some(t), [a]) if is(t, &String) && is(a, &String) => {
                Ok(Int)
            }
            ("indexOf" | "lastIndexOf", Some(t), [a, n])
                if is(t, &String) && is(a, &String) && is(n, &Int) =>
            {
                Ok(Int)
            }
            (
                "replace" | "split" | "join" | "substring" | "charAt" | "indexOf" | "lastIndexOf",
                ..,
            ) => Err(format!("`{name}` does not apply to these arguments")),
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
                Int | Uint | Double | String | Bytes | Bool | Timestamp | Duration | Dyn => {
                    Ok(String)
                }
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

    /// A literal pattern must compile, within the size limits evaluation
    /// uses.
    fn check_regex(&mut self, call: &CallExpr) {
        let pattern = match (&call.target, call.args.as_slice()) {
            (Some(_), [p]) | (None, [_, p]) => p,
            _ => return,
        };
        if let Expr::Literal(LiteralValue::String(s)) = &pattern.expr
            && let Err(e) = super::pattern::check(s.inner())
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

    fn check_time_literal(&mut self, id: u64, name: &str, s: &str) {
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
fn parse_duration(s: &str) -> bool {
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

fn literal(l: &LiteralValue) -> Type {
    match l {
        LiteralValue::Boolean(_) => Type::Bool,
        LiteralValue::Bytes(_) => Type::Bytes,
        LiteralValue::Double(_) => Type::Double,
        LiteralValue::Int(_) => Type::Int,
        LiteralValue::Null => Type::Null,
        LiteralValue::String(_) => Type::String,
        LiteralValue::UInt(_) => Type::Uint,
    }
}
