//! Durability under SIGKILL. Clients create users as fast as they can; the
//! server is killed at a random moment; after a restart, every user whose
//! create was acknowledged must be there, intact, and the store must open
//! cleanly. Repeated several times on the same data directory, so recovery
//! from one crash is itself crashed into, on each storage engine.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
// The kill lands at a random real moment during writes.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_tests::Server;
use rand::RngExt;
use serde_json::{Value, json};

const ROUNDS: usize = 5;
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    sigkill_rounds(Server::start()).await;
}

/// sled stays selectable for the directories it wrote; it keeps the promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill_on_sled() {
    sigkill_rounds(Server::start_with(&[("COHORT_STORAGE_ENGINE", "sled")])).await;
}

async fn sigkill_rounds(mut server: Server) {
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    for round in 0..ROUNDS {
        let api = server.admin();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let api = api.clone();
            let acked = Arc::clone(&acked);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("r{round}c{c}n{i}");
                    let body = json!({"username": name, "email": format!("{name}@example.com"), "department": format!("d{c}")});
                    match api.try_post("/api/v1/users", &body).await {
                        Some((201, user)) => acked.lock().unwrap().push(user),
                        Some((status, _)) => panic!("unexpected status {status} before the kill"),
                        // The connection failed: the server is gone.
                        None => break,
                    }
                }
            }));
        }
        let delay = rand::rng().random_range(150..900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for t in tasks {
            t.await.expect("client task");
        }
        server.restart_after_kill();
        let api = server.admin();
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "round {round}: no create was acknowledged"
        );
        for user in &acked {
            let id = user["id"].as_str().unwrap();
            let got = api.get(&format!("/api/v1/users/{id}")).await;
            assert_eq!(
                got.status.as_u16(),
                200,
                "round {round}: acknowledged user {id} lost; log:\n{}",
                server.log()
            );
            assert_eq!(&got.body, user, "round {round}: user {id} changed");
        }
        // Every acknowledged user still owns its username in the index.
        let sample = &acked[acked.len() / 2];
        let by_name = api
            .get(&format!(
                "/api/v1/users?username={}",
                sample["username"].as_str().unwrap()
            ))
            .await
            .expect(200);
        assert_eq!(by_name.body["items"][0]["id"], sample["id"]);
        // Storage is ready. (Readiness as a whole is 503: without plugins,
        // the built-in groups' rule evaluator is missing.)
        let ready = api.get("/readyz").await.body;
        assert!(ready["storage"].is_null(), "round {round}: {ready}");
        assert_eq!(
            ready["missing_evaluators"],
            serde_json::json!(["rules-standard"]),
            "round {round}: {ready}"
        );
        eprintln!(
            "round {round}: killed after {delay} ms, {} acknowledged users intact",
            acked.len()
        );
    }
}
