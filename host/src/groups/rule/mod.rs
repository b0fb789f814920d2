//! The rule language of dynamic groups as the host sees it.
//!
//! Attribute conditions are the evaluator's business (`rules-standard`
//! checks and evaluates them); the host only needs their attribute names, to
//! know what a rule reads. What the host adds on top are the conditions no
//! evaluator can answer from one subject's attributes: membership of another
//! group, and conditions on the related subjects (a user's devices, a
//! device's users). Before evaluation the host computes those as synthetic
//! boolean attributes and rewrites the condition into an ordinary `exists`
//! (or `not_exists`) on that attribute, at the same position, so the
//! evaluator's error positions and explanations line up with what the admin
//! wrote. The host sends a synthetic attribute only for subjects where it
//! holds: most subjects are in few of the groups rules refer to, and a batch
//! stays small.
//!
//! CEL expressions (`{"expression": "..."}`, as a condition or next to the
//! conditions) are the host's too: compiled against the schema
//! ([`RuleModel::bind`]), evaluated by the host over each subject, and handed
//! to the evaluator the same way, as a synthetic attribute.
//!
//! The rule's model and what it reads live here; reading the JSON is in
//! `parse.rs`, compiling its expressions in `compile.rs`, the rewrite into
//! the evaluator's language in `evaluator.rs`, and the findings that do not
//! stop a rule from being saved in `warnings.rs`.

mod compile;
mod evaluator;
mod parse;
mod warnings;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::directory::SubjectKind;
use crate::expression::Expression;

pub use compile::{ExpressionCache, ExpressionContext};
pub use evaluator::{expression_attribute, member_attribute, related_attribute};

/// How a cross-subject condition combines the related subjects' results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Quantifier {
    /// At least one related subject matches.
    Any,
    /// There is at least one related subject, and every one matches.
    All,
    /// No related subject matches (true when there are none).
    None,
}

impl Quantifier {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "any" => Some(Quantifier::Any),
            "all" => Some(Quantifier::All),
            "none" => Some(Quantifier::None),
            _ => None,
        }
    }

    /// Combines per-related-subject results.
    pub fn combine(self, results: impl Iterator<Item = bool>) -> bool {
        let mut seen = false;
        for r in results {
            match (self, r) {
                (Quantifier::Any, true) => return true,
                (Quantifier::All, false) => return false,
                (Quantifier::None, true) => return false,
                _ => {}
            }
            seen = true;
        }
        match self {
            Quantifier::Any => false,
            Quantifier::All => seen,
            Quantifier::None => true,
        }
    }

    /// The word used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantifier::Any => "any",
            Quantifier::All => "all",
            Quantifier::None => "none",
        }
    }
}

/// A parsed rule: an OR of AND blocks (a plain `conditions` list is one block).
#[derive(Clone, Debug)]
pub struct RuleModel {
    /// Written as `{"any": [...]}` rather than `{"conditions": [...]}`.
    pub any: bool,
    /// The blocks, each a list of conditions.
    pub blocks: Vec<Vec<Cond>>,
}

/// One condition of a block.
#[derive(Clone, Debug)]
pub enum Cond {
    /// An attribute condition, passed to the evaluator as written.
    Attr {
        /// The condition's JSON.
        raw: Value,
        /// The attribute it reads.
        attribute: String,
    },
    /// Membership (or not) of another group of the same subject kind.
    Member {
        /// The referenced group.
        group: Uuid,
        /// `not_member_of`.
        negate: bool,
    },
    /// A CEL expression.
    Expr {
        /// Where it was written in the rule: `/conditions/2/expression`, or
        /// `/expression` next to the conditions.
        at: String,
        /// The source.
        source: String,
        /// Inside a condition on related subjects: then the expression is
        /// about a related subject, and sees its attributes only.
        nested: bool,
        /// The compiled expression, once bound ([`RuleModel::bind`]).
        compiled: Option<Arc<Expression>>,
    },
    /// A condition on the related subjects.
    Related {
        /// The related subjects' kind: devices for a user rule, users for a
        /// device rule.
        kind: SubjectKind,
        /// How the related subjects' results combine.
        quantifier: Quantifier,
        /// The rule each related subject is tested against.
        rule: RuleModel,
    },
}

