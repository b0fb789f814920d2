//! What a misbehaving or hostile provider, or a replayed request, gets: the
//! sign-in is refused and the audit log says why. The provider here is
//! `tests/npm/fake-op.mjs`, which the test switches between bad tokens;
//! Cohort runs in process, on a clock the test moves.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
use crate::common;

use common::InProcess;

use cohort_tests::{Api, Browser, OidcProvider, Page};
use serde_json::{Value, json};

const SECRET: &str = "fake-op-secret";

struct Setup {
    server: InProcess,
    op: OidcProvider,
    api: Api,
}

async fn setup() -> Setup {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let op = OidcProvider::start_fake("cohort", SECRET);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "fake", "plugin": "generic-oidc",
               "config": {"issuer": op.issuer, "client_id": "cohort", "client_secret": SECRET}}),
    )
    .await
    .expect(201);
    let idp = api
        .post("/api/v1/idps", json!({"name": "Fake", "instance": "fake"}))
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .put_json(
            "/api/v1/sign-in/routing",
            json!({"rules": [], "default": {"type": "idp", "idp_id": idp}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.user("erin", json!({"email": "erin@example.com"})).await;
    Setup { server, op, api }
}

/// Starts a sign-in for erin and returns the provider's redirect back to
/// Cohort (the callback URL), not yet followed.
async fn to_callback(b: &Browser, s: &Setup) -> String {
    let started = b
        .start_sign_in(&s.server.base, "erin@example.com", "")
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let at_op = b.get(started.location.as_deref().unwrap()).await;
    assert_eq!(at_op.status, 302, "{}", at_op.body);
    at_op.location.expect("a redirect back")
}

async fn sign_in(b: &Browser, s: &Setup) -> Page {
    let callback = to_callback(b, s).await;
    b.get(&callback).await
}

/// The last refusal's reason and detail from the audit log.
async fn last_failure(api: &Api) -> (String, String) {
    let items = api
        .get("/api/v1/audit?action=sign_in.failure&limit=1")
        .await
        .expect(200)
        .body["items"]
        .clone();
    let c = &items[0]["changes"];
    (
        c["reason"]["after"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        c["detail"]["after"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn with_code(callback: &str, code: &str) -> String {
    let (base, query) = callback.split_once('?').unwrap();
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("code="))
        .collect();
    format!("{base}?code={code}&{}", rest.join("&"))
}

fn param(url: &str, name: &str) -> String {
    url.split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn forged_and_misdirected_id_tokens_are_refused_each_for_its_reason() {
    let s = setup().await;
    let good = sign_in(&Browser::new(), &s).await;
    assert_eq!(good.status, 303, "{}", good.body);

    let cases = [
        ("bad_signature", "bad_signature"),
        ("alg_none", "alg_none"),
        ("wrong_iss", "wrong_issuer"),
        ("wrong_aud", "wrong_audience"),
        ("expired", "expired"),
        ("nonce_mismatch", "nonce_mismatch"),
    ];
    for (mode, code) in cases {
        s.op.control(mode, None).await;
        let page = sign_in(&Browser::new(), &s).await;
        assert_eq!(page.status, 400, "{mode}: {}", page.body);
        assert_eq!(page.reason().as_deref(), Some("invalid_id_token"), "{mode}");
        let (reason, detail) = last_failure(&s.api).await;
        assert_eq!(reason, "invalid_id_token", "{mode}");
        assert!(
            detail.starts_with(&format!("{code}:")),
            "{mode}: audit detail {detail:?}"
        );
    }
    let sessions = s
        .api
        .get("/api/v1/audit?action=session.open")
        .await
        .expect(200)
        .body;
    assert_eq!(
        sessions["items"].as_array().unwrap().len(),
        1,
        "only the good sign-in opened a session: {sessions}"
    );
}

#[tokio::test]
async fn a_key_the_provider_does_not_publish_is_refused_until_it_is_rotated_in() {
    let s = setup().await;
    // The first sign-in caches the provider's keys (k1).
    assert_eq!(sign_in(&Browser::new(), &s).await.status, 303);

    // Signed with k2, which the provider does not publish: refused even
    // after Cohort fetched the keys again (it does at most once a second by
    // its clock, which the test moves on instead of waiting).
    s.op.control("sign_with_k2", None).await;
    s.server.advance(chrono::Duration::milliseconds(1100));
    let page = sign_in(&Browser::new(), &s).await;
    assert_eq!(page.reason().as_deref(), Some("invalid_id_token"));
    let (_, detail) = last_failure(&s.api).await;
    assert!(detail.starts_with("unknown_key:"), "{detail}");

    // The provider rotates k2 in: the unknown kid makes Cohort fetch the
    // keys again, and the sign-in works without any admin action.
    s.op.control("sign_with_k2", Some(&["k1", "k2"])).await;
    s.server.advance(chrono::Duration::milliseconds(1100));
    let page = sign_in(&Browser::new(), &s).await;
    assert_eq!(page.status, 303, "{}", page.body);
}

#[tokio::test]
async fn states_are_single_use_and_bound_to_the_browser_and_codes_cannot_be_replayed() {
    let s = setup().await;

    // A callback finished in another browser (no sign-in cookie): refused.
    let a = Browser::new();
    let callback = to_callback(&a, &s).await;
    let other = Browser::new().get(&callback).await;
    assert_eq!(other.status, 400, "{}", other.body);
    assert_eq!(other.reason().as_deref(), Some("state_mismatch"));
    // The state is used up by that attempt, so the right browser cannot
    // finish it either: an attacker's probe burns the sign-in, it does not
    // borrow it.
    let burnt = a.get(&callback).await;
    assert_eq!(burnt.reason().as_deref(), Some("unknown_state"));

    // A state that matches no sign-in.
    let b = Browser::new();
    let callback = to_callback(&b, &s).await;
    let forged = b
        .get(&callback.replace(
            &format!("state={}", param(&callback, "state")),
            "state=forged",
        ))
        .await;
    assert_eq!(forged.reason().as_deref(), Some("unknown_state"));

    // Replayed state: the same callback twice.
    let c = Browser::new();
    let callback = to_callback(&c, &s).await;
    assert_eq!(c.get(&callback).await.status, 303);
    let replay = c.get(&callback).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.reason().as_deref(), Some("unknown_state"));

    // Replayed code: a used code with a fresh, valid state. The provider
    // refuses it, and so does Cohort.
    let used_code = param(&callback, "code");
    let d = Browser::new();
    let fresh = to_callback(&d, &s).await;
    let page = d.get(&with_code(&fresh, &used_code)).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(page.reason().as_deref(), Some("token_exchange_failed"));
    let (reason, detail) = last_failure(&s.api).await;
    assert_eq!(reason, "token_exchange_failed");
    assert!(detail.contains("invalid_grant"), "{detail}");

    let reasons: Vec<Value> = s
        .api
        .get("/api/v1/audit?action=sign_in.failure&limit=10")
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["changes"]["reason"]["after"].clone())
        .collect();
    assert_eq!(
        reasons,
        [
            "token_exchange_failed",
            "unknown_state",
            "unknown_state",
            "unknown_state",
            "state_mismatch"
        ],
        "every refusal is audited"
    );
}
