//! Federated sign-in, against a real OpenID Provider (npm `oidc-provider`)
//! on loopback. So far: configuring identity providers, with discovery
//! checked when they are saved.

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
        // Nothing listens there.
        (
            "unreachable",
            "http://127.0.0.1:9".to_string(),
            "discovery at http://127.0.0.1:9/.well-known/openid-configuration failed",
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
        json!({"name": "feed", "plugin": "echo-importer", "config": {"url": "http://127.0.0.1:9/people"}}),
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
