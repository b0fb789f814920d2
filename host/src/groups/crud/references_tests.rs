//! What a rule may refer to, checked over hand-made groups: references of
//! the wrong kind (users ↔ devices), to nothing, or to the group itself are
//! refused at their position; a cycle is refused naming its groups; the
//! chain limit holds through the saved group both ways.

use chrono::Utc;
use serde_json::{Value, json};

use super::super::super::model::GroupType;
use super::super::build;
use super::*;

/// A group as `build` makes it from a create body.
fn group(name: &str, subject: &str, rule: Option<Value>) -> Arc<Group> {
    let body = json!({
        "name": name,
        "subject": subject,
        "type": if rule.is_some() { "dynamic" } else { "static" },
        "rule": rule,
    });
    let input = serde_json::from_value(body).expect("a valid body");
    Arc::new(build(input, None, chrono::DateTime::<Utc>::UNIX_EPOCH).expect("a valid group"))
}

fn member_of(g: &Group) -> Value {
    json!({"conditions": [{"member_of": g.id.to_string()}]})
}

fn parsed(g: &Group) -> Parsed {
    Parsed::of(g, &ExpressionContext::default()).expect("parses")
}

fn by_id(all: &[Arc<Group>]) -> HashMap<Uuid, &Arc<Group>> {
    all.iter().map(|g| (g.id, g)).collect()
}

fn targets(group: &Group, all: &[Arc<Group>]) -> Result<(), DomainError> {
    check_targets(group, &parsed(group), &by_id(all))
}

/// `group` saved among `stored` (which it may replace, by id).
fn graph(group: &Group, stored: &[Arc<Group>]) -> Result<(), DomainError> {
    let edges = reference_graph(stored, group, &parsed(group), &ExpressionContext::default());
    check_graph(group, &by_id(stored), &edges)
}

fn invalid_rule(r: Result<(), DomainError>) -> (String, String) {
    match r {
        Err(DomainError::InvalidRule { field, message }) => (field, message),
        other => panic!("not an invalid rule: {other:?}"),
    }
}

#[test]
fn references_of_the_right_kind_are_accepted() {
    let engineers = group("Engineers", "user", None);
    let laptops = group("Laptops", "device", None);
    let rule = json!({"any": [
        {"conditions": [{"member_of": engineers.id.to_string()}]},
        {"conditions": [{"devices": {"quantifier": "any", "conditions": [
            {"member_of": laptops.id.to_string()}]}}]}
    ]});
    let g = group("Engineers with laptops", "user", Some(rule));
    let all = [engineers, laptops];
    assert!(targets(&g, &all).is_ok());
    assert!(graph(&g, &all).is_ok());
}

#[test]
fn a_reference_to_a_group_of_the_other_kind_is_refused_at_its_position() {
    let engineers = group("Engineers", "user", None);
    let laptops = group("Laptops", "device", None);
    let all = [Arc::clone(&engineers), Arc::clone(&laptops)];
    // A user rule naming a device group.
    let g = group("G", "user", Some(member_of(&laptops)));
    assert_eq!(
        invalid_rule(targets(&g, &all)),
        (
            "rule/conditions/0/member_of".into(),
            "group \"Laptops\" holds devices; here a user group is needed".into()
        )
    );
    // A condition on a user's devices naming a user group.
    let rule = json!({"conditions": [{"devices": {"quantifier": "all", "conditions": [
        {"not_member_of": engineers.id.to_string()}]}}]});
    let g = group("G", "user", Some(rule));
    assert_eq!(
        invalid_rule(targets(&g, &all)),
        (
            "rule/conditions/0/devices/conditions/0/not_member_of".into(),
            "group \"Engineers\" holds users; here a device group is needed".into()
        )
    );
    // A device rule naming a user group.
    let g = group("D", "device", Some(member_of(&engineers)));
    assert_eq!(
        invalid_rule(targets(&g, &all)).1,
        "group \"Engineers\" holds users; here a device group is needed"
    );
}

#[test]
fn a_reference_to_no_group_or_to_itself_is_refused() {
    let missing = Uuid::now_v7();
    let mut g = (*group(
        "G",
        "user",
        Some(json!({"conditions": [
        {"attribute": "department", "operator": "exists"}]})),
    ))
    .clone();
    g.exclusion = Some(json!({"conditions": [{"not_member_of": missing.to_string()}]}));
    assert_eq!(
        invalid_rule(targets(&g, &[])),
        (
            "exclusion/conditions/0/not_member_of".into(),
            format!("no group with id {missing}")
        )
    );
    g.exclusion = None;
    g.rule = Some(member_of(&g));
    let stored = [Arc::new(g.clone())];
    assert_eq!(
        invalid_rule(targets(&g, &stored)),
        (
            "rule/conditions/0/member_of".into(),
            "the group \"G\" cannot refer to itself".into()
        )
    );
}

#[test]
fn a_cycle_is_refused_naming_its_groups_as_they_will_be() {
    let b = group("B", "user", None);
    let a = group("A", "user", Some(member_of(&b)));
    let c = group("C", "user", Some(member_of(&a)));
    let stored = [Arc::clone(&a), Arc::clone(&b), Arc::clone(&c)];
    // B, renamed, now refers to C: B → C → A → B.
    let mut changed = (*b).clone();
    changed.name = "Renamed".into();
    changed.group_type = GroupType::Dynamic;
    changed.rule = Some(member_of(&c));
    assert!(targets(&changed, &stored).is_ok());
    assert_eq!(
        invalid_rule(graph(&changed, &stored)),
        (
            "rule".into(),
            "this rule would form a cycle of group references: \
             \"Renamed\" → \"C\" → \"A\" → \"Renamed\""
                .into()
        )
    );
    // Referring to A without closing the loop is fine.
    let d = group("D", "user", Some(member_of(&a)));
    assert!(graph(&d, &stored).is_ok());
}

#[test]
fn the_chain_limit_counts_links_on_both_sides_of_the_saved_group() {
    // g[0] ← g[1] ← … ← g[MAX]: each refers to the one before it.
    let mut chain = vec![group("g0", "user", None)];
    for i in 1..=MAX_REFERENCE_DEPTH {
        let before = Arc::clone(&chain[i - 1]);
        chain.push(group(&format!("g{i}"), "user", Some(member_of(&before))));
    }
    // At the end of the chain: one link too many.
    let last = Arc::clone(&chain[MAX_REFERENCE_DEPTH]);
    let too_far = group("too far", "user", Some(member_of(&last)));
    match graph(&too_far, &chain) {
        Err(DomainError::Limit {
            code,
            field,
            message,
        }) => {
            assert_eq!((code, field.as_str()), ("too_deep", "rule"));
            assert!(
                message.contains(&format!("a chain of {} group", MAX_REFERENCE_DEPTH + 1)),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // One link short of the end: exactly the limit.
    let before_last = Arc::clone(&chain[MAX_REFERENCE_DEPTH - 1]);
    let at_limit = group("at limit", "user", Some(member_of(&before_last)));
    assert!(graph(&at_limit, &chain).is_ok());
    // Changing the middle of the chain counts what refers to it too.
    let mut middle = (*chain[5]).clone();
    middle.rule = Some(member_of(&chain[4]));
    assert!(graph(&middle, &chain).is_ok());
    let extra = group("extra", "user", None);
    let mut longer = chain.clone();
    longer.push(Arc::clone(&extra));
    let mut first = (*chain[0]).clone();
    first.group_type = GroupType::Dynamic;
    first.rule = Some(member_of(&extra));
    assert!(matches!(
        graph(&first, &longer),
        Err(DomainError::Limit { .. })
    ));
}
