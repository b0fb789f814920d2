//! Sign-in benchmark. Run after `plugins/build`:
//!
//!     cargo bench -p cohort --bench sign_in
//!
//! Measures, in process (the router is called without a socket):
//! - the server time of `GET /sign-in/callback`: taking the pending state
//!   (a durable write), the code exchange with the provider, ID token
//!   validation, the connector's claim mapping (a WebAssembly call),
//!   matching, and the durable write of link, session and audit events.
//!   The provider is a fake on loopback whose token endpoint answers at
//!   once (it signs an Ed25519 ID token, timed separately and reported), so
//!   what remains of the upstream call is one loopback HTTP round trip;
//! - sessions validated per second on `GET /api/v1/me`, by cookie and by
//!   session JWT, from several concurrent callers.
//!
//! Knobs: BENCH_SIGN_INS (default 500), BENCH_ME_SECONDS (default 5),
//! BENCH_CONCURRENCY (default 8).

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use cohort::clock::SystemClock;
use cohort::config::{Config, Secret};
use cohort::server;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
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

/// The fake provider's state: codes the bench registered, and its key.
struct Fake {
    issuer: Mutex<String>,
    codes: Mutex<HashMap<String, (String, String)>>,
    key: EncodingKey,
    x: String,
    sign_nanos: AtomicU64,
}

