//! Outbound requests never reach internal addresses unless configured to:
//! identity provider discovery and plugins' HTTP, against servers started
//! WITHOUT the harness's loopback opt-in (`COHORT_OUTBOUND_ALLOW_PRIVATE=""`),
//! then with it.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
use crate::common;

use common::InProcess;

use base64::Engine as _;
use cohort_tests::{Api, Fake, FakeReply, OidcProvider};
use serde_json::{Value, json};

/// No opt-in at all: the server's defaults.
const STRICT: (&str, &str) = ("COHORT_OUTBOUND_ALLOW_PRIVATE", "");

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn idp_for(api: &Api, name: &str, issuer: &str) -> cohort_tests::Resp {
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": name, "plugin": "generic-oidc",
               "config": {"issuer": issuer, "client_id": "cohort", "client_secret": "s"}}),
    )
    .await
    .expect(201);
    api.post("/api/v1/idps", json!({"name": name, "instance": name}))
        .await
}

/// What a port scanner would read: any transport detail.
fn leaks_transport(body: &Value) -> bool {
    let text = body.to_string().to_lowercase();
    ["refused", "connect", "tcp", "os error", "dns", "timed out"]
        .iter()
        .any(|w| text.contains(w))
}

#[tokio::test]
async fn discovery_refuses_internal_addresses_by_default_and_answers_generically() {
    let op = OidcProvider::start(&json!({"clients": [{
        "client_id": "cohort", "client_secret": "s",
        "redirect_uris": ["http://127.0.0.1:9/callback"]}]}));
    let port = op.issuer.rsplit(':').next().unwrap().to_string();
    let strict = InProcess::start_with_plugins(&[STRICT]);
    let api = strict.admin();
    for (i, issuer) in [
        op.issuer.clone(),
        "http://127.0.0.1:22".to_string(),
        "http://169.254.169.254".to_string(),
        format!("http://localhost:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
        "http://10.0.0.1".to_string(),
        "http://[::1]:22".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let r = idp_for(&api, &format!("op{i}"), issuer).await;
        assert_eq!(r.status, 422, "{issuer}: {}", r.body);
        assert_eq!(r.code(), "address_not_allowed", "{issuer}: {}", r.body);
        assert_eq!(r.field(), "instance", "{issuer}");
        assert!(!leaks_transport(&r.body), "{issuer}: {}", r.body);
    }
    // The log has what the caller does not.
    let log = strict.log();
    assert!(
        log.contains("outbound request refused") && log.contains("169.254.169.254"),
        "{log}"
    );
    // Nothing was created, and the server still serves.
    let idps = api.get("/api/v1/idps").await.expect(200).body;
    assert_eq!(idps["items"].as_array().map(Vec::len), Some(0), "{idps}");

    // With the opt-in, the same provider works, a closed port is only
    // "unreachable" (with no detail), and the metadata address stays refused.
    let open = InProcess::start_with_plugins(&[("COHORT_OUTBOUND_ALLOW_PRIVATE", "127.0.0.1/32")]);
    let api = open.admin();
    idp_for(&api, "op", &op.issuer).await.expect(201);
    let r = idp_for(&api, "down", &format!("http://127.0.0.1:{}", closed_port())).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "upstream_unreachable", "{}", r.body);
    assert!(!leaks_transport(&r.body), "{}", r.body);
    let r = idp_for(&api, "metadata", "http://169.254.169.254").await;
    assert_eq!(r.code(), "address_not_allowed", "{}", r.body);
    // Allowing a name allows what it resolves to: the document is fetched
    // (and then refused only because the provider calls itself 127.0.0.1).
    let by_name = InProcess::start_with_plugins(&[("COHORT_OUTBOUND_ALLOW_PRIVATE", "localhost")]);
    let r = idp_for(&by_name.admin(), "op", &format!("http://localhost:{port}")).await;
    assert_eq!(r.code(), "invalid_field", "{}", r.body);
    assert!(r.body.to_string().contains("states issuer"), "{}", r.body);
}

