//! Every mutation leaves one audit event, with actor, action, resource,
//! diff, request id, client address and user agent; the log can be
//! queried, paged and exported.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
use crate::common;

use common::InProcess;

use cohort_tests::{ADMIN_KEY, Api};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn each_mutation_records_one_event_with_its_diff() {
    let s = InProcess::start();
    let api = s.admin();
    let key = api.create_key("ops-bot", "admin").await;
    let bot = s.client(Some(&key));

    let r = bot
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&json!({"username": "kim", "email": "kim@example.com", "department": "Sales"})),
            &[("x-request-id", "req-create-kim")],
        )
        .await
        .expect(201);
    assert_eq!(r.header("x-request-id"), "req-create-kim");
    let uid = r.body["id"].as_str().unwrap().to_string();
    let upath = format!("/api/v1/users/{uid}");
    // The server's clock stands still unless moved: a second between the
    // creation and what follows, for the time-range queries below.
    s.advance(chrono::Duration::seconds(1));
    bot.patch(&upath, json!({"department": "Support"}))
        .await
        .expect(200);
    bot.post(&format!("{upath}/state"), json!({"state": "active"}))
        .await
        .expect(200);
    let d = bot
        .post(
            "/api/v1/devices",
            json!({"hostname": "kim-pc", "os_family": "windows"}),
        )
        .await
        .expect(201);
    let did = d.body["id"].as_str().unwrap().to_string();
    bot.post(
        &format!("/api/v1/devices/{did}/check-in"),
        json!({"os_version": "11"}),
    )
    .await
    .expect(200);
    bot.patch(
        &format!("/api/v1/devices/{did}"),
        json!({"display_name": "Kim's PC"}),
    )
    .await
    .expect(200);
    bot.put(&format!("{upath}/devices/{did}")).await.expect(201);
    bot.delete(&format!("{upath}/devices/{did}"))
        .await
        .expect(204);
    bot.post(
        "/api/v1/attributes",
        json!({"name": "tier", "subject": "device", "type": "string"}),
    )
    .await
    .expect(201);
    bot.patch(
        "/api/v1/attributes/device/tier",
        json!({"description": "Support tier"}),
    )
    .await
    .expect(200);
    bot.delete("/api/v1/attributes/device/tier")
        .await
        .expect(204);
    bot.delete(&format!("/api/v1/devices/{did}"))
        .await
        .expect(204);
    bot.delete(&upath).await.expect(204);

    let all = api
        .get("/api/v1/audit?actor=ops-bot&order=asc&limit=100")
        .await
        .expect(200);
    let events = all.body["items"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.create",
            "user.update",
            "user.state_change",
            "device.create",
            "device.check_in",
            "device.update",
            "binding.create",
            "binding.delete",
            "attribute.create",
            "attribute.update",
            "attribute.delete",
            "device.delete",
            "user.delete",
        ]
    );
    for e in events {
        assert_eq!(e["actor"], "ops-bot");
        assert!(e["time"].is_string() && e["request_id"].is_string());
    }
    let create = &events[0];
    assert_eq!(create["request_id"], "req-create-kim");
    assert_eq!(create["resource_type"], "user");
    assert_eq!(create["resource_id"], uid.as_str());
    assert_eq!(
        create["changes"]["username"],
        json!({"before": null, "after": "kim"})
    );
    let update = &events[1];
    assert_eq!(
        update["changes"],
        json!({"department": {"before": "Sales", "after": "Support"}})
    );
    assert_eq!(
        events[2]["changes"]["state"],
        json!({"before": "staged", "after": "active"})
    );
    assert_eq!(
        events[12]["changes"]["username"],
        json!({"before": "kim", "after": null})
    );

    // The history of one resource, newest first.
    let history = api
        .get(&format!(
            "/api/v1/audit?resource_type=user&resource_id={uid}"
        ))
        .await
        .expect(200);
    let hist: Vec<&str> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        hist,
        [
            "user.delete",
            "user.state_change",
            "user.update",
            "user.create"
        ]
    );
    let by_action = api
        .get("/api/v1/audit?action=device.check_in")
        .await
        .expect(200);
    assert_eq!(by_action.body["items"].as_array().unwrap().len(), 1);

    // Time range: everything from the first event on, nothing before it.
    let t0 = create["time"].as_str().unwrap();
    let from = api
        .get(&format!("/api/v1/audit?actor=ops-bot&from={t0}&limit=100"))
        .await
        .expect(200);
    assert_eq!(from.body["items"].as_array().unwrap().len(), 13);
    let before = api
        .get(&format!("/api/v1/audit?to={t0}&limit=100"))
        .await
        .expect(200);
    assert!(
        before.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] != "ops-bot")
    );
    let ranged = api
        .get(&format!(
            "/api/v1/audit?from={t0}&to={}&limit=100",
            events[1]["time"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert!(
        ranged.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "user.create")
    );

    // Pagination across the whole log.
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = api
            .get(&format!("/api/v1/audit?limit=4{cursor}"))
            .await
            .expect(200);
        ids.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted, "newest first, no repeats");
    assert_eq!(
        ids.len(),
        22,
        "7 built-in groups + bootstrap key + ops-bot key + 13 changes"
    );
}

