//! The whole sign-in over HTTP: Cohort's pages, a real OpenID Provider (npm
//! `oidc-provider`, its development login and consent forms posted by a
//! cookie-jar browser), the callback, sessions, `/api/v1/me`, sign-out, and
//! local passwords.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
// The password check's real duration is what one test measures.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use cohort_tests::{Api, Browser, OidcProvider, Page, Server, urlencode};
use serde_json::{Value, json};

const SECRET: &str = "client-secret-for-sign-in-tests";

/// A real provider whose client is registered for `server`'s callback, with
/// `accounts` (login → claims).
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

/// An IdP `name` over a new generic-oidc instance for `issuer`.
async fn idp(api: &Api, name: &str, issuer: &str, extra: Value) -> String {
    let instance = format!("{}-op", name.to_lowercase().replace(' ', "-"));
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": instance, "plugin": "generic-oidc",
               "config": {"issuer": issuer, "client_id": "cohort", "client_secret": SECRET}}),
    )
    .await
    .expect(201);
    let mut body = json!({"name": name, "instance": instance});
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            body[k] = v;
        }
    }
    api.post("/api/v1/idps", body).await.expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn route(api: &Api, rules: Value, default: Value) {
    let r = api
        .put_json(
            "/api/v1/sign-in/routing",
            json!({"rules": rules, "default": default}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn audit(api: &Api, action: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/audit?action={action}&limit=100"))
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn me(server: &Server, auth: (&str, &str)) -> reqwest::RequestBuilder {
    cohort_tests::http_client()
        .get(format!("{}/api/v1/me", server.base))
        .header(auth.0, auth.1)
}

#[tokio::test]
async fn a_routed_user_signs_in_at_the_provider_is_linked_and_gets_a_session() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let op = provider_for(
        &server,
        json!({"alice": {"email": "alice@corp.example", "email_verified": true, "name": "Alice"}}),
    );
    let alice = api
        .user("alice", json!({"email": "alice@corp.example"}))
        .await;
    let sso = idp(&api, "Corp SSO", &op.issuer, json!({})).await;
    route(
        &api,
        json!([{"name": "Corp", "condition": {"email_domain": ["corp.example"]},
                 "target": {"type": "idp", "idp_id": sso}}]),
        json!({"type": "local"}),
    )
    .await;

    let b = Browser::new();
    let started = b
        .start_sign_in(&server.base, "alice@corp.example", "")
        .await;
    let to = started.location.clone().unwrap();
    assert!(to.starts_with(&format!("{}/auth?", op.issuer)), "{to}");
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "response_type=code",
    ] {
        assert!(to.contains(p), "{p} missing from {to}");
    }

    let done = b
        .through_provider(&server.base, "alice@corp.example", "alice")
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("{}/sign-in/done", server.base).as_str())
    );
    let cookie = b
        .cookie(&server.base, "cohort_session")
        .expect("a session cookie");
    let landing = b.follow(done, None).await;
    assert!(landing.body.contains("alice"), "{}", landing.body);

    // The session is the user's, by cookie and by JWT.
    let r = me(&server, ("cookie", &format!("cohort_session={cookie}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["id"], alice.as_str(), "{body}");
    assert_eq!(body["session"]["method"]["type"], "idp", "{body}");
    let token: Value = cohort_tests::http_client()
        .post(format!("{}/api/v1/me/token", server.base))
        .header("cookie", format!("cohort_session={cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = token["token"].as_str().expect("a token").to_string();
    let bearer = format!("Bearer {jwt}");
    let r = me(&server, ("authorization", &bearer))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A tampered token is not.
    let tampered = format!("Bearer {}x", &jwt);
    let r = me(&server, ("authorization", &tampered))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Published keys verify it elsewhere; rotation keeps it valid.
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA", "{jwks}");
    api.post("/api/v1/session-keys/rotate", json!({}))
        .await
        .expect(201);
    let r = me(&server, ("authorization", &bearer))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a rotation keeps earlier tokens valid");

    // The link was stored and audited, with the success.
    let links = audit(&api, "idp_link.create").await;
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0]["resource_id"], alice.as_str());
    let ok = audit(&api, "sign_in.success").await;
    assert_eq!(ok[0]["changes"]["match"]["after"], "matched", "{ok:?}");

    // The second sign-in uses the link, even though the email no longer
    // matches.
    api.patch(
        &format!("/api/v1/users/{alice}"),
        json!({"email": "alice.renamed@corp.example"}),
    )
    .await
    .expect(200);
    let b2 = Browser::new();
    let done = b2
        .through_provider(&server.base, "alice.renamed@corp.example", "alice")
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let ok = audit(&api, "sign_in.success").await;
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0]["changes"]["match"]["after"], "linked", "{ok:?}");
    assert_eq!(audit(&api, "idp_link.create").await.len(), 1);

    // Signing out ends the session: cookie and JWT alike.
    let r = cohort_tests::http_client()
        .post(format!("{}/api/v1/me/sign-out", server.base))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = me(&server, ("authorization", &bearer))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = me(&server, ("cookie", &format!("cohort_session={cookie}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(audit(&api, "session.end").await.len(), 1);

    // Suspending a user ends their other sessions too.
    let other = b2.cookie(&server.base, "cohort_session").unwrap();
    api.post(
        &format!("/api/v1/users/{alice}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);
    let r = me(&server, ("cookie", &format!("cohort_session={other}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn routing_by_group_and_domain_sends_each_user_to_their_provider() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let accounts = json!({
        "bob": {"email": "bob@other.example", "email_verified": true},
        "carol": {"email": "carol@other.example", "email_verified": true},
    });
    let eng_op = provider_for(&server, accounts.clone());
    let other_op = provider_for(&server, accounts);
    let bob = api
        .user(
            "bob",
            json!({"email": "bob@other.example", "department": "Engineering"}),
        )
        .await;
    let carol = api
        .user("carol", json!({"email": "carol@other.example"}))
        .await;
    api.user("dave", json!({"email": "dave@example.com"})).await;
    let eng = api
        .dynamic_group(
            "Engineering",
            "user",
            json!({"conditions": [cohort_tests::eq("department", json!(["Engineering"]))]}),
        )
        .await;
    let eng_idp = idp(&api, "Eng SSO", &eng_op.issuer, json!({})).await;
    let other_idp = idp(&api, "Other SSO", &other_op.issuer, json!({})).await;
    route(
        &api,
        json!([
            {"name": "Engineers", "condition": {"group": eng},
             "target": {"type": "idp", "idp_id": eng_idp}},
            {"name": "Other", "condition": {"email_domain": ["other.example"]},
             "target": {"type": "idp", "idp_id": other_idp}},
        ]),
        json!({"type": "local"}),
    )
    .await;

    // Bob is an engineer: the group rule comes first.
    let b = Browser::new();
    let done = b.through_provider(&server.base, "bob", "bob").await;
    assert_eq!(done.status, 303, "{}", done.body);
    let ok = audit(&api, "sign_in.success").await;
    assert_eq!(ok[0]["resource_id"], bob.as_str());
    assert_eq!(ok[0]["changes"]["idp"]["after"], "Eng SSO", "{ok:?}");

    // An identity may only sign in a user routed to its provider: carol
    // signs in at the engineers' provider (after typing bob's name) and is
    // refused, since routing sends her elsewhere.
    let refused = Browser::new()
        .through_provider(&server.base, "bob", "carol")
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.reason().as_deref(), Some("wrong_idp"));
    assert!(
        audit(&api, "idp_link.create")
            .await
            .iter()
            .all(|l| l["resource_id"] != carol.as_str()),
        "no link for the refused identity"
    );

    // Carol's domain sends her to the other provider.
    let b = Browser::new();
    let started = b
        .start_sign_in(&server.base, "carol@other.example", "")
        .await;
    assert!(
        started
            .location
            .as_deref()
            .unwrap()
            .starts_with(&other_op.issuer),
        "{started:?}"
    );
    let done = b
        .through_provider(&server.base, "carol@other.example", "carol")
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let ok = audit(&api, "sign_in.success").await;
    assert_eq!(ok[0]["resource_id"], carol.as_str());
    assert_eq!(ok[0]["changes"]["idp"]["after"], "Other SSO");

    // Dave matches no rule: local sign-in, the password form.
    let page = Browser::new().start_sign_in(&server.base, "dave", "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"name="password""#), "{}", page.body);
}

#[tokio::test]
async fn suspended_unmatched_and_unknown_users_get_their_own_refusals_and_jit_creates() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let op = provider_for(
        &server,
        json!({
            "sam": {"email": "sam@corp.example", "email_verified": true},
            "nora": {"email": "nora@corp.example", "email_verified": true},
            "jill": {"email": "jill@jit.example", "email_verified": true,
                     "given_name": "Jill", "family_name": "Jones"},
        }),
    );
    let sam = api
        .user(
            "sam",
            json!({"email": "sam@corp.example", "state": "active"}),
        )
        .await;
    api.post(
        &format!("/api/v1/users/{sam}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);
    let corp = idp(&api, "Corp SSO", &op.issuer, json!({})).await;
    let jit = idp(&api, "JIT SSO", &op.issuer, json!({"jit": true})).await;
    route(
        &api,
        json!([
            {"name": "Corp", "condition": {"email_domain": ["corp.example"]},
             "target": {"type": "idp", "idp_id": corp}},
            {"name": "JIT", "condition": {"email_domain": ["jit.example"]},
             "target": {"type": "idp", "idp_id": jit}},
        ]),
        json!({"type": "local"}),
    )
    .await;

    let refused = Browser::new()
        .through_provider(&server.base, "sam@corp.example", "sam")
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.reason().as_deref(), Some("user_not_active"));
    assert!(refused.body.contains("not active"), "{}", refused.body);

    let refused = Browser::new()
        .through_provider(&server.base, "nora@corp.example", "nora")
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.reason().as_deref(), Some("no_match"));
    let failures = audit(&api, "sign_in.failure").await;
    let reasons: Vec<&str> = failures
        .iter()
        .map(|f| f["changes"]["reason"]["after"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["no_match", "user_not_active"], "{failures:?}");
    assert!(
        audit(&api, "session.open").await.is_empty(),
        "no session for refusals"
    );

    // JIT: Jill does not exist; the IdP creates her, active, and links her.
    let done = Browser::new()
        .through_provider(&server.base, "jill@jit.example", "jill")
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let users = api
        .get("/api/v1/users?email=jill@jit.example")
        .await
        .expect(200)
        .body;
    let jill = &users["items"][0];
    assert_eq!(jill["state"], "active", "{users}");
    assert_eq!(jill["first_name"], "Jill", "{users}");
    let links = audit(&api, "idp_link.create").await;
    assert_eq!(links[0]["resource_id"], jill["id"], "{links:?}");

    // A disabled IdP refuses at the identifier step.
    api.patch(&format!("/api/v1/idps/{corp}"), json!({"enabled": false}))
        .await
        .expect(200);
    let page = Browser::new()
        .start_sign_in(&server.base, "nora@corp.example", "")
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(page.reason().as_deref(), Some("idp_disabled"));

    // No open redirect: an unregistered target is refused outright.
    let page = Browser::new()
        .get(&format!(
            "{}/sign-in?return_to=https%3A%2F%2Fevil.example%2F",
            server.base
        ))
        .await;
    assert_eq!(page.status, 400);
    assert_eq!(page.reason().as_deref(), Some("redirect_not_allowed"));
    let page = Browser::new()
        .get(&format!(
            "{}/sign-in?return_to=%2F%2Fevil.example%2F",
            server.base
        ))
        .await;
    assert_eq!(page.reason().as_deref(), Some("redirect_not_allowed"));
}

mod local;
