//! Testing subjects against compiled rules: through the anchor index, or
//! every rule against every subject when each condition's outcome is to be
//! explained. Missing attributes satisfy nothing but `not_exists`; a
//! negative operator holds when no value of the subject matches.

use cohort_sdk::rules::{
    BatchView, ConditionOutcome, EvaluateOptions, Evaluation, Matches, SubjectView, ValueRef,
};

use super::index::Candidates;
use super::{Condition, Operand, Operator, Rule, RuleSet};

impl RuleSet {
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
    /// [`RuleSet::evaluate`] is tested and benchmarked against.
    pub fn evaluate_every_rule(
        &self,
        batch: &BatchView<'_>,
        options: &EvaluateOptions,
    ) -> Evaluation {
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
    pub(super) fn matches(
        &self,
        subject: &SubjectView<'_>,
        slots: &[Option<u32>],
        now: i64,
    ) -> bool {
        self.blocks
            .iter()
            .any(|block| block.iter().all(|c| c.test(subject, slots[c.slot], now)))
    }
}

pub(super) fn text_eq(ignore_case: bool, subject: &str, operand: &str) -> bool {
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
    pub(super) fn test(&self, subject: &SubjectView<'_>, attribute: Option<u32>, now: i64) -> bool {
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

    pub(super) fn test_text(&self, s: &str) -> bool {
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
