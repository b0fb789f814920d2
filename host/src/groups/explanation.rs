//! What an explanation of one subject's membership says, as the API shows
//! it. Kept apart from the code that computes it (`inspect`) because these
//! types are the contract a console and scripts read, and they change for
//! different reasons than the evaluation does.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{Exemption, GroupType, Source, Suggestion};
use super::rule::Quantifier;
use crate::directory::UserState;

/// A user's state against the group's state scoping.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StateCheck {
    /// The user's state.
    pub state: UserState,
    /// The states the group admits.
    pub member_states: Vec<UserState>,
    /// Whether the state is admitted.
    pub admitted: bool,
}

/// A group a condition refers to.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = ConditionGroup)]
pub struct GroupRef {
    /// Its id.
    pub id: Uuid,
    /// Its name, when it still exists.
    pub name: Option<String>,
}

/// How one related subject fared in a cross-subject condition.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RelatedSubject {
    /// The related user or device.
    pub subject_id: Uuid,
    /// Whether it satisfies the inner conditions.
    pub matched: bool,
    /// The inner conditions' outcomes.
    // The schema recursion is cut here rather than at `related`, so that
    // the OpenAPI document still defines every schema it refers to.
    #[schema(no_recursion)]
    pub conditions: Vec<ConditionExplanation>,
}

/// A cross-subject condition's details.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RelatedExplanation {
    /// How the related subjects combine.
    pub quantifier: Quantifier,
    /// Each related subject.
    pub subjects: Vec<RelatedSubject>,
}

/// One condition's outcome.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConditionExplanation {
    /// Where the condition is: `rule/conditions/0`.
    pub at: String,
    /// Whether it held.
    pub matched: bool,
    /// Why, in words.
    pub detail: String,
    /// The group a `member_of` / `not_member_of` condition refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// The related subjects of a cross-subject condition. Their own
    /// conditions never have related subjects in turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<RelatedExplanation>,
    /// A CEL expression's value, part by part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<ExpressionExplanation>,
}

/// How a CEL expression came out for the subject: the value of each operand
/// of its top-level `&&` / `||` chain, which is usually where the answer to
/// "why" is.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ExpressionExplanation {
    /// The expression as written.
    pub source: String,
    /// How the parts combine: `and`, `or`, or `single` (no chain).
    pub chain: String,
    /// Each part, in order.
    pub parts: Vec<ExpressionPart>,
}

/// One operand of an expression's top-level chain.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ExpressionPart {
    /// Its source text.
    pub text: String,
    /// Its value, when it could be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    /// Why it could not be evaluated (a missing attribute counts as false
    /// for the expression as a whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rule's outcome.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RuleExplanation {
    /// Whether the rule matched as a whole.
    pub matched: bool,
    /// Every condition, in order.
    pub conditions: Vec<ConditionExplanation>,
}

/// Why a subject is or is not a member.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = MembershipExplanation)]
pub struct Explanation {
    /// The group.
    pub group_id: Uuid,
    /// The subject.
    pub subject_id: Uuid,
    /// Whether the subject is a member now.
    pub member: bool,
    /// How, when it is.
    pub source: Option<Source>,
    /// One sentence.
    pub summary: String,
    /// Static or dynamic.
    pub group_type: GroupType,
    /// For users in dynamic groups: the state scoping.
    pub state: Option<StateCheck>,
    /// An exemption for the subject, active or expired.
    pub exemption: Option<Exemption>,
    /// Whether the exemption is in force.
    pub exemption_active: bool,
    /// Whether the subject was added by hand.
    pub manual: bool,
    /// The rule, condition by condition.
    pub rule: Option<RuleExplanation>,
    /// The exclusion rule, when the group has one.
    pub exclusion: Option<RuleExplanation>,
    /// A pending or dismissed review suggestion.
    pub suggestion: Option<Suggestion>,
    /// Why the rule could not be evaluated for this subject, if it could not.
    pub evaluation_error: Option<String>,
}
