//! A group's rule and exclusion parsed into models, with their CEL
//! expressions bound: what planning reads about a group, and what saving one
//! checks references and cycles on.

use std::collections::BTreeSet;

use super::super::model::Group;
use super::super::rule::{ExpressionContext, Reference, RuleModel};
use crate::directory::SubjectKind;
use crate::error::DomainError;

/// A parsed group rule, with what it reads and refers to.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The rule; `None` for an opaque rule in another evaluator's language.
    pub rule: Option<RuleModel>,
    /// The exclusion rule, likewise.
    pub exclusion: Option<RuleModel>,
}

impl Parsed {
    /// Parses a dynamic group's rules and compiles their CEL expressions. A
    /// rule given as a JSON string is passed to its evaluator verbatim.
    pub fn of(group: &Group, ctx: &ExpressionContext) -> Result<Parsed, DomainError> {
        let parse = |v: &Option<serde_json::Value>,
                     field: &str|
         -> Result<Option<RuleModel>, DomainError> {
            match v {
                Some(serde_json::Value::String(_)) | None => Ok(None),
                Some(v) => {
                    let mut model = RuleModel::parse(v, group.subject, field)?;
                    model.bind(group.subject, field, ctx)?;
                    Ok(Some(model))
                }
            }
        };
        Ok(Parsed {
            rule: parse(&group.rule, "rule")?,
            exclusion: parse(&group.exclusion, "exclusion")?,
        })
    }

    pub(super) fn models(&self) -> impl Iterator<Item = &RuleModel> {
        self.rule.iter().chain(self.exclusion.iter())
    }

    /// The groups the rules refer to.
    pub fn references(&self, kind: SubjectKind) -> BTreeSet<Reference> {
        self.models().flat_map(|m| m.references(kind)).collect()
    }
}
