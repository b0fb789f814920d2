//! Compilation and evaluation of condition rules. Independent of the
//! component glue so it can be tested and benchmarked natively.

use std::collections::{HashMap, HashSet};

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

    /// Evaluate every rule over every subject.
    ///
    /// Without `explain`, a subject is tested only against the rules the
    /// anchor index offers for its values and against the unanchored rules:
    /// a rule the index does not offer cannot match, so the result is the
    /// same as testing every rule. With `explain`, every condition's outcome
    /// is reported, so every rule is tested.
    pub fn evaluate(&self, batch: &BatchView<'_>, options: &EvaluateOptions) -> Evaluation {
        if options.explain {
            return self.evaluate_every_rule(batch, options);
        }
        let slots = self.attributes.resolve(batch);
        let groups = self.index.resolve(batch);
        let mut matches = Matches::new(self.rules.len(), batch.len());
        let mut candidates = Candidates::new(self.rules.len());
        let mut key = String::new();
        for s in 0..batch.len() {
            let subject = batch.subject(s);
            candidates.clear();
            for (group, attribute) in &groups {
                for value in subject.values(*attribute) {
                    if let ValueRef::Text(text) = value {
                        group.offer(text, &mut key, &mut candidates);
                    }
                }
            }
            for &r in candidates.rules().iter().chain(&self.index.unanchored) {
                if self.rules[r].matches(&subject, &slots, options.now_millis) {
                    matches.set(r, s);
                }
            }
        }
        matches.into_evaluation()
    }

    /// Test every rule against every subject: the explain path, which
    /// reports every condition, and the reference the indexed path of
    /// [`RuleSet::evaluate`] is tested against.
    fn evaluate_every_rule(&self, batch: &BatchView<'_>, options: &EvaluateOptions) -> Evaluation {
        let subjects = batch.len();
        let mut matches = Matches::new(self.rules.len(), subjects);
        let mut explanations = Vec::new();
        let slots = self.attributes.resolve(batch);
        for s in 0..subjects {
            let subject = batch.subject(s);
            for (r, rule) in self.rules.iter().enumerate() {
                let mut rule_matched = false;
                for block in &rule.blocks {
                    let mut block_matched = true;
                    for condition in block {
                        let attribute = slots[condition.slot];
                        let ok = condition.test(&subject, attribute, options.now_millis);
                        if options.explain {
                            explanations.push(ConditionOutcome {
                                rule: r as u32,
                                subject: s as u32,
                                at: condition.at.clone(),
                                matched: ok,
                                detail: condition.describe(&subject, attribute, ok),
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

impl Rule {
    /// Whether `subject` satisfies every condition of some block. `slots`
    /// maps attribute slots to the batch's attribute indices.
    fn matches(&self, subject: &SubjectView<'_>, slots: &[Option<u32>], now: i64) -> bool {
        self.blocks
            .iter()
            .any(|block| block.iter().all(|c| c.test(subject, slots[c.slot], now)))
    }

    /// One anchor per block, or `None` if some block has none: then a
    /// subject may satisfy that block whatever its values are, and the rule
    /// has to be tested against every subject.
    ///
    /// A block's anchor is, by preference: an exact (`equals` / `in`)
    /// condition rather than a `starts_with` / `ends_with` one, which lets
    /// through every value sharing the prefix or suffix; then one without
    /// an empty prefix or suffix, which would let through every value; then
    /// the one with the fewest values. Each step means fewer subjects for
    /// which the rule is a candidate only to fail on another condition.
    fn anchors(&self) -> Option<Vec<(&Condition, AnchorKind)>> {
        self.blocks
            .iter()
            .map(|block| {
                block
                    .iter()
                    .filter_map(|c| Some((c, c.anchor_kind()?)))
                    .min_by_key(|(c, kind)| {
                        let matches_every_value =
                            *kind != AnchorKind::Exact && c.texts().any(str::is_empty);
                        (
                            *kind != AnchorKind::Exact,
                            matches_every_value,
                            c.operands.len(),
                        )
                    })
            })
            .collect()
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

/// Finds the rules a subject may match from the subject's text values.
///
/// A rule is *anchored* when each of its blocks has an anchor: a positive
/// `equals` / `in` / `starts_with` / `ends_with` condition on a text or
/// text-list attribute (see [`Condition::anchor_kind`]). Such a condition
/// holds only if one of the subject's values for the attribute (lowercased,
/// with `ignore_case`) equals, starts with or ends with one of the
/// condition's values, so a subject can match an anchored rule only if one
/// of its values leads to the rule here. Those candidates are then tested
/// in full, so the index only has to never miss a rule; it may offer too
/// many.
#[derive(Debug, Default)]
struct AnchorIndex {
    groups: Vec<AnchorGroup>,
    /// The rules that are not anchored, tested against every subject.
    unanchored: Vec<usize>,
}

/// How an anchor compares a subject's value with its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnchorKind {
    /// `equals` / `in`: the value is an operand.
    Exact,
    /// `starts_with`: the value starts with an operand.
    Prefix,
    /// `ends_with`: the value ends with an operand.
    Suffix,
}

/// The anchors on one attribute with one `ignore_case` setting.
#[derive(Debug)]
struct AnchorGroup {
    attribute: String,
    ignore_case: bool,
    /// An exact anchor's value (lowercased with `ignore_case`, as the
    /// condition's operands are) → the rules with an anchor listing it,
    /// ascending and each once.
    exact: HashMap<String, Vec<usize>>,
    prefixes: Affixes,
    suffixes: Affixes,
}

/// The operands of the prefix (or suffix) anchors of one [`AnchorGroup`].
#[derive(Debug, Default)]
struct Affixes {
    /// An operand (lowercased with `ignore_case`) → the rules with an
    /// anchor listing it, ascending and each once.
    rules: HashMap<String, Vec<usize>>,
    /// The distinct byte lengths of the keys of `rules`, ascending. A value
    /// is looked up by its prefix (suffix) of each of these lengths.
    lengths: Vec<usize>,
}

impl AnchorIndex {
    fn build(rules: &[Rule]) -> AnchorIndex {
        let mut index = AnchorIndex::default();
        let mut group_of: HashMap<(&str, bool), usize> = HashMap::new();
        for (r, rule) in rules.iter().enumerate() {
            let Some(anchors) = rule.anchors() else {
                index.unanchored.push(r);
                continue;
            };
            for (anchor, kind) in anchors {
                let g = *group_of
                    .entry((&anchor.attribute, anchor.ignore_case))
                    .or_insert_with(|| {
                        index.groups.push(AnchorGroup {
                            attribute: anchor.attribute.clone(),
                            ignore_case: anchor.ignore_case,
                            exact: HashMap::new(),
                            prefixes: Affixes::default(),
                            suffixes: Affixes::default(),
                        });
                        index.groups.len() - 1
                    });
                index.groups[g].add(r, anchor, kind);
            }
        }
        index
    }

    /// The groups whose attribute some subject of `batch` has, with the
    /// attribute's index in the batch.
    fn resolve(&self, batch: &BatchView<'_>) -> Vec<(&AnchorGroup, u32)> {
        self.groups
            .iter()
            .filter_map(|g| Some((g, batch.attribute_index(&g.attribute)?)))
            .collect()
    }
}

/// Record rule `r` under `key`. Rules are added in ascending order, so a
/// rule already listed for a key is the last one in its list.
fn push_rule(map: &mut HashMap<String, Vec<usize>>, key: &str, r: usize) {
    let rules = map.entry(key.to_owned()).or_default();
    if rules.last() != Some(&r) {
        rules.push(r);
    }
}

impl AnchorGroup {
    /// Record that rule `r` is a candidate for the values `anchor` lets
    /// through.
    fn add(&mut self, r: usize, anchor: &Condition, kind: AnchorKind) {
        for value in anchor.texts() {
            match kind {
                AnchorKind::Exact => push_rule(&mut self.exact, value, r),
                AnchorKind::Prefix => self.prefixes.add(r, value),
                AnchorKind::Suffix => self.suffixes.add(r, value),
            }
        }
    }

    /// Offer `candidates` the rules whose anchor on this attribute holds for
    /// the subject value `text`, and perhaps others. `key` is scratch space
    /// for lowercasing.
    fn offer(&self, text: &str, key: &mut String, candidates: &mut Candidates) {
        let text = if self.ignore_case {
            lowercase_into(text, key);
            key.as_str()
        } else {
            text
        };
        if let Some(rules) = self.exact.get(text) {
            candidates.add(rules);
        }
        self.prefixes.offer(text, |len| text.get(..len), candidates);
        self.suffixes
            .offer(text, |len| text.get(text.len() - len..), candidates);
    }
}

impl Affixes {
    fn add(&mut self, r: usize, affix: &str) {
        push_rule(&mut self.rules, affix, r);
        if let Err(i) = self.lengths.binary_search(&affix.len()) {
            self.lengths.insert(i, affix.len());
        }
    }

    /// Offer the rules of the operands that `text` starts (or ends) with.
    /// `cut(len)` is the prefix (or suffix) of `text` of `len` bytes, `None`
    /// when `len` bytes end (or start) inside a character: then no operand,
    /// which is whole characters, can match there. The length 0 gives the
    /// empty string, so an empty operand is offered for every value.
    fn offer<'t>(
        &self,
        text: &'t str,
        cut: impl Fn(usize) -> Option<&'t str>,
        candidates: &mut Candidates,
    ) {
        for &len in &self.lengths {
            if len > text.len() {
                break;
            }
            if let Some(rules) = cut(len).and_then(|affix| self.rules.get(affix)) {
                candidates.add(rules);
            }
        }
    }
}

/// `text.to_lowercase()` into `out`, without allocating for ASCII text.
///
/// With `ignore_case`, the anchor index looks values up by this key, and it
/// finds every rule whose anchor holds:
///
/// - An `equals` / `in` condition ([`text_eq`], [`Condition::test_text`])
///   holds for a value exactly when the value's lowercase equals one of its
///   operands, which were lowercased the same way when compiled.
/// - A `starts_with` (`ends_with`) condition holds exactly when the value's
///   lowercase starts (ends) with one of its operands. For a non-ASCII value,
///   `test_text` lowercases the whole value first, as here, and then cuts it
///   at the operand's length in bytes, so lowercasing changing byte lengths
///   does not matter: both sides cut the same lowercased string. The cut
///   piece is compared with `text_eq`, which for non-ASCII may lowercase it
///   again (changing nothing, see below). For an ASCII value, `test_text`
///   cuts the value unlowered and compares with `eq_ignore_ascii_case`,
///   which is the same as cutting the ASCII-lowercased value here and
///   comparing exactly, since an operand (lowercased) holds no ASCII
///   capitals.
///
/// Both rest on lowercasing twice being lowercasing once, for every
/// character (the test `lowercasing_is_idempotent`); the test
/// `affix_anchors_offer_exactly_the_rules_whose_anchor_holds` checks the
/// prefix and suffix lookups against `test_text` on awkward values.
fn lowercase_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&text.to_lowercase());
    }
}

/// The rules the anchor index offers for one subject, each once.
struct Candidates {
    /// `seen[r] == generation` when rule `r` is in `rules`, so clearing is
    /// O(1) rather than O(rules) per subject.
    seen: Vec<u32>,
    generation: u32,
    rules: Vec<usize>,
}

impl Candidates {
    fn new(rules: usize) -> Candidates {
        Candidates {
            seen: vec![0; rules],
            generation: 0,
            rules: Vec::new(),
        }
    }

    /// Forget the previous subject's candidates.
    fn clear(&mut self) {
        self.rules.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped around: an old mark could now look current.
            self.seen.fill(0);
            self.generation = 1;
        }
    }

    /// Add `rules`, skipping those already added.
    fn add(&mut self, rules: &[usize]) {
        for &r in rules {
            if self.seen[r] != self.generation {
                self.seen[r] = self.generation;
                self.rules.push(r);
            }
        }
    }

    fn rules(&self) -> &[usize] {
        &self.rules
    }
}

struct Ctx<'a> {
    rule: u32,
    kind: SubjectKind,
    schema: &'a [AttributeDef],
    attributes: &'a mut Attributes,
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
    /// How this condition can anchor its block in the [`AnchorIndex`], if
    /// it can: a positive `equals` / `in` / `starts_with` / `ends_with` on
    /// text, which holds only for a subject with a text value that equals,
    /// starts with or ends with one of [`Condition::texts`] (after
    /// lowercasing with `ignore_case`; see [`lowercase_into`]). Operands are
    /// text exactly when the attribute is a text or text-list attribute.
    fn anchor_kind(&self) -> Option<AnchorKind> {
        let kind = match self.operator {
            Operator::Equals | Operator::In => AnchorKind::Exact,
            Operator::StartsWith => AnchorKind::Prefix,
            Operator::EndsWith => AnchorKind::Suffix,
            _ => return None,
        };
        (self.regex.is_none()
            && !self.operands.is_empty()
            && self.operands.iter().all(|o| matches!(o, Operand::Text(_))))
        .then_some(kind)
    }

    /// The text operands, lowercased if `ignore_case`.
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.operands.iter().filter_map(|o| match o {
            Operand::Text(s) => Some(s.as_str()),
            _ => None,
        })
    }

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
            def("location", AttributeType::Text),
            def("job_title", AttributeType::Text),
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

    /// The non-explain options the tests evaluate with.
    const OPTIONS: EvaluateOptions = EvaluateOptions {
        now_millis: 1_000 * 86_400_000,
        explain: false,
    };

    fn compile(rules: &[String]) -> RuleSet {
        let sources: Vec<RuleSource> = rules
            .iter()
            .map(|text| RuleSource { text: text.clone() })
            .collect();
        RuleSet::compile(SubjectKind::User, &schema(), &sources).unwrap_or_else(|p| panic!("{p:?}"))
    }

    /// A small deterministic generator (SplitMix64), so failures reproduce
    /// without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Texts whose case-insensitive comparisons are easy to get wrong: case
    /// variants, non-ASCII letters, the Kelvin sign (lowercases to ASCII
    /// `k`), dotted capital I (lowercases to two chars), Greek final sigma,
    /// sharp s, and the empty string.
    const WORDS: &[&str] = &[
        "Engineering",
        "engineering",
        "ENGINEERING",
        "Sales",
        "sales",
        "Ärger",
        "ärger",
        "ÄRGER",
        "\u{212A}",
        "k",
        "K",
        "İ",
        "i\u{307}",
        "i",
        "ΣΑΣ",
        "σας",
        "σασ",
        "straße",
        "STRASSE",
        "ẞ",
        "",
        "x",
    ];

    /// Prefixes and suffixes of [`WORDS`] (and of their lowercase and
    /// uppercase), including pieces that end inside a character of a word's
    /// lowercase (`"i"` of `"İ"`, whose lowercase is `"i\u{307}"`) and the
    /// empty string, which every value starts and ends with.
    const AFFIXES: &[&str] = &[
        "", "Eng", "eng", "ENG", "ering", "ING", "Sa", "les", "LES", "Är", "är", "ÄR", "ger",
        "GER", "\u{212A}", "k", "K", "i", "I", "\u{307}", "İ", "Σ", "σ", "ς", "ΑΣ", "ας", "str",
        "STR", "ße", "SSE", "sse", "ẞ", "ss", "@", "x",
    ];

    /// Condition values: words, or with `affixes` also [`AFFIXES`].
    fn random_values(rng: &mut Rng, affixes: bool) -> Vec<serde_json::Value> {
        // More than 8 distinct values use the condition's hash set.
        let n = if rng.chance(20) {
            9 + rng.below(8)
        } else {
            1 + rng.below(3)
        };
        (0..n)
            .map(|_| {
                if affixes && rng.chance(60) {
                    rng.pick(AFFIXES).into()
                } else {
                    rng.pick(WORDS).into()
                }
            })
            .collect()
    }

    /// A subject's text value: a word, or sometimes two words or affixes
    /// joined, so that prefixes and suffixes have something to match.
    fn random_text(rng: &mut Rng) -> String {
        if rng.chance(70) {
            rng.pick(WORDS).to_owned()
        } else {
            let piece = |rng: &mut Rng| {
                let pieces = if rng.chance(50) { WORDS } else { AFFIXES };
                rng.pick(pieces)
            };
            let (a, b) = (piece(rng), piece(rng));
            let join = rng.pick(&["", "", " ", "@"]);
            format!("{a}{join}{b}")
        }
    }

    fn random_condition(rng: &mut Rng) -> serde_json::Value {
        use serde_json::json;
        let ignore_case = rng.chance(40);
        match rng.below(12) {
            0..=6 => {
                let attribute = rng.pick(&["department", "cost_center", "skills", "email"]);
                let operator = rng.pick(&[
                    "equals",
                    "in",
                    "equals",
                    "in",
                    "not_equals",
                    "not_in",
                    "starts_with",
                    "ends_with",
                    "contains",
                    "not_contains",
                ]);
                json!({"attribute": attribute, "operator": operator,
                       "values": random_values(rng, false), "ignore_case": ignore_case})
            }
            7..=8 => {
                let attribute = rng.pick(&["department", "cost_center", "skills", "email"]);
                let operator = rng.pick(&["starts_with", "ends_with"]);
                json!({"attribute": attribute, "operator": operator,
                       "values": random_values(rng, true), "ignore_case": ignore_case})
            }
            9 => {
                let attribute = rng.pick(&["department", "skills", "level", "location"]);
                let operator = rng.pick(&["exists", "not_exists"]);
                json!({"attribute": attribute, "operator": operator})
            }
            10 => {
                let pattern = rng.pick(&["^s", "ärger", "E", "\\D", "^$"]);
                json!({"attribute": "department", "operator": "matches",
                       "values": [pattern], "ignore_case": ignore_case})
            }
            _ => {
                let operator =
                    rng.pick(&["equals", "in", "not_equals", "less_than", "greater_than"]);
                json!({"attribute": "level", "operator": operator, "values": [rng.below(5)]})
            }
        }
    }

    fn random_rule(rng: &mut Rng) -> String {
        let block = |rng: &mut Rng| -> Vec<serde_json::Value> {
            (0..1 + rng.below(3))
                .map(|_| random_condition(rng))
                .collect()
        };
        let rule = if rng.chance(50) {
            serde_json::json!({"conditions": block(rng)})
        } else {
            let blocks: Vec<_> = (0..1 + rng.below(3))
                .map(|_| serde_json::json!({"conditions": block(rng)}))
                .collect();
            serde_json::json!({"any": blocks})
        };
        rule.to_string()
    }

    /// A batch of random subjects. Attributes are often missing, lists are
    /// sometimes empty, and `department` is sometimes not text at all, as a
    /// faulty host might send.
    fn random_batch(rng: &mut Rng) -> cohort_sdk::rules::SubjectBatch {
        let mut b = BatchBuilder::new(SubjectKind::User);
        for _ in 0..rng.below(80) {
            let skills: Vec<String> = (0..rng.below(4)).map(|_| random_text(rng)).collect();
            let skills: Vec<&str> = skills.iter().map(String::as_str).collect();
            let mut texts: Vec<(&str, String)> = Vec::new();
            for attribute in ["department", "cost_center", "email"] {
                if rng.chance(70) {
                    texts.push((attribute, random_text(rng)));
                }
            }
            let mut row: Vec<(&str, Input<'_>)> = texts
                .iter()
                .map(|(attribute, text)| (*attribute, Input::Text(text)))
                .collect();
            if rng.chance(5) {
                row.push(("department", Input::Number(1.0)));
            }
            if rng.chance(70) {
                row.push(("skills", Input::List(&skills)));
            }
            if rng.chance(70) {
                row.push(("level", Input::Number(rng.below(5) as f64)));
            }
            b.push(&row);
        }
        b.build()
    }

    #[test]
    fn indexed_evaluation_equals_testing_every_rule() {
        let mut rng = Rng(7);
        let (mut anchored, mut unanchored, mut matched) = (0, 0, 0);
        // Rules with a starts_with / ends_with anchor, and their matches.
        let (mut affix_anchored, mut affix_matched) = (0, 0);
        for round in 0..400 {
            let rules: Vec<String> = (0..1 + rng.below(40))
                .map(|_| random_rule(&mut rng))
                .collect();
            let set = compile(&rules);
            unanchored += set.index.unanchored.len();
            anchored += set.len() - set.index.unanchored.len();
            let batch = random_batch(&mut rng);
            let view = BatchView::new(&batch).unwrap();
            let indexed = set.evaluate(&view, &OPTIONS);
            let every = set.evaluate_every_rule(&view, &OPTIONS);
            assert_eq!(
                indexed.words_per_rule, every.words_per_rule,
                "round {round}"
            );
            assert_eq!(indexed.matches, every.matches, "round {round}: {rules:#?}");
            if round % 4 == 0 {
                // Explaining tests every condition and finds the same matches.
                let explain = EvaluateOptions {
                    explain: true,
                    ..OPTIONS
                };
                let explained = set.evaluate(&view, &explain);
                assert_eq!(explained.matches, every.matches, "round {round}");
                let conditions: usize =
                    set.rules.iter().flat_map(|r| &r.blocks).map(Vec::len).sum();
                assert_eq!(explained.explanations.len(), conditions * view.len());
            }
            matched += every.matches.iter().map(|w| w.count_ones()).sum::<u32>();
            let m = Matches::from_evaluation(&every);
            for (r, rule) in set.rules.iter().enumerate() {
                let affix = rule
                    .anchors()
                    .is_some_and(|a| a.iter().any(|(_, kind)| *kind != AnchorKind::Exact));
                if affix {
                    affix_anchored += 1;
                    affix_matched += (0..view.len()).filter(|&s| m.get(r, s)).count();
                }
            }
        }
        // The generator must exercise both paths and produce matches.
        assert!(
            anchored > 1_000 && unanchored > 1_000 && affix_anchored > 1_000,
            "{anchored} {unanchored} {affix_anchored}"
        );
        assert!(
            matched > 10_000 && affix_matched > 5_000,
            "{matched} {affix_matched}"
        );
    }

    #[test]
    fn each_block_is_anchored_by_its_narrowest_equals_or_in() {
        let set = compile(&[
            // Anchored by department (one value rather than two).
            r#"{"conditions":[
                {"attribute":"skills","operator":"in","values":["go","rust"]},
                {"attribute":"department","operator":"equals","values":["Sales"],"ignore_case":true}]}"#
                .into(),
            // A block without an anchor (not_equals is none): unanchored.
            r#"{"any":[
                {"conditions":[{"attribute":"department","operator":"equals","values":["Sales"]}]},
                {"conditions":[{"attribute":"department","operator":"not_equals","values":["Sales"]}]}]}"#
                .into(),
            // Numbers are not indexed.
            r#"{"conditions":[{"attribute":"level","operator":"equals","values":[3]}]}"#.into(),
        ]);
        assert_eq!(set.index.unanchored, [1, 2]);
        assert_eq!(set.index.groups.len(), 1);
        let group = &set.index.groups[0];
        assert_eq!(
            (group.attribute.as_str(), group.ignore_case),
            ("department", true)
        );
        assert_eq!(offered(&set, "department", "SALES"), [0]);
    }

    /// The rules the anchor index offers for one text value of `attribute`,
    /// ascending.
    fn offered(set: &RuleSet, attribute: &str, value: &str) -> Vec<usize> {
        let mut candidates = Candidates::new(set.len());
        candidates.clear();
        for group in set.index.groups.iter().filter(|g| g.attribute == attribute) {
            group.offer(value, &mut String::new(), &mut candidates);
        }
        let mut rules = candidates.rules().to_vec();
        rules.sort_unstable();
        rules
    }

    #[test]
    fn starts_with_and_ends_with_anchor_blocks_without_equals_or_in() {
        let rules: Vec<String> = [
            // 0: a suffix anchor, case-insensitive.
            r#"{"conditions":[{"attribute":"email","operator":"ends_with","values":["@D1.example"],"ignore_case":true}]}"#,
            // 1: a prefix anchor with two prefixes of different lengths.
            r#"{"conditions":[{"attribute":"job_title","operator":"starts_with","values":["Senior","Sr. "]}]}"#,
            // 2: anchored by the equals, not the starts_with.
            r#"{"conditions":[
                {"attribute":"job_title","operator":"starts_with","values":["Lead"]},
                {"attribute":"department","operator":"equals","values":["Sales","Ops"]}]}"#,
            // 3: an empty prefix holds for every value.
            r#"{"conditions":[{"attribute":"job_title","operator":"starts_with","values":[""]}]}"#,
            // 4: contains is no anchor.
            r#"{"conditions":[{"attribute":"job_title","operator":"contains","values":["Senior"]}]}"#,
            // 5: one block anchored by a suffix, the other by an equals.
            r#"{"any":[
                {"conditions":[{"attribute":"skills","operator":"ends_with","values":["script"]}]},
                {"conditions":[{"attribute":"department","operator":"equals","values":["Web"]}]}]}"#,
            // 6: a non-ASCII prefix with ignore_case; the non-empty suffix is
            // preferred to the empty prefix.
            r#"{"conditions":[
                {"attribute":"department","operator":"starts_with","values":[""]},
                {"attribute":"department","operator":"ends_with","values":["ÄRGER"],"ignore_case":true}]}"#,
            // 7: a prefix that ends inside a character of some values.
            r#"{"conditions":[{"attribute":"department","operator":"starts_with","values":["i"],"ignore_case":true}]}"#,
        ]
        .map(String::from)
        .to_vec();
        let set = compile(&rules);
        assert_eq!(set.index.unanchored, [4]);
        assert_eq!(offered(&set, "email", "ada@d1.EXAMPLE"), [0]);
        assert_eq!(offered(&set, "email", "ada@d11.example"), [] as [usize; 0]);
        assert_eq!(offered(&set, "email", "@d1.example"), [0]);
        assert_eq!(offered(&set, "email", "d1.example"), [] as [usize; 0]);
        assert_eq!(offered(&set, "job_title", "Senior Engineer"), [1, 3]);
        assert_eq!(offered(&set, "job_title", "Sr. Engineer"), [1, 3]);
        assert_eq!(offered(&set, "job_title", "senior engineer"), [3]);
        assert_eq!(offered(&set, "job_title", "Lead"), [3]);
        assert_eq!(offered(&set, "job_title", ""), [3]);
        assert_eq!(offered(&set, "department", "Sales"), [2]);
        assert_eq!(offered(&set, "skills", "TypeScript"), [] as [usize; 0]);
        assert_eq!(offered(&set, "skills", "javascript"), [5]);
        assert_eq!(offered(&set, "department", "Web"), [5]);
        assert_eq!(offered(&set, "department", "Großer Ärger"), [6]);
        // "İ" lowercases to "i" and a combining dot: 1 byte is a boundary.
        assert_eq!(offered(&set, "department", "İstanbul"), [7]);
        assert_eq!(offered(&set, "department", "Ärger"), [6]);

        let subjects: [&[(&str, Input<'_>)]; 6] = [
            &[
                ("email", Input::Text("Ada@D1.Example")),
                ("job_title", Input::Text("Senior Engineer")),
            ],
            &[
                ("job_title", Input::Text("Lead Engineer")),
                ("department", Input::Text("Ops")),
            ],
            &[("skills", Input::List(&["Go", "TypeScript"]))],
            &[("skills", Input::List(&["javascript"]))],
            &[("department", Input::Text("İnsan Kaynakları ärger"))],
            &[],
        ];
        let mut b = BatchBuilder::new(SubjectKind::User);
        for s in subjects {
            b.push(s);
        }
        let batch = b.build();
        let view = BatchView::new(&batch).unwrap();
        let indexed = set.evaluate(&view, &OPTIONS);
        assert_eq!(
            indexed.matches,
            set.evaluate_every_rule(&view, &OPTIONS).matches
        );
        let m = Matches::from_evaluation(&indexed);
        let matched =
            |s: usize| -> Vec<usize> { (0..set.len()).filter(|&r| m.get(r, s)).collect() };
        assert_eq!(matched(0), [0, 1, 3, 4]);
        assert_eq!(matched(1), [2, 3]);
        assert_eq!(matched(2), [] as [usize; 0]);
        assert_eq!(matched(3), [5]);
        assert_eq!(matched(4), [6, 7]);
        assert_eq!(matched(5), [] as [usize; 0]);
    }

    /// Values whose prefixes and suffixes are awkward to compare without
    /// case: besides [`WORDS`], characters whose lowercase is longer or
    /// shorter in bytes than they are, or is ASCII.
    const AFFIX_WORDS: &[&str] = &[
        "İstanbul",
        "xİ",
        "\u{212A}elvin",
        "ȺȾ",
        "ⱥⱦ",
        "Ǆemal",
        "ǅ",
        "ΣΑΣ ΣΑΣ",
        "ΌΣΟΣ",
        "ẞtraße",
        "ﬀ",
        "ǰ",
        "é",
        "e\u{301}",
        "Ω\u{2126}",
        "@",
    ];

    #[test]
    fn affix_anchors_offer_exactly_the_rules_whose_anchor_holds() {
        // Values: the awkward words, alone and in pairs.
        let singles: Vec<String> = WORDS
            .iter()
            .chain(AFFIX_WORDS)
            .map(|w| w.to_string())
            .collect();
        let joins = ["K", "i\u{307}", "Σ", "ǅ", "İ", "ss", "ẞ"];
        let mut values = singles.clone();
        for a in &singles {
            for b in joins {
                values.push(format!("{a}{b}"));
                values.push(format!("{b}{a}"));
            }
        }
        // Operands: every prefix and suffix (on a character boundary) of the
        // words, of their lowercase and of their uppercase.
        let mut operands: Vec<String> = Vec::new();
        for v in singles.iter().cloned().chain(joins.map(String::from)) {
            for v in [v.clone(), v.to_lowercase(), v.to_uppercase()] {
                for (i, _) in v.char_indices().chain([(v.len(), ' ')]) {
                    operands.push(v[..i].to_owned());
                    operands.push(v[i..].to_owned());
                }
            }
        }
        operands.sort();
        operands.dedup();
        let mut rules = Vec::new();
        for operand in &operands {
            for operator in ["starts_with", "ends_with"] {
                for ignore_case in [false, true] {
                    rules.push(
                        serde_json::json!({"conditions": [{"attribute": "department",
                            "operator": operator, "values": [operand],
                            "ignore_case": ignore_case}]})
                        .to_string(),
                    );
                }
            }
        }
        let set = compile(&rules);
        assert!(set.index.unanchored.is_empty());
        // The index must offer every rule whose condition holds (missing
        // one would be a wrong result); for these one-value conditions it
        // offers no other rule either.
        let mut holding = 0;
        for value in &values {
            let expected: Vec<usize> = (0..set.len())
                .filter(|&r| set.rules[r].blocks[0][0].test_text(value))
                .collect();
            holding += expected.len();
            assert_eq!(offered(&set, "department", value), expected, "{value:?}");
        }
        assert!(holding > 10_000, "{holding}");
    }

    #[test]
    fn ignore_case_anchors_match_non_ascii_values() {
        let rule = r#"{"conditions":[{"attribute":"department","operator":"equals","values":["Ärger","\u212a"],"ignore_case":true}]}"#;
        let subjects: Vec<[(&str, Input<'_>); 1]> = ["ÄRGER", "ärger", "Arger", "K", "k", "x"]
            .into_iter()
            .map(|d| [("department", Input::Text(d))])
            .collect();
        let subjects: Vec<&[(&str, Input<'_>)]> = subjects.iter().map(|s| &s[..]).collect();
        assert_eq!(run(rule, &subjects), [true, true, false, true, true, false]);
    }

    #[test]
    fn lowercasing_is_idempotent() {
        // With `ignore_case`, `Condition::test_text` lowercases a non-ASCII
        // value and `text_eq` may lowercase it again, while the anchor index
        // lowercases it once. They agree because lowercasing twice is
        // lowercasing once, for every character.
        for c in (0..=char::MAX as u32).filter_map(char::from_u32) {
            let once = c.to_string().to_lowercase();
            assert_eq!(once.to_lowercase(), once, "{c:?}");
        }
    }

    /// The attribute values of the benchmark.
    struct Vocabulary {
        departments: Vec<String>,
        locations: Vec<String>,
        cost_centers: Vec<String>,
        skills: Vec<String>,
        /// Job titles start with a seniority, then a role.
        seniorities: Vec<String>,
        roles: Vec<String>,
    }

    impl Vocabulary {
        fn new() -> Vocabulary {
            let names = |prefix: &str, n: usize| -> Vec<String> {
                (0..n).map(|i| format!("{prefix} {i}")).collect()
            };
            let words = |w: &[&str]| -> Vec<String> { w.iter().map(|w| w.to_string()).collect() };
            Vocabulary {
                departments: names("Department", 40),
                locations: names("City", 60),
                cost_centers: names("CC", 200),
                skills: names("skill", 30),
                seniorities: words(&[
                    "Senior",
                    "Junior",
                    "Staff",
                    "Principal",
                    "Lead",
                    "Associate",
                    "Chief",
                    "Head of",
                    "Intern",
                    "Sr.",
                ]),
                roles: words(&[
                    "Engineer",
                    "Analyst",
                    "Designer",
                    "Manager",
                    "Accountant",
                    "Recruiter",
                    "Scientist",
                    "Consultant",
                    "Architect",
                    "Writer",
                ]),
            }
        }

        /// `subjects` random subjects with every attribute, in host-sized
        /// batches, with e-mail addresses at `domains` domains
        /// `corp<k>.example`.
        fn batches(
            &self,
            subjects: usize,
            batch: usize,
            domains: usize,
        ) -> Vec<cohort_sdk::rules::SubjectBatch> {
            let mut rng = Rng(42);
            // Job titles come from their own generator, so the other values
            // are the same as before job titles existed.
            let mut titles = Rng(43);
            let pick = |rng: &mut Rng, items: &'_ [String]| items[rng.below(items.len())].clone();
            (0..subjects / batch)
                .map(|b| {
                    let mut builder = BatchBuilder::new(SubjectKind::User);
                    for i in 0..batch {
                        let email =
                            format!("user{}@corp{}.example", b * batch + i, rng.below(domains));
                        let texts = [
                            pick(&mut rng, &self.departments),
                            pick(&mut rng, &self.locations),
                            pick(&mut rng, &self.cost_centers),
                            format!(
                                "{} {}, team {}",
                                pick(&mut titles, &self.seniorities),
                                pick(&mut titles, &self.roles),
                                titles.below(50)
                            ),
                        ];
                        let skills: Vec<String> = (0..rng.below(4))
                            .map(|_| pick(&mut rng, &self.skills))
                            .collect();
                        let skills: Vec<&str> = skills.iter().map(String::as_str).collect();
                        builder.push(&[
                            ("department", Input::Text(&texts[0])),
                            ("location", Input::Text(&texts[1])),
                            ("cost_center", Input::Text(&texts[2])),
                            ("job_title", Input::Text(&texts[3])),
                            ("email", Input::Text(&email)),
                            ("level", Input::Number(rng.below(10) as f64)),
                            ("skills", Input::List(&skills)),
                        ]);
                    }
                    builder.build()
                })
                .collect()
        }
    }

    /// Time every-rule and indexed evaluation of `rules` over `batches`,
    /// check they agree and print the throughput. Each is timed 3 times and
    /// the fastest run counts, as the machine may be busy with other work.
    fn bench(label: &str, rules: &[String], batches: &[cohort_sdk::rules::SubjectBatch]) {
        use std::time::Instant;
        let set = compile(rules);
        let time = |f: &dyn Fn(&BatchView<'_>) -> Evaluation| {
            let mut best = f64::INFINITY;
            let mut evaluations = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                evaluations = batches
                    .iter()
                    .map(|b| f(&BatchView::new(b).unwrap()))
                    .collect();
                best = best.min(start.elapsed().as_secs_f64());
            }
            (best, evaluations)
        };
        let (every_s, every) = time(&|b| set.evaluate_every_rule(b, &OPTIONS));
        let (indexed_s, indexed) = time(&|b| set.evaluate(b, &OPTIONS));
        let mut matched = 0;
        for (i, e) in indexed.iter().zip(&every) {
            assert_eq!(i.matches, e.matches);
            matched += e.matches.iter().map(|w| w.count_ones() as u64).sum::<u64>();
        }
        let subjects: usize = batches
            .iter()
            .map(|b| BatchView::new(b).unwrap().len())
            .sum();
        let pairs = (set.len() * subjects) as f64;
        println!(
            "{label}: {} rules ({} unanchored) x {subjects} subjects, {matched} matches: \
             every rule {every_s:.3} s ({:.1} M pairs/s), indexed {indexed_s:.3} s \
             ({:.1} M pairs/s), {:.1}x",
            set.len(),
            set.index.unanchored.len(),
            pairs / every_s / 1e6,
            pairs / indexed_s / 1e6,
            every_s / indexed_s
        );
    }

    /// Run with `cargo test --release -p rules-standard -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark; run it in release mode"]
    fn throughput_indexed_vs_every_rule() {
        const RULES: usize = 1_000;
        const SUBJECTS: usize = 20_000;
        const BATCH: usize = 1_000;
        let vocabulary = Vocabulary::new();
        println!("batches of {BATCH} subjects");
        let batches = vocabulary.batches(SUBJECTS, BATCH, 10);
        // 20 shapes: one of them unanchored; 18: all anchored.
        for shapes in [20, 18] {
            let rules: Vec<String> = (0..RULES)
                .map(|r| bench_rule(r, shapes, &vocabulary))
                .collect();
            bench(&format!("{shapes} shapes"), &rules, &batches);
        }
        // Rules anchored by prefixes and suffixes, among others.
        let batches = vocabulary.batches(SUBJECTS, BATCH, 1_000);
        let rules: Vec<String> = (0..700).map(|r| mixed_rule(r, &vocabulary)).collect();
        bench("mix", &rules, &batches);
    }

    /// Rule `r` of the benchmark, of shape `r % shapes`. Shapes 0 to 17 have
    /// an `equals` / `in` in every block, as dynamic-group rules mostly do;
    /// 18 has an `ends_with`, 19 no anchor.
    fn bench_rule(r: usize, shapes: usize, v: &Vocabulary) -> String {
        use serde_json::json;
        let (departments, locations) = (&v.departments, &v.locations);
        let (cost_centers, skills) = (&v.cost_centers, &v.skills);
        let at = |items: &[String], k: usize| items[(r * 7 + k) % items.len()].clone();
        let rule = match r % shapes {
            0..=7 => json!({"conditions": [{"attribute": "department", "operator": "equals",
                "values": [at(departments, 0)], "ignore_case": r.is_multiple_of(2)}]}),
            8..=10 => json!({"conditions": [
                {"attribute": "location", "operator": "in",
                 "values": [at(locations, 0), at(locations, 1), at(locations, 2)]},
                {"attribute": "email", "operator": "ends_with",
                 "values": [format!("@CORP{}.EXAMPLE", r % 10)], "ignore_case": true}]}),
            11..=12 => json!({"any": [
                {"conditions": [
                    {"attribute": "department", "operator": "equals", "values": [at(departments, 0)]},
                    {"attribute": "level", "operator": "greater_than", "values": [5]}]},
                {"conditions": [
                    {"attribute": "cost_center", "operator": "equals", "values": [at(cost_centers, 0)]}]}]}),
            13..=14 => json!({"conditions": [
                {"attribute": "skills", "operator": "in", "values": [at(skills, 0)]}]}),
            15..=17 => {
                let values: Vec<String> = (0..12).map(|k| at(cost_centers, k)).collect();
                json!({"conditions": [{"attribute": "cost_center", "operator": "in",
                    "values": values, "ignore_case": true}]})
            }
            18 => json!({"conditions": [{"attribute": "email", "operator": "ends_with",
                "values": [format!("@corp{}.example", r % 10)]}]}),
            _ => json!({"conditions": [
                {"attribute": "department", "operator": "not_equals", "values": [at(departments, 0)]},
                {"attribute": "level", "operator": "greater_than", "values": [7]}]}),
        };
        rule.to_string()
    }

    /// Rule `r` of the mixed benchmark: 400 `equals` / `in` rules, 100
    /// `ends_with` rules on e-mail domains, 100 `starts_with` rules on job
    /// titles, and 100 `contains` rules, which are not anchored.
    fn mixed_rule(r: usize, v: &Vocabulary) -> String {
        use serde_json::json;
        let (departments, locations) = (&v.departments, &v.locations);
        let (cost_centers, skills) = (&v.cost_centers, &v.skills);
        let at = |items: &[String], k: usize| items[(r * 7 + k) % items.len()].clone();
        let rule = match r {
            0..=399 => match r % 4 {
                0 => json!({"conditions": [{"attribute": "department", "operator": "equals",
                    "values": [at(departments, 0)], "ignore_case": r.is_multiple_of(8)}]}),
                1 => json!({"conditions": [
                    {"attribute": "location", "operator": "in",
                     "values": [at(locations, 0), at(locations, 1), at(locations, 2)]},
                    {"attribute": "level", "operator": "greater_than", "values": [4]}]}),
                2 => json!({"conditions": [{"attribute": "cost_center", "operator": "equals",
                    "values": [at(cost_centers, 0)]}]}),
                _ => json!({"conditions": [{"attribute": "skills", "operator": "in",
                    "values": [at(skills, 0), at(skills, 1)]}]}),
            },
            400..=499 => {
                // One or two of the 1,000 domains; every fourth rule ignores
                // case.
                let i = r - 400;
                let mut domains = vec![format!("@corp{}.example", i * 10)];
                if !i.is_multiple_of(2) {
                    domains.push(format!("@corp{}.example", i * 10 + 1));
                }
                let ignore_case = i.is_multiple_of(4);
                if ignore_case {
                    domains = domains.iter().map(|d| d.to_uppercase()).collect();
                }
                json!({"conditions": [{"attribute": "email", "operator": "ends_with",
                    "values": domains, "ignore_case": ignore_case}]})
            }
            500..=599 => {
                // 90 "<seniority> <role>" prefixes and 10 "<seniority>" ones.
                let i = r - 500;
                let seniority = &v.seniorities[i % v.seniorities.len()];
                let prefix = if i < 90 {
                    format!("{seniority} {}", v.roles[i / v.seniorities.len()])
                } else {
                    seniority.clone()
                };
                let ignore_case = i.is_multiple_of(3);
                let prefix = if ignore_case {
                    prefix.to_lowercase()
                } else {
                    prefix
                };
                json!({"conditions": [{"attribute": "job_title", "operator": "starts_with",
                    "values": [prefix], "ignore_case": ignore_case}]})
            }
            _ => json!({"conditions": [{"attribute": "job_title", "operator": "contains",
                "values": [format!("team {}", r % 50)]}]}),
        };
        rule.to_string()
    }
}
