//! Import schedules start runs when the server's clock says they are due,
//! driven in process: the test runs the scheduler's step after moving the
//! clock, instead of waiting for ticks of a timer.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use cohort_tests::Api;
use common::InProcess;
use serde_json::json;

/// The run the (only) schedule started last.
async fn last_run_id(api: &Api) -> String {
    let listed = api.get("/api/v1/import-schedules").await.expect(200).body;
    listed["items"][0]["last_run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run started: {listed}"))
        .to_string()
}

#[tokio::test]
async fn schedules_start_runs_when_due() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "nightly-csv", "plugin": "csv",
               "config": {"data": "email,department\nsam@example.com,Ops\ntia@example.com,Ops\n"}}),
    )
    .await
    .expect(201);
    let r = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "Nightly", "every_hours": 0, "input": {"instance": "nightly-csv"}}),
        )
        .await;
    assert_eq!(r.field(), "every_hours", "{}", r.body);
    let r = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "Nightly", "every_hours": 24, "input": {"instance": "nightly-csv", "dry_run": true}}),
        )
        .await;
    assert_eq!(r.field(), "input.dry_run", "{}", r.body);
    let schedule = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "Nightly", "every_hours": 24, "input": {"instance": "nightly-csv", "new_users": "active"}}),
        )
        .await
        .expect(201)
        .body;
    let r = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "nightly", "every_hours": 24, "input": {"instance": "nightly-csv"}}),
        )
        .await;
    assert_eq!(r.status, 409);

    // Due now (a schedule's first turn is when it is made): the scheduler's
    // step starts it.
    assert_eq!(server.state.imports.run_due().await.unwrap(), 1);
    let run = api.wait_for_import(&last_run_id(&api).await).await;
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(run["started_by"], "schedule:Nightly", "{run}");
    assert_eq!(run["counts"]["created"], 2, "{run}");
    assert_eq!(
        api.get("/api/v1/users?email=sam@example.com")
            .await
            .expect(200)
            .body["items"][0]["state"],
        "active"
    );
    let listed = api.get("/api/v1/import-schedules").await.expect(200).body;
    let s = &listed["items"][0];
    assert_eq!(s["last_run_id"], run["id"], "{listed}");
    assert!(
        s["next_run_at"].as_str().unwrap() > schedule["next_run_at"].as_str().unwrap(),
        "{listed}"
    );

    // Its next turn is a day later by the server's clock, not before.
    assert_eq!(server.state.imports.run_due().await.unwrap(), 0);
    server.advance(chrono::Duration::hours(24) - chrono::Duration::seconds(1));
    assert_eq!(server.state.imports.run_due().await.unwrap(), 0);
    server.advance(chrono::Duration::seconds(1));
    assert_eq!(server.state.imports.run_due().await.unwrap(), 1);
    let second = last_run_id(&api).await;
    assert_ne!(second, run["id"].as_str().unwrap());
    let second = api.wait_for_import(&second).await;
    assert_eq!(second["started_by"], "schedule:Nightly", "{second}");
    assert_eq!(second["state"], "completed", "{second}");

    let id = schedule["id"].as_str().unwrap();
    api.delete(&format!("/api/v1/import-schedules/{id}"))
        .await
        .expect(204);
    assert_eq!(
        api.get("/api/v1/import-schedules").await.expect(200).body["items"],
        json!([])
    );
}
