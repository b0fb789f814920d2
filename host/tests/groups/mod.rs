//! Groups end to end: the real server with the built `rules-standard`
//! evaluator computes memberships before each API call returns.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use common::InProcess;

use std::collections::BTreeMap;

use cohort_tests::{Api, eq, sorted};
use serde_json::{Value, json};

/// Usernames of a group's members, sorted.
async fn member_names(api: &Api, group: &str, names: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = api
        .member_ids(group)
        .await
        .into_iter()
        .map(|id| names.get(&id).cloned().unwrap_or(id))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn dynamic_groups_follow_every_change_before_the_call_returns() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;
    let eng = api
        .equals_group("Engineering", "user", "department", "Engineering")
        .await;
    assert_eq!(api.member_ids(&eng).await, vec![ada.clone()]);

    // An attribute change moves bob in, before the PATCH answers.
    api.patch(
        &format!("/api/v1/users/{bob}"),
        json!({"department": "Engineering"}),
    )
    .await
    .expect(200);
    assert_eq!(
        api.member_ids(&eng).await,
        sorted(vec![ada.clone(), bob.clone()])
    );

    // Suspended users leave dynamic groups by default.
    api.post(
        &format!("/api/v1/users/{ada}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&eng).await, vec![bob.clone()]);

    // A group built on another one follows it.
    let not_eng = api
        .dynamic_group(
            "Everyone but engineering",
            "user",
            json!({"conditions": [{"not_member_of": eng}, {"attribute": "username", "operator": "exists"}]}),
        )
        .await;
    let cy = api.user("cy", json!({})).await;
    assert_eq!(api.member_ids(&not_eng).await, vec![cy.clone()]);
    api.patch(
        &format!("/api/v1/users/{cy}"),
        json!({"department": "Engineering"}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&not_eng).await, Vec::<String>::new());
    assert_eq!(
        api.member_ids(&eng).await,
        sorted(vec![bob.clone(), cy.clone()])
    );

    // Deleting a user removes it from its groups.
    api.delete(&format!("/api/v1/users/{cy}")).await.expect(204);
    assert_eq!(api.member_ids(&eng).await, vec![bob.clone()]);

    // Every membership change is in the audit log with its reason.
    let events = api
        .get(&format!(
            "/api/v1/audit?resource_type=group&resource_id={eng}"
        ))
        .await
        .expect(200)
        .body;
    let items = events["items"].as_array().unwrap();
    let adds: Vec<&Value> = items
        .iter()
        .filter(|e| e["action"] == "group.member_add")
        .collect();
    assert_eq!(adds.len(), 3, "{events}");
    assert!(
        adds.iter().all(|e| e["changes"]["reason"]["after"]
            .as_str()
            .unwrap()
            .starts_with("the rule matches")),
        "{events}"
    );
    assert!(items.iter().any(|e| {
        e["action"] == "group.member_remove"
            && e["changes"]["reason"]["after"]
                .as_str()
                .unwrap()
                .contains("deleted")
    }));

    // The status counts members; the subject's side lists its groups.
    let g = api
        .get(&format!("/api/v1/groups/{eng}"))
        .await
        .expect(200)
        .body;
    assert_eq!(g["status"]["member_count"], 1, "{g}");
    let groups = api
        .get(&format!("/api/v1/users/{bob}/groups"))
        .await
        .expect(200)
        .body;
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Engineering") && names.contains(&"All Users"),
        "{names:?}"
    );

    // A full recompute finds nothing to change, and is kept as a run.
    let counts = api.recompute().await;
    assert_eq!(counts, json!({"added": 0, "removed": 0, "suggested": 0}));
    let runs = api.get("/api/v1/groups/recompute").await.expect(200).body;
    assert_eq!(runs[0]["state"], "finished", "{runs}");
    assert_eq!(runs[0]["trigger"], "api");
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "startup"),
        "{runs}"
    );
}