#[tokio::test]
async fn export_as_json_lines_and_csv_without_secrets() {
    let s = InProcess::start();
    let api = s.admin();
    let secret = api.create_key("exporter", "read-only").await;
    api.post(
        "/api/v1/users",
        json!({"username": "csv", "email": "csv@example.com", "description": "has, a comma and \"quotes\""}),
    )
    .await
    .expect(201);

    let (status, jsonl) = api.get_text("/api/v1/audit/export?order=asc").await;
    assert!(status.is_success());
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 7 built-in groups, the bootstrap key, the exporter key, the user.
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[9]["action"], "user.create");

    let (status, csv) = api
        .get_text("/api/v1/audit/export?format=csv&action=user.create")
        .await;
    assert!(status.is_success());
    let mut rows = csv.split("\r\n").filter(|l| !l.is_empty());
    assert_eq!(
        rows.next().unwrap(),
        "id,time,actor,actor_key_id,action,resource_type,resource_id,request_id,changes,client_address,user_agent"
    );
    let row = rows.next().unwrap();
    assert!(row.contains(",user.create,user,"), "{row}");
    // The test client sends no User-Agent: the address, then an empty column.
    assert!(row.ends_with(",127.0.0.1,"), "{row}");
    // The changes column is JSON inside a quoted CSV field.
    assert!(row.contains(r#"has, a comma and \""quotes\"""#), "{row}");
    assert!(rows.next().is_none());

    for text in [&jsonl, &csv, &s.log()] {
        assert!(!text.contains(&secret), "a key secret leaked");
        assert!(!text.contains(ADMIN_KEY), "the bootstrap key leaked");
    }
    let r = api.get("/api/v1/audit/export?format=xml").await.expect(400);
    assert_eq!(r.field(), "format");
    // Filters that cannot be combined are refused before the export starts
    // streaming (once it has, a 200 has gone out and only a cut-off body
    // could tell the client).
    let r = api
        .get("/api/v1/audit/export?resource_id=01890a5d-ac96-774b-bcce-b302099a8057")
        .await
        .expect(400);
    assert_eq!((r.code(), r.field()), ("invalid_query", "resource_id"));
}

/// The events of `action` on `resource_id`, newest first.
async fn events(api: &Api, action: &str, resource_id: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/audit?action={action}&limit=500"))
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| resource_id.is_empty() || e["resource_id"] == resource_id)
        .cloned()
        .collect()
}

#[track_caller]
fn from(e: &Value, address: &str, user_agent: &str) {
    assert_eq!(e["client_address"], address, "{e}");
    assert_eq!(e["user_agent"], user_agent, "{e}");
}

