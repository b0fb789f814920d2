//! Import benchmark. Run after `plugins/build`:
//!
//!     cargo bench -p cohort --bench imports
//!
//! Imports BENCH_PEOPLE people (default 100,000) from a fake source on
//! loopback (pages of 1,000 as JSON, read by the `echo-importer` test
//! plugin through the sandbox's HTTP), in process: first into a directory
//! with no dynamic groups, then into a fresh one with BENCH_GROUPS dynamic
//! groups (default 50) over department and location, then the same feed
//! again (nothing to change). Every create is validated, audited, and
//! followed by the incremental group recompute. Before the first import, a
//! dry run of the same feed (every create rehearsed through the same write
//! path, nothing written) reports its time and the memory it took.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::Request;
use axum::response::Json;
use axum::routing::get;
use base64::Engine as _;
use cohort::clock::SystemClock;
use cohort::config::{Config, Secret};
use cohort::server;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";
const PAGE: usize = 1000;
const DEPARTMENTS: [&str; 8] = [
    "Engineering",
    "Sales",
    "Ops",
    "Finance",
    "Legal",
    "Support",
    "Marketing",
    "People",
];
const LOCATIONS: [&str; 5] = ["Denver", "Berlin", "Austin", "Dublin", "Tokyo"];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Source {
    people: usize,
    port: u16,
}

async fn people(
    State(s): State<Source>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let start = page * PAGE;
    let end = (start + PAGE).min(s.people);
    let people: Vec<Value> = (start..end)
        .map(|i| {
            json!({"id": format!("e{i}"), "email": format!("person{i}@example.com"),
                        "department": DEPARTMENTS[i % DEPARTMENTS.len()]})
        })
        .collect();
    let next =
        (end < s.people).then(|| format!("http://127.0.0.1:{}/people?page={}", s.port, page + 1));
    Json(json!({"people": people, "next": next}))
}

async fn call(app: &Router, method: &str, path: &str, body: Value) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(if method == "GET" {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

/// Starts a run and waits for it; returns it and the wall time.
async fn import(app: &Router, body: Value) -> (Value, Duration) {
    let t = Instant::now();
    let run = call(app, "POST", "/api/v1/import-runs", body).await;
    let id = run["id"].as_str().unwrap().to_string();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = call(
            app,
            "GET",
            &format!("/api/v1/import-runs/{id}"),
            Value::Null,
        )
        .await;
        if r["state"] != "running" {
            assert_eq!(r["state"], "completed", "{r}");
            return (r, t.elapsed());
        }
    }
}

/// A fresh server with the source plugin installed and `groups` dynamic
/// groups.
async fn app(dir: &std::path::Path, port: u16, groups: usize) -> Router {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        bootstrap_admin_key: Some(Secret::new(ADMIN_KEY)),
        // COHORT_STORAGE_ENGINE (and the other environment overrides)
        // choose what is measured.
        ..Config::load(None, |k| std::env::var(k).ok()).expect("benchmark configuration")
    };
    config.plugins.directory = Some(plugins);
    config.plugins.cache_dir =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache"));
    config.groups.full_recompute_hours = 0;
    // The fake upstream listens on loopback, which is refused by default.
    config.outbound.allow_private =
        vec![cohort::config::AllowPrivate("127.0.0.0/8".parse().unwrap())];
    let store = server::open_store(dir, &config.storage.open_options()).unwrap();
    let built = tokio::task::spawn_blocking(move || {
        server::build(&config, store, Arc::new(SystemClock)).unwrap()
    })
    .await
    .unwrap();
    let router = cohort::api::router(built.state);
    let wasm = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins/echo-importer.wasm"),
    )
    .expect("run plugins/build first");
    call(&router, "POST", "/api/v1/plugins", json!({
        "component": base64::engine::general_purpose::STANDARD.encode(&wasm),
        "manifest": {"name": "hr", "version": "1.0.0", "world": "directory-importer",
            "description": "the fake HR source", "allowed_hosts": [format!("127.0.0.1:{port}")],
            "config": [{"name": "url", "kind": "url", "required": true}, {"name": "token", "kind": "secret"}]}})).await;
    call(&router, "POST", "/api/v1/plugin-instances", json!({
        "name": "hr", "plugin": "hr", "config": {"url": format!("http://127.0.0.1:{port}/people?page=0")}})).await;
    for g in 0..groups {
        let dept = DEPARTMENTS[g % DEPARTMENTS.len()];
        let loc = LOCATIONS[g % LOCATIONS.len()];
        call(&router, "POST", "/api/v1/groups", json!({
            "name": format!("{dept} {g}"), "subject": "user", "type": "dynamic",
            "member_states": ["staged", "active"],
            // Half AND department with an email suffix, half OR a location.
            "rule": if g % 2 == 0 {
                json!({"conditions": [
                    {"attribute": "department", "operator": "equals", "values": [dept]},
                    {"attribute": "email", "operator": "ends_with", "values": [format!("{}@example.com", g % 10)]}]})
            } else {
                json!({"any": [
                    {"conditions": [{"attribute": "department", "operator": "equals", "values": [dept]}]},
                    {"conditions": [{"attribute": "location", "operator": "equals", "values": [loc]}]}]})
            }})).await;
    }
    router
}

fn main() {
    let n = env("BENCH_PEOPLE", 100_000);
    let groups = env("BENCH_GROUPS", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let source = Router::new()
            .route("/people", get(people))
            .with_state(Source { people: n, port });
        tokio::spawn(async move { axum::serve(listener, source).await.unwrap() });

        let mut report = Vec::new();
        for (label, g) in [("no dynamic groups", 0), ("with dynamic groups", groups)] {
            let dir = std::env::temp_dir().join(format!("cohort-import-bench-{}", Uuid::now_v7()));
            let router = app(&dir, port, g).await;
            if g == 0 {
                // The dry run first, on the empty directory: every create
                // rehearsed through the write path, nothing written. The
                // peak so far is the server before any import plus it.
                let before = support::peak_rss_mib();
                let (dry, took) = import(
                    &router,
                    json!({"instance": "hr", "new_users": "active", "dry_run": true}),
                )
                .await;
                assert_eq!(dry["counts"]["created"], n, "{dry}");
                report.push(format!(
                    "dry run of {n} people: {:.1} s, {:.0} people/s; peak RSS {:.0} MiB before it, {:.0} MiB after",
                    took.as_secs_f64(),
                    n as f64 / took.as_secs_f64(),
                    before,
                    support::peak_rss_mib()
                ));
            }
            let (run, took) =
                import(&router, json!({"instance": "hr", "new_users": "active"})).await;
            assert_eq!(run["counts"]["created"], n, "{run}");
            report.push(format!(
                "{n} people, {label} ({g}): {:.1} s, {:.0} people/s (run's own duration {} ms)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64(),
                run["duration_ms"]
            ));
            let (again, took) = import(&router, json!({"instance": "hr"})).await;
            assert_eq!(again["counts"]["unchanged"], n, "{again}");
            report.push(format!(
                "  the same feed again (nothing to change): {:.1} s",
                took.as_secs_f64()
            ));
            drop(router);
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!("\nimport benchmark (2 worker threads, in process, echo-importer over loopback)");
        for line in report {
            println!("  {line}");
        }
    });
    support::report_peak_rss("imports benchmark process, every import above");
}