#[tokio::test]
async fn every_operator_and_the_missing_attribute_rule() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    for (name, ty) in [
        ("level", "number"),
        ("start_date", "date"),
        ("tags", "string_list"),
        ("contractor", "boolean"),
    ] {
        api.post(
            "/api/v1/attributes",
            json!({"name": name, "subject": "user", "type": ty}),
        )
        .await
        .expect(201);
    }
    let mut names = BTreeMap::new();
    for (username, extra) in [
        (
            "ada",
            json!({"department": "Engineering", "job_title": "Senior Engineer",
                   "custom_attributes": {"level": 5, "start_date": "2020-01-15", "tags": ["rust", "go"], "contractor": false}}),
        ),
        (
            "bob",
            json!({"department": "Sales", "job_title": "Account Executive",
                   "custom_attributes": {"level": 2, "start_date": "2025-06-01", "tags": ["crm"], "contractor": true}}),
        ),
        ("cy", json!({"job_title": "engineer"})),
    ] {
        names.insert(api.user(username, extra).await, username.to_string());
    }
    let cond = |a: &str, op: &str, v: Value| json!({"attribute": a, "operator": op, "values": v});
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            cond("department", "equals", json!(["Engineering"])),
            vec!["ada"],
        ),
        (cond("department", "equals", json!(["engineering"])), vec![]),
        (
            json!({"attribute": "department", "operator": "equals", "values": ["engineering"], "ignore_case": true}),
            vec!["ada"],
        ),
        // Missing attributes satisfy nothing, not even negative operators.
        (
            cond("department", "not_equals", json!(["Engineering"])),
            vec!["bob"],
        ),
        (
            cond("job_title", "starts_with", json!(["Senior"])),
            vec!["ada"],
        ),
        (
            cond("email", "ends_with", json!(["@example.com"])),
            vec!["ada", "bob", "cy"],
        ),
        (
            cond("job_title", "contains", json!(["ngineer"])),
            vec!["ada", "cy"],
        ),
        (
            cond("job_title", "not_contains", json!(["Engineer"])),
            vec!["bob", "cy"],
        ),
        (
            cond("department", "in", json!(["Sales", "Design"])),
            vec!["bob"],
        ),
        (cond("department", "not_in", json!(["Sales"])), vec!["ada"]),
        (
            cond("job_title", "matches", json!(["^(Senior|Account) "])),
            vec!["ada", "bob"],
        ),
        (
            json!({"attribute": "department", "operator": "exists"}),
            vec!["ada", "bob"],
        ),
        (
            json!({"attribute": "department", "operator": "not_exists"}),
            vec!["cy"],
        ),
        (cond("level", "less_than", json!([3])), vec!["bob"]),
        (cond("level", "greater_than", json!([3])), vec!["ada"]),
        (cond("level", "not_equals", json!([5])), vec!["bob"]),
        (
            cond("start_date", "greater_than", json!(["2024-01-01"])),
            vec!["bob"],
        ),
        (
            cond("start_date", "less_than", json!(["now-1000d"])),
            vec!["ada"],
        ),
        (cond("contractor", "equals", json!([true])), vec!["bob"]),
        (cond("contractor", "not_equals", json!([true])), vec!["ada"]),
        (cond("tags", "equals", json!(["go"])), vec!["ada"]),
        (cond("tags", "not_in", json!(["go"])), vec!["bob"]),
        // Several values OR; several conditions AND; blocks OR.
        (
            json!([
                cond("department", "in", json!(["Engineering", "Sales"])),
                cond("level", "greater_than", json!([3]))
            ]),
            vec!["ada"],
        ),
        (
            json!({"any": [{"conditions": [cond("department", "equals", json!(["Sales"]))]},
                           {"conditions": [{"attribute": "department", "operator": "not_exists"}]}]}),
            vec!["bob", "cy"],
        ),
    ];
    for (i, (c, expected)) in cases.into_iter().enumerate() {
        let rule = match &c {
            Value::Array(_) => json!({"conditions": c}),
            Value::Object(o) if o.contains_key("any") => c.clone(),
            _ => json!({"conditions": [c]}),
        };
        let g = api
            .dynamic_group(&format!("case {i}"), "user", rule.clone())
            .await;
        assert_eq!(
            member_names(&api, &g, &names).await,
            expected,
            "case {i}: {rule}"
        );
    }
}

