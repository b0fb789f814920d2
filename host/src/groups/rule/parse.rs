//! Reading a rule's JSON into a [`RuleModel`], refusing what is malformed
//! with the JSON pointer of the offending part, so that the admin's editor can
//! point at it.
//!
//! The shape is checked here, not the attribute conditions' operators and
//! values: those are the evaluator's to check.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::evaluator::SYNTHETIC;
use super::{Cond, Quantifier, RuleModel};
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::limits::MAX_RULE_CONDITIONS;

impl RuleModel {
    /// Parses a rule about subjects of `kind`; `field` (`rule`, `exclusion`)
    /// prefixes every error position.
    /// At most [`MAX_RULE_CONDITIONS`] conditions, counting those of
    /// conditions on related subjects. The rule language nests only one
    /// level (related subjects cannot have related subjects of their own),
    /// so the parser's recursion is bounded by its shape; the JSON it reads
    /// was bounded by [`crate::limits::MAX_JSON_DEPTH`] when the body was.
    pub fn parse(value: &Value, kind: SubjectKind, field: &str) -> Result<RuleModel, DomainError> {
        let model = parse_rule(value, kind, field, false)?;
        let count = model.count();
        if count > MAX_RULE_CONDITIONS {
            return Err(DomainError::Limit {
                code: "too_many",
                field: field.to_string(),
                message: format!(
                    "the rule has {count} conditions; the limit is {MAX_RULE_CONDITIONS}"
                ),
            });
        }
        Ok(model)
    }

    /// Conditions in every block, those on related subjects included.
    pub(super) fn count(&self) -> usize {
        self.blocks
            .iter()
            .flatten()
            .map(|c| match c {
                Cond::Related { rule, .. } => 1 + rule.count(),
                _ => 1,
            })
            .sum()
    }
}

fn err(field: &str, at: &str, message: impl Into<String>) -> DomainError {
    DomainError::invalid_rule(format!("{field}{at}"), message)
}

fn parse_rule(
    value: &Value,
    kind: SubjectKind,
    field: &str,
    nested: bool,
) -> Result<RuleModel, DomainError> {
    let Value::Object(obj) = value else {
        return Err(err(
            field,
            "",
            "a rule is an object with `conditions` (all must hold) or `any` (a list of condition blocks)",
        ));
    };
    let allowed: &[&str] = if nested {
        &["conditions", "any", "quantifier", "expression"]
    } else {
        &["conditions", "any", "expression"]
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(
            field,
            &format!("/{k}"),
            format!("unknown key {k:?}; expected one of {}", allowed.join(", ")),
        ));
    }
    // An expression next to the conditions holds as well as they do: it
    // joins every block.
    let expression = match obj.get("expression") {
        None => None,
        Some(Value::String(source)) => Some(Cond::Expr {
            at: "/expression".into(),
            source: source.clone(),
            nested,
            compiled: None,
        }),
        Some(_) => {
            return Err(err(
                field,
                "/expression",
                "must be a CEL expression, as a string",
            ));
        }
    };
    let mut model = match (obj.get("conditions"), obj.get("any")) {
        (None, None) if expression.is_some() => Ok(RuleModel {
            any: false,
            blocks: vec![Vec::new()],
        }),
        (Some(Value::Array(c)), None) if c.is_empty() && expression.is_some() => Ok(RuleModel {
            any: false,
            blocks: vec![Vec::new()],
        }),
        (Some(conds), None) => Ok(RuleModel {
            any: false,
            blocks: vec![parse_block(conds, kind, field, "/conditions", nested)?],
        }),
        (None, Some(Value::Array(blocks))) => {
            if blocks.is_empty() {
                return Err(err(field, "/any", "needs at least one block"));
            }
            let mut out = Vec::with_capacity(blocks.len());
            for (b, block) in blocks.iter().enumerate() {
                let at = format!("/any/{b}");
                let Value::Object(bo) = block else {
                    return Err(err(field, &at, "a block is an object with `conditions`"));
                };
                if let Some(k) = bo.keys().find(|k| *k != "conditions") {
                    return Err(err(
                        field,
                        &format!("{at}/{k}"),
                        format!("unknown key {k:?}; a block has only `conditions`"),
                    ));
                }
                let conds = bo
                    .get("conditions")
                    .ok_or_else(|| err(field, &at, "a block needs `conditions`"))?;
                out.push(parse_block(
                    conds,
                    kind,
                    field,
                    &format!("{at}/conditions"),
                    nested,
                )?);
            }
            Ok(RuleModel {
                any: true,
                blocks: out,
            })
        }
        (None, Some(_)) => Err(err(field, "/any", "must be a list of blocks")),
        _ => Err(err(
            field,
            "",
            "a rule has exactly one of `conditions` and `any`, and may have an `expression`",
        )),
    }?;
    if let Some(e) = expression {
        for block in &mut model.blocks {
            block.push(e.clone());
        }
    }
    Ok(model)
}

