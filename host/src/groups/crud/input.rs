//! Checking a group's writable fields and building the group they describe:
//! the checks that need nothing stored (names, member states, what a static
//! or built-in group may not have), so that they can be tested on their own.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::super::model::{DEFAULT_EVALUATOR, Group, GroupInput, GroupType};
use crate::directory::{SubjectKind, UserState, check_string};
use crate::error::DomainError;

/// Fields a PATCH may not touch.
pub(super) const READ_ONLY: &[(&str, &str)] = &[
    ("id", "is assigned by Cohort"),
    ("created_at", "is set by Cohort"),
    ("updated_at", "is set by Cohort"),
    ("version", "is set by Cohort; send it as If-Match instead"),
    ("built_in", "is set by Cohort"),
    ("status", "is computed by Cohort"),
];

/// Checks input and builds the group it describes.
pub(in crate::groups) fn build(
    input: GroupInput,
    existing: Option<&Group>,
    now: DateTime<Utc>,
) -> Result<Group, DomainError> {
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(DomainError::invalid("name", "must be 1-128 characters"));
    }
    check_string("name", &name, 128)?;
    if let Some(d) = &input.description {
        check_string("description", d, 4096)?;
    }
    if let Some(e) = existing
        && e.subject != input.subject
    {
        return Err(DomainError::invalid(
            "subject",
            "cannot change; copy the group's rule into a new group instead",
        ));
    }
    let evaluator = input
        .evaluator
        .unwrap_or_else(|| DEFAULT_EVALUATOR.to_string());
    crate::error::check_name(&evaluator).map_err(|_| {
        DomainError::invalid(
            "evaluator",
            "must be the name of an installed rule-evaluator plugin",
        )
    })?;
    let member_states = match (input.subject, input.member_states) {
        (SubjectKind::User, None) => vec![UserState::Active],
        (SubjectKind::User, Some(s)) if s.is_empty() => {
            return Err(DomainError::invalid(
                "member_states",
                "list at least one state (staged, active, suspended)",
            ));
        }
        (SubjectKind::User, Some(mut s)) => {
            s.sort_by_key(|s| s.as_str());
            s.dedup();
            s
        }
        (SubjectKind::Device, None) => Vec::new(),
        (SubjectKind::Device, Some(s)) if s.is_empty() => Vec::new(),
        (SubjectKind::Device, Some(_)) => {
            return Err(DomainError::invalid(
                "member_states",
                "applies only to user groups; devices have no state",
            ));
        }
    };
    match input.group_type {
        GroupType::Dynamic if input.rule.is_none() => {
            return Err(DomainError::invalid_rule(
                "rule",
                "a dynamic group needs a rule",
            ));
        }
        GroupType::Static => {
            for (field, v) in [("rule", &input.rule), ("exclusion", &input.exclusion)] {
                if v.is_some() {
                    return Err(DomainError::invalid_rule(
                        field,
                        format!(
                            "a static group has no {field}; send \"{field}\": null, or make the group dynamic"
                        ),
                    ));
                }
            }
            if input.review {
                return Err(DomainError::invalid(
                    "review",
                    "applies only to dynamic groups",
                ));
            }
        }
        GroupType::Dynamic => {}
    }
    if let Some(e) = existing.filter(|e| e.built_in)
        && (e.rule != input.rule
            || e.exclusion != input.exclusion
            || e.group_type != input.group_type
            || e.evaluator != evaluator)
    {
        {
            return Err(DomainError::Conflict {
                code: "built_in_group",
                field: Some("rule".into()),
                message: format!(
                    "{:?} is a built-in group: its rule and type cannot change; copy it to make a variant",
                    e.name
                ),
            });
        }
    }
    Ok(Group {
        id: existing.map_or_else(Uuid::now_v7, |e| e.id),
        name,
        subject: input.subject,
        description: input.description,
        group_type: input.group_type,
        rule: input.rule,
        exclusion: input.exclusion,
        evaluator,
        review: input.review,
        member_states,
        built_in: existing.is_some_and(|e| e.built_in),
        created_at: existing.map_or(now, |e| e.created_at),
        updated_at: now,
        version: existing.map_or(1, |e| e.version + 1),
    })
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
