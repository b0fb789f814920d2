//! Upgrading an importer in place (issue #25): its instance, secrets and
//! links survive, so the next run after the upgrade still knows whom it
//! brought in and suspends the person who left; a rollback is one call;
//! an upgrade the instances could not follow is refused with the reason.

use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::vendors::{fake_personio, install_allowed, personio_employee};
use super::*;

fn upload(plugin: &str, wasm: &str, version: &str, port: u16, config: Value) -> Value {
    let bytes = std::fs::read(cohort_tests::plugins_dir().join(format!("{wasm}.wasm"))).unwrap();
    json!({"component": base64::engine::general_purpose::STANDARD.encode(&bytes), "manifest": {
        "name": plugin, "version": version, "world": "directory-importer",
        "description": "personio, allowed to reach the fake",
        "allowed_hosts": [format!("127.0.0.1:{port}")],
        "config": config}})
}

fn personio_fields() -> Value {
    json!([
        {"name": "client_id", "kind": "text", "required": true},
        {"name": "client_secret", "kind": "secret", "required": true},
        {"name": "base_url", "kind": "url"}])
}

#[tokio::test]
async fn an_upgraded_importer_keeps_its_instance_secrets_and_links_and_rolls_back() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let employees: Vec<Value> = (0..5)
        .map(|i| personio_employee(i, Some(format!("up{i}@example.com")), "active"))
        .collect();
    let employees = Arc::new(Mutex::new(employees));
    let fake = fake_personio(Arc::clone(&employees));
    let port = fake.port;
    install_allowed(&api, "personio", port, personio_fields()).await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "hr", "plugin": "personio-test",
               "config": {"client_id": "cid", "client_secret": "personio-secret",
                          "base_url": format!("http://127.0.0.1:{port}")}}),
    )
    .await
    .expect(201);
    let input = json!({"instance": "hr", "new_users": "active", "match_on": "employee_id",
                       "missing": "suspend", "max_change_share": 1.0});
    let first = api.run_import(input.clone()).await;
    assert_eq!(first["counts"]["created"], 5, "{first}");

    // Version 1.1.0: same world, same fields. The instance is untouched.
    let upgraded = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/plugins/personio-test",
            Some(&upload(
                "personio-test",
                "personio",
                "1.1.0",
                port,
                personio_fields(),
            )),
            &[],
        )
        .await
        .expect(200)
        .body;
    assert_eq!(upgraded["manifest"]["version"], "1.1.0", "{upgraded}");
    let instance = &api.get("/api/v1/plugin-instances").await.expect(200).body["items"][0];
    assert_eq!(instance["name"], "hr");
    assert_eq!(
        instance["secrets_set"],
        json!(["client_secret"]),
        "{instance}"
    );
    let audit = api
        .get("/api/v1/audit?action=plugin.upgrade")
        .await
        .expect(200)
        .body;
    let change = &audit["items"][0]["changes"]["version"];
    assert_eq!(
        (change["before"].as_str(), change["after"].as_str()),
        (Some("1.0.0"), Some("1.1.0")),
        "{audit}"
    );

    // The admin renames the source too: its identity is the instance's id,
    // not its name.
    let id = instance["id"].as_str().unwrap().to_string();
    api.patch(
        &format!("/api/v1/plugin-instances/{id}"),
        json!({"name": "hr-renamed"}),
    )
    .await
    .expect(200);
    let mut input = input;
    input["instance"] = json!(id);

    // Someone left the source: the run after the upgrade and the rename
    // still knows that this source brought them in (the links survived), and
    // suspends them; the secret still authenticates it.
    employees.lock().unwrap().remove(2);
    let after = api.run_import(input.clone()).await;
    assert_eq!(after["state"], "completed", "{after}");
    assert_eq!(after["counts"]["suspended"], 1, "{after}");
    assert_eq!(after["counts"]["created"], 0, "{after}");
    assert_eq!(
        user_by_email(&api, "up2@example.com").await["state"],
        "suspended"
    );

    // One call back to 1.0.0; the instance still runs.
    let back = api
        .post("/api/v1/plugins/personio-test/rollback", json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(back["manifest"]["version"], "1.0.0", "{back}");
    let again = api.run_import(input).await;
    assert_eq!(again["state"], "completed", "{again}");
    assert_eq!(again["counts"]["unchanged"], 4, "{again}");

    // Refused, with the reason: another world, and a version whose new
    // required fields the instance does not set (workday's report URL and
    // credentials, no defaults).
    let mut evaluator = upload("personio-test", "rules-standard", "2.0.0", port, json!([]));
    evaluator["manifest"]["world"] = json!("rule-evaluator");
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/plugins/personio-test",
            Some(&evaluator),
            &[],
        )
        .await
        .expect(409)
        .body;
    assert_eq!(r["error"]["code"], "incompatible_upgrade", "{r}");
    assert_eq!(r["error"]["field"], "manifest.world", "{r}");
    let workday_fields = json!([
        {"name": "report_url", "kind": "url", "required": true},
        {"name": "username", "kind": "text", "required": true},
        {"name": "password", "kind": "secret", "required": true},
        {"name": "mappings", "kind": "text-list"},
        {"name": "id_field", "kind": "text"}]);
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/plugins/personio-test",
            Some(&upload(
                "personio-test",
                "workday",
                "2.0.0",
                port,
                workday_fields,
            )),
            &[],
        )
        .await
        .expect(409)
        .body;
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("instance \"hr-renamed\"") && message.contains("config.report_url"),
        "{r}"
    );
    // The refused version ran (it was asked about the instance), so the
    // attempt is on the record.
    let refused = api
        .get("/api/v1/audit?action=plugin.upgrade_refused")
        .await
        .expect(200)
        .body;
    assert_eq!(
        refused["items"][0]["changes"]["version"]["after"], "2.0.0",
        "{refused}"
    );
    // Nothing changed: still 1.0.0, and the path must name the plugin.
    let now = api
        .get("/api/v1/plugins/personio-test")
        .await
        .expect(200)
        .body;
    assert_eq!(now["manifest"]["version"], "1.0.0");
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/plugins/personio-test",
            Some(&upload(
                "other-name",
                "personio",
                "1.2.0",
                port,
                personio_fields(),
            )),
            &[],
        )
        .await
        .expect(422)
        .body;
    assert_eq!(r["error"]["field"], "manifest.name", "{r}");
    // A built-in plugin is replaced through the plugins directory, not here.
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/plugins/csv",
            Some(&upload("csv", "csv", "9.0.0", port, json!([]))),
            &[],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
}
