//! Compilation and evaluation of condition rules. Independent of the
//! component glue so it can be tested and benchmarked natively.

use std::collections::HashSet;

use cohort_sdk::rules::{
    BatchView, ConditionOutcome, EvaluateOptions, Evaluation, Matches, RuleProblem, RuleSource,
    SubjectView, ValueRef,
};
use cohort_sdk::{AttributeDef, AttributeType, SubjectKind};
use serde::Deserialize;

/// Longest accepted regular expression, in bytes.
pub const MAX_REGEX_LEN: usize = 1_000;
/// Compiled size limit for one regular expression. Keeps a hostile pattern
/// from using the plugin's whole memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Most values one condition may list.
pub const MAX_VALUES: usize = 10_000;

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

/// An operator, after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    StartsWith,
    EndsWith,
    Contains,
    NotContains,
    In,
    NotIn,
    Matches,
    Exists,
    NotExists,
    LessThan,
    GreaterThan,
}

impl Operator {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "equals" => Self::Equals,
            "not_equals" => Self::NotEquals,
            "starts_with" => Self::StartsWith,
            "ends_with" => Self::EndsWith,
            "contains" => Self::Contains,
            "not_contains" => Self::NotContains,
            "in" => Self::In,
            "not_in" => Self::NotIn,
            "matches" => Self::Matches,
            "exists" => Self::Exists,
            "not_exists" => Self::NotExists,
            "less_than" => Self::LessThan,
            "greater_than" => Self::GreaterThan,
            _ => return None,
        })
    }

    /// Negative operators hold when *no* value of the subject matches.
    fn is_negative(self) -> bool {
        matches!(self, Self::NotEquals | Self::NotContains | Self::NotIn)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Equals => "equals",
            Self::NotEquals => "not_equals",
            Self::StartsWith => "starts_with",
            Self::EndsWith => "ends_with",
            Self::Contains => "contains",
            Self::NotContains => "not_contains",
            Self::In => "in",
            Self::NotIn => "not_in",
            Self::Matches => "matches",
            Self::Exists => "exists",
            Self::NotExists => "not_exists",
            Self::LessThan => "less_than",
            Self::GreaterThan => "greater_than",
        }
    }
}

const OPERATORS: &str = "equals, not_equals, starts_with, ends_with, contains, not_contains, in, \
                         not_in, matches, exists, not_exists, less_than, greater_than";

/// A comparison operand, resolved at compile time except for relative dates.
#[derive(Debug, Clone)]
enum Operand {
    Text(String),
    Number(f64),
    Boolean(bool),
    Timestamp(i64),
    /// `now - offset_millis`, resolved per evaluation.
    Relative(i64),
}

#[derive(Debug)]
struct Condition {
    at: String,
    attribute: String,
    operator: Operator,
    ignore_case: bool,
    operands: Vec<Operand>,
    set: Option<HashSet<String>>,
    regex: Option<regex::Regex>,
}

#[derive(Debug)]
struct Rule {
    /// OR of AND blocks.
    blocks: Vec<Vec<Condition>>,
}

