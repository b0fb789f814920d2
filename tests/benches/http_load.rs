//! Load benchmark over loopback HTTP, with the load generator (this process)
//! separate from the server (the real `cohort` binary).
//!
//!     cargo build --release --bin cohort
//!     cargo bench -p cohort-tests --bench http_load
//!
//! Phase 1 measures durable user creates per second: every 201 means the
//! user and its audit event were flushed to disk. Phase 2 measures
//! `GET /api/v1/users/{id}` per second. Both report p50/p99 latency.
//! Environment: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 64).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cohort_tests::{ADMIN_KEY, Server};
use serde_json::json;

struct Outcome {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

fn report(name: &str, o: &mut Outcome) {
    o.latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((o.latencies.len() as f64 * p) as usize).min(o.latencies.len().saturating_sub(1));
        o.latencies.get(i).copied().unwrap_or_default()
    };
    println!(
        "{name:<28} {:>10.0} req/s   ok {:>8}   errors {:>4}   p50 {:>7.2} ms   p99 {:>7.2} ms",
        o.ok as f64 / o.elapsed.as_secs_f64(),
        o.ok,
        o.errors,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

async fn drive<F, Fut>(connections: usize, seconds: u64, make: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let make = Arc::new(make);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let stop = Arc::clone(&stop);
        let make = Arc::clone(&make);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if make(c, i).await {
                    ok += 1;
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (ok, errors, lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome {
        ok: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (ok, errors, lat) = t.await.expect("load task");
        out.ok += ok;
        out.errors += errors;
        out.latencies.extend(lat);
    }
    out.elapsed = start.elapsed();
    out
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = std::env::var("BENCH_CONNECTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let server = Server::start();
    let base = server.base.clone();
    println!("cohort at {base}; {connections} connections, {seconds} s per phase");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();

    let created = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut creates = {
        let (client, base, created) = (client.clone(), base.clone(), Arc::clone(&created));
        rt.block_on(drive(connections, seconds, move |c, i| {
            let (client, base, created) = (client.clone(), base.clone(), Arc::clone(&created));
            async move {
                let name = format!("c{c}n{i}");
                let r = client
                    .post(format!("{base}/api/v1/users"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&json!({"username": name, "email": format!("{name}@example.com"), "department": "Bench"}))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        let v: serde_json::Value = resp.json().await.unwrap_or_default();
                        if let Some(id) = v["id"].as_str() {
                            created.lock().unwrap().push(id.to_string());
                        }
                        true
                    }
                    _ => false,
                }
            }
        }))
    };
    report("POST /api/v1/users (durable)", &mut creates);

    let ids = Arc::new(created.lock().unwrap().clone());
    assert!(!ids.is_empty(), "no user was created");
    let mut gets = {
        let (client, base, ids) = (client.clone(), base.clone(), Arc::clone(&ids));
        rt.block_on(drive(connections, seconds, move |c, i| {
            let (client, base) = (client.clone(), base.clone());
            let id = ids[(c * 7919 + i as usize * 104_729) % ids.len()].clone();
            async move {
                match client
                    .get(format!("{base}/api/v1/users/{id}"))
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }))
    };
    report("GET /api/v1/users/{id}", &mut gets);
    drop(server);
}
