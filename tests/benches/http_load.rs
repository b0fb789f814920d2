//! Load benchmark over loopback HTTP, with the load generator (this process)
//! separate from the server (the real `cohort` binary).
//!
//!     cargo build --release --bin cohort
//!     cargo bench -p cohort-tests --bench http_load
//!
//! Phase 1 measures durable user creates per second: every 201 means the
//! user and its audit event were flushed to disk. Phase 2 measures
//! `GET /api/v1/users/{id}` per second. Both report p50/p99 latency.
//! Environment: BENCH_SECONDS (default 10), BENCH_CREATE_CONNECTIONS
//! (default 128), BENCH_GET_CONNECTIONS (default 32), BENCH_CLIENT_THREADS
//! (default 1), COHORT_STORAGE_ENGINE (the server's engine),
//! COHORT_TEST_STORAGE=postgres (the server on a PostgreSQL database the
//! harness starts), BENCH_HOSTS (default 1; more: that many servers over one
//! PostgreSQL database, the connections spread over them). Ends with each
//! server's peak resident memory.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort_tests::{ADMIN_KEY, Server};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
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

/// One keep-alive HTTP/1.1 connection, used by one task at a time: the
/// leanest client there is, so the generator leaves the cores to the server.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn {
            send,
            host: addr.to_string(),
        }
    }

    /// Sends one request; returns the status and body.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Option<(u16, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {ADMIN_KEY}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .ok()?;
        self.send.ready().await.ok()?;
        let resp = self.send.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    }
}

/// Runs one task per connection for `seconds`; `op` makes one request and
/// says whether it succeeded.
async fn drive<F>(addrs: &[String], connections: usize, seconds: u64, op: F) -> Outcome
where
    F: for<'a> Fn(
            &'a mut Conn,
            usize,
            u64,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>
        + Send
        + Sync
        + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let op = Arc::new(op);
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for c in 0..connections {
        // Spread over the hosts, as a round-robin proxy would.
        conns.push(Conn::open(&addrs[c % addrs.len()]).await);
    }
    let start = Instant::now();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let stop = Arc::clone(&stop);
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if op(&mut conn, c, i).await {
                    ok += 1;
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                    conn = Conn::open(&conn.host.clone()).await;
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let create_conns: usize = env_or("BENCH_CREATE_CONNECTIONS", 128);
    let get_conns: usize = env_or("BENCH_GET_CONNECTIONS", 32);
    // One generator thread: the server gets the rest of the machine.
    let threads: usize = env_or("BENCH_CLIENT_THREADS", 1);
    // BENCH_HOSTS > 1: that many servers over one PostgreSQL database
    // (the test server, started here), each with the same secret key.
    let hosts: usize = env_or("BENCH_HOSTS", 1);
    let servers: Vec<Server> = if hosts <= 1 {
        vec![Server::start()]
    } else {
        let database = cohort_tests::postgres::fresh_database();
        (0..hosts)
            .map(|_| {
                Server::start_with(&[
                    ("COHORT_STORAGE_URL", database.as_str()),
                    (
                        "COHORT_SECRET_KEY",
                        "YmVuY2htYXJrLWhvc3RzLXNoYXJlLW9uZS1rZXktLS0=",
                    ),
                ])
            })
            .collect()
    };
    let addrs: Vec<String> = servers
        .iter()
        .map(|s| s.base.trim_start_matches("http://").to_string())
        .collect();
    println!(
        "cohort at {}; {seconds} s per phase; creates over {create_conns} connections, gets over {get_conns}; generator threads {threads}",
        addrs.join(", ")
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();

    let created = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&created);
    let mut creates = rt.block_on(drive(&addrs, create_conns, seconds, move |conn, c, i| {
        let sink = Arc::clone(&sink);
        Box::pin(async move {
            let name = format!("c{c}n{i}");
            let body = serde_json::to_vec(&json!({
                "username": name, "email": format!("{name}@example.com"), "department": "Bench"
            }))
            .unwrap();
            match conn.call(Method::POST, "/api/v1/users", Some(body)).await {
                Some((201, bytes)) => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        sink.lock().unwrap().push(id.to_string());
                    }
                    true
                }
                _ => false,
            }
        })
    }));
    report("POST /api/v1/users (durable)", &mut creates);

    let ids = Arc::new(created.lock().unwrap().clone());
    assert!(!ids.is_empty(), "no user was created");
    let mut gets = rt.block_on(drive(&addrs, get_conns, seconds, move |conn, c, i| {
        let path = format!(
            "/api/v1/users/{}",
            ids[(c * 7919 + i as usize * 104_729) % ids.len()]
        );
        Box::pin(async move { matches!(conn.call(Method::GET, &path, None).await, Some((200, _))) })
    }));
    report("GET /api/v1/users/{id}", &mut gets);
    for server in &servers {
        if let Some(status) = server
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            println!(
                "server {} peak resident memory: {:.0} MiB ({} users created in all)",
                server.base,
                kib / 1024.0,
                created.lock().unwrap().len()
            );
        }
    }
    drop(servers);
}
