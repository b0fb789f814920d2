//! Cross-subject rules, explanations, previews, and the check that the
//! incremental path, a full recompute and an independent reference
//! evaluator (`cohort_tests::oracle`) always agree.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::collections::BTreeMap;

use cohort_tests::oracle::{self, Cel, Expressions, Kind};
use cohort_tests::{Rng, Server, eq, sorted};
use serde_json::{Value, json};

#[tokio::test]
async fn cross_subject_rules_follow_bindings_and_both_sides() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;
    let mac = api
        .device("mac-1", "macos", json!({"disk_encryption": true}))
        .await;
    let win = api
        .device("win-1", "windows", json!({"disk_encryption": false}))
        .await;
    let has_mac = api
        .dynamic_group(
            "Mac users",
            "user",
            json!({"conditions": [{"devices": {"quantifier": "any", "conditions": [eq("os_family", json!(["macos"]))]}}]}),
        )
        .await;
    let all_encrypted = api
        .dynamic_group(
            "Fully encrypted",
            "user",
            json!({"conditions": [{"devices": {"quantifier": "all", "conditions": [eq("disk_encryption", json!([true]))]}}]}),
        )
        .await;
    let no_windows = api
        .dynamic_group(
            "No Windows",
            "user",
            json!({"conditions": [{"devices": {"quantifier": "none", "conditions": [eq("os_family", json!(["windows"]))]}}]}),
        )
        .await;
    let eng_devices = api
        .dynamic_group(
            "Engineering devices",
            "device",
            json!({"conditions": [{"users": {"conditions": [eq("department", json!(["Engineering"]))]}}]}),
        )
        .await;
    // Nobody has devices yet: "none" holds, "any" and "all" do not.
    assert_eq!(api.member_ids(&has_mac).await, Vec::<String>::new());
    assert_eq!(api.member_ids(&all_encrypted).await, Vec::<String>::new());
    assert_eq!(
        api.member_ids(&no_windows).await,
        sorted(vec![ada.clone(), bob.clone()])
    );

    // Binding ada to the Mac changes both her groups and the Mac's.
    api.put(&format!("/api/v1/users/{ada}/devices/{mac}")).await;
    assert_eq!(api.member_ids(&has_mac).await, vec![ada.clone()]);
    assert_eq!(api.member_ids(&all_encrypted).await, vec![ada.clone()]);
    assert_eq!(api.member_ids(&eng_devices).await, vec![mac.clone()]);

    // A second, unencrypted Windows device breaks "all" and "none".
    api.put(&format!("/api/v1/users/{ada}/devices/{win}")).await;
    assert_eq!(api.member_ids(&all_encrypted).await, Vec::<String>::new());
    assert_eq!(api.member_ids(&no_windows).await, vec![bob.clone()]);
    assert_eq!(
        api.member_ids(&eng_devices).await,
        sorted(vec![mac.clone(), win.clone()])
    );

    // A device's change reaches its user; a user's change reaches her devices.
    api.patch(
        &format!("/api/v1/devices/{win}"),
        json!({"disk_encryption": true}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&all_encrypted).await, vec![ada.clone()]);
    api.patch(
        &format!("/api/v1/users/{ada}"),
        json!({"department": "Sales"}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&eng_devices).await, Vec::<String>::new());

    // Unbinding and deleting undo it.
    api.delete(&format!("/api/v1/users/{ada}/devices/{win}"))
        .await
        .expect(204);
    assert_eq!(
        api.member_ids(&no_windows).await,
        sorted(vec![ada.clone(), bob.clone()])
    );
    api.delete(&format!("/api/v1/devices/{mac}"))
        .await
        .expect(204);
    assert_eq!(api.member_ids(&has_mac).await, Vec::<String>::new());

    let counts = api.recompute().await;
    assert_eq!(counts, json!({"added": 0, "removed": 0, "suggested": 0}));
}

