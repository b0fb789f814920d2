//! Several hosts over one PostgreSQL database behave as one Cohort: a write
//! through one is visible through the other, a group created on one host
//! governs the writes of the other, exactly one host runs the scheduled
//! work, and killing that host in the middle of a write load loses no
//! acknowledged write, leaves memberships that a full recompute does not
//! change, and moves the scheduled work to the survivor.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::collections::BTreeSet;

use cohort_tests::{Api, Server, plugin_env, postgres};
use serde_json::{Value, json};

/// A host on `database`, with the plugins and the secret key every host
/// shares.
fn host(database: &str) -> Server {
    let mut env: Vec<(&str, String)> = plugin_env();
    env.push(("COHORT_STORAGE_URL", database.to_string()));
    // Every host must have the same secret key (docs/operations.md).
    env.push((
        "COHORT_SECRET_KEY",
        "c2hhcmVkLWJ5LWV2ZXJ5LWhvc3Qtb2YtdGhpcy10ZXM=".into(),
    ));
    // The scheduler looks often, so that a take-over shows quickly.
    env.push(("COHORT_SCHEDULE_TICK_MS", "100".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&env)
}

/// Creates users through `api` until told to stop or the host dies;
/// returns the ids that were acknowledged, with their departments.
async fn load(api: Api, prefix: &'static str, n: usize) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for i in 0..n {
        let department = if i % 2 == 0 { "Eng" } else { "Sales" };
        let body = json!({
            "username": format!("{prefix}{i}"),
            "email": format!("{prefix}{i}@example.com"),
            "department": department,
            "state": "active",
        });
        match api.try_post("/api/v1/users", &body).await {
            Some((201, user)) => {
                acked.push((user["id"].as_str().unwrap().to_string(), department.into()))
            }
            Some((status, body)) => panic!("{prefix}{i}: {status} {body}"),
            // The host is gone: nothing more is acknowledged.
            None => break,
        }
    }
    acked
}

/// Whether `api`'s host says it runs the scheduled work, once its
/// scheduler has looked.
async fn runs_scheduled_work(api: &Api) -> bool {
    let ready = api.get("/readyz").await.body;
    ready["runs_scheduled_work"].as_bool().unwrap()
}

