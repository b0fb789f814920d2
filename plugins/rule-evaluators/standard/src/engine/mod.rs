//! Compilation and evaluation of condition rules. Independent of the
//! component glue so it can be tested and benchmarked natively.
//!
//! The compiled model (rules, conditions, operands) lives here; reading a
//! rule's JSON into it is in `parse.rs`, dates and relative times in
//! `time.rs`, the anchor index that narrows which rules a subject may match
//! in `index.rs`, and testing subjects against rules in `eval.rs`.

mod eval;
mod index;
mod parse;
mod time;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use cohort_sdk::rules::{BatchView, RuleProblem, RuleSource};
use cohort_sdk::{AttributeDef, SubjectKind};

use index::AnchorIndex;
use parse::Ctx;

pub use time::parse_absolute;

/// Longest accepted regular expression, in bytes.
pub const MAX_REGEX_LEN: usize = 1_000;
/// Compiled size limit for one regular expression. Keeps a hostile pattern
/// from using the plugin's whole memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Most values one condition may list.
pub const MAX_VALUES: usize = 10_000;

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
    /// The attribute's slot in [`RuleSet::attributes`].
    slot: usize,
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
    attributes: Attributes,
    index: AnchorIndex,
}

impl RuleSet {
    /// Compile rules, collecting every problem in every rule.
    pub fn compile(
        kind: SubjectKind,
        schema: &[AttributeDef],
        sources: &[RuleSource],
    ) -> Result<RuleSet, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut attributes = Attributes::default();
        let mut rules = Vec::with_capacity(sources.len());
        for (index, source) in sources.iter().enumerate() {
            let mut ctx = Ctx {
                rule: index as u32,
                kind,
                schema,
                attributes: &mut attributes,
                problems: &mut problems,
            };
            if let Some(rule) = ctx.rule(&source.text) {
                rules.push(rule);
            }
        }
        if problems.is_empty() {
            let index = AnchorIndex::build(&rules);
            Ok(RuleSet {
                rules,
                attributes,
                index,
            })
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

    /// How many rules the anchor index cannot narrow down, and so tests
    /// against every subject: the figure that explains a slow rule set.
    pub fn unanchored_rules(&self) -> usize {
        self.index.unanchored.len()
    }
}

/// The distinct attribute names of a rule set. Conditions refer to them by
/// slot, so a batch's attribute indices are looked up once per name rather
/// than once per condition.
#[derive(Debug, Default)]
struct Attributes {
    names: Vec<String>,
    slots: HashMap<String, usize>,
}

impl Attributes {
    /// The slot of `name`, added if new.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&slot) = self.slots.get(name) {
            return slot;
        }
        self.names.push(name.to_owned());
        self.slots.insert(name.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// Each slot's attribute index in `batch`, `None` where no subject of
    /// the batch has the attribute.
    fn resolve(&self, batch: &BatchView<'_>) -> Vec<Option<u32>> {
        self.names
            .iter()
            .map(|n| batch.attribute_index(n))
            .collect()
    }
}
