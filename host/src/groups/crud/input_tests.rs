//! The checks on a group's fields that need nothing stored, each on a body
//! that breaks exactly one rule.

use serde_json::{Value, json};

use super::*;

fn now() -> DateTime<Utc> {
    chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 1, 12, 0, 0).unwrap()
}

/// `body` over a valid dynamic user group.
fn input(body: Value) -> GroupInput {
    let mut base = json!({
        "name": "Engineers",
        "subject": "user",
        "type": "dynamic",
        "rule": {"conditions": [{"attribute": "department", "operator": "exists"}]},
    });
    for (k, v) in body.as_object().expect("an object") {
        base[k] = v.clone();
    }
    serde_json::from_value(base).expect("a group body")
}

fn refused(body: Value) -> (String, String) {
    match build(input(body), None, now()) {
        Err(
            DomainError::Invalid { field, message } | DomainError::InvalidRule { field, message },
        ) => (field, message),
        other => panic!("not refused as invalid: {other:?}"),
    }
}

#[test]
fn a_new_group_gets_its_defaults() {
    let g = build(input(json!({"name": "  Engineers  "})), None, now()).unwrap();
    assert_eq!(g.name, "Engineers");
    assert_eq!(g.evaluator, DEFAULT_EVALUATOR);
    assert_eq!(g.member_states, [UserState::Active]);
    assert_eq!((g.version, g.created_at, g.updated_at), (1, now(), now()));
    assert!(!g.built_in);
    let d = build(
        input(json!({"subject": "device", "member_states": []})),
        None,
        now(),
    )
    .unwrap();
    assert!(d.member_states.is_empty());
}

#[test]
fn names_must_be_1_to_128_characters() {
    assert_eq!(refused(json!({"name": "   "})).0, "name");
    assert_eq!(refused(json!({"name": "x".repeat(129)})).0, "name");
    assert!(build(input(json!({"name": "é".repeat(128)})), None, now()).is_ok());
}

#[test]
fn member_states_are_for_user_groups_and_never_empty() {
    let g = build(
        input(json!({"member_states": ["suspended", "active", "suspended"]})),
        None,
        now(),
    )
    .unwrap();
    assert_eq!(g.member_states, [UserState::Active, UserState::Suspended]);
    assert_eq!(refused(json!({"member_states": []})).0, "member_states");
    let (field, message) = refused(json!({"subject": "device", "member_states": ["active"]}));
    assert_eq!(field, "member_states");
    assert!(message.contains("devices have no state"), "{message}");
}

#[test]
fn rules_belong_to_dynamic_groups_only() {
    assert_eq!(refused(json!({"rule": null})).0, "rule");
    let static_ = json!({"type": "static", "rule": null});
    assert!(build(input(static_.clone()), None, now()).is_ok());
    let mut with_exclusion = static_.clone();
    with_exclusion["exclusion"] = json!({"conditions": []});
    assert_eq!(refused(with_exclusion).0, "exclusion");
    let mut with_review = static_;
    with_review["review"] = json!(true);
    assert_eq!(refused(with_review).0, "review");
}

#[test]
fn an_update_keeps_identity_and_may_not_change_the_subject_kind() {
    let before = build(input(json!({})), None, now()).unwrap();
    let later = now() + chrono::Duration::hours(1);
    let after = build(input(json!({"name": "Engineering"})), Some(&before), later).unwrap();
    assert_eq!((after.id, after.created_at), (before.id, before.created_at));
    assert_eq!((after.version, after.updated_at), (2, later));
    match build(input(json!({"subject": "device"})), Some(&before), later) {
        Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "subject"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_built_in_group_keeps_its_rule_but_may_be_renamed() {
    let mut built_in = build(input(json!({})), None, now()).unwrap();
    built_in.built_in = true;
    let renamed = build(input(json!({"name": "Staff"})), Some(&built_in), now()).unwrap();
    assert!(renamed.built_in);
    let other_rule =
        json!({"rule": {"conditions": [{"attribute": "title", "operator": "exists"}]}});
    for body in [other_rule, json!({"type": "static", "rule": null})] {
        match build(input(body), Some(&built_in), now()) {
            Err(DomainError::Conflict { code, .. }) => assert_eq!(code, "built_in_group"),
            other => panic!("{other:?}"),
        }
    }
}
