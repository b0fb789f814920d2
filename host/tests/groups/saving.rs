//! What saving a group checks (its rule, names, references), and what copies
//! and type switches keep.

use super::*;

#[tokio::test]
async fn rules_are_checked_when_saved() {
    let server = InProcess::start_with_plugins(&[]);
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

    for (rule, field) in [
        (
            json!({"conditions": [eq("shoe_size", json!(["9"]))]}),
            "rule/conditions/0/attribute",
        ),
        (
            json!({"conditions": [{"attribute": "email", "operator": "matches", "values": ["(unclosed"]}]}),
            "rule/conditions/0/values/0",
        ),
        (
            json!({"conditions": [{"attribute": "created_at", "operator": "less_than", "values": ["yesterday"]}]}),
            "rule/conditions/0/values/0",
        ),
        (
            json!({"conditions": [{"member_of": "00000000-0000-7000-8000-000000000000"}]}),
            "rule/conditions/0/member_of",
        ),
        (
            json!({"conditions": [{"devices": {"conditions": [eq("department", json!(["x"]))]}}]}),
            "rule/conditions/0/devices/conditions/0/attribute",
        ),
        (json!({"any": []}), "rule/any"),
    ] {
        let r = api
            .post(
                "/api/v1/groups",
                json!({"name": "x", "subject": "user", "type": "dynamic", "rule": rule}),
            )
            .await
            .expect(422);
        assert_eq!(r.code(), "invalid_rule", "{}", r.body);
        assert_eq!(r.field(), field, "{}", r.body);
    }
    assert_eq!(
        api.post(
            "/api/v1/groups",
            json!({"name": "x", "subject": "user", "type": "dynamic"})
        )
        .await
        .expect(422)
        .field(),
        "rule"
    );
    assert_eq!(
        api.post(
            "/api/v1/groups",
            json!({"name": "x", "subject": "user", "type": "dynamic", "evaluator": "nope",
                   "rule": {"conditions": [eq("department", json!(["A"]))]}})
        )
        .await
        .expect(409)
        .code(),
        "evaluator_not_installed"
    );

    // A member_of of the wrong kind, and a cycle spelled out by name.
    let macs = api
        .equals_group("Macs", "device", "os_family", "macos")
        .await;
    let wrong = api
        .post(
            "/api/v1/groups",
            json!({"name": "x", "subject": "user", "type": "dynamic", "rule": {"conditions": [{"member_of": macs}]}}),
        )
        .await
        .expect(422);
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("holds devices"),
        "{}",
        wrong.body
    );
    let a = api.equals_group("A", "user", "department", "A").await;
    let b = api
        .dynamic_group("B", "user", json!({"conditions": [{"member_of": a}]}))
        .await;
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
    // A referenced group cannot be deleted.
    assert_eq!(
        api.delete(&format!("/api/v1/groups/{a}"))
            .await
            .expect(409)
            .code(),
        "group_in_use"
    );

    // Contradictions and tautologies save, with warnings on the status.
    let w = api
        .post(
            "/api/v1/groups",
            json!({"name": "never", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [eq("department", json!(["A"])), eq("department", json!(["B"]))]}}),
        )
        .await
        .expect(201);
    assert_eq!(w.body["status"]["warnings"][0]["field"], "rule");
    assert!(
        w.body["status"]["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("never")
    );

    // Names are unique per kind; built-in groups exist and stay.
    assert_eq!(
        api.post(
            "/api/v1/groups",
            json!({"name": "all users", "subject": "user"})
        )
        .await
        .expect(409)
        .code(),
        "group_name_taken"
    );
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
    for n in [
        "All Devices",
        "macOS Devices",
        "Windows Devices",
        "Linux Devices",
        "iOS Devices",
        "Android Devices",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    let all = list["items"][0]["id"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/api/v1/groups/{all}"))
            .await
            .expect(409)
            .code(),
        "built_in_group"
    );
}

#[tokio::test]
async fn copies_and_type_switches_keep_what_they_should() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;

    // A static group with manual members.
    let st = api
        .post(
            "/api/v1/groups",
            json!({"name": "Hand-picked", "subject": "user"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        &format!("/api/v1/groups/{st}/members"),
        json!({"subject_id": bob}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&st).await, vec![bob.clone()]);

    // Static → dynamic keeps bob (as a manual member) and adds the rule's matches.
    api.patch(
        &format!("/api/v1/groups/{st}"),
        json!({"type": "dynamic", "rule": {"conditions": [eq("department", json!(["Engineering"]))]}}),
    )
    .await
    .expect(200);
    assert_eq!(
        api.member_ids(&st).await,
        sorted(vec![ada.clone(), bob.clone()])
    );
    let why = api
        .get(&format!("/api/v1/groups/{st}/members/{bob}/explain"))
        .await
        .expect(200)
        .body;
    assert_eq!(why["source"], "manual", "{why}");
    // The kept member can be removed by hand; rule members cannot.
    api.delete(&format!("/api/v1/groups/{st}/members/{bob}"))
        .await
        .expect(204);
    assert_eq!(
        api.delete(&format!("/api/v1/groups/{st}/members/{ada}"))
            .await
            .expect(409)
            .code(),
        "not_a_manual_member"
    );
    assert_eq!(api.member_ids(&st).await, vec![ada.clone()]);

    // Copy: same rule and exemptions, new name.
    api.post(
        &format!("/api/v1/groups/{st}/exemptions"),
        json!({"subject_id": bob, "kind": "always"}),
    )
    .await
    .expect(200);
    let copy = api
        .post(
            &format!("/api/v1/groups/{st}/copy"),
            json!({"name": "Copy"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        copy["rule"],
        json!({"conditions": [eq("department", json!(["Engineering"]))]})
    );
    let copy = copy["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.member_ids(&copy).await,
        sorted(vec![ada.clone(), bob.clone()])
    );

    // Dynamic → static keeps the members.
    api.patch(
        &format!("/api/v1/groups/{copy}"),
        json!({"type": "static", "rule": null}),
    )
    .await
    .expect(200);
    api.patch(
        &format!("/api/v1/users/{ada}"),
        json!({"department": "Sales"}),
    )
    .await
    .expect(200);
    assert_eq!(
        api.member_ids(&copy).await,
        sorted(vec![ada.clone(), bob.clone()])
    );
    assert_eq!(
        api.post(
            &format!("/api/v1/groups/{copy}/exemptions"),
            json!({"subject_id": ada, "kind": "never"})
        )
        .await
        .expect(409)
        .code(),
        "static_group"
    );
}
