//! Federated sign-in, against a real OpenID Provider (npm `oidc-provider`)
//! on loopback. So far: configuring identity providers, with discovery
//! checked when they are saved.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use cohort_tests::{Api, OidcProvider, Server};
use serde_json::{Value, json};

const SECRET: &str = "client-secret-that-must-never-show";

fn provider() -> OidcProvider {
    OidcProvider::start(&json!({
        "clients": [{
            "client_id": "cohort",
            "client_secret": SECRET,
            "redirect_uris": ["http://127.0.0.1:9/callback"],
        }],
    }))
}

async fn instance(api: &Api, name: &str, issuer: &str) -> Value {
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": name, "plugin": "generic-oidc",
               "config": {"issuer": issuer, "client_id": "cohort", "client_secret": SECRET}}),
    )
    .await
    .expect(201)
    .body
}

/// An IdP named "Corp SSO" over a `generic-oidc` instance for `issuer`;
/// returns its id.
async fn corp_sso(api: &Api, issuer: &str) -> String {
    instance(api, "test-op", issuer).await;
    api.post(
        "/api/v1/idps",
        json!({"name": "Corp SSO", "instance": "test-op"}),
    )
    .await
    .expect(201)
    .body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn identity_providers_are_checked_against_discovery_when_saved() {
    let op = provider();
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    instance(&api, "test-op", &op.issuer).await;

    let created = api
        .post(
            "/api/v1/idps",
            json!({"name": "Test IdP", "instance": "test-op"}),
        )
        .await
        .expect(201);
    let idp = created.body.clone();
    assert_eq!(idp["connector"], "generic-oidc", "{idp}");
    assert_eq!(idp["matching"]["attribute"], "email", "{idp}");
    assert_eq!(idp["jit"], false, "{idp}");
    assert_eq!(idp["enabled"], true, "{idp}");
    let d = &idp["discovered"];
    assert_eq!(d["issuer"], op.issuer.as_str(), "{idp}");
    assert_eq!(
        d["authorization_endpoint"],
        format!("{}/auth", op.issuer),
        "{idp}"
    );
    assert!(d["keys"].as_u64().unwrap() >= 1, "{idp}");
    let algs = d["signing_algorithms"].as_array().unwrap();
    assert!(!algs.is_empty() && !algs.contains(&json!("none")), "{idp}");
    assert!(!created.header("etag").is_empty());
    let id = idp["id"].as_str().unwrap().to_string();

    // The client secret is nowhere: not in the IdP, its instance, or the
    // audit trail.
    for path in [
        format!("/api/v1/idps/{id}"),
        "/api/v1/idps".to_string(),
        format!(
            "/api/v1/plugin-instances/{}",
            idp["instance_id"].as_str().unwrap()
        ),
        "/api/v1/audit?limit=100".to_string(),
    ] {
        let body = api.get(&path).await.expect(200).body.to_string();
        assert!(!body.contains(SECRET), "{path} shows the secret: {body}");
    }
    let audit = api
        .get(&format!("/api/v1/audit?resource_type=idp&resource_id={id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"][0]["action"], "idp.create", "{audit}");

    // Names are unique, case-insensitively.
    let r = api
        .post(
            "/api/v1/idps",
            json!({"name": "test idp", "instance": "test-op"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Changes check discovery again and bump the version.
    let r = api
        .patch(
            &format!("/api/v1/idps/{id}"),
            json!({"enabled": false, "jit": true}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["enabled"], false);
    assert_eq!(r.body["jit"], true);
    assert_eq!(r.body["version"], 2);
    let r = api
        .patch(&format!("/api/v1/idps/{id}"), json!({"discovered": null}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.field(), "discovered", "{}", r.body);

    api.delete(&format!("/api/v1/idps/{id}")).await.expect(204);
    api.get(&format!("/api/v1/idps/{id}")).await.expect(404);
}

#[tokio::test]
async fn discovery_problems_are_the_admins_to_fix_at_once() {
    let op = provider();
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let cases = [
        // Nothing listens there: said without the transport's detail
        // (tests/outbound.rs has more).
        (
            "unreachable",
            "http://127.0.0.1:9".to_string(),
            "the discovery document could not be fetched",
        ),
        // The provider states a different issuer (without the slash).
        ("mismatch", format!("{}/", op.issuer), "issuer"),
    ];
    for (name, issuer, needle) in cases {
        instance(&api, name, &issuer).await;
        let r = api
            .post("/api/v1/idps", json!({"name": name, "instance": name}))
            .await;
        assert_eq!(r.status, 422, "{name}: {}", r.body);
        assert_eq!(r.field(), "instance", "{}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{name}: {needle:?} not in {message:?}"
        );
    }
    // An instance of another kind of plugin is not a connector.
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "feed", "plugin": "csv", "config": {"data": "email\nann@example.com\n"}}),
    )
    .await
    .expect(201);
    let r = api
        .post("/api/v1/idps", json!({"name": "Feed", "instance": "feed"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an IdP connector")
    );
    let r = api
        .post("/api/v1/idps", json!({"name": "Nope", "instance": "nope"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    // Nothing was saved.
    let list = api.get("/api/v1/idps").await.expect(200).body;
    assert_eq!(list["items"], json!([]), "{list}");
}

#[tokio::test]
async fn routing_picks_the_first_matching_rule_and_simulation_says_so() {
    let op = provider();
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let idp = corp_sso(&api, &op.issuer).await;
    let ada = api.user("ada", json!({})).await;
    let _bob = api.user("bob", json!({})).await;
    let eng = api
        .post(
            "/api/v1/groups",
            json!({"name": "Pilot", "subject": "user"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        &format!("/api/v1/groups/{eng}/members"),
        json!({"subject_id": ada}),
    )
    .await
    .expect(200);

    // Until routing is set, everyone signs in locally.
    let r = api.get("/api/v1/sign-in/routing").await.expect(200);
    assert_eq!(r.body["default"], json!({"type": "local"}), "{}", r.body);
    assert_eq!(r.body["version"], 0);

    let routing = json!({
        "rules": [
            {"name": "Pilot group", "condition": {"group": eng}, "target": {"type": "idp", "idp_id": idp}},
            {"name": "Corp domain", "condition": {"email_domain": ["@Corp.Example"]}, "target": {"type": "idp", "idp_id": idp}},
        ],
        "default": {"type": "local"},
    });
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/sign-in/routing",
            Some(&routing),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    // Domains are kept normalized.
    assert_eq!(
        r.body["rules"][1]["condition"]["email_domain"],
        json!(["corp.example"])
    );

    let simulate = |identifier: &str| {
        let api = api.clone();
        let body = json!({"identifier": identifier});
        async move {
            api.post("/api/v1/sign-in/simulate", body)
                .await
                .expect(200)
                .body
        }
    };
    // ada is in the pilot group: rule 0.
    let s = simulate("ADA").await;
    assert_eq!(s["route"]["rule"], 0, "{s}");
    assert_eq!(s["route"]["user_id"], ada.as_str(), "{s}");
    assert_eq!(s["idp"]["name"], "Corp SSO", "{s}");
    // Someone not in the directory at the corporate domain: rule 1.
    let s = simulate("new.hire@corp.example").await;
    assert_eq!(s["route"]["rule"], 1, "{s}");
    assert_eq!(s["route"]["user_id"], Value::Null, "{s}");
    // bob matches nothing: the default.
    let s = simulate("bob@example.com").await;
    assert_eq!(s["route"]["rule"], Value::Null, "{s}");
    assert_eq!(s["route"]["target"], json!({"type": "local"}), "{s}");
    assert_eq!(s["idp"], Value::Null, "{s}");

    // A stale version is refused; so are unknown IdPs, bad domains and
    // device groups, each naming its field.
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/sign-in/routing",
            Some(&routing),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.body);
    let devices = api
        .post(
            "/api/v1/groups",
            json!({"name": "Laptops", "subject": "device"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (rules, field) in [
        (
            json!([{"name": "x", "condition": {"email_domain": ["a.example"]}, "target": {"type": "idp", "idp_id": "01a20000-0000-7000-8000-000000000000"}}]),
            "rules/0/target/idp_id",
        ),
        (
            json!([{"name": "x", "condition": {"email_domain": ["not a domain"]}, "target": {"type": "local"}}]),
            "rules/0/condition/email_domain/0",
        ),
        (
            json!([{"name": "x", "condition": {"group": devices}, "target": {"type": "local"}}]),
            "rules/0/condition/group",
        ),
    ] {
        let r = api
            .send(
                reqwest::Method::PUT,
                "/api/v1/sign-in/routing",
                Some(&json!({"rules": rules, "default": {"type": "local"}})),
                &[],
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.field(), field, "{}", r.body);
    }
    // The IdP that routing uses cannot be deleted.
    let r = api.delete(&format!("/api/v1/idps/{idp}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "idp_in_use", "{}", r.body);
}

#[tokio::test]
async fn simulation_maps_claims_and_matches_a_user() {
    let op = provider();
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let idp = corp_sso(&api, &op.issuer).await;
    let routing = json!({"rules": [], "default": {"type": "idp", "idp_id": idp}});
    api.send(
        reqwest::Method::PUT,
        "/api/v1/sign-in/routing",
        Some(&routing),
        &[],
    )
    .await
    .expect(200);
    let ada = api.user("ada", json!({})).await;
    let sam = api.user("sam", json!({})).await;
    api.post(
        &format!("/api/v1/users/{sam}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);

    let simulate = |claims: Value| {
        let api = api.clone();
        async move {
            api.post(
                "/api/v1/sign-in/simulate",
                json!({"identifier": "someone@example.com", "claims": claims}),
            )
            .await
        }
    };
    // A verified email matches ada, case-insensitively; the connector's
    // mapping is shown.
    let s = simulate(json!({"sub": "u-1", "email": "ADA@example.com", "email_verified": true, "given_name": "Ada"}))
        .await
        .expect(200)
        .body;
    assert_eq!(s["matched"]["outcome"], "matched", "{s}");
    assert_eq!(s["matched"]["user_id"], ada.as_str(), "{s}");
    assert_eq!(s["identity"]["subject"], "u-1", "{s}");
    assert_eq!(s["identity"]["attributes"]["first_name"], "Ada", "{s}");
    // Nobody has this email: no match, or a user would be created with JIT.
    let nobody = json!({"sub": "u-2", "email": "nobody@example.com"});
    let s = simulate(nobody.clone()).await.expect(200).body;
    assert_eq!(s["matched"]["outcome"], "no_match", "{s}");
    api.patch(&format!("/api/v1/idps/{idp}"), json!({"jit": true}))
        .await
        .expect(200);
    let s = simulate(nobody).await.expect(200).body;
    assert_eq!(s["matched"]["outcome"], "would_create", "{s}");
    // A suspended user is refused.
    let s = simulate(json!({"sub": "u-3", "email": "sam@example.com"}))
        .await
        .expect(200)
        .body;
    assert_eq!(s["matched"]["outcome"], "refused", "{s}");
    assert_eq!(s["matched"]["user_id"], sam.as_str(), "{s}");
    assert!(
        s["matched"]["detail"]
            .as_str()
            .unwrap()
            .contains("suspended"),
        "{s}"
    );
    // An unverified email is not used to match.
    let s = simulate(json!({"sub": "u-4", "email": "ada@example.com", "email_verified": false}))
        .await
        .expect(200)
        .body;
    assert_eq!(s["matched"]["outcome"], "missing_attribute", "{s}");
    // Claims without a subject are the connector's to refuse.
    let r = simulate(json!({"email": "ada@example.com"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.field(), "claims", "{}", r.body);
}

#[tokio::test]
async fn routing_rules_can_be_cel_expressions_over_the_user() {
    let op = provider();
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let idp = corp_sso(&api, &op.issuer).await;
    let fin = api
        .user(
            "fin",
            json!({"department": "Finance", "job_title": "Controller"}),
        )
        .await;
    api.user("sal", json!({"department": "Sales"})).await;
    let pilot = api
        .post(
            "/api/v1/groups",
            json!({"name": "Pilot", "subject": "user"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        &format!("/api/v1/groups/{pilot}/members"),
        json!({"subject_id": fin}),
    )
    .await
    .expect(200);
    let put = |expression: &str| {
        let api = &api;
        let body = json!({
            "rules": [{"name": "Finance pilot", "condition": {"expression": expression},
                       "target": {"type": "idp", "idp_id": idp}}],
            "default": {"type": "local"},
        });
        async move { api.put_json("/api/v1/sign-in/routing", body).await }
    };

    // Checked when saved: an unknown attribute is a 422 at its position.
    let r = put("user.departmnet == 'Finance'").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.field(), "rules/0/condition/expression");
    assert!(r.body.to_string().contains("departmnet"), "{}", r.body);
    // Devices are not in scope for routing.
    let r = put("user.devices.exists(d, d.encrypted)").await;
    assert_eq!(r.status, 422, "{}", r.body);

    put("user.department == 'Finance' && in_group('Pilot') && user.job_title.startsWith('Contr')")
        .await
        .expect(200);
    let simulate = |identifier: &str| {
        let api = &api;
        let body = json!({"identifier": identifier});
        async move {
            api.post("/api/v1/sign-in/simulate", body)
                .await
                .expect(200)
                .body
        }
    };
    let s = simulate("fin").await;
    assert_eq!(s["route"]["rule"], 0, "{s}");
    assert_eq!(s["route"]["target"]["type"], "idp", "{s}");
    let s = simulate("sal").await;
    assert_eq!(s["route"]["rule"], Value::Null, "{s}");
    // Out of the group: no longer routed by the rule.
    api.delete(&format!("/api/v1/groups/{pilot}/members/{fin}"))
        .await
        .expect(204);
    let s = simulate("fin").await;
    assert_eq!(s["route"]["rule"], Value::Null, "{s}");
    // Unknown identifiers match no expression.
    let s = simulate("ghost@example.com").await;
    assert_eq!(s["route"]["target"]["type"], "local", "{s}");
}
