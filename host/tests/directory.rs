//! CRUD flows for users, devices, bindings and custom attributes; pagination;
//! ETags and optimistic concurrency.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use common::InProcess;

use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn user_lifecycle() {
    let s = InProcess::start();
    let api = s.admin();

    let created = api
        .post(
            "/api/v1/users",
            json!({"username": "ada", "email": "Ada@Example.com", "first_name": "Ada", "department": "Engineering"}),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.header("location"), format!("/api/v1/users/{id}"));
    assert_eq!(created.header("etag"), "\"1\"");
    assert_eq!(created.body["state"], "staged");
    assert_eq!(created.body["version"], 1);

    let got = api.get(&format!("/api/v1/users/{id}")).await.expect(200);
    assert_eq!(got.body, created.body);

    // Merge patch: set one field, clear another.
    let patched = api
        .patch(
            &format!("/api/v1/users/{id}"),
            json!({"job_title": "Engineer", "first_name": null}),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["job_title"], "Engineer");
    assert_eq!(patched.body["first_name"], serde_json::Value::Null);
    assert_eq!(patched.body["department"], "Engineering");
    assert_eq!(patched.body["version"], 2);

    // An unchanged patch writes nothing and keeps the version.
    let same = api
        .patch(
            &format!("/api/v1/users/{id}"),
            json!({"job_title": "Engineer"}),
        )
        .await
        .expect(200);
    assert_eq!(same.body["version"], 2);

    // State transitions.
    let active = api
        .post(
            &format!("/api/v1/users/{id}/state"),
            json!({"state": "active"}),
        )
        .await
        .expect(200);
    assert_eq!(active.body["state"], "active");
    let suspended = api
        .post(
            &format!("/api/v1/users/{id}/state"),
            json!({"state": "suspended"}),
        )
        .await
        .expect(200);
    assert_eq!(suspended.body["state"], "suspended");
    api.post(
        &format!("/api/v1/users/{id}/state"),
        json!({"state": "active"}),
    )
    .await
    .expect(200);

    // Lookups by username and email are case-insensitive and exact.
    let by_name = api.get("/api/v1/users?username=ADA").await.expect(200);
    assert_eq!(by_name.body["items"][0]["id"], id.as_str());
    let by_email = api
        .get("/api/v1/users?email=ada@example.com")
        .await
        .expect(200);
    assert_eq!(by_email.body["items"].as_array().unwrap().len(), 1);

    api.delete(&format!("/api/v1/users/{id}")).await.expect(204);
    api.get(&format!("/api/v1/users/{id}")).await.expect(404);
    // The username is free again.
    api.create_user("ada").await;
}

