//! Health, readiness, metrics, the OpenAPI document and the CLI help.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::process::Command;

use cohort_tests::{Server, cohort_bin, plugin_env};
use serde_json::{Value, json};

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = Server::start();
    let anon = s.client(None);
    assert_eq!(anon.get("/healthz").await.expect(200).body["status"], "ok");
    // Started without plugins: the built-in groups' evaluator is missing.
    let ready = anon.get("/readyz").await.expect(503).body;
    assert_eq!(
        ready["missing_evaluators"],
        json!(["rules-standard"]),
        "{ready}"
    );
    assert!(ready["storage"].is_null(), "{ready}");

    let api = s.admin();
    let u = api.create_user("metered").await;
    api.get(&format!("/api/v1/users/{}", u["id"].as_str().unwrap()))
        .await
        .expect(200);
    api.get("/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057")
        .await
        .expect(404);
    let (status, text) = anon.get_text("/metrics").await;
    assert!(status.is_success());
    assert!(text.contains("# TYPE cohort_http_request_duration_seconds histogram"));
    assert!(
        text.contains(
            r#"cohort_http_requests_total{method="POST",route="/api/v1/users",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"cohort_http_requests_total{method="GET",route="/api/v1/users/{id}",status="200"} 1"#
    ));
    assert!(text.contains(
        r#"cohort_http_requests_total{method="GET",route="/api/v1/users/{id}",status="404"} 1"#
    ));

    let doc = anon.get("/api/v1/openapi.json").await.expect(200).body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/state",
        "/api/v1/devices/{id}/check-in",
        "/api/v1/audit/export",
        "/api/v1/api-keys",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["User"]["properties"]["username"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[test]
fn help_documents_every_subcommand() {
    let out = Command::new(cohort_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "serve", "backup", "restore", "migrate", "openapi", "users", "groups", "keys", "import",
        "plugin",
    ] {
        assert!(help.contains(sub), "{sub} missing from --help:\n{help}");
    }
    let out = Command::new(cohort_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

/// The admin CLI drives a running server over its API: JSON for scripts
/// (the API's own objects), tables for people, the API's error code when
/// something is refused, and the server's audit log names the key it used.
#[tokio::test]
async fn the_admin_cli_manages_users_keys_and_groups_over_the_api() {
    let s = Server::start();
    let cli = |args: &[&str]| {
        let out = Command::new(cohort_bin())
            .args(args)
            .args(["--server", &s.base])
            .env("COHORT_API_KEY", cohort_tests::ADMIN_KEY)
            .env_remove("COHORT_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&[
        "users",
        "create",
        "--username",
        "ada",
        "--email",
        "ada@example.com",
        "--set",
        "department=Engineering",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let ada: Value = serde_json::from_str(&out).unwrap();
    let id = ada["id"].as_str().unwrap();
    // What the CLI printed is what the API holds.
    let stored = s
        .admin()
        .get(&format!("/api/v1/users/{id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(stored["department"], "Engineering");
    assert_eq!(ada, stored);

    for i in 0..3 {
        s.admin().create_user(&format!("user{i}")).await;
    }
    let (code, table, err) = cli(&["users", "list"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("USERNAME"),
        "{table}"
    );
    assert!(table.contains("ada@example.com"), "{table}");
    assert_eq!(lines.last(), Some(&"(4 rows)"), "{table}");
    // --limit caps a list that the CLI otherwise pages through.
    let (_, limited, _) = cli(&["users", "list", "--limit", "2", "--output", "json"]);
    let limited: Value = serde_json::from_str(&limited).unwrap();
    assert_eq!(limited["items"].as_array().unwrap().len(), 2);

    assert_eq!(ada["state"], "staged");
    let (code, _, err) = cli(&["users", "state", id, "active"]);
    assert_eq!(code, Some(0), "{err}");
    let after = s
        .admin()
        .get(&format!("/api/v1/users/{id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(after["state"], "active");

    let (code, out, err) = cli(&[
        "keys",
        "create",
        "--name",
        "auditor",
        "--role",
        "read-only",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let keys = s
        .admin()
        .get("/api/v1/api-keys")
        .await
        .expect(200)
        .body
        .to_string();
    assert!(keys.contains("auditor"), "{keys}");
    // The new read-only key may list but not write: the API's refusal
    // comes through with its code, and the exit status is 1.
    let secret = key["key"].as_str().or(key["secret"].as_str()).unwrap();
    let out = Command::new(cohort_bin())
        .args([
            "users",
            "create",
            "--username",
            "eve",
            "--email",
            "eve@example.com",
        ])
        .args(["--server", &s.base, "--api-key", secret])
        .env_remove("COHORT_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("group.json");
    std::fs::write(
        &def,
        json!({"name": "eng", "subject": "user", "type": "static"}).to_string(),
    )
    .unwrap();
    let (code, out, err) = cli(&[
        "groups",
        "create",
        "--json",
        def.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let group: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(group["name"], "eng");

    // Unknown ids are the API's 404, not a crash.
    let (code, _, err) = cli(&["users", "get", "u_nonexistent"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404") || err.contains("400"), "{err}");
}

#[test]
fn bad_configuration_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cohort.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nunknown_key = 1\n").unwrap();
    let out = Command::new(cohort_bin())
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));
    let out = Command::new(cohort_bin())
        .arg("serve")
        .env("COHORT_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("COHORT_LISTEN"));
}

/// The names of the groups `/readyz` says wait for an evaluator, with the
/// reason given for each.
fn waiting(ready: &Value) -> Vec<(String, String)> {
    ready["waiting_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["evaluator"], "rules-standard", "{g}");
            (
                g["name"].as_str().unwrap().to_string(),
                g["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn readiness_names_the_groups_whose_evaluator_is_not_loaded() {
    let mut s = Server::start_with_plugins(&[]);
    let api = s.admin();
    let ready = api.get("/readyz").await.expect(200).body;
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["missing_evaluators"], json!([]));
    let engineers = api
        .equals_group("Engineers", "user", "department", "Engineering")
        .await;
    // A lone CEL expression is evaluated by the host: it needs no plugin.
    api.dynamic_group(
        "Finance",
        "user",
        json!({"conditions": [{"expression": "user.department == 'Finance'"}]}),
    )
    .await;
    api.get("/readyz").await.expect(200);

    // Disabled at run time: not ready, and which groups suffer.
    api.post("/api/v1/plugins/rules-standard/disable", json!({}))
        .await
        .expect(200);
    let ready = api.get("/readyz").await.expect(503).body;
    assert_eq!(
        ready["missing_evaluators"],
        json!(["rules-standard"]),
        "{ready}"
    );
    let names = waiting(&ready);
    assert!(
        names.contains(&("Engineers".into(), "disabled".into())),
        "{names:?}"
    );
    assert!(
        names.contains(&("All Users".into(), "disabled".into())),
        "{names:?}"
    );
    assert!(!names.iter().any(|(n, _)| n == "Finance"), "{names:?}");
    // 7 built-in groups and Engineers.
    assert_eq!(ready["waiting_group_count"], 8, "{ready}");
    let entry = ready["waiting_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Engineers")
        .unwrap();
    assert_eq!(entry["id"], engineers.as_str());
    assert_eq!(entry["subject"], "user");
    let status = ready["status"].as_str().unwrap();
    assert!(
        status.contains("rules-standard") && status.contains("8 dynamic groups"),
        "{status}"
    );
    // A load balancer asks about this host alone: a missing evaluator is
    // the same on every host, so it does not take this one out. It still
    // says what is missing; a scope it does not know is a 400 naming it.
    let host_only = api.get("/readyz?scope=host").await.expect(200).body;
    assert_eq!(host_only["status"], "ok", "{host_only}");
    assert_eq!(host_only["missing_evaluators"], json!(["rules-standard"]));
    api.get("/readyz?scope=all").await.expect(503);
    let bad = api.get("/readyz?scope=cluster").await.expect(400).body;
    assert_eq!(bad["error"]["field"], "scope", "{bad}");

    // Anyone may ask: they learn that groups wait and for which plugin,
    // not which groups (their names say things about people). Neither
    // does a key that may not read the directory.
    for key in [None, Some(api.create_key("agents", "device-agent").await)] {
        let ready = s
            .client(key.as_deref())
            .get("/readyz")
            .await
            .expect(503)
            .body;
        assert_eq!(ready["missing_evaluators"], json!(["rules-standard"]));
        assert_eq!(ready["waiting_group_count"], 8, "{ready}");
        assert_eq!(ready["waiting_groups"], json!([]), "{ready}");
        assert!(!ready.to_string().contains("Engineers"), "{ready}");
    }
    let reader = api.create_key("auditor", "read-only").await;
    let ready = s
        .client(Some(&reader))
        .get("/readyz")
        .await
        .expect(503)
        .body;
    assert_eq!(waiting(&ready).len(), 8, "{ready}");
    // An unknown key is no error: a probe still gets its answer.
    let ready = s
        .client(Some("not-a-key"))
        .get("/readyz")
        .await
        .expect(503)
        .body;
    assert_eq!(ready["waiting_groups"], json!([]), "{ready}");

    api.post("/api/v1/plugins/rules-standard/enable", json!({}))
        .await
        .expect(200);
    api.get("/readyz").await.expect(200);

    // Started again without its plugins directory: not installed.
    s.restart_with(&[]);
    let ready = s.admin().get("/readyz").await.expect(503).body;
    let names = waiting(&ready);
    assert!(
        names.contains(&("Engineers".into(), "not_installed".into())),
        "{names:?}"
    );
    assert!(!names.iter().any(|(n, _)| n == "Finance"), "{names:?}");

    // And with it: ready.
    let env = plugin_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.restart_with(&env);
    let ready = s.client(None).get("/readyz").await.expect(200).body;
    assert_eq!(ready["waiting_group_count"], 0, "{ready}");
}
