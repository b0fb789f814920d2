//! Reading a rule's JSON into the compiled model, with every problem
//! collected and placed by its JSON pointer (`/any/0/conditions/1/values/0`)
//! so that the host can show the admin where each one is.
//!
//! Operands are converted to the attribute's type here, once, and regular
//! expressions compiled within their size limits, so that evaluation never
//! has to refuse a value.

use std::collections::HashSet;

use cohort_sdk::rules::RuleProblem;
use cohort_sdk::{AttributeDef, AttributeType, SubjectKind};
use serde::Deserialize;

use super::time::parse_time;
use super::{
    Attributes, Condition, MAX_REGEX_LEN, MAX_VALUES, OPERATORS, Operand, Operator,
    REGEX_SIZE_LIMIT, Rule,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    #[serde(default)]
    conditions: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    any: Option<Vec<BlockJson>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockJson {
    conditions: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionJson {
    attribute: String,
    operator: String,
    #[serde(default)]
    values: Vec<serde_json::Value>,
    #[serde(default)]
    ignore_case: bool,
}

pub(super) struct Ctx<'a> {
    pub(super) rule: u32,
    pub(super) kind: SubjectKind,
    pub(super) schema: &'a [AttributeDef],
    pub(super) attributes: &'a mut Attributes,
    pub(super) problems: &'a mut Vec<RuleProblem>,
}

impl Ctx<'_> {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(RuleProblem {
            rule: self.rule,
            at: at.into(),
            message: message.into(),
        });
    }

    pub(super) fn rule(&mut self, text: &str) -> Option<Rule> {
        let json: RuleJson = match serde_json::from_str(text) {
            Ok(j) => j,
            Err(e) => {
                self.problem(
                    "",
                    format!("not a valid rule: {e} (expected {{\"conditions\": [...]}} or {{\"any\": [...]}})"),
                );
                return None;
            }
        };
        let blocks = match (json.conditions, json.any) {
            (Some(conditions), None) => vec![("/conditions".to_owned(), conditions)],
            (None, Some(any)) if !any.is_empty() => any
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("/any/{i}/conditions"), b.conditions))
                .collect(),
            (None, Some(_)) => {
                self.problem("/any", "must contain at least one block");
                return None;
            }
            _ => {
                self.problem(
                    "",
                    "a rule has either \"conditions\" or \"any\", exactly one of them",
                );
                return None;
            }
        };
        let before = self.problems.len();
        let mut compiled = Vec::with_capacity(blocks.len());
        for (path, conditions) in blocks {
            if conditions.is_empty() {
                self.problem(path.clone(), "must contain at least one condition");
            }
            let block: Vec<Condition> = conditions
                .into_iter()
                .enumerate()
                .filter_map(|(i, c)| self.condition(format!("{path}/{i}"), c))
                .collect();
            compiled.push(block);
        }
        (self.problems.len() == before).then_some(Rule { blocks: compiled })
    }

    fn condition(&mut self, at: String, json: serde_json::Value) -> Option<Condition> {
        let c: ConditionJson = match serde_json::from_value(json) {
            Ok(c) => c,
            Err(e) => {
                self.problem(at, format!("not a valid condition: {e}"));
                return None;
            }
        };
        let Some(def) = self
            .schema
            .iter()
            .find(|d| d.kind == self.kind && d.name == c.attribute)
        else {
            let kind = match self.kind {
                SubjectKind::User => "users",
                SubjectKind::Device => "devices",
            };
            self.problem(
                format!("{at}/attribute"),
                format!("unknown attribute \"{}\" for {kind}", c.attribute),
            );
            return None;
        };
        let Some(operator) = Operator::parse(&c.operator) else {
            self.problem(
                format!("{at}/operator"),
                format!(
                    "unknown operator \"{}\"; expected one of: {OPERATORS}",
                    c.operator
                ),
            );
            return None;
        };
        let ty = def.type_;
        let applies = match operator {
            Operator::Equals | Operator::NotEquals | Operator::In | Operator::NotIn => true,
            Operator::Exists | Operator::NotExists => true,
            Operator::StartsWith
            | Operator::EndsWith
            | Operator::Contains
            | Operator::NotContains
            | Operator::Matches => matches!(ty, AttributeType::Text | AttributeType::TextList),
            Operator::LessThan | Operator::GreaterThan => {
                matches!(ty, AttributeType::Number | AttributeType::Timestamp)
            }
        };
        if !applies {
            self.problem(
                format!("{at}/operator"),
                format!(
                    "operator \"{}\" does not apply to \"{}\", which is a {} attribute",
                    operator.name(),
                    c.attribute,
                    type_name(ty)
                ),
            );
            return None;
        }
        let wants_values = !matches!(operator, Operator::Exists | Operator::NotExists);
        if !wants_values && !c.values.is_empty() {
            self.problem(
                format!("{at}/values"),
                format!("operator \"{}\" takes no values", operator.name()),
            );
            return None;
        }
        if wants_values && c.values.is_empty() {
            self.problem(format!("{at}/values"), "at least one value is required");
            return None;
        }
        if c.values.len() > MAX_VALUES {
            self.problem(
                format!("{at}/values"),
                format!("at most {MAX_VALUES} values are allowed"),
            );
            return None;
        }
        if matches!(operator, Operator::LessThan | Operator::GreaterThan) && c.values.len() != 1 {
            self.problem(format!("{at}/values"), "exactly one value is required");
            return None;
        }
        let before = self.problems.len();
        let mut operands = Vec::with_capacity(c.values.len());
        for (i, v) in c.values.iter().enumerate() {
            let vat = format!("{at}/values/{i}");
            match operand(ty, v) {
                Ok(mut o) => {
                    // Regex patterns are not lowercased: `\D` (non-digit) would
                    // become `\d`. The regex gets a case-insensitive flag instead.
                    if c.ignore_case
                        && operator != Operator::Matches
                        && let Operand::Text(s) = &mut o
                    {
                        *s = s.to_lowercase();
                    }
                    operands.push(o);
                }
                Err(m) => self.problem(vat, m),
            }
        }
        if self.problems.len() != before {
            return None;
        }
        let mut regex = None;
        if operator == Operator::Matches {
            // Several patterns are OR'd into one alternation.
            let mut pattern = String::new();
            for (i, o) in operands.iter().enumerate() {
                let Operand::Text(p) = o else { continue };
                if p.len() > MAX_REGEX_LEN {
                    self.problem(
                        format!("{at}/values/{i}"),
                        format!("regular expression longer than {MAX_REGEX_LEN} bytes"),
                    );
                    return None;
                }
                if let Err(e) = regex::RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    self.problem(
                        format!("{at}/values/{i}"),
                        format!("invalid regular expression: {e}"),
                    );
                    return None;
                }
                if !pattern.is_empty() {
                    pattern.push('|');
                }
                pattern.push_str(&format!("(?:{p})"));
            }
            regex = regex::RegexBuilder::new(&pattern)
                .case_insensitive(c.ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .ok();
            if regex.is_none() {
                self.problem(
                    format!("{at}/values"),
                    "the combined expressions are too large",
                );
                return None;
            }
        }
        let set = matches!(
            operator,
            Operator::In | Operator::NotIn | Operator::Equals | Operator::NotEquals
        )
        .then(|| {
            operands
                .iter()
                .filter_map(|o| match o {
                    Operand::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<HashSet<_>>()
        })
        .filter(|s| s.len() > 8);
        Some(Condition {
            at,
            slot: self.attributes.slot(&c.attribute),
            attribute: c.attribute,
            operator,
            ignore_case: c.ignore_case,
            operands,
            set,
            regex,
        })
    }
}

fn type_name(ty: AttributeType) -> &'static str {
    match ty {
        AttributeType::Text => "text",
        AttributeType::Number => "number",
        AttributeType::Boolean => "boolean",
        AttributeType::Timestamp => "date",
        AttributeType::TextList => "text list",
    }
}

fn operand(ty: AttributeType, v: &serde_json::Value) -> Result<Operand, String> {
    use serde_json::Value as J;
    match (ty, v) {
        (AttributeType::Text | AttributeType::TextList, J::String(s)) => {
            Ok(Operand::Text(s.clone()))
        }
        (AttributeType::Number, J::Number(n)) => n
            .as_f64()
            .map(Operand::Number)
            .ok_or_else(|| "not a finite number".to_owned()),
        (AttributeType::Number, J::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Operand::Number)
            .ok_or_else(|| format!("\"{s}\" is not a number")),
        (AttributeType::Boolean, J::Bool(b)) => Ok(Operand::Boolean(*b)),
        (AttributeType::Boolean, J::String(s)) if s == "true" || s == "false" => {
            Ok(Operand::Boolean(s == "true"))
        }
        (AttributeType::Timestamp, J::String(s)) => parse_time(s),
        (ty, v) => Err(format!("{v} is not a valid {} value", type_name(ty))),
    }
}