#[tokio::test]
async fn managers_are_references_and_are_cleared_when_deleted() {
    let s = InProcess::start();
    let api = s.admin();
    let boss = api.create_user("boss").await;
    let boss_id = boss["id"].as_str().unwrap();
    let worker = api
        .post(
            "/api/v1/users",
            json!({"username": "worker", "email": "worker@example.com", "manager_id": boss_id}),
        )
        .await
        .expect(201);
    let worker_id = worker.body["id"].as_str().unwrap();
    let r = api
        .patch(
            &format!("/api/v1/users/{worker_id}"),
            json!({"manager_id": worker_id}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "manager_id");
    let r = api
        .patch(
            &format!("/api/v1/users/{worker_id}"),
            json!({"manager_id": "01890a5d-ac96-774b-bcce-b302099a8057"}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "manager_id");

    api.delete(&format!("/api/v1/users/{boss_id}"))
        .await
        .expect(204);
    let w = api
        .get(&format!("/api/v1/users/{worker_id}"))
        .await
        .expect(200);
    assert_eq!(w.body["manager_id"], serde_json::Value::Null);
    assert_eq!(w.body["version"], 2);
}

#[tokio::test]
async fn devices_check_ins_and_bindings() {
    let s = InProcess::start();
    let api = s.admin();
    let user = api.create_user("grace").await;
    let uid = user["id"].as_str().unwrap();
    let dev = api
        .post(
            "/api/v1/devices",
            json!({"hostname": "grace-mbp", "os_family": "macos", "os_version": "14.5", "serial_number": "C02XYZ"}),
        )
        .await
        .expect(201);
    let did = dev.body["id"].as_str().unwrap().to_string();
    assert_eq!(dev.body["last_contact"], serde_json::Value::Null);

    let checked = api
        .post(
            &format!("/api/v1/devices/{did}/check-in"),
            json!({"os_version": "15.1", "disk_encryption": true, "agent_version": "1.2.0"}),
        )
        .await
        .expect(200);
    assert_eq!(checked.body["os_version"], "15.1");
    assert_eq!(checked.body["disk_encryption"], true);
    assert_eq!(checked.body["serial_number"], "C02XYZ");
    assert!(checked.body["last_contact"].is_string());

    let patched = api
        .patch(
            &format!("/api/v1/devices/{did}"),
            json!({"display_name": "Grace's laptop"}),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["display_name"], "Grace's laptop");
    let r = api
        .patch(
            &format!("/api/v1/devices/{did}"),
            json!({"last_contact": "2020-01-01T00:00:00Z"}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "last_contact");

    api.put(&format!("/api/v1/users/{uid}/devices/{did}"))
        .await
        .expect(201);
    api.put(&format!("/api/v1/users/{uid}/devices/{did}"))
        .await
        .expect(200);
    let of_user = api
        .get(&format!("/api/v1/users/{uid}/devices"))
        .await
        .expect(200);
    assert_eq!(of_user.body["items"][0]["device_id"], did.as_str());
    let of_device = api
        .get(&format!("/api/v1/devices/{did}/users"))
        .await
        .expect(200);
    assert_eq!(of_device.body["items"][0]["user_id"], uid);

    api.delete(&format!("/api/v1/users/{uid}/devices/{did}"))
        .await
        .expect(204);
    api.delete(&format!("/api/v1/users/{uid}/devices/{did}"))
        .await
        .expect(404);
    let of_device = api
        .get(&format!("/api/v1/devices/{did}/users"))
        .await
        .expect(200);
    assert_eq!(of_device.body["items"].as_array().unwrap().len(), 0);

    // Deleting a device removes its bindings in both directions.
    api.put(&format!("/api/v1/users/{uid}/devices/{did}"))
        .await
        .expect(201);
    api.delete(&format!("/api/v1/devices/{did}"))
        .await
        .expect(204);
    let of_user = api
        .get(&format!("/api/v1/users/{uid}/devices"))
        .await
        .expect(200);
    assert_eq!(of_user.body["items"].as_array().unwrap().len(), 0);
    api.get(&format!("/api/v1/devices/{did}/users"))
        .await
        .expect(404);

    let by_host = api
        .get("/api/v1/devices?hostname=GRACE-MBP")
        .await
        .expect(200);
    assert_eq!(by_host.body["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn custom_attributes_are_declared_typed_and_filterable() {
    let s = InProcess::start();
    let api = s.admin();
    for (name, ty) in [
        ("level", "number"),
        ("start_date", "date"),
        ("skills", "string_list"),
        ("remote", "boolean"),
    ] {
        api.post(
            "/api/v1/attributes",
            json!({"name": name, "subject": "user", "type": ty}),
        )
        .await
        .expect(201);
    }
    let r = api
        .post(
            "/api/v1/attributes",
            json!({"name": "department", "subject": "user", "type": "string"}),
        )
        .await
        .expect(409);
    assert_eq!(r.code(), "attribute_exists");

    let u = api
        .post(
            "/api/v1/users",
            json!({"username": "lin", "email": "lin@example.com", "custom_attributes": {
                "level": 3, "start_date": "2026-03-01", "skills": ["rust", "go"], "remote": true}}),
        )
        .await
        .expect(201);
    let id = u.body["id"].as_str().unwrap();
    api.create_user("other").await;

    for q in [
        "level=3",
        "skills=rust",
        "remote=true",
        "start_date=2026-03-01",
    ] {
        let r = api.get(&format!("/api/v1/users?{q}")).await.expect(200);
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{q}");
        assert_eq!(items[0]["id"], id);
    }
    let r = api.get("/api/v1/users?level=three").await.expect(400);
    assert_eq!(r.field(), "level");

    for (bad, field) in [
        (json!({"level": "3"}), "custom_attributes.level"),
        (
            json!({"start_date": "yesterday"}),
            "custom_attributes.start_date",
        ),
        (json!({"skills": ["ok", 1]}), "custom_attributes.skills[1]"),
        (json!({"undeclared": 1}), "custom_attributes.undeclared"),
    ] {
        let r = api
            .patch(
                &format!("/api/v1/users/{id}"),
                json!({ "custom_attributes": bad }),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), field);
    }

    // In use: cannot delete; after removing the value, can.
    api.delete("/api/v1/attributes/user/level")
        .await
        .expect(409);
    api.patch(
        &format!("/api/v1/users/{id}"),
        json!({"custom_attributes": {"level": null}}),
    )
    .await
    .expect(200);
    api.delete("/api/v1/attributes/user/level")
        .await
        .expect(204);
    api.get("/api/v1/attributes/user/level").await.expect(404);

    let schema = api.get("/api/v1/attributes?subject=user").await.expect(200);
    let names: Vec<&str> = schema.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"department") && names.contains(&"skills") && !names.contains(&"level")
    );
    let described = api
        .patch(
            "/api/v1/attributes/user/skills",
            json!({"description": "What they know"}),
        )
        .await
        .expect(200);
    assert_eq!(described.body["description"], "What they know");
}

#[tokio::test]
async fn pagination_walks_every_user_once_in_each_sort_order() {
    let s = InProcess::start();
    let api = s.admin();
    let mut names: Vec<String> = (0..23)
        .map(|i| format!("user{:02}", (i * 7) % 23))
        .collect();
    for n in &names {
        api.create_user(n).await;
    }
    names.sort();
    for (sort, expected) in [
        ("username", names.clone()),
        ("-username", names.iter().rev().cloned().collect::<Vec<_>>()),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/api/v1/users?limit=5&sort={sort}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = api.get(&path).await.expect(200);
            pages += 1;
            for u in r.body["items"].as_array().unwrap() {
                seen.push(u["username"].as_str().unwrap().to_string());
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "sort {sort}");
        assert_eq!(pages, 5);
    }
    // Creation order, filtered.
    let r = api
        .get("/api/v1/users?limit=500&state=staged")
        .await
        .expect(200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 23);
    // A cursor from one sort is refused by another.
    let first = api
        .get("/api/v1/users?limit=5&sort=username")
        .await
        .expect(200);
    let c = first.body["next_cursor"].as_str().unwrap();
    let r = api
        .get(&format!("/api/v1/users?limit=5&sort=email&cursor={c}"))
        .await
        .expect(400);
    assert_eq!(r.field(), "cursor");
}

#[tokio::test]
async fn etags_guard_against_lost_updates() {
    let s = InProcess::start();
    let api = s.admin();
    let u = api.create_user("etag").await;
    let path = format!("/api/v1/users/{}", u["id"].as_str().unwrap());
    let etag = api.get(&path).await.expect(200).header("etag").to_string();
    assert_eq!(etag, "\"1\"");

    let first = api
        .send(
            Method::PATCH,
            &path,
            Some(&json!({"phone": "1"})),
            &[("if-match", &etag)],
        )
        .await
        .expect(200);
    assert_eq!(first.header("etag"), "\"2\"");
    // A second writer with the old ETag loses, and nothing is written.
    let stale = api
        .send(
            Method::PATCH,
            &path,
            Some(&json!({"phone": "2"})),
            &[("if-match", &etag)],
        )
        .await
        .expect(412);
    assert_eq!(stale.code(), "precondition_failed");
    assert_eq!(api.get(&path).await.body["phone"], "1");
    api.send(
        Method::POST,
        &format!("{path}/state"),
        Some(&json!({"state": "active"})),
        &[("if-match", "\"1\"")],
    )
    .await
    .expect(412);
    api.send(Method::DELETE, &path, None, &[("if-match", "\"1\"")])
        .await
        .expect(412);
    api.send(Method::DELETE, &path, None, &[("if-match", "W/\"2\"")])
        .await
        .expect(204);
}
