//! Cohort's standard rule evaluator: JumpCloud-style conditions.
//!
//! A rule is JSON:
//!
//! ```json
//! {"conditions": [
//!   {"attribute": "department", "operator": "equals", "values": ["Engineering", "Design"]},
//!   {"attribute": "email", "operator": "ends_with", "values": ["@example.com"], "ignore_case": true}
//! ]}
//! ```
//!
//! Conditions are AND'd; the values of one condition are OR'd. `{"any":
//! [{"conditions": [...]}, ...]}` is an OR of such AND blocks. See
//! `docs/rules-standard.md` in the repository for the operators and their semantics.

pub mod engine;

use cohort_sdk::rules::{
    BatchView, CompileError, EvaluateError, EvaluateOptions, Evaluation, EvaluatorInfo,
    RuleEvaluator, RuleSource,
};
use cohort_sdk::{AttributeDef, SubjectKind};

/// The plugin type registered with the SDK.
pub struct Standard;

impl RuleEvaluator for Standard {
    type Rules = engine::RuleSet;

    fn describe() -> EvaluatorInfo {
        EvaluatorInfo {
            display_name: "Standard conditions".into(),
            language: "conditions-json".into(),
            description: "Attribute / operator / values conditions, AND'd within a block and \
                          OR'd across blocks, as in JumpCloud."
                .into(),
        }
    }

    fn compile(
        kind: SubjectKind,
        schema: &[AttributeDef],
        rules: &[RuleSource],
    ) -> Result<Self::Rules, CompileError> {
        engine::RuleSet::compile(kind, schema, rules).map_err(CompileError::Invalid)
    }

    fn len(rules: &Self::Rules) -> u32 {
        rules.len() as u32
    }

    fn evaluate(
        rules: &Self::Rules,
        batch: &BatchView<'_>,
        options: &EvaluateOptions,
    ) -> Result<Evaluation, EvaluateError> {
        Ok(rules.evaluate(batch, options))
    }
}

cohort_sdk::export_rule_evaluator!(Standard);