async fn discovery(State(f): State<Arc<Fake>>) -> Json<Value> {
    let issuer = f.issuer.lock().clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

async fn jwks(State(f): State<Arc<Fake>>) -> Json<Value> {
    Json(
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig", "x": f.x}]}),
    )
}

async fn token(
    State(f): State<Arc<Fake>>,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let t = Instant::now();
    let Some((nonce, email)) = form.get("code").and_then(|c| f.codes.lock().remove(c)) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": f.issuer.lock().clone(), "sub": email, "aud": "cohort",
        "iat": now, "exp": now + 300, "nonce": nonce,
        "email": email, "email_verified": true,
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let id_token = jsonwebtoken::encode(&header, &claims, &f.key).unwrap();
    f.sign_nanos
        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Json(json!({"access_token": "a", "token_type": "Bearer", "id_token": id_token})).into_response()
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn api(app: &Router, method: &str, path: &str, body: Value) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, body) = call(app, req).await;
    assert!(
        status.is_success(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|v| v.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn query_param(url: &str, name: &str) -> String {
    url.split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3
}

/// One sign-in: the identifier step, then the timed callback. Returns the
/// callback's duration and the session cookie.
async fn sign_in(app: &Router, fake: &Fake, email: &str) -> (Duration, String) {
    let req = Request::builder()
        .method("POST")
        .uri("/sign-in")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "cohort_csrf=bench")
        .body(Body::from(format!("identifier={email}&csrf=bench")))
        .unwrap();
    let (status, headers, body) = call(app, req).await;
    assert_eq!(status, 303, "{}", String::from_utf8_lossy(&body));
    let location = headers[header::LOCATION].to_str().unwrap().to_string();
    let browser = cookie_value(&headers, "cohort_sign_in").unwrap();
    let state = query_param(&location, "state");
    let nonce = query_param(&location, "nonce");
    let code = Uuid::now_v7().to_string();
    fake.codes
        .lock()
        .insert(code.clone(), (nonce, email.to_string()));
    let req = Request::builder()
        .uri(format!("/sign-in/callback?code={code}&state={state}"))
        .header("cookie", format!("cohort_sign_in={browser}"))
        .body(Body::empty())
        .unwrap();
    let t = Instant::now();
    let (status, headers, body) = call(app, req).await;
    let took = t.elapsed();
    assert_eq!(status, 303, "{}", String::from_utf8_lossy(&body));
    (took, cookie_value(&headers, "cohort_session").unwrap())
}

/// Requests per second of `GET /api/v1/me` with `auth` headers, spread
/// over `concurrency` callers for `seconds`.
async fn me_rate(
    app: &Router,
    auth: Vec<(&'static str, String)>,
    concurrency: usize,
    seconds: u64,
) -> f64 {
    let auth = Arc::new(auth);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (app, auth, count) = (app.clone(), Arc::clone(&auth), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let (name, value) = &auth[i % auth.len()];
                let req = Request::builder()
                    .uri("/api/v1/me")
                    .header(*name, value)
                    .body(Body::empty())
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let _ = resp.into_body().collect().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n = env("BENCH_SIGN_INS", 500);
    let me_seconds = env("BENCH_ME_SECONDS", 5) as u64;
    let concurrency = env("BENCH_CONCURRENCY", 8);
    let dir = std::env::temp_dir().join(format!("cohort-sign-in-bench-{}", Uuid::now_v7()));
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    assert!(
        plugins.join("generic-oidc.wasm").exists(),
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
    // The fake upstream listens on loopback, which is refused by default.
    config.outbound.allow_private =
        vec![cohort::config::AllowPrivate("127.0.0.0/8".parse().unwrap())];
    config.sign_in.public_url = Some("http://127.0.0.1:9".into());
    // As many request threads as `cohort serve` would start on this engine.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = config.http.worker_threads_for(config.storage.engine, cores);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let store = server::open_store(&dir, &config.storage.open_options()).unwrap();
    let app = server::build(&config, store, Arc::new(SystemClock)).unwrap();
    let router = cohort::api::router(app.state);

    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let fake = Arc::new(Fake {
        issuer: Mutex::new(String::new()),
        codes: Mutex::default(),
        key: EncodingKey::from_ed_der(signing.to_pkcs8_der().unwrap().as_bytes()),
        x: B64.encode(signing.verifying_key().as_bytes()),
        sign_nanos: AtomicU64::new(0),
    });

    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *fake.issuer.lock() = format!("http://{}", listener.local_addr().unwrap());
        let upstream = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(Arc::clone(&fake));
        tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });

        let issuer = fake.issuer.lock().clone();
        api(&router, "POST", "/api/v1/plugin-instances", json!({
            "name": "bench-op", "plugin": "generic-oidc",
            "config": {"issuer": issuer, "client_id": "cohort", "client_secret": "s"}})).await;
        let idp = api(&router, "POST", "/api/v1/idps", json!({"name": "Bench", "instance": "bench-op"})).await;
        api(&router, "PUT", "/api/v1/sign-in/routing", json!({
            "rules": [], "default": {"type": "idp", "idp_id": idp["id"]}})).await;
        for i in 0..n {
            api(&router, "POST", "/api/v1/users", json!({
                "username": format!("user{i}"), "email": format!("user{i}@example.com"),
                "state": "active"})).await;
        }

        let mut report = Vec::new();
        let mut cookies = Vec::new();
        for round in ["first sign-in (match + link)", "later sign-in (link)"] {
            fake.sign_nanos.store(0, Ordering::Relaxed);
            let mut times = Vec::with_capacity(n);
            let t = Instant::now();
            for i in 0..n {
                let (took, cookie) = sign_in(&router, &fake, &format!("user{i}@example.com")).await;
                times.push(took);
                cookies.push(cookie);
            }
            let wall = t.elapsed();
            times.sort();
            let sign_us = fake.sign_nanos.load(Ordering::Relaxed) as f64 / n as f64 / 1e3;
            report.push(format!(
                "callback, {round}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({n} sign-ins, {:.0}/s one at a time; the fake provider's own token time {sign_us:.0} µs each, included)",
                percentile(&times, 0.5),
                percentile(&times, 0.9),
                percentile(&times, 0.99),
                percentile(&times, 1.0),
                n as f64 / wall.as_secs_f64(),
            ));
        }

        let by_cookie: Vec<(&'static str, String)> = cookies
            .iter()
            .map(|c| ("cookie", format!("cohort_session={c}")))
            .collect();
        let mut by_jwt = Vec::new();
        for c in cookies.iter().take(1_000) {
            let req = Request::builder()
                .method("POST")
                .uri("/api/v1/me/token")
                .header("cookie", format!("cohort_session={c}"))
                .body(Body::empty())
                .unwrap();
            let (_, _, body) = call(&router, req).await;
            let token: Value = serde_json::from_slice(&body).unwrap();
            by_jwt.push(("authorization", format!("Bearer {}", token["token"].as_str().unwrap())));
        }
        let cookie_rate = me_rate(&router, by_cookie, concurrency, me_seconds).await;
        let jwt_rate = me_rate(&router, by_jwt, concurrency, me_seconds).await;
        report.push(format!(
            "GET /api/v1/me: {cookie_rate:.0} sessions/s by cookie, {jwt_rate:.0} sessions/s by JWT ({} sessions, {concurrency} concurrent callers, {me_seconds} s each)",
            cookies.len()
        ));
        println!("\nsign-in benchmark ({workers} worker threads, in process)");
        for line in report {
            println!("  {line}");
        }
    });
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