/// Installs the echo importer allowed to call `hosts`, with an instance
/// reading `url`, and runs it; returns the finished run.
async fn import_from(api: &Api, name: &str, hosts: &[String], url: &str) -> Value {
    let wasm = std::fs::read(cohort_tests::plugins_dir().join("echo-importer.wasm")).unwrap();
    api.post(
        "/api/v1/plugins",
        json!({"component": base64::engine::general_purpose::STANDARD.encode(&wasm),
               "manifest": {"name": name, "version": "1.0.0", "world": "directory-importer",
                   "description": "echo importer", "allowed_hosts": hosts,
                   "config": [{"name": "url", "kind": "url", "required": true},
                              {"name": "token", "kind": "secret"}]}}),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": name, "plugin": name, "config": {"url": url}}),
    )
    .await
    .expect(201);
    api.run_import(json!({"instance": name, "dry_run": true}))
        .await
}

#[tokio::test]
async fn plugins_cannot_reach_internal_addresses_even_when_their_manifest_lists_them() {
    let feed = Fake::start(|_, _| {
        FakeReply::json(&json!({"people": [{"id": "e1", "email": "ada@example.com",
                                             "department": "R&D"}], "next": null}))
    });
    let p = feed.port;
    let strict = InProcess::start_with_plugins(&[STRICT]);
    let api = strict.admin();
    for (i, (hosts, url)) in [
        (
            vec![format!("127.0.0.1:{p}")],
            format!("http://127.0.0.1:{p}/people"),
        ),
        (
            vec![format!("localhost:{p}")],
            format!("http://localhost:{p}/people"),
        ),
        (
            vec!["169.254.169.254".to_string()],
            "http://169.254.169.254/latest/meta-data".to_string(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let run = import_from(&api, &format!("feed-{i}"), &hosts, &url).await;
        assert_eq!(run["state"], "failed", "{url}: {run}");
        let failure = run["failure"].as_str().unwrap_or_default();
        assert!(failure.contains("may not reach"), "{url}: {run}");
        assert!(!leaks_transport(&run), "{url}: {run}");
    }
    assert!(feed.requests().is_empty(), "the feed was reached");
    assert!(strict.log().contains("outbound request refused"));

    // The opt-in lets the same plugin through.
    let open = InProcess::start_with_plugins(&[("COHORT_OUTBOUND_ALLOW_PRIVATE", "127.0.0.1")]);
    let run = import_from(
        &open.admin(),
        "feed",
        &[format!("127.0.0.1:{p}")],
        &format!("http://127.0.0.1:{p}/people"),
    )
    .await;
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(feed.requests().len(), 1);
}

/// A provider's answers are read up to a bound, and what they say is never
/// quoted back: a hostile provider can neither make the server allocate
/// what it sends nor use the server to read its own network's pages.
#[tokio::test]
async fn provider_answers_are_bounded_and_never_echoed() {
    const MARKER: &str = "internal-page-secret-4f1c";
    let provider = Fake::start(|_, req| {
        if req.line.contains("/huge") {
            // Two MiB of a JSON string: past the 1 MiB bound.
            FakeReply::json_text(format!("\"{}\"", "a".repeat(2 << 20)))
        } else if req.line.contains("/quoted") {
            // serde quotes a string it did not expect in its message.
            FakeReply::json_text(format!("\"{MARKER}\""))
        } else {
            FakeReply::json_text(format!(r#"{{"page": "{MARKER}"}}"#))
        }
    });
    let base = format!("http://127.0.0.1:{}", provider.port);
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let r = idp_for(&api, "huge", &format!("{base}/huge")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "upstream_too_large", "{}", r.body);
    let r = idp_for(&api, "quoted", &format!("{base}/quoted")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(!r.body.to_string().contains(MARKER), "{}", r.body);
    // An issuer cannot carry a query or fragment that turns it into any
    // URL on the host: nothing is fetched.
    let before = provider.requests().len();
    for (i, issuer) in [
        format!("{base}/internal/admin?token=1#"),
        format!("{base}/internal/admin?token=1"),
    ]
    .iter()
    .enumerate()
    {
        let r = idp_for(&api, &format!("odd{i}"), issuer).await;
        assert_eq!(r.status, 422, "{issuer}: {}", r.body);
        assert!(!r.body.to_string().contains(MARKER), "{}", r.body);
    }
    assert_eq!(
        provider.requests().len(),
        before,
        "an odd issuer was fetched"
    );
    assert!(server.admin().get("/healthz").await.status == 200);
}