#[tokio::test]
async fn exemptions_override_the_rule_and_never_wins() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;
    let eng = api
        .equals_group("Engineering", "user", "department", "Engineering")
        .await;
    let exempt = |subject: &str, kind: &str| json!({"subject_id": subject, "kind": kind, "reason": "ticket 42", "expires_at": "2099-01-01T00:00:00Z"});
    api.post(
        &format!("/api/v1/groups/{eng}/exemptions"),
        exempt(&ada, "never"),
    )
    .await
    .expect(200);
    api.post(
        &format!("/api/v1/groups/{eng}/exemptions"),
        exempt(&bob, "always"),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&eng).await, vec![bob.clone()]);
    let members = api
        .get(&format!("/api/v1/groups/{eng}/members"))
        .await
        .expect(200)
        .body;
    assert_eq!(members["items"][0]["source"], "exemption");

    // The explanation names the exemption.
    let why = api
        .get(&format!("/api/v1/groups/{eng}/members/{ada}/explain"))
        .await
        .expect(200)
        .body;
    assert_eq!(why["member"], false);
    assert!(
        why["summary"]
            .as_str()
            .unwrap()
            .contains("\"never\" exemption keeps it out (ticket 42)"),
        "{why}"
    );
    assert_eq!(why["rule"]["matched"], true, "{why}");

    // "never" wins over "always".
    api.post(
        &format!("/api/v1/groups/{eng}/exemptions"),
        exempt(&bob, "never"),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&eng).await, Vec::<String>::new());

    // Removing exemptions gives the rule back its say.
    for s in [&ada, &bob] {
        api.delete(&format!("/api/v1/groups/{eng}/exemptions/{s}"))
            .await
            .expect(204);
    }
    assert_eq!(api.member_ids(&eng).await, vec![ada.clone()]);

    // Bad exemptions are refused with the field.
    let past = api
        .post(
            &format!("/api/v1/groups/{eng}/exemptions"),
            json!({"subject_id": ada, "kind": "never", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await
        .expect(422);
    assert_eq!(past.field(), "expires_at");
    let device = api.device("mac-1", "macos", json!({})).await;
    assert_eq!(
        api.post(
            &format!("/api/v1/groups/{eng}/exemptions"),
            json!({"subject_id": device, "kind": "always"})
        )
        .await
        .expect(422)
        .field(),
        "subject_id"
    );
}

#[tokio::test]
async fn state_scoping_is_set_per_group() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let staged = api
        .post(
            "/api/v1/users",
            json!({"username": "st", "email": "st@example.com", "department": "Ops"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let active = api.user("ac", json!({"department": "Ops"})).await;
    let default = api.equals_group("Ops", "user", "department", "Ops").await;
    assert_eq!(api.member_ids(&default).await, vec![active.clone()]);
    let all = api
        .post(
            "/api/v1/groups",
            json!({"name": "Ops incl. staged", "subject": "user", "type": "dynamic",
                   "member_states": ["staged", "active"],
                   "rule": {"conditions": [eq("department", json!(["Ops"]))]}}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.member_ids(&all).await,
        sorted(vec![staged.clone(), active.clone()])
    );
    let why = api
        .get(&format!(
            "/api/v1/groups/{default}/members/{staged}/explain"
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(why["state"]["admitted"], false, "{why}");
    assert!(
        why["summary"]
            .as_str()
            .unwrap()
            .contains("admits only active users"),
        "{why}"
    );
    // Device groups have no state scoping.
    let bad = api
        .post(
            "/api/v1/groups",
            json!({"name": "d", "subject": "device", "type": "dynamic", "member_states": ["active"],
                   "rule": {"conditions": [eq("os_family", json!(["macos"]))]}}),
        )
        .await
        .expect(422);
    assert_eq!(bad.field(), "member_states");
}

#[tokio::test]
async fn review_mode_suggests_and_admins_decide() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Engineering"})).await;
    let g = api
        .post(
            "/api/v1/groups",
            json!({"name": "Reviewed", "subject": "user", "type": "dynamic", "review": true,
                   "rule": {"conditions": [eq("department", json!(["Engineering"]))]}}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(g["status"]["pending_suggestions"], 2, "{g}");
    let g = g["id"].as_str().unwrap().to_string();
    assert_eq!(api.member_ids(&g).await, Vec::<String>::new());
    let list = api
        .get(&format!("/api/v1/groups/{g}/suggestions"))
        .await
        .expect(200)
        .body;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "add")
    );

    // Accept one, reject the other.
    let r = api
        .post(
            &format!("/api/v1/groups/{g}/suggestions/accept"),
            json!({"subject_ids": [ada]}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["decided"], 1);
    api.post(
        &format!("/api/v1/groups/{g}/suggestions/reject"),
        json!({"subject_ids": [bob]}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&g).await, vec![ada.clone()]);
    let pending = api
        .get(&format!("/api/v1/groups/{g}/suggestions"))
        .await
        .expect(200)
        .body;
    assert_eq!(pending["items"], json!([]));
    let dismissed = api
        .get(&format!("/api/v1/groups/{g}/suggestions?dismissed=true"))
        .await
        .expect(200)
        .body;
    assert_eq!(dismissed["items"][0]["subject_id"], bob.as_str());

    // A dismissed suggestion stays dismissed through later changes.
    api.patch(
        &format!("/api/v1/users/{bob}"),
        json!({"job_title": "Lead"}),
    )
    .await
    .expect(200);
    let pending = api
        .get(&format!("/api/v1/groups/{g}/suggestions"))
        .await
        .expect(200)
        .body;
    assert_eq!(pending["items"], json!([]));

    // When ada stops matching, her removal is suggested, not applied.
    api.patch(
        &format!("/api/v1/users/{ada}"),
        json!({"department": "Sales"}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&g).await, vec![ada.clone()]);
    let pending = api
        .get(&format!("/api/v1/groups/{g}/suggestions"))
        .await
        .expect(200)
        .body;
    assert_eq!(pending["items"][0]["action"], "remove", "{pending}");
    let why = api
        .get(&format!("/api/v1/groups/{g}/members/{ada}/explain"))
        .await
        .expect(200)
        .body;
    assert!(why["summary"].as_str().unwrap().contains("review"), "{why}");
    api.post(&format!("/api/v1/groups/{g}/suggestions/accept"), json!({}))
        .await
        .expect(200);
    assert_eq!(api.member_ids(&g).await, Vec::<String>::new());
    let status = api
        .get(&format!("/api/v1/groups/{g}"))
        .await
        .expect(200)
        .body["status"]
        .clone();
    assert_eq!(status["pending_suggestions"], 0, "{status}");
    assert_eq!(status["member_count"], 0, "{status}");
}

mod saving;
