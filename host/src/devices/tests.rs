//! Enrollment behaviour that depends on time: the whole application over a
//! temporary store with a clock the test moves, driven through the router
//! without a socket. (The API tests in `host/tests/devices.rs` run the
//! whole server in process, over a loopback socket.)

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Duration, Utc};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::clock::Clock;
use crate::config::{Config, Secret};
use crate::server;

const ADMIN: &str = "unit-admin-key-0123456789abcdef";

struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        *self.0.lock() += by;
    }
}

struct App {
    router: axum::Router,
    state: crate::api::AppState,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("data"),
        bootstrap_admin_key: Some(Secret::new(ADMIN)),
        ..Config::default()
    };
    let store = server::open_store(&config.data_dir, &config.storage.open_options()).unwrap();
    let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(ManualClock(Mutex::new(start)));
    let built = server::build(&config, store, clock.clone()).expect("app");
    App {
        router: crate::api::router(built.state.clone()),
        state: built.state,
        clock,
        _dir: dir,
    }
}

impl App {
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status.as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn token(&self, body: Value) -> (String, String) {
        let (status, t) = self
            .call(
                "POST",
                "/api/v1/device-enrollment-tokens",
                ADMIN,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{t}");
        (
            t["id"].as_str().unwrap().to_string(),
            t["secret"].as_str().unwrap().to_string(),
        )
    }

    async fn enroll(&self, token: &str, hostname: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/api/v1/devices/enroll",
            token,
            Some(json!({"hostname": hostname, "os_family": "linux"})),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stops_enrolling_when_it_expires() {
    let app = app();
    let (id, secret) = app
        .token(json!({"name": "hour", "ttl_seconds": 3600, "max_uses": 5}))
        .await;
    let (status, body) = app.enroll(&secret, "early").await;
    assert_eq!(status, 201, "{body}");

    // One second before the end it still works; at the end it does not.
    app.clock.advance(Duration::seconds(3598));
    assert_eq!(app.enroll(&secret, "just-in-time").await.0, 201);
    app.clock.advance(Duration::seconds(2));
    let (status, body) = app.enroll(&secret, "late").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "enrollment_token_expired");

    let (_, token) = app
        .call(
            "GET",
            &format!("/api/v1/device-enrollment-tokens/{id}"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(token["state"], "expired");
    assert_eq!(token["uses"], 2);
    let (_, expired) = app
        .call(
            "GET",
            "/api/v1/device-enrollment-tokens?state=expired",
            ADMIN,
            None,
        )
        .await;
    assert_eq!(expired["items"].as_array().unwrap().len(), 1);
    let (_, active) = app
        .call(
            "GET",
            "/api/v1/device-enrollment-tokens?state=active",
            ADMIN,
            None,
        )
        .await;
    assert!(active["items"].as_array().unwrap().is_empty());
    // Nothing was written for the refused enrollment.
    let (_, devices) = app
        .call("GET", "/api/v1/devices?hostname=late", ADMIN, None)
        .await;
    assert!(devices["items"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_at_is_checked_against_the_injected_clock() {
    let app = app();
    // The injected clock says 2030; a date in 2029 is in the past.
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/device-enrollment-tokens",
            ADMIN,
            Some(json!({"name": "past", "expires_at": "2029-12-31T23:59:59Z"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "expires_at");
    let (_, secret) = app
        .token(json!({"name": "one-day", "expires_at": "2030-01-02T00:00:00Z"}))
        .await;
    app.clock.advance(Duration::days(1));
    assert_eq!(
        app.enroll(&secret, "late").await.1["error"]["code"],
        "enrollment_token_expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_is_shown_at_once_and_written_by_the_flush() {
    let app = app();
    let (_, token) = app.token(json!({"name": "t"})).await;
    let (_, enrolled) = app.enroll(&token, "laptop").await;
    let device = enrolled["device"]["id"].as_str().unwrap().to_string();
    let secret = enrolled["secret"].as_str().unwrap().to_string();
    assert_eq!(enrolled["credential"]["last_used_at"], Value::Null);

    app.clock.advance(Duration::minutes(5));
    let used_at = app.clock.now();
    let (status, _) = app
        .call(
            "POST",
            &format!("/api/v1/devices/{device}/check-in"),
            &secret,
            Some(json!({"agent_version": "2.0"})),
        )
        .await;
    assert_eq!(status, 200);
    let path = format!("/api/v1/devices/{device}/credential");
    let (_, cred) = app.call("GET", &path, ADMIN, None).await;
    assert_eq!(
        cred["last_used_at"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(used_at)
    );

    // The flush writes it; a second flush has nothing to do.
    let credentials = app.state.devices.credentials();
    assert_eq!(credentials.flush_usage().await.unwrap(), 1);
    assert_eq!(credentials.flush_usage().await.unwrap(), 0);
    let stored: Value = app
        .state
        .store
        .get_json(
            cohort_storage::Keyspace::new("device_credentials"),
            uuid::Uuid::parse_str(&device).unwrap().as_bytes(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        stored["last_used_at"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
        Some(used_at)
    );

    // A use of a secret that was rotated away before the flush is dropped.
    app.clock.advance(Duration::minutes(1));
    app.call("GET", &format!("/api/v1/devices/{device}"), &secret, None)
        .await;
    let (status, rotated) = app
        .call("POST", &format!("{path}/rotate"), ADMIN, None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(credentials.flush_usage().await.unwrap(), 0);
    let (_, cred) = app.call("GET", &path, ADMIN, None).await;
    assert_eq!(cred["id"], rotated["id"]);
    assert_eq!(cred["last_used_at"], Value::Null);
}

/// A device's rotation is authorized by the credential it presents, which
/// is checked when the request arrives. If an admin revokes that credential
/// (or the device rotates or enrolls again) before the rotation commits,
/// the rotation must not hand out a fresh secret: that would undo the
/// revocation for whoever held the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_a_credential_revoked_meanwhile_issues_nothing() {
    let app = app();
    let (_, token) = app.token(json!({"name": "t", "max_uses": 5})).await;
    let (status, enrolled) = app.enroll(&token, "laptop").await;
    assert_eq!(status, 201, "{enrolled}");
    let device: uuid::Uuid = enrolled["device"]["id"].as_str().unwrap().parse().unwrap();
    let secret = enrolled["secret"].as_str().unwrap();
    let credentials = app.state.devices.credentials();
    let origin = crate::auth::Origin::internal("race");

    // The request authenticates, then the admin revokes, then it commits.
    let principal = credentials
        .authenticate(secret, &origin)
        .unwrap()
        .expect("the credential is valid when the request arrives");
    let path = format!("/api/v1/devices/{device}/credential");
    let (status, body) = app.call("DELETE", &path, ADMIN, None).await;
    assert_eq!(status, 204, "{body}");
    let cap = principal.rotate_device_credential(&device).unwrap();
    match credentials.rotate(&cap).await {
        Err(crate::error::DomainError::Conflict { code, .. }) => {
            assert_eq!(code, "credential_replaced")
        }
        other => panic!("a revoked credential rotated: {other:?}"),
    }
    let (status, body) = app.call("GET", &path, ADMIN, None).await;
    assert_eq!(status, 404, "still revoked: {body}");

    // The same with a credential another rotation replaced meanwhile.
    let (status, issued) = app
        .call("POST", &format!("{path}/rotate"), ADMIN, None)
        .await;
    assert_eq!(status, 200, "{issued}");
    let first = issued["secret"].as_str().unwrap().to_string();
    let principal = credentials.authenticate(&first, &origin).unwrap().unwrap();
    let (status, second) = app
        .call("POST", &format!("{path}/rotate"), &first, None)
        .await;
    assert_eq!(status, 200, "{second}");
    let cap = principal.rotate_device_credential(&device).unwrap();
    assert!(credentials.rotate(&cap).await.is_err());
    let (status, current) = app.call("GET", &path, ADMIN, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        current["id"], second["id"],
        "the newest secret still stands"
    );

    // An admin's rotation is not tied to any credential.
    let (status, body) = app
        .call("POST", &format!("{path}/rotate"), ADMIN, None)
        .await;
    assert_eq!(status, 200, "{body}");
}
