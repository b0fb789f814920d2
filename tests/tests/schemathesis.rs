//! The live server against its own OpenAPI document, with schemathesis
//! (PyPI, `pip install schemathesis==4.32.5`; `.ci/run` installs it).
//!
//! schemathesis reads `/api/v1/openapi.json` and calls every operation with
//! the admin key (or the enrollment token or session token the operation
//! takes instead): the document's examples and boundary values, generated
//! valid and invalid input, requests without credentials or with a missing
//! required part, unsupported methods, and sequences that use the ids one
//! response returns in the next request. Every response must be documented
//! (status, content type, headers, body schema), none may be a 5xx, input
//! the document calls invalid must be refused, and a created resource must
//! be there while a deleted one is gone. The run is bounded: a fixed seed, a
//! few examples per operation, one worker, and a wall-clock budget after
//! which it is stopped and the test fails.
//!
//! What it found was fixed on whichever side was wrong (the document or the
//! server). What stays excluded is in [`CONFIG`], each with its reason.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use cohort_tests::{ADMIN_KEY, Browser, Server};
use serde_json::json;

/// Seed for every generated value: a failure reproduces with the same seed.
const SEED: &str = "20261206";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "50";
/// A response slower than this fails the run (a debug build on a shared
/// machine is slow, a hang is slower).
const MAX_RESPONSE_SECONDS: &str = "20";
/// The whole run must end within this; it takes about a minute on 2 cores.
const BUDGET: Duration = Duration::from_secs(600);

/// schemathesis.toml. Every check runs (schemathesis' default, which the
/// command line leaves alone so that the exclusions below hold; a
/// `--checks all` there would override them) but for these, each with its
/// reason.
const CONFIG: &str = r#"
# positive_data_acceptance expects every request the schema allows to
# succeed. Many well-formed requests are refused for reasons a JSON Schema
# cannot state: an id in the body that names no user, group, idp or plugin
# instance (422), a `cursor` no earlier page returned (400), a rule with
# both `conditions` and `any`, an expiry in the past, a name already taken.
# Each refusal is still checked against the document (a documented 4xx in
# the standard error shape); only "this should have succeeded" is not.
[checks.positive_data_acceptance]
enabled = false

# DELETE revokes an enrollment token; the token stays readable with
# "state": "revoked" (and in lists with ?state=revoked) so an admin can see
# what was issued and when it was revoked. A read after the DELETE is
# meant to succeed.
[[operations]]
include-path = "/api/v1/device-enrollment-tokens/{id}"
include-method = "GET"
checks.use_after_free.enabled = false

# Explaining why a subject is not a member is the point of explain: after
# DELETE .../members/{subject} the subject still exists and is explained.
[[operations]]
include-path = "/api/v1/groups/{id}/members/{subject}/explain"
checks.use_after_free.enabled = false

# A device has a credential only once it is enrolled (POST
# /api/v1/devices/enroll), and a user a password only once one is set; a
# device or user just created with POST has neither, so 404 is right.
[[operations]]
include-path-regex = "^/api/v1/devices/\\{id\\}/credential"
checks.ensure_resource_availability.enabled = false

[[operations]]
include-path = "/api/v1/users/{id}/password"
include-method = "DELETE"
checks.ensure_resource_availability.enabled = false
"#;

/// The operations that take another credential than an API key get one, so
/// they are exercised past their 401: enrollment its token (with uses to
/// spare), the `/api/v1/me` operations a signed-in user's session tokens.
/// Returns the configuration that hands them out, and the enrollment
/// token's id.
async fn other_credentials(server: &Server) -> (String, String) {
    let api = server.admin();
    let token = api
        .post(
            "/api/v1/device-enrollment-tokens",
            json!({"name": "schemathesis", "max_uses": 10000}),
        )
        .await
        .expect(201)
        .body;
    let enrollment = token["secret"].as_str().expect("the token's secret");
    let token_id = token["id"].as_str().expect("the token's id").to_string();

    let ada = api.user("ada", json!({})).await;
    let password = "correct horse battery staple";
    api.put_json(
        &format!("/api/v1/users/{ada}/password"),
        json!({"password": password}),
    )
    .await
    .expect(204);
    // Two sessions: signing out ends the one it is sent with, and the
    // other operations should not find theirs ended.
    let session = session_token(server, "ada", password).await;
    let signing_out = session_token(server, "ada", password).await;

    let config = format!(
        r#"
[[operations]]
include-path = "/api/v1/devices/enroll"
headers = {{ Authorization = "Bearer {enrollment}" }}

[[operations]]
include-path = ["/api/v1/me", "/api/v1/me/token"]
headers = {{ Authorization = "Bearer {session}" }}

[[operations]]
include-path = "/api/v1/me/sign-out"
headers = {{ Authorization = "Bearer {signing_out}" }}
"#
    );
    (config, token_id)
}