/// Waits (real time: two processes' schedulers) until exactly one of the
/// hosts says it runs the scheduled work; returns its index.
async fn leader(apis: &[&Api]) -> usize {
    for _ in 0..100 {
        let mut leading = Vec::new();
        for (i, api) in apis.iter().enumerate() {
            if runs_scheduled_work(api).await {
                leading.push(i);
            }
        }
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(leading.len() < 2, "two hosts run the scheduled work");
        #[allow(clippy::disallowed_methods)] // other processes' schedulers
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no host took the scheduled work within 10 s");
}

#[tokio::test]
async fn two_hosts_share_writes_and_survive_the_loss_of_one() {
    let database = postgres::fresh_database();
    let mut hosts = [host(&database), host(&database)];
    let apis = [hosts[0].admin(), hosts[1].admin()];
    // Exactly one runs the scheduled work; it is the one killed below, and
    // the other (`b`, the survivor) must take the work over.
    let victim = leader(&[&apis[0], &apis[1]]).await;
    let survivor = 1 - victim;
    let (api_a, api_b) = (apis[survivor].clone(), apis[victim].clone());

    // A write through one host is read through the other.
    let ada = api_a.create_user("ada").await;
    let id = ada["id"].as_str().unwrap();
    assert_eq!(
        api_b
            .get(&format!("/api/v1/users/{id}"))
            .await
            .expect(200)
            .body["username"],
        "ada"
    );
    // A group made on A after B started decides B's writes.
    let eng = api_a.equals_group("eng", "user", "department", "Eng").await;
    let grace = api_b
        .post(
            "/api/v1/users",
            json!({"username": "grace", "email": "grace@example.com", "department": "Eng", "state": "active"}),
        )
        .await
        .expect(201)
        .body;
    let grace = grace["id"].as_str().unwrap().to_string();
    assert_eq!(api_a.member_ids(&eng).await, vec![grace.clone()]);
    assert_eq!(api_b.member_ids(&eng).await, vec![grace.clone()]);
    // A member made on A and moved out by a change through B: B's copy of
    // the memberships must know what A wrote.
    let linus = api_a
        .post(
            "/api/v1/users",
            json!({"username": "linus", "email": "linus@example.com", "department": "Eng", "state": "active"}),
        )
        .await
        .expect(201)
        .body;
    let linus = linus["id"].as_str().unwrap().to_string();
    let mut both = vec![grace.clone(), linus.clone()];
    both.sort();
    assert_eq!(api_b.member_ids(&eng).await, both);
    api_b
        .patch(
            &format!("/api/v1/users/{linus}"),
            json!({"department": "Sales"}),
        )
        .await
        .expect(200);
    assert_eq!(api_a.member_ids(&eng).await, vec![grace.clone()]);

    // A plugin disabled through one host stops on the other (which only
    // reads, so it learns of it from its once-a-second look).
    api_a
        .post("/api/v1/plugins/csv/disable", json!({}))
        .await
        .expect(200);
    let mut disabled = false;
    for _ in 0..50 {
        let csv = api_b.get("/api/v1/plugins/csv").await.expect(200).body;
        if csv["enabled"] == false {
            disabled = true;
            break;
        }
        #[allow(clippy::disallowed_methods)] // the other process's look
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        disabled,
        "the plugin disabled through A still runs on B after 5 s"
    );
    api_a
        .post("/api/v1/plugins/csv/enable", json!({}))
        .await
        .expect(200);

    // An import on B that is still reading its source when B dies: the
    // source accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let interrupted = start_silent_import(&api_b, port).await;

    // Write load through both; B is killed part-way through.
    let on_a = tokio::spawn(load(api_a.clone(), "a", 120));
    let on_b = tokio::spawn(load(api_b.clone(), "b", 400));
    loop {
        let n = api_a.get("/api/v1/users?limit=500").await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len();
        if n >= 60 {
            break;
        }
        // Polling two processes' progress from outside: real time.
        #[allow(clippy::disallowed_methods)]
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Still reading its source (which times out after 10 s) when B dies.
    let before_kill = import_run(&api_b, &interrupted).await;
    assert_eq!(before_kill["state"], "running", "{before_kill}");
    hosts[victim].kill();
    let mut acked = on_a.await.unwrap();
    let from_b = on_b.await.unwrap();
    assert!(!from_b.is_empty(), "B acknowledged nothing before it died");
    assert!(from_b.len() < 400, "B was not killed during the load");
    acked.extend(from_b);
    acked.push((grace.clone(), "Eng".into()));

    // Every acknowledged write is there, read through the survivor.
    let stored: BTreeSet<String> = api_a
        .all_items("/api/v1/users")
        .await
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    for (id, _) in &acked {
        assert!(stored.contains(id), "acknowledged user {id} is missing");
    }
    // The survivor's memberships are what its rule says of every stored
    // user (B's unacknowledged but committed writes included), and a full
    // recompute changes nothing.
    let users = api_a.all_items("/api/v1/users").await;
    let expected: Vec<String> = {
        let mut v: Vec<String> = users
            .iter()
            .filter(|u| u["department"] == "Eng")
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let before = api_a.member_ids(&eng).await;
    assert_eq!(before, expected);
    let counts = api_a.recompute().await;
    assert_eq!(api_a.member_ids(&eng).await, before, "recompute: {counts}");
    // The survivor took the scheduled work over, and keeps taking writes.
    assert_eq!(leader(&[&api_a]).await, 0);
    api_a.create_user("after").await;
    // The import B was running is not left "running" for ever: the host
    // that took the scheduled work over marks it failed, naming B.
    let b_number = interrupted["host"].as_u64().unwrap();
    let mut run = Value::Null;
    // A host must look stopped for 15 s before its runs are closed.
    for _ in 0..300 {
        run = import_run(&api_a, &interrupted).await;
        if run["state"] != "running" {
            break;
        }
        #[allow(clippy::disallowed_methods)] // the other process's scheduler
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(
        run["failure"],
        format!("interrupted: the server running it stopped (host {b_number})"),
        "{run}"
    );
}

/// `run` as `api`'s host reads it now.
async fn import_run(api: &Api, run: &Value) -> Value {
    api.get(&format!(
        "/api/v1/import-runs/{}",
        run["id"].as_str().unwrap()
    ))
    .await
    .expect(200)
    .body
}

/// Starts an import on `api`'s host from a source on `port` that never
/// answers; returns the run, checked to be running on that host.
async fn start_silent_import(api: &Api, port: u16) -> Value {
    use base64::Engine as _;
    let wasm = std::fs::read(cohort_tests::plugins_dir().join("workday.wasm")).unwrap();
    api.post(
        "/api/v1/plugins",
        json!({"component": base64::engine::general_purpose::STANDARD.encode(&wasm), "manifest": {
            "name": "workday-silent", "version": "1.0.0", "world": "directory-importer",
            "description": "workday, allowed to reach a source that never answers",
            "allowed_hosts": [format!("127.0.0.1:{port}")],
            "config": [
                {"name": "report_url", "kind": "url", "required": true},
                {"name": "username", "kind": "text", "required": true},
                {"name": "password", "kind": "secret", "required": true},
                {"name": "mappings", "kind": "text-list"},
                {"name": "id_field", "kind": "text"}]}}),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "silent", "plugin": "workday-silent",
               "config": {"report_url": format!("http://127.0.0.1:{port}/report?format=json"),
                          "username": "isu", "password": "pw"}}),
    )
    .await
    .expect(201);
    let run = api
        .post("/api/v1/import-runs", json!({"instance": "silent"}))
        .await
        .expect(202)
        .body;
    let ready = api.get("/readyz").await.body;
    assert_eq!(run["state"], "running", "{run}");
    assert!(ready["host"].is_u64(), "{ready}");
    assert_eq!(run["host"], ready["host"], "{run} {ready}");
    run
}