#[tokio::test]
async fn explain_goes_condition_by_condition() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api
        .user(
            "ada",
            json!({"department": "Engineering", "location": "Berlin"}),
        )
        .await;
    let bob = api
        .user("bob", json!({"department": "Sales", "location": "Berlin"}))
        .await;
    let mac = api.device("mac-1", "macos", json!({})).await;
    api.put(&format!("/api/v1/users/{ada}/devices/{mac}")).await;
    let berlin = api
        .equals_group("Berlin", "user", "location", "Berlin")
        .await;
    let g = api
        .post(
            "/api/v1/groups",
            json!({"name": "Berlin engineers with a Mac", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [
                       eq("department", json!(["Engineering"])),
                       {"member_of": berlin},
                       {"devices": {"conditions": [eq("os_family", json!(["macos"]))]}}]},
                   "exclusion": {"conditions": [eq("job_title", json!(["Intern"]))]}}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();

    let yes = api
        .get(&format!("/api/v1/groups/{g}/members/{ada}/explain"))
        .await
        .expect(200)
        .body;
    assert_eq!(yes["member"], true, "{yes}");
    assert_eq!(yes["source"], "rule");
    assert_eq!(yes["summary"], "a member: the rule matches");
    let conds = yes["rule"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 3, "{yes}");
    assert_eq!(conds[0]["at"], "rule/conditions/0");
    assert!(conds.iter().all(|c| c["matched"] == true), "{yes}");
    assert_eq!(conds[1]["group"]["name"], "Berlin", "{yes}");
    assert!(
        conds[1]["detail"]
            .as_str()
            .unwrap()
            .contains("is a member of \"Berlin\""),
        "{yes}"
    );
    assert_eq!(
        conds[2]["related"]["subjects"][0]["subject_id"],
        mac.as_str(),
        "{yes}"
    );
    assert_eq!(conds[2]["related"]["subjects"][0]["matched"], true);
    assert_eq!(
        conds[2]["related"]["subjects"][0]["conditions"][0]["at"],
        "rule/conditions/2/devices/conditions/0"
    );
    assert_eq!(yes["exclusion"]["matched"], false, "{yes}");

    let no = api
        .get(&format!("/api/v1/groups/{g}/members/{bob}/explain"))
        .await
        .expect(200)
        .body;
    assert_eq!(no["member"], false);
    assert_eq!(no["summary"], "not a member: the rule does not match");
    let conds = no["rule"]["conditions"].as_array().unwrap();
    assert_eq!(conds[0]["matched"], false, "{no}");
    assert!(
        conds[0]["detail"].as_str().unwrap().contains("Sales"),
        "{no}"
    );
    assert_eq!(conds[2]["related"]["subjects"], json!([]), "{no}");

    // The exclusion takes ada out, and the explanation says so.
    api.patch(
        &format!("/api/v1/users/{ada}"),
        json!({"job_title": "Intern"}),
    )
    .await
    .expect(200);
    let out = api
        .get(&format!("/api/v1/groups/{g}/members/{ada}/explain"))
        .await
        .expect(200)
        .body;
    assert_eq!(
        out["summary"], "not a member: the exclusion rule matches",
        "{out}"
    );
    assert_eq!(out["exclusion"]["conditions"][0]["matched"], true);

    assert_eq!(
        api.get(&format!(
            "/api/v1/groups/{g}/members/{}/explain",
            uuid_like()
        ))
        .await
        .expect(404)
        .code(),
        "not_found"
    );
}

fn uuid_like() -> &'static str {
    "0190f0f0-0000-7000-8000-000000000000"
}

