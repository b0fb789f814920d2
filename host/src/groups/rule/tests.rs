//! Unit tests of compiling a rule: reading it, refusing what is malformed at
//! the field that is wrong, compiling its expressions, rewriting it for the
//! evaluator, and the warnings.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::directory::AttrType;
use crate::error::DomainError;
use crate::expression::tests::attr;

fn types() -> BTreeMap<String, AttrType> {
    [
        ("department".to_string(), AttrType::String),
        ("tags".to_string(), AttrType::StringList),
    ]
    .into_iter()
    .collect()
}

#[test]
fn parses_every_condition_form_and_rewrites_them_in_place() {
    let g = Uuid::now_v7();
    let rule = json!({"any": [
        {"conditions": [{"attribute": "department", "operator": "equals", "values": ["Eng"]},
                        {"not_member_of": g.to_string()}]},
        {"conditions": [{"devices": {"quantifier": "all", "conditions": [
            {"attribute": "os_family", "operator": "equals", "values": ["macos"]}]}}]}
    ]});
    let m = RuleModel::parse(&rule, SubjectKind::User, "rule").unwrap();
    assert_eq!(m.blocks.len(), 2);
    let (own, related) = m.reads();
    assert_eq!(own.into_iter().collect::<Vec<_>>(), ["department"]);
    assert_eq!(related.into_iter().collect::<Vec<_>>(), ["os_family"]);
    let mut seen = Vec::new();
    let text = m.to_evaluator_text(|at, _| {
        seen.push(at.to_string());
        related_attribute(0)
    });
    assert_eq!(seen, ["/any/1/conditions/0"]);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["any"][0]["conditions"][1],
        json!({"attribute": member_attribute(&g), "operator": "not_exists"})
    );
    assert_eq!(v["any"][1]["conditions"][0]["attribute"], "$related:0");
}

#[test]
fn errors_name_the_position() {
    let cases = [
        (
            json!({"conditions": [{"member_of": "nope"}]}),
            "rule/conditions/0/member_of",
        ),
        (
            json!({"conditions": [{"users": {"conditions": []}}]}),
            "rule/conditions/0/users",
        ),
        (
            json!({"any": [{"conditions": [{"operator": "x"}]}]}),
            "rule/any/0/conditions/0",
        ),
        (
            json!({"conditions": [{"devices": {"conditions": [{"users": {"conditions": [{"attribute": "a"}]}}]}}]}),
            "rule/conditions/0/devices/conditions/0/users",
        ),
        (json!({"conditions": [], "any": []}), "rule"),
        (
            json!({"conditions": [{"attribute": "$member:x"}]}),
            "rule/conditions/0/attribute",
        ),
    ];
    for (rule, field) in cases {
        match RuleModel::parse(&rule, SubjectKind::User, "rule") {
            Err(DomainError::InvalidRule { field: f, .. }) => assert_eq!(f, field, "{rule}"),
            other => panic!("{rule}: {other:?}"),
        }
    }
}

#[test]
fn warns_about_contradictions_and_tautologies() {
    let rule = json!({"any": [
        {"conditions": [{"attribute": "department", "operator": "equals", "values": ["A"]},
                        {"attribute": "department", "operator": "equals", "values": ["B"]}]},
        {"conditions": [{"attribute": "tags", "operator": "equals", "values": ["A"]},
                        {"attribute": "tags", "operator": "equals", "values": ["B"]}]},
        {"conditions": [{"attribute": "username", "operator": "exists"}]}
    ]});
    let m = RuleModel::parse(&rule, SubjectKind::User, "rule").unwrap();
    let w = m.warnings("rule", SubjectKind::User, &types());
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].field, "rule/any/0");
    assert!(w[0].message.contains("never"));
    assert_eq!(w[1].field, "rule/any/2");
    assert!(w[1].message.contains("every user"));
}

#[test]
fn quantifiers_are_explicit_about_empty_sets() {
    assert!(!Quantifier::Any.combine([].into_iter()));
    assert!(!Quantifier::All.combine([].into_iter()));
    assert!(Quantifier::None.combine([].into_iter()));
    assert!(Quantifier::All.combine([true, true].into_iter()));
    assert!(!Quantifier::All.combine([true, false].into_iter()));
    assert!(Quantifier::Any.combine([false, true].into_iter()));
    assert!(!Quantifier::None.combine([false, true].into_iter()));
}

fn field_of(result: Result<RuleModel, DomainError>) -> String {
    match result {
        Err(DomainError::InvalidRule { field, .. }) => field,
        other => panic!("expected an invalid rule, got {other:?}"),
    }
}