fn parse_block(
    value: &Value,
    kind: SubjectKind,
    field: &str,
    at: &str,
    nested: bool,
) -> Result<Vec<Cond>, DomainError> {
    let Value::Array(items) = value else {
        return Err(err(field, at, "must be a list of conditions"));
    };
    if items.is_empty() {
        return Err(err(field, at, "needs at least one condition"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_condition(item, kind, field, &format!("{at}/{i}"), nested))
        .collect()
}

pub(super) fn related_key(kind: SubjectKind) -> (&'static str, SubjectKind) {
    match kind {
        SubjectKind::User => ("devices", SubjectKind::Device),
        SubjectKind::Device => ("users", SubjectKind::User),
    }
}

fn parse_condition(
    value: &Value,
    kind: SubjectKind,
    field: &str,
    at: &str,
    nested: bool,
) -> Result<Cond, DomainError> {
    let Value::Object(obj) = value else {
        return Err(err(field, at, "a condition is an object"));
    };
    let (related_name, related_kind) = related_key(kind);
    let only = |obj: &Map<String, Value>, key: &str| -> Result<(), DomainError> {
        match obj.keys().find(|k| *k != key) {
            Some(k) => Err(err(
                field,
                &format!("{at}/{k}"),
                format!("unknown key {k:?} next to `{key}`"),
            )),
            None => Ok(()),
        }
    };
    for (key, negate) in [("member_of", false), ("not_member_of", true)] {
        if let Some(v) = obj.get(key) {
            only(obj, key)?;
            let group = v
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| err(field, &format!("{at}/{key}"), "must be a group id"))?;
            return Ok(Cond::Member { group, negate });
        }
    }
    if let Some(v) = obj.get("expression") {
        only(obj, "expression")?;
        let Value::String(source) = v else {
            return Err(err(
                field,
                &format!("{at}/expression"),
                "must be a CEL expression, as a string",
            ));
        };
        return Ok(Cond::Expr {
            at: format!("{at}/expression"),
            source: source.clone(),
            nested,
            compiled: None,
        });
    }
    let other_related = related_key(related_kind).0;
    if obj.contains_key(other_related) && !obj.contains_key(related_name) {
        return Err(err(
            field,
            &format!("{at}/{other_related}"),
            format!(
                "a rule about {}s can test their `{related_name}`, not `{other_related}`",
                kind.as_str()
            ),
        ));
    }
    if let Some(v) = obj.get(related_name) {
        only(obj, related_name)?;
        let at = format!("{at}/{related_name}");
        if nested {
            return Err(err(
                field,
                &at,
                "conditions on related subjects cannot be nested",
            ));
        }
        let quantifier = match v.get("quantifier") {
            None => Quantifier::Any,
            Some(q) => q.as_str().and_then(Quantifier::parse).ok_or_else(|| {
                err(
                    field,
                    &format!("{at}/quantifier"),
                    "must be \"any\", \"all\" or \"none\"",
                )
            })?,
        };
        let rule = parse_rule(v, related_kind, &format!("{field}{at}"), true)?;
        return Ok(Cond::Related {
            kind: related_kind,
            quantifier,
            rule,
        });
    }
    match obj.get("attribute") {
        Some(Value::String(a)) if a.starts_with(SYNTHETIC) => Err(err(
            field,
            &format!("{at}/attribute"),
            format!("unknown attribute {a:?}"),
        )),
        Some(Value::String(a)) => Ok(Cond::Attr {
            raw: value.clone(),
            attribute: a.clone(),
        }),
        Some(_) => Err(err(
            field,
            &format!("{at}/attribute"),
            "must be an attribute name",
        )),
        None => Err(err(
            field,
            at,
            format!(
                "a condition needs `attribute` (with `operator` and `values`), `member_of`, \
                 `not_member_of`, `{related_name}` or `expression`"
            ),
        )),
    }
}
