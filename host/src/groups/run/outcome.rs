//! What a run hands back: per group, the membership and suggestion changes
//! against the stored state, the evaluation errors, and (for previews and
//! explanations) the decisions themselves. Applying them is `apply`'s job;
//! these types are the contract between the two.

use std::collections::HashMap;

use uuid::Uuid;

use super::super::model::{Source, Suggestion, SuggestionAction};
use super::super::plan::Unit;
use crate::plugins::bindings::rules::ConditionOutcome;

/// A membership change to write.
#[derive(Clone, Debug)]
pub struct MemberChange {
    /// The subject.
    pub subject: Uuid,
    /// Its membership before.
    pub before: Option<Source>,
    /// Its membership after.
    pub after: Option<Source>,
    /// The rule matched (before exclusion and scoping).
    pub rule_match: bool,
    /// The exclusion matched.
    pub excluded: bool,
}

/// A suggestion to create, replace or drop.
#[derive(Clone, Debug)]
pub struct SuggestionChange {
    /// The subject.
    pub subject: Uuid,
    /// The stored suggestion, if any.
    pub before: Option<Suggestion>,
    /// The suggestion the rule makes now, if any.
    pub after: Option<SuggestionAction>,
}

/// One group's results.
#[derive(Default)]
pub struct GroupResult {
    /// Membership changes against the stored state.
    pub changes: Vec<MemberChange>,
    /// Suggestion changes (review mode, or suggestions to drop).
    pub suggestions: Vec<SuggestionChange>,
    /// Subjects the evaluator could not evaluate in this run, with the message.
    pub errors: HashMap<Uuid, String>,
    /// Affected subjects whose stored error state no longer holds.
    pub errors_cleared: Vec<Uuid>,
    /// Why the group could not be evaluated at all.
    pub failure: Option<String>,
    /// In preview mode: the members the decisions give, among the affected.
    pub members: Vec<Uuid>,
    /// In preview mode: the stored members among the affected.
    pub current: Vec<Uuid>,
    /// In preview mode: subjects the rule matched, and the exclusion matched.
    pub verdicts: HashMap<Uuid, (bool, bool)>,
}

/// One condition's outcome for one subject, when explaining.
pub struct Explained {
    /// What the compiled rule stands for.
    pub unit: Unit,
    /// The subject (on the unit's side).
    pub subject: Uuid,
    /// The evaluator's outcome.
    pub outcome: ConditionOutcome,
}

/// Everything a run produced.
#[derive(Default)]
pub struct Outcome {
    /// Per target group.
    pub groups: HashMap<Uuid, GroupResult>,
    /// Per-condition outcomes, when explaining.
    pub explanations: Vec<Explained>,
    /// Per cross-subject condition: related subject → whether it matched
    /// (when explaining).
    pub nested: HashMap<usize, HashMap<Uuid, bool>>,
    /// A program failed in a way that leaves its session unusable.
    pub poisoned: bool,
    /// Per expression: subject → the value of each part of its top-level
    /// `&&` / `||` chain (when explaining).
    pub expression_parts: HashMap<usize, HashMap<Uuid, PartValues>>,
}

/// The values of an expression's parts for one subject: true / false, or
/// why it could not be evaluated.
pub type PartValues = Vec<Result<bool, String>>;