#[test]
fn every_refusal_names_the_field_that_is_wrong() {
    let id = Uuid::from_u128(1).to_string();
    let ok = json!({"attribute": "department", "operator": "equals", "values": ["Eng"]});
    let cases = [
        (json!([]), "rule"),
        (json!({"conditions": [ok], "owner": 1}), "rule/owner"),
        (
            json!({"conditions": [ok], "quantifier": "all"}),
            "rule/quantifier",
        ),
        (
            json!({"conditions": [ok], "expression": 1}),
            "rule/expression",
        ),
        (json!({"any": []}), "rule/any"),
        (json!({"any": {}}), "rule/any"),
        (json!({"any": [1]}), "rule/any/0"),
        (json!({"any": [{}]}), "rule/any/0"),
        (
            json!({"any": [{"conditions": [ok], "name": "x"}]}),
            "rule/any/0/name",
        ),
        (
            json!({"any": [{"conditions": []}]}),
            "rule/any/0/conditions",
        ),
        (json!({}), "rule"),
        (json!({"conditions": {}}), "rule/conditions"),
        (json!({"conditions": []}), "rule/conditions"),
        (json!({"conditions": [1]}), "rule/conditions/0"),
        (
            json!({"conditions": [ok, {"member_of": id, "operator": "x"}]}),
            "rule/conditions/1/operator",
        ),
        (
            json!({"conditions": [{"not_member_of": 7}]}),
            "rule/conditions/0/not_member_of",
        ),
        (
            json!({"conditions": [{"expression": true}]}),
            "rule/conditions/0/expression",
        ),
        (
            json!({"conditions": [{"users": {"conditions": [ok]}}]}),
            "rule/conditions/0/users",
        ),
        (
            json!({"conditions": [{"devices": {"quantifier": "most", "conditions": [ok]}}]}),
            "rule/conditions/0/devices/quantifier",
        ),
        (
            json!({"conditions": [{"devices": {"conditions": [ok], "limit": 3}}]}),
            "rule/conditions/0/devices/limit",
        ),
        (
            json!({"conditions": [{"devices": {"conditions": [{"attribute": 3}]}}]}),
            "rule/conditions/0/devices/conditions/0/attribute",
        ),
        (
            json!({"conditions": [{"attribute": ["department"]}]}),
            "rule/conditions/0/attribute",
        ),
        (
            json!({"conditions": [{"operator": "exists"}]}),
            "rule/conditions/0",
        ),
    ];
    for (rule, field) in cases {
        assert_eq!(
            field_of(RuleModel::parse(&rule, SubjectKind::User, "rule")),
            field,
            "{rule}"
        );
    }
    // A device rule tests its users, not devices; and the prefix is the caller's.
    let rule = json!({"conditions": [{"devices": {"conditions": [ok]}}]});
    assert_eq!(
        field_of(RuleModel::parse(&rule, SubjectKind::Device, "exclusion")),
        "exclusion/conditions/0/devices"
    );
}

#[test]
fn conditions_on_related_subjects_count_towards_the_limit() {
    let cond = json!({"attribute": "os_family", "operator": "exists"});
    let nested = vec![cond; crate::limits::MAX_RULE_CONDITIONS];
    let rule = json!({"conditions": [{"devices": {"conditions": nested.clone()}}]});
    match RuleModel::parse(&rule, SubjectKind::User, "rule") {
        Err(DomainError::Limit { code, field, .. }) => {
            assert_eq!((code, field.as_str()), ("too_many", "rule"));
        }
        other => panic!("{other:?}"),
    }
    let rule = json!({"conditions": [{"devices": {"conditions": nested[1..]}}]});
    assert!(RuleModel::parse(&rule, SubjectKind::User, "rule").is_ok());
}

#[test]
fn an_expression_next_to_the_conditions_joins_every_block() {
    let rule = json!({
        "any": [
            {"conditions": [{"attribute": "department", "operator": "exists"}]},
            {"conditions": [{"attribute": "tags", "operator": "exists"}]}
        ],
        "expression": "user.level > 2"
    });
    let m = RuleModel::parse(&rule, SubjectKind::User, "rule").unwrap();
    assert!(m.any);
    for block in &m.blocks {
        assert_eq!(block.len(), 2);
        assert!(
            matches!(&block[1], Cond::Expr { at, source, nested: false, compiled: None }
            if at == "/expression" && source == "user.level > 2")
        );
    }
    // An expression alone is a rule of one block.
    let m = RuleModel::parse(&json!({"expression": "true"}), SubjectKind::User, "rule").unwrap();
    assert_eq!((m.any, m.blocks.len(), m.blocks[0].len()), (false, 1, 1));
}

const ENGINEERING: Uuid = Uuid::from_u128(0xe);

