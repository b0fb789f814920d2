//! CEL expressions in group rules, through the HTTP API: the documented
//! examples, save-time errors with their positions, evaluation errors and
//! the work cap counted on the group, explanations, and incremental updates.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use common::InProcess;

use cohort_tests::{Api, eq, sorted};
use serde_json::{Value, json};

async fn attribute(api: &Api, name: &str, subject: &str, ty: &str) {
    api.post(
        "/api/v1/attributes",
        json!({"name": name, "subject": subject, "type": ty}),
    )
    .await
    .expect(201);
}

fn expr(source: &str) -> Value {
    json!({ "expression": source })
}

async fn status(api: &Api, group: &str) -> Value {
    api.get(&format!("/api/v1/groups/{group}"))
        .await
        .expect(200)
        .body["status"]
        .clone()
}

#[tokio::test]
async fn documented_examples_select_the_right_subjects() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    attribute(&api, "end_date", "user", "date").await;
    let ada = api
        .user(
            "ada",
            json!({"department": "Engineering", "location": "Denver"}),
        )
        .await;
    let bo = api
        .user(
            "bo",
            json!({"department": "Engineering", "location": "Boulder"}),
        )
        .await;
    let cy = api
        .user(
            "cy",
            json!({"department": "Engineering", "location": "Austin"}),
        )
        .await;
    let dee = api
        .user(
            "dee",
            json!({"employee_type": "contractor", "custom_attributes": {"end_date": "2020-01-31"}}),
        )
        .await;
    let eve = api
        .user(
            "eve",
            json!({"employee_type": "contractor", "custom_attributes": {"end_date": "2999-01-31"}}),
        )
        .await;
    let mac_a = api.device("mac-a", "macos", json!({})).await;
    let mac_c = api.device("mac-c", "macos", json!({})).await;
    let win_b = api.device("win-b", "windows", json!({})).await;
    // last_contact is set by the device's check-in, at the server's time.
    let stale = api.device("stale", "linux", json!({})).await;
    let fresh = api.device("fresh", "linux", json!({})).await;
    api.post(&format!("/api/v1/devices/{stale}/check-in"), json!({}))
        .await
        .expect(200);
    for (u, d) in [
        (&ada, &mac_a),
        (&cy, &mac_c),
        (&bo, &win_b),
        (&dee, &stale),
        (&dee, &fresh),
    ] {
        api.put(&format!("/api/v1/users/{u}/devices/{d}"))
            .await
            .expect(201);
    }
    // Suspend dee after binding: her devices' owner is suspended.
    api.post(
        &format!("/api/v1/users/{dee}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);

    let engineers = api
        .dynamic_group(
            "Engineers in Denver or Boulder with a Mac",
            "user",
            expr(
                "user.department == 'Engineering' && user.location in ['Denver', 'Boulder'] \
                 && user.devices.exists(d, d.os_family == 'macos')",
            ),
        )
        .await;
    assert_eq!(api.member_ids(&engineers).await, vec![ada.clone()]);

    // Suspended users are left out by default (member_states), so include them.
    let contractors = api
        .post(
            "/api/v1/groups",
            json!({"name": "Contractors past their end date", "subject": "user", "type": "dynamic",
                   "member_states": ["active", "suspended"],
                   "rule": expr("user.employee_type == 'contractor' && user.end_date < now")}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(api.member_ids(&contractors).await, vec![dee.clone()]);
    let _ = eve;

    // The documented rule: nobody has been away 30 days yet. `fresh` never
    // checked in, so it has no last_contact and matches nothing.
    let unseen = |d: &str| {
        format!(
            "now - device.last_contact > duration('{d}') \
             && device.users.exists(u, u.state == 'suspended')"
        )
    };
    let forgotten_30d = api
        .dynamic_group(
            "Unseen for 30 days, owner suspended",
            "device",
            expr(&unseen("720h")),
        )
        .await;
    assert_eq!(api.member_ids(&forgotten_30d).await, Vec::<String>::new());
    // The same rule with a one-second threshold, a second later by the
    // server's clock: time-based
    // rules move with the full recompute (nightly by default).
    let forgotten = api
        .dynamic_group(
            "Unseen for a second, owner suspended",
            "device",
            expr(&unseen("1s")),
        )
        .await;
    server.advance(chrono::Duration::milliseconds(1100));
    api.recompute().await;
    assert_eq!(api.member_ids(&forgotten).await, vec![stale.clone()]);
    let _ = fresh;

    // Conditions and an expression together: both must hold.
    let both = api
        .dynamic_group(
            "Engineers with a Mac (mixed)",
            "user",
            json!({"conditions": [eq("department", json!(["Engineering"]))],
                   "expression": "user.devices.exists(d, d.os_family == 'macos')"}),
        )
        .await;
    assert_eq!(
        api.member_ids(&both).await,
        sorted(vec![ada.clone(), cy.clone()])
    );

    // Incremental: moving cy to Boulder makes him a member at once, and
    // unbinding ada's Mac takes her out.
    api.patch(
        &format!("/api/v1/users/{cy}"),
        json!({"location": "Boulder"}),
    )
    .await
    .expect(200);
    assert_eq!(
        api.member_ids(&engineers).await,
        sorted(vec![ada.clone(), cy.clone()])
    );
    api.delete(&format!("/api/v1/users/{ada}/devices/{mac_a}"))
        .await
        .expect(204);
    assert_eq!(api.member_ids(&engineers).await, vec![cy.clone()]);
    assert_eq!(api.member_ids(&both).await, vec![cy.clone()]);

    // A full recompute agrees with what the changes left.
    api.recompute().await;
    assert_eq!(api.member_ids(&engineers).await, vec![cy.clone()]);
    assert_eq!(api.member_ids(&contractors).await, vec![dee.clone()]);
    assert_eq!(api.member_ids(&forgotten).await, vec![stale]);
}

#[tokio::test]
async fn in_group_and_groups_follow_other_groups() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;
    let eng = api
        .equals_group("Engineering", "user", "department", "Engineering")
        .await;
    let via_in_group = api
        .dynamic_group("Not engineering", "user", expr("!in_group('engineering')"))
        .await;
    let via_groups = api
        .dynamic_group(
            "In the Engineering group",
            "user",
            expr("user.groups.exists(g, g.name == 'Engineering')"),
        )
        .await;
    assert_eq!(api.member_ids(&via_in_group).await, vec![bob.clone()]);
    assert_eq!(api.member_ids(&via_groups).await, vec![ada.clone()]);
    // bob joins Engineering: in_group follows in the same change.
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
    assert_eq!(api.member_ids(&via_in_group).await, Vec::<String>::new());
    // Renaming a group an expression names would break it: refused, with
    // the way out.
    let r = api
        .patch(
            &format!("/api/v1/groups/{eng}"),
            json!({"name": "Engineers"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "group_in_use", "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(&eng),
        "{}",
        r.body
    );
    // The referenced group cannot be deleted, and the cycle is refused.
    let r = api.delete(&format!("/api/v1/groups/{eng}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = api
        .patch(
            &format!("/api/v1/groups/{eng}"),
            json!({"rule": expr("in_group('Not engineering')")}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cycle"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn bad_expressions_are_refused_with_their_position() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    attribute(&api, "level", "user", "number").await;
    let cases: Vec<(Value, &str, Vec<&str>)> = vec![
        (
            expr("user.department == 'x' &&\n   && true"),
            "rule/expression",
            vec!["line 2, column"],
        ),
        (
            expr("user.departmnt == 'Engineering'"),
            "rule/expression",
            vec![
                "line 1, column 6",
                "`departmnt`",
                "did you mean `department`",
                "\n     ^",
            ],
        ),
        (
            expr("user.level == 'high'"),
            "rule/expression",
            vec!["double", "string"],
        ),
        (
            expr("user.department.size() > 3 && user.department"),
            "rule/expression",
            vec!["bools on both sides"],
        ),
        (
            expr("user.department"),
            "rule/expression",
            vec!["must be a bool"],
        ),
        (
            expr("in_group('No such group')"),
            "rule/expression",
            vec!["no user group is named"],
        ),
        (
            expr(&format!("user.email == '{}'", "a".repeat(5000))),
            "rule/expression",
            vec!["limit"],
        ),
        (
            json!({"conditions": [{"expression": "device.os_family == 'macos'"}]}),
            "rule/conditions/0/expression",
            vec!["unknown variable `device`"],
        ),
        (
            json!({"conditions": [{"devices": {"conditions": [{"expression": "device.os_famly == 'macos'"}]}}]}),
            "rule/conditions/0/devices/conditions/0/expression",
            vec!["did you mean `os_family`"],
        ),
        (
            json!({"expression": 3}),
            "rule/expression",
            vec!["as a string"],
        ),
    ];
    for (rule, field, needles) in cases {
        let r = api
            .post(
                "/api/v1/groups",
                json!({"name": "bad", "subject": "user", "type": "dynamic", "rule": rule}),
            )
            .await;
        assert_eq!(r.status, 422, "{rule}: {}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        // A limit passed has its own code (`too_long`, `too_deep`).
        let code = if needles.contains(&"limit") {
            "too_long"
        } else {
            "invalid_rule"
        };
        assert_eq!(r.code(), code, "{}", r.body);
        assert_eq!(r.field(), field, "{}", r.body);
        for n in needles {
            assert!(message.contains(n), "{rule}: {n:?} not in {message:?}");
        }
    }
    // A preview checks the same way.
    let r = api
        .post(
            "/api/v1/groups/preview",
            json!({"subject": "user", "rule": expr("user.nope")}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
}

#[tokio::test]
async fn evaluation_errors_and_the_work_cap_are_counted_not_fatal() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    attribute(&api, "tags", "user", "string_list").await;
    let ada = api.user("ada", json!({"employee_id": "41"})).await;
    let bob = api.user("bob", json!({"employee_id": "B-7"})).await;
    let many: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let cy = api
        .user("cy", json!({"custom_attributes": {"tags": many}}))
        .await;
    let dee = api
        .user("dee", json!({"custom_attributes": {"tags": ["a", "b"]}}))
        .await;

    // bob's employee id is not a number: he is not a member, and the group
    // says why.
    let numeric = api
        .dynamic_group("Low ids", "user", expr("int(user.employee_id) < 100"))
        .await;
    assert_eq!(api.member_ids(&numeric).await, vec![ada.clone()]);
    let st = status(&api, &numeric).await;
    assert_eq!(st["evaluation_errors"], 1, "{st}");
    assert_eq!(st["error_examples"][0]["subject_id"], bob.as_str(), "{st}");
    let audit = api
        .get(&format!(
            "/api/v1/audit?resource_type=group&resource_id={numeric}"
        ))
        .await
        .expect(200)
        .body;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "group.warning"),
        "{audit}"
    );

    // Three nested loops over 40 tags is 64,000 steps: over the cap for cy,
    // a few dozen for dee.
    let heavy = api
        .dynamic_group(
            "Heavy",
            "user",
            expr("user.tags.all(a, user.tags.all(b, user.tags.all(c, a + b + c != '')))"),
        )
        .await;
    assert_eq!(api.member_ids(&heavy).await, vec![dee.clone()]);
    let st = status(&api, &heavy).await;
    assert_eq!(st["evaluation_errors"], 1, "{st}");
    assert_eq!(st["error_examples"][0]["subject_id"], cy.as_str(), "{st}");
    assert!(
        st["error_examples"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too much work"),
        "{st}"
    );
    // A missing attribute is not an error: the subject just does not match.
    let tagged = api
        .dynamic_group("Tagged a", "user", expr("'a' in user.tags"))
        .await;
    assert_eq!(api.member_ids(&tagged).await, vec![dee.clone()]);
    assert_eq!(status(&api, &tagged).await["evaluation_errors"], 0);
    // The server is fine.
    api.get("/api/v1/users").await.expect(200);
}

#[tokio::test]
async fn explain_and_preview_show_each_part() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api
        .user(
            "ada",
            json!({"department": "Engineering", "location": "Austin"}),
        )
        .await;
    let rule = expr(
        "user.department == 'Engineering' && (user.location == 'Denver' || user.location == 'Boulder')",
    );
    let g = api.dynamic_group("Eng in CO", "user", rule.clone()).await;
    let x = api
        .get(&format!("/api/v1/groups/{g}/members/{ada}/explain"))
        .await
        .expect(200)
        .body;
    assert_eq!(x["member"], false, "{x}");
    let c = &x["rule"]["conditions"][0];
    assert_eq!(c["at"], "rule/expression", "{x}");
    assert_eq!(c["matched"], false, "{x}");
    let parts = &c["expression"]["parts"];
    assert_eq!(c["expression"]["chain"], "and", "{x}");
    assert_eq!(parts[0]["text"], "user.department == 'Engineering'", "{x}");
    assert_eq!(parts[0]["value"], true, "{x}");
    assert_eq!(
        parts[1]["text"], "user.location == 'Denver' || user.location == 'Boulder'",
        "{x}"
    );
    assert_eq!(parts[1]["value"], false, "{x}");

    let p = api
        .post(
            "/api/v1/groups/preview",
            json!({"subject": "user", "rule": expr("user.location.startsWith('Aus')")}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(p["members"]["count"], 1, "{p}");
}

#[tokio::test]
async fn review_mode_and_exemptions_apply_to_expressions() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"location": "Denver"})).await;
    let bob = api.user("bob", json!({"location": "Denver"})).await;
    let cy = api.user("cy", json!({"location": "Austin"})).await;
    let g = api
        .post(
            "/api/v1/groups",
            json!({"name": "Denver (reviewed)", "subject": "user", "type": "dynamic", "review": true,
                   "rule": expr("user.location == 'Denver'")}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(g["status"]["pending_suggestions"], 2, "{g}");
    let g = g["id"].as_str().unwrap().to_string();
    assert_eq!(api.member_ids(&g).await, Vec::<String>::new());
    api.post(
        &format!("/api/v1/groups/{g}/suggestions/accept"),
        json!({"subject_ids": [ada, bob]}),
    )
    .await
    .expect(200);
    assert_eq!(
        api.member_ids(&g).await,
        sorted(vec![ada.clone(), bob.clone()])
    );

    // Exemptions override the expression: "never" for bob, "always" for cy.
    let plain = api
        .dynamic_group("Denver", "user", expr("user.location == 'Denver'"))
        .await;
    for (subject, kind) in [(&bob, "never"), (&cy, "always")] {
        api.post(
            &format!("/api/v1/groups/{plain}/exemptions"),
            json!({"subject_id": subject, "kind": kind}),
        )
        .await
        .expect(200);
    }
    assert_eq!(
        api.member_ids(&plain).await,
        sorted(vec![ada.clone(), cy.clone()])
    );
}
