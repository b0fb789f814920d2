//! Credentials in URL configuration fields: user information is refused
//! when an instance is saved, and query strings are hidden from every API
//! view and from the audit log.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use common::InProcess;

use serde_json::json;

#[tokio::test]
async fn url_credentials_are_refused_and_query_strings_hidden() {
    let s = InProcess::start_with_plugins(&[]);
    let admin = s.admin();
    let reader = s.client(Some(&admin.create_key("reader", "read-only").await));
    // An importer with a URL field, allowed to call the host below (an
    // instance naming a host its plugin may not call is refused anyway).
    let wasm = std::fs::read(cohort_tests::plugins_dir().join("echo-importer.wasm")).unwrap();
    use base64::Engine as _;
    admin
        .post(
            "/api/v1/plugins",
            json!({"component": base64::engine::general_purpose::STANDARD.encode(&wasm),
                   "manifest": {"name": "people-feed", "version": "1.0.0",
                       "world": "directory-importer", "description": "echo",
                       "allowed_hosts": ["files.example.com"],
                       "config": [{"name": "url", "kind": "url", "required": true},
                                  {"name": "token", "kind": "secret"}]}}),
        )
        .await
        .expect(201);

    // user:password@ is refused, naming the field, and nothing is stored.
    for url in [
        "https://svc:P4ssw0rd@files.example.com/people.csv?sig=SECRETSIG",
        "https://svc@files.example.com/people.csv",
    ] {
        let r = admin
            .post(
                "/api/v1/plugin-instances",
                json!({"name": "people", "plugin": "people-feed", "config": {"url": url}}),
            )
            .await
            .expect(422);
        assert_eq!(r.code(), "invalid_field", "{}", r.body);
        assert_eq!(r.field(), "config.url", "{}", r.body);
        assert!(!r.body.to_string().contains("P4ssw0rd"), "{}", r.body);
    }

    // A URL with credentials pasted into a text or text-list field is
    // refused the same way: those fields are shown as they are.
    for (config, field) in [
        (
            json!({"issuer": "https://idp.example", "client_id": "https://svc:P4ssw0rd@idp.example/"}),
            "config.client_id",
        ),
        (
            json!({"issuer": "https://idp.example", "client_id": "cohort",
                   "scopes": ["openid", "https://svc:P4ssw0rd@idp.example/scope"]}),
            "config.scopes/1",
        ),
    ] {
        let r = admin
            .post(
                "/api/v1/plugin-instances",
                json!({"name": "op", "plugin": "generic-oidc", "config": config}),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), field, "{}", r.body);
        assert!(!r.body.to_string().contains("P4ssw0rd"), "{}", r.body);
    }

    // A signed link is accepted, and its signature shown to nobody.
    let created = admin
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "people", "plugin": "people-feed",
                   "config": {"url": "https://files.example.com/people.csv?sig=SECRETSIG"}}),
        )
        .await
        .expect(201)
        .body;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["config"]["url"], "https://files.example.com/people.csv?sig=[redacted]",
        "{created}"
    );
    // Resaving what was read keeps the real value; a new signature is a
    // change the audit log shows, without either value.
    admin
        .patch(
            &format!("/api/v1/plugin-instances/{id}"),
            json!({"name": "people-2", "config": {"url": created["config"]["url"]}}),
        )
        .await
        .expect(200);
    admin
        .patch(
            &format!("/api/v1/plugin-instances/{id}"),
            json!({"config": {"url": "https://files.example.com/people.csv?sig=OTHERSIG"}}),
        )
        .await
        .expect(200);
    for path in [
        format!("/api/v1/plugin-instances/{id}"),
        "/api/v1/plugin-instances".to_string(),
        "/api/v1/audit?limit=100".to_string(),
    ] {
        let body = reader.get(&path).await.expect(200).body.to_string();
        assert!(
            !body.contains("SECRETSIG") && !body.contains("OTHERSIG"),
            "{path}: {body}"
        );
        assert!(body.contains("sig=[redacted]"), "{path}: {body}");
    }
    let (status, export) = admin.get_text("/api/v1/audit/export").await;
    assert_eq!(status, 200);
    assert!(
        !export.contains("SECRETSIG") && !export.contains("OTHERSIG"),
        "{export}"
    );
    assert!(export.contains("hidden part changed"), "{export}");
}

#[tokio::test]
async fn a_manifest_may_declare_a_query_harmless() {
    let s = InProcess::start_with_plugins(&[]);
    let admin = s.admin();
    let wasm = std::fs::read(cohort_tests::plugins_dir().join("echo-importer.wasm")).unwrap();
    use base64::Engine as _;
    let manifest = |show: serde_json::Value| {
        json!({"component": base64::engine::general_purpose::STANDARD.encode(&wasm),
               "manifest": {"name": "feed", "version": "1.0.0", "world": "directory-importer",
                   "description": "echo", "allowed_hosts": ["hr.example.com"],
                   "config": [{"name": "url", "kind": "url", "required": true, "show_query": show},
                              {"name": "token", "kind": "secret"}]}})
    };
    let mut bad = manifest(json!(true));
    bad["manifest"]["config"][1]["show_query"] = json!(true);
    let r = admin.post("/api/v1/plugins", bad).await.expect(422);
    assert_eq!(r.field(), "manifest.config[1].show_query", "{}", r.body);
    admin
        .post("/api/v1/plugins", manifest(json!(true)))
        .await
        .expect(201);
    let created = admin
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "feed", "plugin": "feed",
                   "config": {"url": "https://hr.example.com/people?page=1"}}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        created["config"]["url"],
        "https://hr.example.com/people?page=1"
    );
}
