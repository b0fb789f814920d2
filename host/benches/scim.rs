//! SCIM benchmark. Run after `plugins/build`:
//!
//!     cargo bench -p cohort --bench scim
//!
//! Creates users through `POST /scim/v2/Users`, in process (the router is
//! called without a socket), each durable and audited before it is
//! answered, one at a time and from several concurrent clients, with and
//! without a dynamic group that follows the department. Then looks users
//! up the way Okta does before every create (`userName eq`).
//!
//! Knobs: BENCH_CREATES (default 2000), BENCH_CONCURRENCY (default 8).

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cohort::clock::SystemClock;
use cohort::config::{Config, Secret};
use cohort::server;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        req = req.header("content-type", "application/scim+json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn user(run: &str, i: usize) -> Value {
    let name = format!("{run}-{i}@example.com");
    let department = ["Engineering", "Sales", "Ops", "Finance"][i % 4];
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": name, "externalId": format!("00u{i}"), "active": true,
        "name": {"givenName": "Bench", "familyName": format!("User {i}")},
        "emails": [{"value": name, "type": "work", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
            {"department": department},
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3
}

/// Creates `n` users from `concurrency` clients; returns creates per second
/// and the per-request latencies.
async fn creates(
    app: &Router,
    key: &str,
    run: &str,
    n: usize,
    concurrency: usize,
) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (app, key, run) = (app.clone(), key.to_string(), run.to_string());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut i = c;
            while i < n {
                let t = Instant::now();
                let (status, body) =
                    call(&app, "POST", "/scim/v2/Users", &key, Some(user(&run, i))).await;
                assert_eq!(status, 201, "{body}");
                times.push(t.elapsed());
                i += concurrency;
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

fn main() {
    let n = env("BENCH_CREATES", 2000);
    let concurrency = env("BENCH_CONCURRENCY", 8);
    let dir = std::env::temp_dir().join(format!("cohort-scim-bench-{}", Uuid::now_v7()));
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    assert!(
        plugins.join("rules-standard.wasm").exists(),
        "run plugins/build first"
    );
    let mut config = Config {
        data_dir: dir.clone(),
        bootstrap_admin_key: Some(Secret::new(ADMIN_KEY)),
        // COHORT_STORAGE_ENGINE (and the other environment overrides)
        // choose what is measured.
        ..Config::load(None, |k| std::env::var(k).ok()).expect("benchmark configuration")
    };
    config.plugins.directory = Some(plugins);
    config.plugins.cache_dir =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache"));
    config.groups.full_recompute_hours = 0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = server::open_store(&dir, &config.storage.open_options()).unwrap();
    let app = server::build(&config, store, Arc::new(SystemClock)).unwrap();
    let router = cohort::api::router(app.state);

    rt.block_on(async {
        let (_, key) = call(&router, "POST", "/api/v1/api-keys", ADMIN_KEY,
            Some(json!({"name": "bench-scim", "role": "scim"}))).await;
        let key = key["secret"].as_str().unwrap().to_string();
        let mut report = Vec::new();
        for (label, c) in [("one client", 1), ("concurrent clients", concurrency)] {
            let (rate, times) = creates(&router, &key, &format!("plain{c}"), n, c).await;
            report.push(format!(
                "POST /Users, {label} ({c}): {rate:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms",
                percentile(&times, 0.5), percentile(&times, 0.99)
            ));
        }
        let (status, body) = call(&router, "POST", "/api/v1/groups", ADMIN_KEY, Some(json!({
            "name": "Engineering", "subject": "user", "type": "dynamic",
            "rule": {"conditions": [{"attribute": "department", "operator": "equals", "values": ["Engineering"]}]}}))).await;
        assert!(status.is_success(), "{body}");
        let (rate, times) = creates(&router, &key, "grouped", n, concurrency).await;
        report.push(format!(
            "POST /Users, concurrent clients ({concurrency}), with a dynamic group on department: {rate:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms",
            percentile(&times, 0.5), percentile(&times, 0.99)
        ));
        let total = 3 * n;
        let t = Instant::now();
        for i in 0..n {
            let path = format!("/scim/v2/Users?filter=userName%20eq%20%22PLAIN1-{i}%40example.com%22");
            let (status, body) = call(&router, "GET", &path, &key, None).await;
            assert_eq!(status, 200);
            assert_eq!(body["totalResults"], 1, "{body}");
        }
        report.push(format!(
            "GET /Users?filter=userName eq (case-insensitive), {total} users: {:.0} lookups/s, one client",
            n as f64 / t.elapsed().as_secs_f64()
        ));
        println!("\nSCIM benchmark (2 worker threads, in process)");
        for line in report {
            println!("  {line}");
        }
    });
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
