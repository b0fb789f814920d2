//! The rule in the evaluator's language: conditions the evaluator cannot
//! answer from one subject's attributes (group membership, related subjects,
//! CEL expressions) become `exists` on synthetic attributes that the host
//! computes before each batch.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Cond, RuleModel, condition_pointer};

/// Prefix of synthetic attributes; real attribute names cannot contain `$`.
pub(super) const SYNTHETIC: &str = "$";

/// The synthetic attribute holding "is a member of `group`".
pub fn member_attribute(group: &Uuid) -> String {
    format!("{SYNTHETIC}member:{group}")
}

/// The synthetic attribute holding the outcome of expression `n`.
pub fn expression_attribute(n: usize) -> String {
    format!("{SYNTHETIC}expr:{n}")
}

/// The synthetic attribute holding the outcome of cross-subject condition `n`.
pub fn related_attribute(n: usize) -> String {
    format!("{SYNTHETIC}related:{n}")
}

impl RuleModel {
    /// The rule in the evaluator's language. `related` is called for each
    /// cross-subject condition and each expression, with its pointer, and
    /// returns the synthetic attribute that will hold its outcome.
    pub fn to_evaluator_text(&self, mut related: impl FnMut(&str, &Cond) -> String) -> String {
        let block_json =
            |b: usize, block: &Vec<Cond>, related: &mut dyn FnMut(&str, &Cond) -> String| {
                let conditions: Vec<Value> = block
                    .iter()
                    .enumerate()
                    .map(|(c, cond)| match cond {
                        Cond::Attr { raw, .. } => raw.clone(),
                        Cond::Member { group, negate } => json!({
                            "attribute": member_attribute(group),
                            "operator": if *negate { "not_exists" } else { "exists" },
                        }),
                        Cond::Related { .. } | Cond::Expr { .. } => json!({
                            "attribute": related(&condition_pointer(self.any, b, c), cond),
                            "operator": "exists",
                        }),
                    })
                    .collect();
                json!({ "conditions": conditions })
            };
        let value = if self.any {
            let blocks: Vec<Value> = self
                .blocks
                .iter()
                .enumerate()
                .map(|(b, block)| block_json(b, block, &mut related))
                .collect();
            json!({ "any": blocks })
        } else {
            block_json(0, &self.blocks[0], &mut related)
        };
        value.to_string()
    }
}
