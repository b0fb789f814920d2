//! Look-alike identities (issue #23, finding 3) against the real binary:
//! a real sign-in through an OpenID Provider asserting the look-alike. The
//! REST API, SCIM and import cases run in process (`host/tests/identities.rs`).

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use cohort_tests::{Browser, OidcProvider, Server};
use serde_json::{Value, json};

const KELVIN_KATE: &str = "\u{212A}ate";
const SECRET: &str = "client-secret-for-identity-tests";

fn provider_for(server: &Server, accounts: Value) -> OidcProvider {
    OidcProvider::start(&json!({
        "clients": [{
            "client_id": "cohort",
            "client_secret": SECRET,
            "redirect_uris": [format!("{}/sign-in/callback", server.base)],
        }],
        "accounts": accounts,
    }))
}

#[tokio::test]
async fn sign_in_refuses_look_alike_claims_and_matches_the_canonical_one() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let op = provider_for(
        &server,
        json!({
            "hidden": {"email": "ka\u{200B}te@corp.example", "email_verified": true},
            "cyrillic": {"email": "kate@corp.ex\u{0430}mple", "email_verified": true},
            "kelvin": {"email": format!("{KELVIN_KATE}@corp.example"), "email_verified": true},
        }),
    );
    let kate = api
        .user("kate", json!({"email": "kate@corp.example"}))
        .await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "corp-op", "plugin": "generic-oidc",
               "config": {"issuer": op.issuer, "client_id": "cohort", "client_secret": SECRET}}),
    )
    .await
    .expect(201);
    let corp = api
        .post(
            "/api/v1/idps",
            json!({"name": "Corp SSO", "instance": "corp-op", "jit": true}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.put_json(
        "/api/v1/sign-in/routing",
        json!({"rules": [{"name": "Corp", "condition": {"email_domain": ["corp.example"]},
                          "target": {"type": "idp", "idp_id": corp}}],
               "default": {"type": "local"}}),
    )
    .await
    .expect(200);

    // The provider asserts Kate's address with a zero-width space, then
    // with a Cyrillic `а`: refused, not matched to Kate nor created (JIT is
    // on), with a stable reason.
    for login in ["hidden", "cyrillic"] {
        let page = Browser::new()
            .through_provider(&server.base, "kate@corp.example", login)
            .await;
        assert_eq!(page.status, 403, "{login}: {}", page.body);
        assert_eq!(
            page.reason().as_deref(),
            Some("invalid_identity"),
            "{login}"
        );
    }
    let failures = api
        .get("/api/v1/audit?action=sign_in.failure&limit=10")
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .cloned()
        .unwrap();
    let details: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| {
            (
                f["changes"]["reason"]["after"].as_str().unwrap(),
                f["changes"]["detail"]["after"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(details.len(), 2, "{failures:?}");
    assert!(details.iter().all(|(r, _)| *r == "invalid_identity"));
    assert!(
        details
            .iter()
            .any(|(_, d)| d.contains("invisible_character"))
            && details.iter().any(|(_, d)| d.contains("mixed_script")),
        "{details:?}"
    );
    assert_eq!(
        api.get("/api/v1/users").await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no look-alike user was created"
    );

    // The Kelvin sign is canonically `K`: the same address, so Kate.
    let page = Browser::new()
        .through_provider(&server.base, "kate@corp.example", "kelvin")
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let links = api
        .get("/api/v1/audit?action=idp_link.create&limit=10")
        .await
        .expect(200)
        .body;
    assert_eq!(links["items"][0]["resource_id"], kate.as_str(), "{links}");
}
