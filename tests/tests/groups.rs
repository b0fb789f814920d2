//! Groups end to end: the real server with the built `rules-standard`
//! evaluator computes memberships before each API call returns.

use cohort_tests::{Api, Server};
use serde_json::{Value, json};

async fn user(api: &Api, username: &str, extra: Value) -> String {
    let mut body = json!({"username": username, "email": format!("{username}@example.com"), "state": "active"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    api.post("/api/v1/users", body).await.expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn group(api: &Api, name: &str, rule: Value) -> String {
    api.post(
        "/api/v1/groups",
        json!({"name": name, "subject": "user", "type": "dynamic", "rule": rule}),
    )
    .await
    .expect(201)
    .body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn members(api: &Api, group: &str) -> Vec<String> {
    let mut out: Vec<String> = api
        .get(&format!("/api/v1/groups/{group}/members?limit=500"))
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject_id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn eq(attribute: &str, values: Value) -> Value {
    json!({"attribute": attribute, "operator": "equals", "values": values})
}

#[tokio::test]
async fn dynamic_groups_follow_every_change_before_the_call_returns() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let ada = user(&api, "ada", json!({"department": "Engineering"})).await;
    let bob = user(&api, "bob", json!({"department": "Sales"})).await;
    let eng = group(
        &api,
        "Engineering",
        json!({"conditions": [eq("department", json!(["Engineering"]))]}),
    )
    .await;
    assert_eq!(members(&api, &eng).await, vec![ada.clone()]);

    // An attribute change moves bob in, before the PATCH answers.
    api.patch(
        &format!("/api/v1/users/{bob}"),
        json!({"department": "Engineering"}),
    )
    .await
    .expect(200);
    assert_eq!(
        members(&api, &eng).await,
        sorted(vec![ada.clone(), bob.clone()])
    );

    // Suspended users leave dynamic groups by default.
    api.post(
        &format!("/api/v1/users/{ada}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);
    assert_eq!(members(&api, &eng).await, vec![bob.clone()]);

    // A group built on another one follows it.
    let not_eng = group(
        &api,
        "Everyone but engineering",
        json!({"conditions": [{"not_member_of": eng}, {"attribute": "username", "operator": "exists"}]}),
    )
    .await;
    let cy = user(&api, "cy", json!({})).await;
    assert_eq!(members(&api, &not_eng).await, vec![cy.clone()]);
    api.patch(
        &format!("/api/v1/users/{cy}"),
        json!({"department": "Engineering"}),
    )
    .await
    .expect(200);
    assert_eq!(members(&api, &not_eng).await, Vec::<String>::new());
    assert_eq!(
        members(&api, &eng).await,
        sorted(vec![bob.clone(), cy.clone()])
    );

    // Every membership change is in the audit log with its reason.
    let events = api
        .get(&format!(
            "/api/v1/audit?resource_type=group&resource_id={eng}"
        ))
        .await
        .expect(200)
        .body;
    let adds = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "group.member_add")
        .count();
    assert_eq!(adds, 3, "{events}");

    // A full recompute finds nothing to change.
    let counts = api
        .post("/api/v1/groups/recompute", json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(counts, json!({"added": 0, "removed": 0, "suggested": 0}));
}

#[tokio::test]
async fn rules_are_checked_when_saved() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let bad = api
        .post(
            "/api/v1/groups",
            json!({"name": "x", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [eq("department", json!(["A"])),
                                           {"attribute": "department", "operator": "greater_than", "values": ["1"]}]}}),
        )
        .await
        .expect(422);
    assert_eq!(bad.code(), "invalid_rule");
    assert_eq!(bad.field(), "rule/conditions/1/operator", "{}", bad.body);

    let unknown = api
        .post(
            "/api/v1/groups",
            json!({"name": "x", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [eq("shoe_size", json!(["9"]))]}}),
        )
        .await
        .expect(422);
    assert_eq!(
        unknown.field(),
        "rule/conditions/0/attribute",
        "{}",
        unknown.body
    );

    // A cycle is refused, spelled out by name.
    let a = group(
        &api,
        "A",
        json!({"conditions": [eq("department", json!(["A"]))]}),
    )
    .await;
    let b = group(&api, "B", json!({"conditions": [{"member_of": a}]})).await;
    let cycle = api
        .patch(
            &format!("/api/v1/groups/{a}"),
            json!({"rule": {"conditions": [{"member_of": b}]}}),
        )
        .await
        .expect(422);
    assert_eq!(cycle.code(), "invalid_rule");
    assert!(
        cycle.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"A\" → \"B\" → \"A\""),
        "{}",
        cycle.body
    );

    // Contradictions save, with a warning on the status.
    let w = api
        .post(
            "/api/v1/groups",
            json!({"name": "never", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [eq("department", json!(["A"])), eq("department", json!(["B"]))]}}),
        )
        .await
        .expect(201);
    assert_eq!(w.body["status"]["warnings"][0]["field"], "rule");

    // Built-in groups exist and cannot be deleted.
    let list = api
        .get("/api/v1/groups?subject=device")
        .await
        .expect(200)
        .body;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"All Devices") && names.contains(&"macOS Devices"),
        "{names:?}"
    );
    let all = list["items"][0]["id"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/api/v1/groups/{all}"))
            .await
            .expect(409)
            .code(),
        "built_in_group"
    );
}
