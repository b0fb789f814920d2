//! Disk soak benchmark:
//!
//!     cargo bench -p cohort --bench soak
//!
//! Creates BENCH_USERS users (default 100,000), then makes BENCH_UPDATES
//! attribute updates (default 1,000,000) to random users, in process through
//! the directory's own write path (validation, audit event, durable commit),
//! from BENCH_CONCURRENCY concurrent writers (default 64). Every
//! BENCH_SAMPLE updates (default 100,000) it prints the data directory's size
//! on disk against the live data (the bytes of every key and value the store
//! holds), so that a directory that only grows shows as a rising ratio. The
//! update phase stops early after BENCH_SECONDS (default 1,200) and says so.
//! COHORT_STORAGE_ENGINE picks the engine (fjall, the default, or sled).

// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cohort::clock::SystemClock;
use cohort::config::{Config, Secret};
use cohort::directory::UserInput;
use cohort::server;
use cohort_storage::Store;
use serde_json::json;
use uuid::Uuid;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sample(label: &str, store: &Store, dir: &Path) -> f64 {
    let live = store.live_size().expect("live size");
    let disk = support::disk_bytes(dir);
    let ratio = disk as f64 / live.bytes.max(1) as f64;
    println!(
        "{label:<34} disk {:>8.1} MiB   live {:>8.1} MiB ({:>9} entries)   disk/live {ratio:>5.2}   rss {:>6.0} MiB",
        disk as f64 / 1048576.0,
        live.bytes as f64 / 1048576.0,
        live.entries,
        support::rss_mib(),
    );
    ratio
}

fn main() {
    let n_users = env("BENCH_USERS", 100_000);
    let n_updates = env("BENCH_UPDATES", 1_000_000);
    let concurrency = env("BENCH_CONCURRENCY", 64);
    let every = env("BENCH_SAMPLE", 100_000).max(1);
    let budget = Duration::from_secs(env("BENCH_SECONDS", 1_200));

    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let config = Config {
        data_dir: dir.clone(),
        bootstrap_admin_key: Some(Secret::new(ADMIN_KEY)),
        // COHORT_STORAGE_ENGINE (and the other environment overrides)
        // choose what is measured.
        ..Config::load(None, |k| std::env::var(k).ok()).expect("benchmark configuration")
    };
    println!(
        "engine {}, cache {} MiB, {n_users} users, {n_updates} updates, {concurrency} writers",
        config.storage.engine, config.storage.cache_mb
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = server::open_store(&dir, &config.storage.open_options()).expect("store");
    let app = server::build(&config, store.clone(), Arc::new(SystemClock)).expect("app");
    let state = app.state;

    rt.block_on(async {
        let principal = state
            .keys
            .authenticate(ADMIN_KEY, &cohort::auth::Origin::internal("bench"))
            .expect("authenticate")
            .expect("admin key");
        let principal = Arc::new(principal);

        // Users, from concurrent writers.
        let t = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (state, principal, next) =
                (state.clone(), Arc::clone(&principal), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                let cap = principal.manage_directory().expect("admin");
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n_users {
                        return ids;
                    }
                    let input: UserInput = serde_json::from_value(json!({
                        "username": format!("user{i}"),
                        "email": format!("user{i}@d{}.example", i % 1000),
                        "state": "active",
                        "department": format!("Dept{}", i % 50),
                        "location": format!("City{}", i % 20),
                        "job_title": "Engineer",
                    }))
                    .expect("input");
                    let user = state
                        .directory
                        .create_user(&cap, input)
                        .await
                        .expect("create");
                    ids.push(user.id);
                }
            }));
        }
        let mut ids: Vec<Uuid> = Vec::with_capacity(n_users as usize);
        for task in tasks {
            ids.extend(task.await.expect("creator"));
        }
        let created = t.elapsed();
        println!(
            "{n_users} users created in {:.1} s ({:.0}/s, each durable)",
            created.as_secs_f64(),
            n_users as f64 / created.as_secs_f64()
        );
        let ids = Arc::new(ids);
        let first = sample("after the users", &store, &dir);

        // Updates: random department and title changes to random users.
        let t = Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let mut worst = first;
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let (state, principal, ids, done) = (
                state.clone(),
                Arc::clone(&principal),
                Arc::clone(&ids),
                Arc::clone(&done),
            );
            tasks.push(tokio::spawn(async move {
                let cap = principal.manage_directory().expect("admin");
                let mut rng = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                loop {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= n_updates || t.elapsed() > budget {
                        return;
                    }
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let id = ids[(rng % ids.len() as u64) as usize];
                    let patch = json!({
                        "department": format!("Dept{}", (rng >> 20) % 50),
                        "job_title": format!("Title {}", (rng >> 32) % 400),
                    });
                    // A concurrent writer may have changed the same user; the
                    // update carries no If-Match, so it simply applies.
                    state
                        .directory
                        .update_user(&cap, &id, &patch, None)
                        .await
                        .expect("update");
                }
            }));
        }
        // Sample while the writers run.
        let mut next_sample = every;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = done.load(Ordering::Relaxed).min(n_updates);
            let finished = tasks.iter().all(|t| t.is_finished());
            if n >= next_sample || finished {
                let ratio = sample(&format!("after {n} updates"), &store, &dir);
                worst = worst.max(ratio);
                next_sample = (n / every + 1) * every;
            }
            if finished {
                break;
            }
        }
        for task in tasks {
            task.await.expect("updater");
        }
        let n = done.load(Ordering::Relaxed).min(n_updates);
        let took = t.elapsed();
        println!(
            "{n} updates in {:.1} s ({:.0}/s, each durable){}",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            if n < n_updates {
                format!(" -- stopped by BENCH_SECONDS before {n_updates}")
            } else {
                String::new()
            }
        );
        // Give background compaction a moment, as a server between bursts has.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let last = sample("10 s later", &store, &dir);
        worst = worst.max(last);
        println!("largest disk/live ratio seen: {worst:.2} (goal: at most 3)");
    });
    drop(state);
    support::report_peak_rss("soak");
}
