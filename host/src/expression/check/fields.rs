//! Field selection and indexing: `user.department`, `user["department"]`,
//! `group.name`, `list[0]`, `map.key`.
//!
//! This is where an attribute name is checked against the schema (with a
//! suggestion for a misspelling) and where what a rule reads is noted, so that
//! a change to an attribute recomputes only the rules that read it.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};

use super::{Checker, Type};
use crate::directory::SubjectKind;
use crate::expression::closest;

impl Checker<'_, '_> {
    /// The type of `operand.field`, noting what is read.
    pub(super) fn field(&mut self, operand: &Type, field: &str, offset: usize) -> Type {
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

    pub(super) fn index(&mut self, e: &IdedExpr, container: &IdedExpr, key: &IdedExpr) -> Type {
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
}