fn context() -> ExpressionContext {
    let ctx = ExpressionContext {
        users: vec![
            attr("department", SubjectKind::User, AttrType::String),
            attr("level", SubjectKind::User, AttrType::Number),
        ],
        devices: vec![attr("os_family", SubjectKind::Device, AttrType::String)],
        names: [((SubjectKind::User, "engineering".to_string()), ENGINEERING)].into(),
        groups: [(ENGINEERING, (SubjectKind::User, "Engineering".to_string()))].into(),
        cache: Default::default(),
    };
    ctx.cache.prepare(&ctx);
    ctx
}

fn bound(rule: Value) -> Result<RuleModel, DomainError> {
    let mut m = RuleModel::parse(&rule, SubjectKind::User, "rule")?;
    m.bind(SubjectKind::User, "rule", &context())?;
    Ok(m)
}

#[test]
fn binding_compiles_expressions_and_collects_what_they_read_and_name() {
    let m = bound(json!({"conditions": [
        {"expression": "user.level > 2 && in_group('Engineering')"},
        {"devices": {"conditions": [{"expression": "device.os_family == 'linux'"}]}}
    ]}))
    .unwrap();
    assert!(m.expressions().iter().all(|c| matches!(
        c,
        Cond::Expr {
            compiled: Some(_),
            ..
        }
    )));
    let (own, related) = m.reads();
    assert_eq!(own.into_iter().collect::<Vec<_>>(), ["level"]);
    assert_eq!(related.into_iter().collect::<Vec<_>>(), ["os_family"]);
    assert_eq!(
        m.references(SubjectKind::User)
            .into_iter()
            .collect::<Vec<_>>(),
        [Reference {
            group: ENGINEERING,
            kind: SubjectKind::User
        }]
    );
    assert!(m.single_expression().is_none());
    let single = bound(json!({"conditions": [{"expression": "user.level > 2"}]})).unwrap();
    assert_eq!(
        single.single_expression().map(|(at, _)| at),
        Some("/conditions/0/expression")
    );
}

#[test]
fn an_expression_that_does_not_check_is_refused_at_its_position() {
    let cases = [
        (
            json!({"conditions": [{"attribute": "department", "operator": "exists"},
                               {"expression": "user.levl > 2"}]}),
            "rule/conditions/1/expression",
            "did you mean `level`?",
        ),
        (
            json!({"conditions": [{"attribute": "department", "operator": "exists"}],
                "expression": "in_group('Sales')"}),
            "rule/expression",
            "no user group is named `Sales`",
        ),
        (
            json!({"conditions": [{"devices": {"conditions": [{"expression": "device.groups.size() > 0"}]}}]}),
            "rule/conditions/0/devices/conditions/0/expression",
            "related devices carry their attributes only",
        ),
    ];
    for (rule, want_field, want_message) in cases {
        match bound(rule.clone()) {
            Err(DomainError::InvalidRule { field, message }) => {
                assert_eq!(field, want_field, "{rule}");
                assert!(message.contains(want_message), "{rule}: {message}");
            }
            other => panic!("{rule}: {other:?}"),
        }
    }
    let long = format!(
        "user.level > {}",
        "1".repeat(crate::expression::MAX_SOURCE_BYTES)
    );
    match bound(json!({"conditions": [{"expression": long}]})) {
        Err(DomainError::Limit { code, field, .. }) => {
            assert_eq!(
                (code, field.as_str()),
                ("too_long", "rule/conditions/0/expression")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn groups_are_named_by_name_in_any_case_or_by_id_of_the_same_kind() {
    let ctx = context();
    assert_eq!(
        ctx.group(SubjectKind::User, "ENGINEERING"),
        Some(ENGINEERING)
    );
    assert_eq!(
        ctx.group(SubjectKind::User, &ENGINEERING.to_string()),
        Some(ENGINEERING)
    );
    assert_eq!(
        ctx.group(SubjectKind::Device, &ENGINEERING.to_string()),
        None
    );
    assert_eq!(ctx.group(SubjectKind::Device, "engineering"), None);
}

#[test]
fn the_cache_reuses_a_compilation_until_the_schema_changes() {
    let compiled = |ctx: &ExpressionContext| {
        let mut m = RuleModel::parse(
            &json!({"expression": "user.level > 2"}),
            SubjectKind::User,
            "rule",
        )
        .unwrap();
        m.bind(SubjectKind::User, "rule", ctx).unwrap();
        Arc::clone(m.single_expression().unwrap().1)
    };
    let mut ctx = context();
    let first = compiled(&ctx);
    assert!(Arc::ptr_eq(&first, &compiled(&ctx)));
    ctx.users
        .push(attr("title", SubjectKind::User, AttrType::String));
    ctx.cache.prepare(&ctx);
    assert!(!Arc::ptr_eq(&first, &compiled(&ctx)));
}