/// A compiled set of rules.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Compile rules, collecting every problem in every rule.
    pub fn compile(
        kind: SubjectKind,
        schema: &[AttributeDef],
        sources: &[RuleSource],
    ) -> Result<RuleSet, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::with_capacity(sources.len());
        for (index, source) in sources.iter().enumerate() {
            let mut ctx = Ctx {
                rule: index as u32,
                kind,
                schema,
                problems: &mut problems,
            };
            if let Some(rule) = ctx.rule(&source.text) {
                rules.push(rule);
            }
        }
        if problems.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(problems)
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluate every rule over every subject.
    pub fn evaluate(&self, batch: &BatchView<'_>, options: &EvaluateOptions) -> Evaluation {
        let subjects = batch.len();
        let mut matches = Matches::new(self.rules.len(), subjects);
        let mut explanations = Vec::new();
        // Resolve attribute names to this batch's indices once per batch.
        let resolved: Vec<Vec<Vec<Option<u32>>>> = self
            .rules
            .iter()
            .map(|r| {
                r.blocks
                    .iter()
                    .map(|b| {
                        b.iter()
                            .map(|c| batch.attribute_index(&c.attribute))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        for s in 0..subjects {
            let subject = batch.subject(s);
            for (r, rule) in self.rules.iter().enumerate() {
                let mut rule_matched = false;
                for (b, block) in rule.blocks.iter().enumerate() {
                    let mut block_matched = true;
                    for (c, condition) in block.iter().enumerate() {
                        let ok = condition.test(&subject, resolved[r][b][c], options.now_millis);
                        if options.explain {
                            explanations.push(ConditionOutcome {
                                rule: r as u32,
                                subject: s as u32,
                                at: condition.at.clone(),
                                matched: ok,
                                detail: condition.describe(&subject, resolved[r][b][c], ok),
                            });
                        } else if !ok {
                            block_matched = false;
                            break;
                        }
                        block_matched &= ok;
                    }
                    if block_matched {
                        rule_matched = true;
                        if !options.explain {
                            break;
                        }
                    }
                }
                if rule_matched {
                    matches.set(r, s);
                }
            }
        }
        let mut evaluation = matches.into_evaluation();
        evaluation.explanations = explanations;
        evaluation
    }
}

struct Ctx<'a> {
    rule: u32,
    kind: SubjectKind,
    schema: &'a [AttributeDef],
    problems: &'a mut Vec<RuleProblem>,
}

impl Ctx<'_> {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(RuleProblem {
            rule: self.rule,
            at: at.into(),
            message: message.into(),
        });
    }

    fn rule(&mut self, text: &str) -> Option<Rule> {
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

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ`, or relative: `now`, `now-30d`,
/// `now-12h`, `now+7d` (units s, m, h, d, w).
fn parse_time(s: &str) -> Result<Operand, String> {
    let bad = || {
        format!(
            "\"{s}\" is not a date: use YYYY-MM-DD, a UTC time such as \
             2026-01-31T12:00:00Z, or a relative time such as now-30d"
        )
    };
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(Operand::Relative(0));
        }
        let (sign, rest) = if let Some(r) = rest.strip_prefix('-') {
            (1i64, r)
        } else if let Some(r) = rest.strip_prefix('+') {
            (-1i64, r)
        } else {
            return Err(bad());
        };
        let Some(unit) = rest.chars().last() else {
            return Err(bad());
        };
        let num = &rest[..rest.len() - unit.len_utf8()];
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        let unit_ms: i64 = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        return n
            .checked_mul(unit_ms)
            .map(|ms| Operand::Relative(sign * ms))
            .ok_or_else(bad);
    }
    parse_absolute(s).map(Operand::Timestamp).ok_or_else(bad)
}

/// Milliseconds since the epoch for a date or a UTC RFC 3339 time.
pub fn parse_absolute(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if b.len() > 10 {
        if b.len() != 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
            return None;
        }
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        secs += hh * 3600 + mm * 60 + ss;
    }
    Some(secs * 1000)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn text_eq(ignore_case: bool, subject: &str, operand: &str) -> bool {
    if ignore_case {
        // Operands are lowercased at compile time.
        if subject.is_ascii() {
            subject.len() == operand.len() && subject.eq_ignore_ascii_case(operand)
        } else {
            subject.to_lowercase() == operand
        }
    } else {
        subject == operand
    }
}

impl Condition {
    /// Whether `subject` satisfies the condition. `attribute` is the
    /// attribute's index in the batch, `None` when no subject has it.
    fn test(&self, subject: &SubjectView<'_>, attribute: Option<u32>, now: i64) -> bool {
        let Some(attribute) = attribute.filter(|a| subject.has(*a)) else {
            // A missing attribute satisfies nothing but "not exists".
            return self.operator == Operator::NotExists;
        };
        match self.operator {
            Operator::Exists => return true,
            Operator::NotExists => return false,
            _ => {}
        }
        let negative = self.operator.is_negative();
        let mut any = false;
        for value in subject.values(attribute) {
            if self.test_value(value, now) {
                any = true;
                break;
            }
        }
        if negative { !any } else { any }
    }

    /// The positive form of the operator against one value.
    fn test_value(&self, value: ValueRef<'_>, now: i64) -> bool {
        match value {
            ValueRef::Text(s) => self.test_text(s),
            ValueRef::Number(n) => self.operands.iter().any(|o| match o {
                Operand::Number(x) => match self.operator {
                    Operator::LessThan => n < *x,
                    Operator::GreaterThan => n > *x,
                    _ => n == *x,
                },
                _ => false,
            }),
            ValueRef::Boolean(b) => self
                .operands
                .iter()
                .any(|o| matches!(o, Operand::Boolean(x) if *x == b)),
            ValueRef::Timestamp(t) => self.operands.iter().any(|o| {
                let x = match o {
                    Operand::Timestamp(x) => *x,
                    Operand::Relative(offset) => now - offset,
                    _ => return false,
                };
                match self.operator {
                    Operator::LessThan => t < x,
                    Operator::GreaterThan => t > x,
                    _ => t == x,
                }
            }),
        }
    }

    fn test_text(&self, s: &str) -> bool {
        if let Some(re) = &self.regex {
            return re.is_match(s);
        }
        if let Some(set) = &self.set {
            return if self.ignore_case {
                set.contains(&s.to_lowercase())
            } else {
                set.contains(s)
            };
        }
        let lowered;
        let s = if self.ignore_case && !s.is_ascii() {
            lowered = s.to_lowercase();
            lowered.as_str()
        } else {
            s
        };
        self.operands.iter().any(|o| {
            let Operand::Text(x) = o else { return false };
            match self.operator {
                Operator::Equals | Operator::NotEquals | Operator::In | Operator::NotIn => {
                    text_eq(self.ignore_case, s, x)
                }
                Operator::StartsWith => {
                    s.len() >= x.len()
                        && s.is_char_boundary(x.len())
                        && text_eq(self.ignore_case, &s[..x.len()], x)
                }
                Operator::EndsWith => {
                    s.len() >= x.len()
                        && s.is_char_boundary(s.len() - x.len())
                        && text_eq(self.ignore_case, &s[s.len() - x.len()..], x)
                }
                Operator::Contains | Operator::NotContains => {
                    if self.ignore_case {
                        s.to_ascii_lowercase().contains(x.as_str())
                    } else {
                        s.contains(x.as_str())
                    }
                }
                _ => false,
            }
        })
    }

    fn describe(&self, subject: &SubjectView<'_>, attribute: Option<u32>, ok: bool) -> String {
        let values: Vec<String> = attribute
            .map(|a| {
                subject
                    .values(a)
                    .map(|v| match v {
                        ValueRef::Text(s) => format!("{s:?}"),
                        ValueRef::Number(n) => n.to_string(),
                        ValueRef::Boolean(b) => b.to_string(),
                        ValueRef::Timestamp(t) => format!("@{t}ms"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let have = if values.is_empty() {
            "is missing".to_owned()
        } else {
            format!("is {}", values.join(", "))
        };
        let operands: Vec<String> = self
            .operands
            .iter()
            .map(|o| match o {
                Operand::Text(s) => format!("{s:?}"),
                Operand::Number(n) => n.to_string(),
                Operand::Boolean(b) => b.to_string(),
                Operand::Timestamp(t) => format!("@{t}ms"),
                Operand::Relative(offset) => format!("now-{offset}ms"),
            })
            .collect();
        format!(
            "{} {have}; \"{} [{}]\" {}",
            self.attribute,
            self.operator.name(),
            operands.join(", "),
            if ok { "held" } else { "did not hold" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::rules::{BatchBuilder, Input};

    fn schema() -> Vec<AttributeDef> {
        let def = |name: &str, t| AttributeDef {
            name: name.into(),
            kind: SubjectKind::User,
            type_: t,
            custom: name == "cost_center",
        };
        vec![
            def("department", AttributeType::Text),
            def("cost_center", AttributeType::Text),
            def("skills", AttributeType::TextList),
            def("level", AttributeType::Number),
            def("start_date", AttributeType::Timestamp),
            def("email", AttributeType::Text),
        ]
    }

    fn run(rule: &str, subjects: &[&[(&str, Input<'_>)]]) -> Vec<bool> {
        let set = RuleSet::compile(
            SubjectKind::User,
            &schema(),
            &[RuleSource { text: rule.into() }],
        )
        .unwrap_or_else(|p| panic!("{p:?}"));
        let mut b = BatchBuilder::new(SubjectKind::User);
        for s in subjects {
            b.push(s);
        }
        let batch = b.build();
        let view = BatchView::new(&batch).unwrap();
        let e = set.evaluate(
            &view,
            &EvaluateOptions {
                now_millis: 1_000 * 86_400_000,
                explain: false,
            },
        );
        let m = Matches::from_evaluation(&e);
        (0..subjects.len()).map(|i| m.get(0, i)).collect()
    }

    fn problems(rule: &str) -> Vec<RuleProblem> {
        RuleSet::compile(
            SubjectKind::User,
            &schema(),
            &[RuleSource { text: rule.into() }],
        )
        .unwrap_err()
    }

    #[test]
    fn missing_attributes_satisfy_nothing_but_not_exists() {
        let r = r#"{"conditions":[{"attribute":"cost_center","operator":"not_equals","values":["A"]}]}"#;
        assert_eq!(
            run(r, &[&[("cost_center", Input::Text("B"))], &[]]),
            [true, false]
        );
        let r = r#"{"conditions":[{"attribute":"cost_center","operator":"not_exists"}]}"#;
        assert_eq!(
            run(r, &[&[("cost_center", Input::Text("B"))], &[]]),
            [false, true]
        );
    }

    #[test]
    fn lists_any_for_positive_none_for_negative() {
        let rust: &[&str] = &["go", "rust"];
        let go: &[&str] = &["go"];
        let pos =
            r#"{"conditions":[{"attribute":"skills","operator":"equals","values":["rust"]}]}"#;
        let neg =
            r#"{"conditions":[{"attribute":"skills","operator":"not_equals","values":["rust"]}]}"#;
        let subjects: &[&[(&str, Input<'_>)]] = &[
            &[("skills", Input::List(rust))],
            &[("skills", Input::List(go))],
        ];
        assert_eq!(run(pos, subjects), [true, false]);
        assert_eq!(run(neg, subjects), [false, true]);
    }

    #[test]
    fn case_is_sensitive_unless_asked() {
        let s: &[&[(&str, Input<'_>)]] = &[&[("email", Input::Text("Ada@Example.COM"))]];
        let r = |ic: bool| {
            format!(
                r#"{{"conditions":[{{"attribute":"email","operator":"ends_with","values":["@example.com"],"ignore_case":{ic}}}]}}"#
            )
        };
        assert_eq!(run(&r(false), s), [false]);
        assert_eq!(run(&r(true), s), [true]);
        // Regex classes keep their meaning with ignore_case.
        let re = r#"{"conditions":[{"attribute":"department","operator":"matches","values":["^\\D+$"],"ignore_case":true}]}"#;
        assert_eq!(
            run(
                re,
                &[
                    &[("department", Input::Text("Sales"))],
                    &[("department", Input::Text("42"))]
                ]
            ),
            [true, false]
        );
    }

    #[test]
    fn relative_and_absolute_dates() {
        let day = 86_400_000i64;
        let r = r#"{"conditions":[{"attribute":"start_date","operator":"less_than","values":["now-30d"]}]}"#;
        assert_eq!(
            run(
                r,
                &[
                    &[("start_date", Input::Timestamp(900 * day))],
                    &[("start_date", Input::Timestamp(990 * day))]
                ]
            ),
            [true, false]
        );
        assert_eq!(parse_absolute("1970-01-02"), Some(day));
        assert_eq!(parse_absolute("2024-02-29"), Some(19_782 * day));
        assert_eq!(parse_absolute("2026-02-31"), None);
        assert_eq!(parse_absolute("1970-01-01T00:00:01Z"), Some(1_000));
    }

    #[test]
    fn bad_rules_are_reported_with_their_position_and_never_panic() {
        let p = problems(
            r#"{"conditions":[{"attribute":"level","operator":"contains","values":["1"]}]}"#,
        );
        assert_eq!(p[0].at, "/conditions/0/operator");
        for value in ["now-5é", "now--5d", "now-d", "2026-13-01", "yesterday"] {
            let rule = format!(
                r#"{{"any":[{{"conditions":[{{"attribute":"start_date","operator":"greater_than","values":["{value}"]}}]}}]}}"#
            );
            let p = problems(&rule);
            assert_eq!(p[0].at, "/any/0/conditions/0/values/0", "{value}");
        }
        let p = problems(
            r#"{"conditions":[{"attribute":"department","operator":"matches","values":["("]}]}"#,
        );
        assert!(p[0].message.contains("invalid regular expression"));
        assert_eq!(problems("[]")[0].at, "");
        assert_eq!(problems(r#"{"conditions":[]}"#)[0].at, "/conditions");
    }
}
