//! Static checking of expressions against the attribute schema.
//!
//! The `cel` crate has no type checker, so a misspelt attribute or a string
//! compared with a number would only fail when evaluated, subject by subject.
//! This checker infers a type for every node, bottom-up, from the schema's
//! attribute types and a table of the functions Cohort supports, and refuses
//! what cannot work for any subject. Where it cannot know (`dyn(...)`, map
//! values of mixed types), it says `dyn` and lets evaluation decide.
//!
//! The walk over the tree and the variables in scope live here; the types
//! themselves are in `types.rs`, field selection and indexing in `fields.rs`,
//! operators and `in_group` in `calls.rs`, and the table of library functions
//! in `functions.rs`.

mod calls;
mod fields;
mod functions;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use uuid::Uuid;

use super::{Environment, Problem, Reads, closest};
use crate::directory::SubjectKind;

pub use types::Type;

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
