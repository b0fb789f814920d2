//! Findings about a rule that do not stop it from being saved: blocks that
//! can never match (contradictory conditions) and rules that match every
//! subject. They are kept on the group's status, to catch a mistake the
//! schema alone cannot refuse.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use uuid::Uuid;

use super::{Cond, RuleModel, Warning};
use crate::directory::{AttrType, SubjectKind};

impl RuleModel {
    /// Findings that do not stop the rule from being saved: blocks that can
    /// never match, and rules that match every subject.
    pub fn warnings(
        &self,
        field: &str,
        kind: SubjectKind,
        types: &BTreeMap<String, AttrType>,
    ) -> Vec<Warning> {
        let mut out = Vec::new();
        let mut never = 0;
        for (b, block) in self.blocks.iter().enumerate() {
            let at = if self.any {
                format!("{field}/any/{b}")
            } else {
                field.to_string()
            };
            if let Some(why) = block_never_matches(block, types) {
                never += 1;
                out.push(Warning {
                    field: at,
                    message: format!("can never match: {why}"),
                });
            } else if block_matches_everything(block, kind) {
                out.push(Warning {
                    field: at,
                    message: format!(
                        "matches every {}: its conditions only test attributes every {} has",
                        kind.as_str(),
                        kind.as_str()
                    ),
                });
            }
        }
        if self.any && never == self.blocks.len() && never > 1 {
            out.push(Warning {
                field: field.to_string(),
                message: "no block of this rule can ever match, so the group stays empty".into(),
            });
        }
        out
    }
}

/// Attributes every subject of a kind has.
fn always_present(kind: SubjectKind) -> &'static [&'static str] {
    match kind {
        SubjectKind::User => &[
            "id",
            "username",
            "email",
            "state",
            "created_at",
            "updated_at",
        ],
        SubjectKind::Device => &["id", "hostname", "os_family", "created_at", "updated_at"],
    }
}

fn attr_parts(raw: &Value) -> (&str, &str, Vec<&Value>, bool) {
    let s = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("");
    let values = raw
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let ignore_case = raw
        .get("ignore_case")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    (s("attribute"), s("operator"), values, ignore_case)
}

fn block_never_matches(block: &[Cond], types: &BTreeMap<String, AttrType>) -> Option<String> {
    // Single-valued attribute required to equal values from disjoint sets.
    let mut required: BTreeMap<&str, (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut exists: BTreeSet<&str> = BTreeSet::new();
    let mut not_exists: BTreeSet<&str> = BTreeSet::new();
    let mut member: BTreeMap<Uuid, bool> = BTreeMap::new();
    for (i, cond) in block.iter().enumerate() {
        match cond {
            Cond::Attr { raw, .. } => {
                let (attr, op, values, ignore_case) = attr_parts(raw);
                match op {
                    "exists" => {
                        exists.insert(attr);
                    }
                    "not_exists" => {
                        not_exists.insert(attr);
                    }
                    "equals" | "in" => {
                        let single = types.get(attr).is_some_and(|t| *t != AttrType::StringList);
                        if !single {
                            continue;
                        }
                        let set: BTreeSet<String> = values
                            .iter()
                            .map(|v| match v {
                                Value::String(s) if ignore_case => s.to_lowercase(),
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect();
                        if let Some((j, prev)) = required.get(attr) {
                            let disjoint = if ignore_case {
                                prev.iter()
                                    .all(|p| !set.iter().any(|s| s.eq_ignore_ascii_case(p)))
                            } else {
                                prev.is_disjoint(&set)
                            };
                            if disjoint {
                                return Some(format!(
                                    "conditions {j} and {i} require {attr} to be one of {prev:?} \
                                     and one of {set:?} at once, and {attr} has a single value"
                                ));
                            }
                        } else {
                            required.insert(attr, (i, set));
                        }
                    }
                    _ => {}
                }
            }
            Cond::Member { group, negate } => {
                if member.insert(*group, !negate) == Some(*negate) {
                    return Some(format!(
                        "it requires membership of group {group} and its absence at once"
                    ));
                }
            }
            Cond::Related { .. } | Cond::Expr { .. } => {}
        }
    }
    let positive: BTreeSet<&str> = exists
        .iter()
        .copied()
        .chain(required.keys().copied())
        .collect();
    not_exists
        .intersection(&positive)
        .next()
        .map(|attr| format!("it requires {attr} to be both present and missing"))
}

fn block_matches_everything(block: &[Cond], kind: SubjectKind) -> bool {
    block.iter().all(|cond| match cond {
        Cond::Attr { raw, .. } => {
            let (attr, op, ..) = attr_parts(raw);
            op == "exists" && always_present(kind).contains(&attr)
        }
        _ => false,
    })
}