/// A group a rule refers to, with the kind it must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The referenced group.
    pub group: Uuid,
    /// The kind of subjects the referenced group must hold.
    pub kind: SubjectKind,
}

/// A non-fatal finding about a rule, kept on the group's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    /// Where: `rule/conditions/1`, or `rule` for the whole rule.
    pub field: String,
    /// What is odd about it.
    pub message: String,
}

/// The JSON pointer of a condition in the rule as written.
pub fn condition_pointer(any: bool, block: usize, condition: usize) -> String {
    if any {
        format!("/any/{block}/conditions/{condition}")
    } else {
        format!("/conditions/{condition}")
    }
}

impl RuleModel {
    /// Every condition with its pointer.
    pub fn conditions(&self) -> impl Iterator<Item = (String, &Cond)> {
        self.blocks.iter().enumerate().flat_map(move |(b, block)| {
            block
                .iter()
                .enumerate()
                .map(move |(c, cond)| (condition_pointer(self.any, b, c), cond))
        })
    }

    /// The attributes of the rule's own subjects it reads, and those of the
    /// related subjects.
    pub fn reads(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut own, mut related) = (BTreeSet::new(), BTreeSet::new());
        for (_, cond) in self.conditions() {
            match cond {
                Cond::Attr { attribute, .. } => {
                    own.insert(attribute.clone());
                }
                Cond::Member { .. } => {}
                Cond::Related { rule, .. } => related.extend(rule.reads().0),
                Cond::Expr {
                    compiled: Some(e),
                    nested,
                    ..
                } => {
                    let r = e.reads();
                    if *nested {
                        own.extend(r.related.iter().cloned());
                    } else {
                        own.extend(r.own.iter().cloned());
                        related.extend(r.related.iter().cloned());
                    }
                }
                Cond::Expr { compiled: None, .. } => {}
            }
        }
        (own, related)
    }

    /// The CEL expressions of the rule, nested ones included.
    pub fn expressions(&self) -> Vec<&Cond> {
        let mut out = Vec::new();
        for (_, cond) in self.conditions() {
            match cond {
                Cond::Expr { .. } => out.push(cond),
                Cond::Related { rule, .. } => out.extend(rule.expressions()),
                _ => {}
            }
        }
        out
    }

    /// The rule's only condition, when it is a single expression: its
    /// position and the compiled expression.
    pub fn single_expression(&self) -> Option<(&str, &Arc<Expression>)> {
        match self.blocks.as_slice() {
            [block] => match block.as_slice() {
                [
                    Cond::Expr {
                        at,
                        compiled: Some(e),
                        nested: false,
                        ..
                    },
                ] => Some((at, e)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether a top-level expression reads the related subjects.
    pub fn expression_reads_related(&self) -> bool {
        self.conditions().any(|(_, c)| {
            matches!(c, Cond::Expr { compiled: Some(e), nested: false, .. } if e.reads().reads_related)
        })
    }

    /// The groups the rule refers to, directly or through related subjects.
    pub fn references(&self, kind: SubjectKind) -> BTreeSet<Reference> {
        let mut out = BTreeSet::new();
        for (_, cond) in self.conditions() {
            match cond {
                Cond::Member { group, .. } => {
                    out.insert(Reference {
                        group: *group,
                        kind,
                    });
                }
                Cond::Related { kind: rk, rule, .. } => out.extend(rule.references(*rk)),
                Cond::Expr {
                    compiled: Some(e), ..
                } => out.extend(e.reads().in_groups.iter().map(|g| Reference {
                    group: *g,
                    kind: e.kind(),
                })),
                Cond::Attr { .. } | Cond::Expr { .. } => {}
            }
        }
        out
    }

    /// Whether the rule has conditions on related subjects.
    pub fn has_related(&self) -> bool {
        self.conditions()
            .any(|(_, c)| matches!(c, Cond::Related { .. }))
    }
}
