//! The layout of plans over hand-written rules: stages follow references
//! (within a kind and across users and devices), and a cycle is refused.

use chrono::Utc;
use serde_json::{Value, json};

use super::super::super::model::{DEFAULT_EVALUATOR, GroupType};
use super::super::super::rule::ExpressionContext;
use super::*;

fn group(subject: SubjectKind, rule: Value) -> Arc<Group> {
    let now = chrono::DateTime::<Utc>::UNIX_EPOCH;
    Arc::new(Group {
        id: Uuid::now_v7(),
        name: "g".into(),
        subject,
        description: None,
        group_type: GroupType::Dynamic,
        rule: Some(rule),
        exclusion: None,
        evaluator: DEFAULT_EVALUATOR.into(),
        review: false,
        member_states: Vec::new(),
        built_in: false,
        created_at: now,
        updated_at: now,
        version: 1,
    })
}

fn attr(name: &str) -> Value {
    json!({"conditions": [{"attribute": name, "operator": "exists"}]})
}

fn member_of(g: &Arc<Group>) -> Value {
    json!({"member_of": g.id.to_string()})
}

fn lay_out(targets: &[&Arc<Group>]) -> Result<Draft, DomainError> {
    let ctx = ExpressionContext::default();
    let groups: HashMap<Uuid, Arc<Group>> = targets.iter().map(|g| (g.id, Arc::clone(g))).collect();
    let parsed = groups
        .values()
        .map(|g| Ok((g.id, Parsed::of(g, &ctx)?)))
        .collect::<Result<HashMap<_, _>, DomainError>>()?;
    assemble(&groups, &parsed, BTreeMap::new())
}

/// The units in the bucket of (stage, kind), for the default evaluator.
fn bucket(draft: &Draft, stage: usize, kind: SubjectKind) -> Vec<Unit> {
    draft
        .buckets
        .get(&(stage, slot(kind), DEFAULT_EVALUATOR.to_string()))
        .map(|rules| rules.iter().map(|(u, ..)| *u).collect())
        .unwrap_or_default()
}

#[test]
fn a_group_is_evaluated_in_a_stage_after_the_groups_it_refers_to() {
    let user = SubjectKind::User;
    let a = group(user, attr("department"));
    let b = group(user, json!({"conditions": [member_of(&a)]}));
    let c = group(
        user,
        json!({"any": [{"conditions": [member_of(&b)]}, {"conditions": [member_of(&a)]}]}),
    );
    // Refers to a group that is not a target: its stored members are read.
    let outside = group(user, attr("title"));
    let x = group(user, json!({"conditions": [member_of(&outside)]}));
    let draft = lay_out(&[&c, &x, &b, &a]).expect("laid out");
    let stage = |g: &Arc<Group>| draft.stage_of[&g.id];
    assert_eq!([stage(&a), stage(&b), stage(&c), stage(&x)], [0, 1, 2, 0]);
    let at = |g: &Arc<Group>| draft.order.iter().position(|o| *o == g.id);
    assert!(at(&a) < at(&b) && at(&b) < at(&c), "{:?}", draft.order);
    assert_eq!(at(&outside), None);
    let mut stage0 = bucket(&draft, 0, user);
    stage0.sort_by_key(|u| format!("{u:?}"));
    let mut expected = vec![Unit::Rule(a.id), Unit::Rule(x.id)];
    expected.sort_by_key(|u| format!("{u:?}"));
    assert_eq!(stage0, expected);
    assert_eq!(bucket(&draft, 1, user), [Unit::Rule(b.id)]);
    assert_eq!(bucket(&draft, 2, user), [Unit::Rule(c.id)]);
    let mut of_a = draft.dependents[&a.id].clone();
    of_a.sort();
    let mut expected = vec![b.id, c.id];
    expected.sort();
    assert_eq!(of_a, expected);
    assert_eq!(draft.dependents[&b.id], [c.id]);
    assert!(!draft.dependents.contains_key(&outside.id));
    assert_eq!(draft.has_related, [false, false]);
}

#[test]
fn references_across_users_and_devices_order_the_stages() {
    let (user, device) = (SubjectKind::User, SubjectKind::Device);
    let managed = group(device, attr("os_family"));
    // Users with a device in `managed`.
    let owners = group(
        user,
        json!({"conditions": [{"devices": {"quantifier": "any", "conditions": [member_of(&managed)]}}]}),
    );
    // Devices whose user is in `owners`.
    let owned = group(
        device,
        json!({"conditions": [{"users": {"quantifier": "all", "conditions": [member_of(&owners)]}}]}),
    );
    let draft = lay_out(&[&owned, &owners, &managed]).expect("laid out");
    assert_eq!(draft.order, [managed.id, owners.id, owned.id]);
    // The condition on devices is a device rule of its own, after `managed`;
    // `owners` comes after it, and the users condition of `owned` after that.
    assert_eq!(draft.related.len(), 2);
    assert_eq!(draft.related[0].owner, owners.id);
    assert_eq!(draft.related[0].field, "rule/conditions/0/devices");
    assert_eq!(draft.related[1].owner, owned.id);
    assert_eq!(draft.related[1].field, "rule/conditions/0/users");
    assert_eq!(draft.related_stage, [1, 3]);
    assert_eq!(draft.stage_of[&managed.id], 0);
    assert_eq!(draft.stage_of[&owners.id], 2);
    assert_eq!(draft.stage_of[&owned.id], 4);
    assert_eq!(bucket(&draft, 0, device), [Unit::Rule(managed.id)]);
    assert_eq!(bucket(&draft, 1, device), [Unit::Related(0)]);
    assert_eq!(bucket(&draft, 2, user), [Unit::Rule(owners.id)]);
    assert_eq!(bucket(&draft, 3, user), [Unit::Related(1)]);
    assert_eq!(bucket(&draft, 4, device), [Unit::Rule(owned.id)]);
    assert_eq!(draft.has_related, [true, true]);
    assert_eq!(draft.dependents[&managed.id], [owners.id]);
    assert_eq!(draft.dependents[&owners.id], [owned.id]);
}

#[test]
fn a_reference_cycle_is_refused_naming_a_group_on_it() {
    let user = SubjectKind::User;
    let outside = group(user, attr("department"));
    let a = group(user, json!({"conditions": [member_of(&outside)]}));
    let b = group(user, json!({"conditions": [member_of(&a)]}));
    // `a` as it would be if its rule referred to `b`.
    let mut changed = (*a).clone();
    changed.rule = Some(json!({"conditions": [member_of(&b)]}));
    let a = Arc::new(changed);
    let Err(DomainError::InvalidRule { field, message }) = lay_out(&[&a, &b]) else {
        panic!("a cycle was accepted");
    };
    assert_eq!(field, "rule");
    assert!(
        message == format!("group {} is part of a reference cycle", a.id)
            || message == format!("group {} is part of a reference cycle", b.id),
        "{message}"
    );
}
