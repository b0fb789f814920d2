//! Groups, memberships, exemptions and suggestions as stored and returned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::rule::Warning;
use crate::directory::{SubjectKind, UserState};

/// The evaluator used when a group names none.
pub const DEFAULT_EVALUATOR: &str = "rules-standard";

/// Whether members are chosen by hand or by a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupType {
    /// Members are added and removed by admins.
    Static,
    /// Members follow the group's rule.
    Dynamic,
}

/// A group as stored and returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    /// Stable id (UUIDv7).
    pub id: Uuid,
    /// Unique per subject kind, compared case-insensitively.
    pub name: String,
    /// Whether the group holds users or devices.
    pub subject: SubjectKind,
    /// Free-form description.
    pub description: Option<String>,
    /// Static or dynamic.
    #[serde(rename = "type")]
    pub group_type: GroupType,
    /// The membership rule of a dynamic group.
    #[schema(value_type = Option<Object>)]
    pub rule: Option<Value>,
    /// Subjects matching this rule are never members.
    #[schema(value_type = Option<Object>)]
    pub exclusion: Option<Value>,
    /// The rule-evaluator plugin that evaluates `rule` and `exclusion`.
    pub evaluator: String,
    /// Rule changes become suggestions an admin accepts or rejects, instead
    /// of membership changes.
    pub review: bool,
    /// User states whose users a dynamic user group may hold; the others are
    /// left out whatever the rule says. Empty for device groups.
    pub member_states: Vec<UserState>,
    /// Created by Cohort with the directory; cannot be deleted, and its rule
    /// cannot change.
    pub built_in: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Increases with every change; the ETag.
    pub version: u64,
}

impl Group {
    /// Whether the rule engine computes this group's members.
    pub fn is_dynamic(&self) -> bool {
        self.group_type == GroupType::Dynamic
    }

    /// Whether a user in `state` may be a member by rule or exemption.
    pub fn admits(&self, state: Option<UserState>) -> bool {
        match state {
            Some(s) => !self.is_dynamic() || self.member_states.contains(&s),
            None => true,
        }
    }
}

/// The writable fields of a group: the body of a create, and what a PATCH
/// (JSON merge patch) is applied to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// Unique name per subject kind, 1–128 characters.
    pub name: String,
    /// `user` or `device`; cannot change after creation.
    pub subject: SubjectKind,
    /// Free-form description.
    #[serde(default)]
    pub description: Option<String>,
    /// `static` (default) or `dynamic`. Switching keeps the current members.
    #[serde(rename = "type", default = "default_type")]
    pub group_type: GroupType,
    /// The membership rule; required for dynamic groups.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub rule: Option<Value>,
    /// An optional rule whose matches are never members.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub exclusion: Option<Value>,
    /// Rule-evaluator plugin; `rules-standard` by default.
    #[serde(default)]
    pub evaluator: Option<String>,
    /// Require admin review of rule-driven changes.
    #[serde(default)]
    pub review: bool,
    /// For user groups: states admitted to a dynamic group (default `active`).
    #[serde(default)]
    pub member_states: Option<Vec<UserState>>,
}

fn default_type() -> GroupType {
    GroupType::Static
}

impl From<&Group> for GroupInput {
    fn from(g: &Group) -> Self {
        GroupInput {
            name: g.name.clone(),
            subject: g.subject,
            description: g.description.clone(),
            group_type: g.group_type,
            rule: g.rule.clone(),
            exclusion: g.exclusion.clone(),
            evaluator: Some(g.evaluator.clone()),
            review: g.review,
            member_states: (g.subject == SubjectKind::User).then(|| g.member_states.clone()),
        }
    }
}

/// Why a subject is a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = MembershipSource)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The group's rule matches it.
    Rule,
    /// An admin added it (static groups, and members kept when a static group
    /// became dynamic).
    Manual,
    /// An "always a member" exemption.
    Exemption,
}

impl Source {
    /// The name used in JSON and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rule => "rule",
            Source::Manual => "manual",
            Source::Exemption => "exemption",
        }
    }
}

/// One membership as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    /// Where the membership comes from.
    pub source: Source,
    /// When the subject became a member (or its source last changed).
    pub since: DateTime<Utc>,
}

