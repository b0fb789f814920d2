//! Calls: CEL's operators (logic, comparison, arithmetic, `in`, indexing,
//! the conditional), Cohort's `in_group`, and the dispatch of every other
//! call to the function table.
//!
//! Operators are checked here rather than in the table because their rules
//! depend on both operand types together (numbers compare across types,
//! timestamps minus timestamps are durations), which a signature list cannot
//! express.

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue};

use super::functions::signature;
use super::{Checker, Type};

impl Checker<'_, '_> {
    pub(super) fn call(&mut self, e: &IdedExpr, call: &CallExpr) -> Type {
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
        match signature(name, target.as_ref(), &args) {
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
}
