//! Health, readiness, metrics, the OpenAPI document and the CLI help.

use std::process::Command;

use cohort_tests::{Server, cohort_bin};

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = Server::start();
    let anon = s.client(None);
    assert_eq!(anon.get("/healthz").await.expect(200).body["status"], "ok");
    assert_eq!(anon.get("/readyz").await.expect(200).body["status"], "ok");

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
    for sub in ["serve", "backup", "restore", "openapi"] {
        assert!(help.contains(sub), "{sub} missing from --help:\n{help}");
    }
    let out = Command::new(cohort_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
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