impl Membership {
    /// The stored form: one byte of source, then the time in microseconds
    /// (big-endian). Memberships are the most numerous records, and a full
    /// recompute reads all of them; JSON with a parsed timestamp cost more
    /// than evaluating the rules.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9);
        out.push(match self.source {
            Source::Rule => 0,
            Source::Manual => 1,
            Source::Exemption => 2,
        });
        out.extend_from_slice(&self.since.timestamp_micros().to_be_bytes());
        out
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Membership, cohort_storage::StorageError> {
        let corrupt = || cohort_storage::StorageError::Corrupt {
            keyspace: super::layout::MEMBERS.name().to_string(),
            detail: format!("membership record of {} bytes", bytes.len()),
        };
        let (&tag, rest) = bytes.split_first().ok_or_else(corrupt)?;
        let source = match tag {
            0 => Source::Rule,
            1 => Source::Manual,
            2 => Source::Exemption,
            _ => return Err(corrupt()),
        };
        let micros = i64::from_be_bytes(rest.try_into().map_err(|_| corrupt())?);
        let since = DateTime::from_timestamp_micros(micros).ok_or_else(corrupt)?;
        Ok(Membership { source, since })
    }

    /// Decodes an optional stored value.
    pub fn read(
        bytes: Option<Vec<u8>>,
    ) -> Result<Option<Membership>, cohort_storage::StorageError> {
        bytes.map(|b| Membership::decode(&b)).transpose()
    }
}

/// A member as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// The user or device id.
    pub subject_id: Uuid,
    /// Where the membership comes from.
    pub source: Source,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// Which way an exemption overrides the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExemptionKind {
    /// Always a member, whatever the rule says.
    Always,
    /// Never a member; wins over everything else.
    Never,
}

/// An exemption from a dynamic group's rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Exemption {
    /// The exempted user or device.
    pub subject_id: Uuid,
    /// Always or never a member.
    pub kind: ExemptionKind,
    /// Why, for the next admin.
    pub reason: Option<String>,
    /// When the exemption lapses; none means never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Exemption {
    /// Whether the exemption applies at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// The body of an exemption request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExemptionInput {
    /// The user or device to exempt.
    pub subject_id: Uuid,
    /// `always` or `never`.
    pub kind: ExemptionKind,
    /// Why (at most 1,000 characters).
    #[serde(default)]
    pub reason: Option<String>,
    /// When it lapses (RFC 3339, in the future).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a review-mode group's rule would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuggestionAction {
    /// The rule now matches a subject that is not a member.
    Add,
    /// The rule no longer matches a member.
    Remove,
}

/// A pending change in a review-mode group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Suggestion {
    /// The user or device.
    pub subject_id: Uuid,
    /// Add or remove.
    pub action: SuggestionAction,
    /// When the rule first suggested it.
    pub since: DateTime<Utc>,
    /// An admin rejected it; it stays hidden until the rule suggests
    /// something else for this subject.
    pub dismissed: bool,
}

/// A per-subject evaluation failure kept as an example on the group status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorExample {
    /// The subject that could not be evaluated.
    pub subject_id: Uuid,
    /// What the evaluator said.
    pub message: String,
}

/// What is known about a group's evaluation, shown with the group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupStatus {
    /// Current number of members.
    pub member_count: u64,
    /// Pending suggestions (review mode).
    pub pending_suggestions: u64,
    /// Findings about the rule that did not stop it from being saved.
    pub warnings: Vec<Warning>,
    /// Subjects the evaluator could not evaluate (they count as not
    /// matching).
    pub evaluation_errors: u64,
    /// The first few of those.
    #[serde(default)]
    pub error_examples: Vec<ErrorExample>,
    /// Why the rule could not be evaluated at all (evaluator missing or
    /// failing), when that is the case; memberships are then left as they were.
    pub evaluator_error: Option<String>,
    /// When memberships were last computed.
    pub evaluated_at: Option<DateTime<Utc>>,
}

/// A group with its status, as the API returns it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GroupView {
    /// The group.
    #[serde(flatten)]
    pub group: Group,
    /// Its status.
    pub status: GroupStatus,
}