/// Signs `identifier` in with its password, as a browser does, and returns
/// a session token (`POST /api/v1/me/token`) for the new session.
async fn session_token(server: &Server, identifier: &str, password: &str) -> String {
    let browser = Browser::new();
    let form = browser
        .start_sign_in(&server.base, identifier, "/sign-in/done")
        .await;
    let csrf = form.input("csrf").expect("the password form");
    let signed_in = browser
        .post(
            &format!("{}/sign-in/password", server.base),
            &[
                ("identifier", identifier),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", "/sign-in/done"),
            ],
        )
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let cookie = browser
        .cookie(&server.base, "cohort_session")
        .expect("a session cookie");
    server
        .client(None)
        .send(
            reqwest::Method::POST,
            "/api/v1/me/token",
            None,
            &[("cookie", &format!("cohort_session={cookie}"))],
        )
        .await
        .expect(200)
        .body["token"]
        .as_str()
        .expect("a session token")
        .to_string()
}

/// `errors="N"` and `failures="N"` of the JUnit report's `<testsuites>`.
fn junit_totals(xml: &str) -> (u64, u64) {
    let head = xml
        .split_once("<testsuites")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(attrs, _)| attrs)
        .unwrap_or_else(|| panic!("not a JUnit report:\n{xml}"));
    let attr = |name: &str| -> u64 {
        head.split_once(&format!(" {name}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .and_then(|(v, _)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in <testsuites{head}>"))
    };
    (attr("errors"), attr("failures"))
}

/// The names of the report's test cases: `GET /api/v1/users` for each
/// operation tested, and `Stateful tests` for the linked sequences.
fn junit_cases(xml: &str) -> BTreeSet<String> {
    xml.split("<testcase name=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// `METHOD /path` of every operation the live document describes.
async fn documented_operations(server: &Server) -> BTreeSet<String> {
    let doc = server
        .client(None)
        .get("/api/v1/openapi.json")
        .await
        .expect(200)
        .body;
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_response_matches_the_openapi_document() {
    let server = Server::start_with_plugins(&[]);
    let work = tempfile::tempdir().expect("temp dir");
    let config = work.path().join("schemathesis.toml");
    let (credentials, enrollment_token) = other_credentials(&server).await;
    std::fs::write(&config, format!("{CONFIG}{credentials}")).expect("writing schemathesis.toml");
    let junit = work.path().join("junit.xml");
    let auth = format!("Authorization: Bearer {ADMIN_KEY}");
    let document = format!("{}/api/v1/openapi.json", server.base);

    let args = [
        "--config-file",
        config.to_str().unwrap(),
        "--no-color",
        "run",
        &document,
        "--header",
        &auth,
        "--seed",
        SEED,
        "--max-examples",
        MAX_EXAMPLES,
        "--max-response-time",
        MAX_RESPONSE_SECONDS,
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        junit.to_str().unwrap(),
    ];
    let child = tokio::process::Command::new("schemathesis")
        .args(args)
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("schemathesis is not installed ({e}): pip install schemathesis==4.32.5 (.ci/run does)")
        });
    let out = tokio::time::timeout(BUDGET, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran past its {BUDGET:?} budget"))
        .expect("schemathesis ran");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let report = std::fs::read_to_string(&junit)
        .unwrap_or_else(|e| panic!("no JUnit report at {} ({e}):\n{text}", junit.display()));
    let (errors, failures) = junit_totals(&report);
    assert_eq!(
        (errors, failures),
        (0, 0),
        "{text}\nserver log:\n{}",
        server.log()
    );
    assert!(out.status.success(), "{text}");
    // Every documented operation was exercised, and so were the sequences.
    let mut cases = junit_cases(&report);
    assert!(cases.remove("Stateful tests"), "no stateful phase:\n{text}");
    let documented = documented_operations(&server).await;
    assert!(documented.len() > 100, "{documented:?}");
    assert_eq!(cases, documented, "{text}");

    // Enrollment was exercised with its token, not only refused.
    let token = server
        .admin()
        .get(&format!(
            "/api/v1/device-enrollment-tokens/{enrollment_token}"
        ))
        .await
        .expect(200);
    assert!(token.body["uses"].as_u64() > Some(0), "{}", token.body);

    // The server is still up and well after all that.
    let health = server.client(None).get("/healthz").await.expect(200);
    assert_eq!(health.body["status"], "ok");
    let ready = server.client(None).get("/readyz").await.expect(200);
    assert_eq!(ready.body["status"], "ok");
    assert!(
        !server.log().contains("panicked"),
        "the server panicked:\n{}",
        server.log()
    );
}