#[tokio::test]
async fn preview_shows_members_and_the_diff_without_writing() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;
    let cy = api.user("cy", json!({"department": "Design"})).await;
    let g = api
        .dynamic_group(
            "Eng",
            "user",
            json!({"conditions": [eq("department", json!(["Engineering", "Design"]))]}),
        )
        .await;
    let before = api.get("/api/v1/audit?limit=500").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .len();
    let p = api
        .post(
            "/api/v1/groups/preview",
            json!({"subject": "user", "group_id": g,
                   "rule": {"conditions": [eq("department", json!(["Engineering", "Sales"]))]}}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(p["members"]["count"], 2, "{p}");
    assert_eq!(
        p["members"]["subject_ids"],
        json!(sorted(vec![ada.clone(), bob.clone()]))
    );
    assert_eq!(p["added"]["subject_ids"], json!([bob]));
    assert_eq!(p["removed"]["subject_ids"], json!([cy]));
    // Nothing was written.
    let after = api.get("/api/v1/audit?limit=500").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    assert_eq!(
        api.member_ids(&g).await,
        sorted(vec![ada.clone(), cy.clone()])
    );

    // A new rule with a mistake is refused like a save would be.
    let bad = api
        .post(
            "/api/v1/groups/preview",
            json!({"subject": "user", "rule": {"conditions": [{"attribute": "nope", "operator": "exists"}]}}),
        )
        .await
        .expect(422);
    assert_eq!(bad.field(), "rule/conditions/0/attribute");
    // Read-only keys may preview.
    let key = api.create_key("viewer", "read-only").await;
    let ro = server.client(Some(&key));
    let p = ro
        .post(
            "/api/v1/groups/preview",
            json!({"subject": "user", "rule": {"conditions": [eq("department", json!(["Sales"]))]}, "limit": 1}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(p["members"]["count"], 1);
    assert_eq!(p["added"]["count"], 1);
}

#[tokio::test]
async fn incremental_changes_agree_with_a_full_recompute() {
    let mut server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let depts = ["Engineering", "Sales", "Design", "Ops"];
    let oses = ["macos", "windows", "linux"];
    let eng = api
        .equals_group("Eng", "user", "department", "Engineering")
        .await;
    let macs = api
        .equals_group("Macs", "device", "os_family", "macos")
        .await;
    // Groups that depend on groups, on related subjects, with exclusions,
    // exemptions and review mode.
    api.dynamic_group(
        "Eng with a Mac",
        "user",
        json!({"conditions": [{"member_of": eng}, {"devices": {"conditions": [{"member_of": macs}]}}]}),
    )
    .await;
    api.dynamic_group(
        "Devices of non-engineers",
        "device",
        json!({"conditions": [{"users": {"quantifier": "all", "conditions": [{"not_member_of": eng}]}}]}),
    )
    .await;
    let excl = api
        .post(
            "/api/v1/groups",
            json!({"name": "Sales or Ops but not Berlin", "subject": "user", "type": "dynamic",
                   "member_states": ["active", "suspended"],
                   "rule": {"any": [{"conditions": [eq("department", json!(["Sales"]))]},
                                    {"conditions": [eq("department", json!(["Ops"]))]}]},
                   "exclusion": {"conditions": [eq("location", json!(["Berlin"]))]}}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        "/api/v1/groups",
        json!({"name": "Reviewed designers", "subject": "user", "type": "dynamic", "review": true,
               "rule": {"conditions": [eq("department", json!(["Design"]))]}}),
    )
    .await
    .expect(201);
    // CEL rules: alone, next to conditions, across subjects, and through
    // in_group. Each is registered with the reference evaluator, which
    // evaluates the same expression tree by itself.
    let mut cel = Expressions::default();
    let in_list = |attr: &str, xs: &[&str]| {
        Cel::In(
            oracle::cel::Var::Subject,
            attr.into(),
            xs.iter().map(|x| x.to_string()).collect(),
        )
    };
    let mut cel_groups = Vec::new();
    for (name, subject, rule) in [
        (
            "CEL: Eng or Sales, in Denver or with a Mac",
            "user",
            json!({"expression": cel.add(Kind::User, Cel::and(
                in_list("department", &["Engineering", "Sales"]),
                Cel::or(Cel::eq("location", "Denver"), Cel::exists(Cel::each_eq("os_family", "macos")))))}),
        ),
        (
            "CEL: in Eng, or in Berlin",
            "user",
            json!({"expression": cel.add(Kind::User,
                Cel::or(Cel::InGroup("Eng".into()), Cel::eq("location", "Berlin")))}),
        ),
        (
            "CEL: Sales outside Berlin",
            "user",
            json!({"conditions": [eq("department", json!(["Sales"]))],
                   "expression": cel.add(Kind::User, Cel::Ne(oracle::cel::Var::Subject, "location".into(), "Berlin".into()))}),
        ),
        (
            "CEL: devices whose users are all active",
            "device",
            json!({"expression": cel.add(Kind::Device,
                Cel::and(Cel::AnyRelated, Cel::all(Cel::each_eq("state", "active"))))}),
        ),
        (
            "CEL: devices with a Denver user",
            "device",
            json!({"conditions": [{"users": {"conditions": [
                {"expression": cel.add(Kind::User, Cel::eq("location", "Denver"))}]}}]}),
        ),
    ] {
        cel_groups.push(api.dynamic_group(name, subject, rule).await);
    }
    let manual = BTreeMap::new();
    oracle::assert_agrees(&api, &cel, &manual, "before any change").await;

    let mut rng = Rng::new(0x5eed_cafe_f00d_1234);
    let mut users: Vec<String> = Vec::new();
    let mut devices: Vec<String> = Vec::new();
    for step in 0..160 {
        match rng.below(10) {
            0 | 1 => {
                let id = api
                    .user(
                        &format!("u{step}"),
                        json!({"department": rng.pick(&depts), "location": rng.pick(&["Berlin", "Denver"])}),
                    )
                    .await;
                users.push(id);
            }
            2 => {
                let id = api
                    .device(&format!("d{step}"), rng.pick(&oses), json!({}))
                    .await;
                devices.push(id);
            }
            3 | 4 if !users.is_empty() => {
                let u = users[rng.below(users.len())].clone();
                api.patch(
                    &format!("/api/v1/users/{u}"),
                    json!({"department": rng.pick(&depts), "location": rng.pick(&["Berlin", "Denver"])}),
                )
                .await
                .expect(200);
            }
            5 if !users.is_empty() => {
                let u = users[rng.below(users.len())].clone();
                let state = api.get(&format!("/api/v1/users/{u}")).await.body["state"].clone();
                let to = if state == "active" {
                    "suspended"
                } else {
                    "active"
                };
                api.post(&format!("/api/v1/users/{u}/state"), json!({"state": to}))
                    .await
                    .expect(200);
            }
            6 if !users.is_empty() && !devices.is_empty() => {
                let u = users[rng.below(users.len())].clone();
                let d = devices[rng.below(devices.len())].clone();
                let r = api.put(&format!("/api/v1/users/{u}/devices/{d}")).await;
                assert!(r.status.is_success(), "{}", r.body);
            }
            7 if !devices.is_empty() => {
                let d = devices[rng.below(devices.len())].clone();
                api.patch(
                    &format!("/api/v1/devices/{d}"),
                    json!({"os_family": rng.pick(&oses)}),
                )
                .await
                .expect(200);
            }
            8 if !users.is_empty() => {
                let u = users[rng.below(users.len())].clone();
                let kind = rng.pick(&["always", "never"]);
                api.post(
                    &format!("/api/v1/groups/{excl}/exemptions"),
                    json!({"subject_id": u, "kind": kind}),
                )
                .await
                .expect(200);
            }
            9 if users.len() > 3 && rng.below(3) == 0 => {
                let u = users.remove(rng.below(users.len()));
                api.delete(&format!("/api/v1/users/{u}")).await.expect(204);
            }
            9 if devices.len() > 3 && rng.below(2) == 0 => {
                let d = devices.remove(rng.below(devices.len()));
                api.delete(&format!("/api/v1/devices/{d}"))
                    .await
                    .expect(204);
            }
            _ => {}
        }
        // Every membership, source and suggestion, decided independently.
        oracle::assert_agrees(&api, &cel, &manual, &format!("after step {step}")).await;
    }
    let counts = api.recompute().await;
    assert_eq!(
        counts,
        json!({"added": 0, "removed": 0, "suggested": 0}),
        "incremental and full disagree"
    );
    // The CEL groups took part: each has members by now.
    let mut empty = Vec::new();
    for g in &cel_groups {
        if api.member_ids(g).await.is_empty() {
            empty.push(api.get(&format!("/api/v1/groups/{g}")).await.body["name"].clone());
        }
    }
    assert!(empty.is_empty(), "CEL groups that stayed empty: {empty:?}");

    // Both paths use the engine's in-memory copy of the directory; after a
    // restart it is loaded from the store again, and a full recompute (the
    // one at start-up and an explicit one) must still find nothing to do.
    let last = api.get("/api/v1/audit?limit=1").await.expect(200).body["items"][0]["id"]
        .as_u64()
        .unwrap();
    server.restart_after_kill();
    let api = server.admin();
    let counts = api.recompute().await;
    assert_eq!(
        counts,
        json!({"added": 0, "removed": 0, "suggested": 0}),
        "the store disagrees"
    );
    oracle::assert_agrees(&api, &cel, &manual, "after a restart").await;
    let recent = api.get("/api/v1/audit?limit=500").await.expect(200).body;
    let changed: Vec<&Value> = recent["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"].as_u64().unwrap() > last)
        .filter(|e| e["action"].as_str().unwrap().starts_with("group.member"))
        .collect();
    assert!(
        changed.is_empty(),
        "the start-up recompute changed memberships: {changed:?}"
    );
    // The member counts on the status match the member lists.
    let groups = api.get("/api/v1/groups?limit=500").await.expect(200).body;
    for g in groups["items"].as_array().unwrap() {
        let id = g["id"].as_str().unwrap();
        assert_eq!(
            g["status"]["member_count"].as_u64().unwrap() as usize,
            api.member_ids(id).await.len(),
            "{}",
            g["name"]
        );
    }
}

/// A change around one user decides the groups of its devices only for
/// context; groups that refer to those through a related condition must
/// still read their stored members. (An exemption set elsewhere, or a new
/// binding, once dropped the user from such a group.)
#[tokio::test]
async fn a_change_around_a_user_keeps_what_its_devices_groups_say() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let user = api.user("ada", json!({})).await;
    let windows = api.device("w1", "windows", json!({})).await;
    let mac = api.device("m1", "macos", json!({})).await;
    api.put(&format!("/api/v1/users/{user}/devices/{windows}"))
        .await
        .expect(201);
    let win = api
        .equals_group("Windows", "device", "os_family", "windows")
        .await;
    let with_windows = api
        .dynamic_group(
            "With a Windows device",
            "user",
            json!({"conditions": [{"devices": {"conditions": [{"member_of": win}]}}]}),
        )
        .await;
    let other = api
        .create(
            "/api/v1/groups",
            json!({"name": "Others", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [{"attribute": "id", "operator": "exists"}]},
                   "exclusion": {"conditions": [{"member_of": with_windows}]}}),
        )
        .await;
    assert_eq!(api.member_ids(&with_windows).await, vec![user.clone()]);
    api.post(
        &format!("/api/v1/groups/{other}/exemptions"),
        json!({"subject_id": user, "kind": "always"}),
    )
    .await
    .expect(200);
    assert_eq!(api.member_ids(&with_windows).await, vec![user.clone()]);
    api.put(&format!("/api/v1/users/{user}/devices/{mac}"))
        .await
        .expect(201);
    assert_eq!(api.member_ids(&with_windows).await, vec![user.clone()]);
    let manual = BTreeMap::new();
    oracle::assert_agrees(&api, &Expressions::default(), &manual, "at the end").await;
}