#[tokio::test]
async fn without_trusted_proxies_the_peer_is_recorded_and_forwarded_for_ignored() {
    let s = InProcess::start();
    let api = s.admin();
    let r = api
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&json!({"username": "ivy", "email": "ivy@example.com"})),
            &[
                ("user-agent", "admin-cli/1.4 (linux)"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap();
    let created = &events(&api, "user.create", id).await[0];
    from(created, "127.0.0.1", "admin-cli/1.4 (linux)");
    // Changes Cohort made on its own have neither.
    let key = &events(&api, "api_key.create", "").await[0];
    assert_eq!(key["actor"], "system", "{key}");
    assert!(key["client_address"].is_null() && key["user_agent"].is_null());
}

#[tokio::test]
async fn behind_a_trusted_proxy_every_kind_of_change_records_the_forwarded_client() {
    // The tests reach the server over loopback, so loopback is the proxy.
    let s = InProcess::start_with_plugins(&[("COHORT_TRUSTED_PROXIES", "127.0.0.1/32, ::1")]);
    let api = s.admin();
    let via = |ua: &'static str, xff: &'static str| [("user-agent", ua), ("x-forwarded-for", xff)];

    // The admin API. The client made up its first hop; the proxy's own
    // entry names the address it saw.
    let r = api
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&json!({"username": "ada", "email": "ada@example.com", "state": "active"})),
            &via("console/3.1", "192.0.2.1, 203.0.113.9"),
        )
        .await
        .expect(201);
    let ada = r.body["id"].as_str().unwrap().to_string();
    from(
        &events(&api, "user.create", &ada).await[0],
        "203.0.113.9",
        "console/3.1",
    );
    // The group memberships the change caused are the same request's.
    let joined = events(&api, "group.member_add", "").await;
    let all_users = joined
        .iter()
        .find(|e| e["changes"]["subject_id"]["after"] == ada.as_str())
        .unwrap_or_else(|| panic!("no membership event for ada: {joined:?}"));
    from(all_users, "203.0.113.9", "console/3.1");

    // A header that does not parse is not believed: the peer is recorded.
    let r = api
        .send(
            Method::PATCH,
            &format!("/api/v1/users/{ada}"),
            Some(&json!({"department": "R&D"})),
            &via("console/3.1", "203.0.113.9, unknown"),
        )
        .await
        .expect(200);
    assert_eq!(r.body["department"], "R&D");
    from(
        &events(&api, "user.update", &ada).await[0],
        "127.0.0.1",
        "console/3.1",
    );

    // SCIM.
    let scim_key = api.create_key("okta", "scim").await;
    let r = cohort_tests::http_client()
        .post(format!("{}/scim/v2/Users", s.base))
        .bearer_auth(&scim_key)
        .header("content-type", "application/scim+json")
        .header("user-agent", "Okta SCIM Client 1.0.0")
        .header("x-forwarded-for", "198.51.100.20")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "bo@example.com", "emails": [{"value": "bo@example.com", "primary": true}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let bo: Value = r.json().await.unwrap();
    let scim_created = &events(&api, "user.create", bo["id"].as_str().unwrap()).await[0];
    assert_eq!(scim_created["actor"], "okta");
    from(scim_created, "198.51.100.20", "Okta SCIM Client 1.0.0");

    // A password sign-in: the success, and the session it opened.
    api.put_json(
        &format!("/api/v1/users/{ada}/password"),
        json!({"password": "correct horse battery"}),
    )
    .await
    .expect(204);
    let r = cohort_tests::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/sign-in/password", s.base))
        .header("cookie", "cohort_csrf=form-token")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
        )
        .header("x-forwarded-for", "192.0.2.77")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("identifier=ada&password=correct%20horse%20battery&csrf=form-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let firefox = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0";
    from(
        &events(&api, "sign_in.success", &ada).await[0],
        "192.0.2.77",
        firefox,
    );
    from(
        &events(&api, "session.open", "").await[0],
        "192.0.2.77",
        firefox,
    );

    // An import run started by a request: every change it makes.
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "people-csv", "plugin": "csv",
               "config": {"data": "email,first name\ncy@example.com,Cy\ndi@example.com,Di\n"}}),
    )
    .await
    .expect(201);
    let run = api
        .send(
            Method::POST,
            "/api/v1/import-runs",
            Some(&json!({"instance": "people-csv", "new_users": "active"})),
            &via("hr-sync/2", "192.0.2.99"),
        )
        .await
        .expect(202)
        .body;
    let done = api.wait_for_import(run["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "completed", "{done}");
    let imported: Vec<Value> = events(&api, "user.create", "")
        .await
        .into_iter()
        .filter(|e| e["actor"] == "import:people-csv")
        .collect();
    assert_eq!(imported.len(), 2, "{imported:?}");
    for e in &imported {
        from(e, "192.0.2.99", "hr-sync/2");
        assert_eq!(e["request_id"], run["id"], "events name the run");
    }

    // Exports carry both, in JSON lines and CSV.
    let (_, jsonl) = api
        .get_text("/api/v1/audit/export?action=sign_in.success")
        .await;
    let line: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    from(&line, "192.0.2.77", firefox);
    let (_, csv) = api
        .get_text("/api/v1/audit/export?format=csv&action=sign_in.success")
        .await;
    let row = csv.split("\r\n").nth(1).unwrap();
    assert!(row.ends_with(&format!(",192.0.2.77,{firefox}")), "{row}");
}
