//! Plugins end to end: the real server loads the components built by
//! `plugins/build`, and hostile ones break every limit while the server
//! keeps answering.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cohort_tests::{Api, Server, plugins_dir};
use serde_json::{Value, json};

const STANDARD_RULE: &str =
    r#"{"conditions":[{"attribute":"department","operator":"equals","values":["Engineering"]}]}"#;

async fn evaluate(api: &Api, plugin: &str, rules: &[&str], subjects: Value) -> cohort_tests::Resp {
    api.post(
        &format!("/api/v1/plugins/{plugin}/evaluate"),
        json!({"kind": "user", "rules": rules, "subjects": subjects}),
    )
    .await
}

/// Create a plugin instance and return its id.
async fn create_instance(api: &Api, name: &str, plugin: &str, config: Value) -> String {
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": name, "plugin": plugin, "config": config}),
    )
    .await
    .expect(201)
    .body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Preview an importer instance's first page; `expected` is the status.
async fn preview(api: &Api, id: &str, expected: u16) -> cohort_tests::Resp {
    api.post(&format!("/api/v1/plugin-instances/{id}/preview"), json!({}))
        .await
        .expect(expected)
}

/// A loopback HTTP server answering every request with `body`, recording
/// each request's head.
fn fixture_server(body: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    (port, seen)
}

#[tokio::test]
async fn built_in_and_test_plugins_load_and_describe_themselves() {
    let s = Server::start_with_plugins(&[]);
    let api = s.admin();
    let list = api.get("/api/v1/plugins").await.expect(200).body;
    assert_eq!(list["failed"], json!([]), "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["manifest"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "azure",
            "bamboohr",
            "csv",
            "echo-importer",
            "generic-oidc",
            "google",
            "google-workspace",
            "hibob",
            "hostile",
            "microsoft-graph",
            "okta",
            "okta-users",
            "personio",
            "python-importer",
            "rules-standard",
            "workday"
        ]
    );
    // The OpenID Connect connector describes its settings, the client
    // secret marked secret.
    let oidc = api
        .get("/api/v1/plugins/generic-oidc")
        .await
        .expect(200)
        .body;
    assert_eq!(oidc["manifest"]["world"], "idp-connector", "{oidc}");
    let secret = oidc["manifest"]["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "client_secret")
        .cloned();
    assert_eq!(
        secret.map(|f| f["kind"].clone()),
        Some(json!("secret")),
        "{oidc}"
    );
    let standard = api
        .get("/api/v1/plugins/rules-standard")
        .await
        .expect(200)
        .body;
    assert_eq!(standard["manifest"]["world"], "rule-evaluator");
    assert_eq!(standard["info"]["language"], "conditions-json");
    assert_eq!(standard["source"], "directory");
    assert_eq!(standard["enabled"], true);
    assert_eq!(standard["health"]["status"], "healthy");
    assert_eq!(standard["sha256"].as_str().unwrap().len(), 64);
    api.get("/api/v1/plugins/nope").await.expect(404);
}

/// The names in the manifests `plugins/build` wrote to `target/plugins`,
/// read from the files rather than asked of the server.
fn shipped_plugin_names() -> Vec<String> {
    let dir = plugins_dir().join("../plugins");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("name = "))
                .unwrap()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// With no plugins directory, the server has every plugin it ships, from
/// inside the binary: dynamic groups work on a fresh install. A plugin of
/// the same name in a plugins directory takes the built-in one's place,
/// and a built-in plugin cannot be removed or uploaded over.
#[tokio::test]
async fn shipped_plugins_are_built_in_and_a_directory_overrides_them() {
    let cache = plugins_dir().join("../plugin-cache");
    let cache = cache.to_str().unwrap();
    let s = Server::start_with(&[
        ("COHORT_PLUGINS_BUILTIN", "true"),
        ("COHORT_PLUGIN_CACHE_DIR", cache),
    ]);
    let api = s.admin();
    let list = api.get("/api/v1/plugins").await.expect(200).body;
    assert_eq!(list["failed"], json!([]), "{list}");
    let items = list["items"].as_array().unwrap();
    let names: Vec<String> = items
        .iter()
        .map(|p| p["manifest"]["name"].as_str().unwrap().to_string())
        .collect();
    let shipped = shipped_plugin_names();
    assert!(
        shipped.contains(&"rules-standard".to_string()),
        "{shipped:?}"
    );
    assert_eq!(names, shipped);
    assert!(items.iter().all(|p| p["source"] == "builtin"), "{list}");
    // Dynamic groups work with nothing installed by hand.
    api.user("ada", json!({"department": "Eng"})).await;
    let id = api.equals_group("eng", "user", "department", "Eng").await;
    let members = api
        .get(&format!("/api/v1/groups/{id}/members"))
        .await
        .expect(200)
        .body;
    assert_eq!(members["items"].as_array().unwrap().len(), 1, "{members}");
    // Neither removed nor uploaded over.
    let removed = api.delete("/api/v1/plugins/csv").await.expect(409);
    assert_eq!(
        removed.body["error"]["code"], "plugin_builtin",
        "{}",
        removed.body
    );
    drop(s);

    // A directory with one plugin of a shipped name: that one comes from
    // the directory, the others still from the binary.
    let dir = tempfile::tempdir().unwrap();
    let from = plugins_dir().join("../plugins");
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            from.join(format!("csv.{ext}")),
            dir.path().join(format!("csv.{ext}")),
        )
        .unwrap();
    }
    let s = Server::start_with(&[
        ("COHORT_PLUGINS_BUILTIN", "true"),
        ("COHORT_PLUGIN_CACHE_DIR", cache),
        ("COHORT_PLUGINS_DIR", dir.path().to_str().unwrap()),
    ]);
    let list = s.admin().get("/api/v1/plugins").await.expect(200).body;
    for p in list["items"].as_array().unwrap() {
        let expected = if p["manifest"]["name"] == "csv" {
            "directory"
        } else {
            "builtin"
        };
        assert_eq!(p["source"], expected, "{p}");
    }
    assert_eq!(list["items"].as_array().unwrap().len(), shipped.len());
}

#[tokio::test]
async fn rules_standard_evaluates_and_reports_rule_errors_by_position() {
    let s = Server::start_with_plugins(&[]);
    let api = s.admin();
    let subjects = json!([
        {"username": "ada", "department": "Engineering"},
        {"username": "bob", "department": "Sales"},
        {"username": "cy"},
    ]);
    let r = evaluate(
        &api,
        "rules-standard",
        &[
            STANDARD_RULE,
            r#"{"conditions":[{"attribute":"department","operator":"not_exists"}]}"#,
        ],
        subjects.clone(),
    )
    .await
    .expect(200)
    .body;
    assert_eq!(r["matches"], json!([[0], [2]]));

    let explained = api
        .post(
            "/api/v1/plugins/rules-standard/evaluate",
            json!({"kind": "user", "rules": [STANDARD_RULE], "subjects": subjects, "explain": true}),
        )
        .await
        .expect(200)
        .body;
    let x = &explained["explanations"][1];
    assert_eq!(
        (x["subject"].as_u64(), x["matched"].as_bool()),
        (Some(1), Some(false))
    );
    assert!(x["detail"].as_str().unwrap().contains("\"Sales\""), "{x}");

    let bad = evaluate(
        &api,
        "rules-standard",
        &[
            STANDARD_RULE,
            r#"{"conditions":[{"attribute":"department","operator":"greater_than","values":["x"]}]}"#,
        ],
        json!([]),
    )
    .await
    .expect(422);
    assert_eq!(bad.code(), "invalid_rule");
    assert_eq!(bad.field(), "rules[1]/conditions/0/operator");

    let bad = evaluate(
        &api,
        "rules-standard",
        &[STANDARD_RULE],
        json!([{"shoe_size": 9}]),
    )
    .await
    .expect(422);
    assert_eq!(bad.field(), "subjects[0].shoe_size");
    let wrong = evaluate(&api, "echo-importer", &[STANDARD_RULE], json!([]))
        .await
        .expect(409);
    assert_eq!(wrong.code(), "plugin_wrong_world");
}

#[tokio::test]
async fn hostile_plugins_fail_their_own_calls_and_the_server_keeps_serving() {
    let s = Server::start_with_plugins(&[]);
    let api = s.admin();
    let subjects: Vec<Value> = (0..1000)
        .map(|i| json!({"username": format!("u{i}")}))
        .collect();
    let subjects = Value::Array(subjects);

    // A host missing from the manifest is refused before any traffic, and logged.
    let r = evaluate(
        &api,
        "hostile",
        &["http:http://192.0.2.1/steal"],
        json!([{}]),
    )
    .await
    .expect(200)
    .body;
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("HostNotAllowed(\"192.0.2.1\")"),
        "{message}"
    );
    assert!(
        s.log()
            .contains("refused outbound request to a host not in the plugin manifest")
    );

    // The wasm32 std has no files or environment to find.
    let r = evaluate(&api, "hostile", &["env"], json!([{}]))
        .await
        .expect(200)
        .body;
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("home=None file=Err"), "{message}");

    // While a plugin spins in an infinite loop, other requests are answered.
    let spinning = {
        let api = api.clone();
        let subjects = subjects.clone();
        tokio::spawn(async move { evaluate(&api, "hostile", &["loop"], subjects).await })
    };
    for _ in 0..5 {
        api.get("/api/v1/users").await.expect(200);
    }
    let r = spinning.await.unwrap().expect(502);
    assert_eq!(r.code(), "plugin_cpu_limit");

    let cases = [
        ("alloc", "plugin_memory_limit"),
        ("trap-at:500", "plugin_trap"),
        ("big-output", "plugin_output_too_large"),
    ];
    for (behaviour, code) in cases {
        let r = evaluate(&api, "hostile", &[behaviour], subjects.clone())
            .await
            .expect(502);
        assert_eq!(r.code(), code, "{behaviour}: {}", r.body);
        s.client(None).get("/healthz").await.expect(200);
    }

    // Five failures in a row: reported unhealthy, with the last error.
    evaluate(&api, "hostile", &["trap-at:0"], json!([{}]))
        .await
        .expect(502);
    let health = api.get("/api/v1/plugins/hostile").await.expect(200).body["health"].clone();
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["consecutive_failures"], 5);
    assert_eq!(health["last_error"]["code"], "plugin_trap");
    // Other plugins are unaffected.
    evaluate(&api, "rules-standard", &[STANDARD_RULE], json!([{}]))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_python_component_runs_and_finds_no_files_or_environment() {
    let s = Server::start_with_plugins(&[("COHORT_TEST_SENTINEL", "do-not-leak")]);
    let api = s.admin();
    let roster = create_instance(
        &api,
        "py",
        "python-importer",
        json!({"people": ["7,ada@example.com,Engineering"]}),
    )
    .await;
    let page = preview(&api, &roster, 200).await.body;
    assert_eq!(
        page["page"]["records"],
        json!([{"kind": "user", "external_id": "7",
                "attributes": {"email": "ada@example.com", "department": "Engineering"}}])
    );
    // Its own config validation runs inside the component.
    let bad = api
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "py2", "plugin": "python-importer", "config": {"people": ["no commas"]}}),
        )
        .await
        .expect(422);
    assert_eq!(bad.field(), "config.people");

    let probe = create_instance(&api, "probe", "python-importer", json!({"probe": true})).await;
    let page = preview(&api, &probe, 200).await.body;
    let records = page["page"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    for r in records {
        let outcome = r["attributes"]["probe"].as_str().unwrap();
        assert!(
            outcome.starts_with("denied"),
            "{}: {outcome}",
            r["external_id"]
        );
    }
    assert!(!page.to_string().contains("do-not-leak"));
}

#[tokio::test]
async fn upload_configure_preview_and_remove_a_plugin() {
    let s = Server::start_with_plugins(&[]);
    let api = s.admin();
    let (port, seen) = fixture_server(
        r#"{"people":[{"id":"e1","email":"ada@example.com","department":"R&D"}],"next":null}"#
            .into(),
    );
    let wasm = std::fs::read(plugins_dir().join("echo-importer.wasm")).unwrap();
    let component = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let manifest = json!({
        "name": "echo-uploaded", "version": "1.2.3", "world": "directory-importer",
        "description": "echo, allowed to reach the fixture",
        "allowed_hosts": [format!("127.0.0.1:{port}")],
        "config": [
            {"name": "url", "kind": "url", "required": true},
            {"name": "token", "kind": "secret"}
        ]
    });

    // Refusals first: bad base64, a core module, a manifest that lies about the world.
    let r = api
        .post(
            "/api/v1/plugins",
            json!({"manifest": manifest, "component": "%%%"}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "component");
    let core = base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0");
    let r = api
        .post(
            "/api/v1/plugins",
            json!({"manifest": manifest, "component": core}),
        )
        .await
        .expect(422);
    assert_eq!(r.code(), "plugin_load_failed");
    let mut lying = manifest.clone();
    lying["world"] = json!("rule-evaluator");
    let r = api
        .post(
            "/api/v1/plugins",
            json!({"manifest": lying, "component": component}),
        )
        .await
        .expect(422);
    assert!(
        r.body
            .to_string()
            .contains("does not export cohort:plugin/rules"),
        "{}",
        r.body
    );
    let mut drifted = manifest.clone();
    drifted["config"] = json!([{"name": "url", "kind": "url", "required": true}]);
    let r = api
        .post(
            "/api/v1/plugins",
            json!({"manifest": drifted, "component": component}),
        )
        .await
        .expect(422);
    assert!(r.body.to_string().contains("differ"), "{}", r.body);
    let ro = s.client(Some(&api.create_key("ro", "read-only").await));
    ro.post(
        "/api/v1/plugins",
        json!({"manifest": manifest, "component": component}),
    )
    .await
    .expect(403);

    let installed = api
        .post(
            "/api/v1/plugins",
            json!({"manifest": manifest, "component": component}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(installed["source"], "upload");
    assert_eq!(installed["manifest"]["version"], "1.2.3");
    api.post(
        "/api/v1/plugins",
        json!({"manifest": manifest, "component": component}),
    )
    .await
    .expect(409);

    // Instance config is checked against the manifest, then by the plugin.
    let url = format!("http://127.0.0.1:{port}/people");
    for (config, field) in [
        (json!({"url": url, "nope": 1}), "config.nope"),
        (json!({"url": 5}), "config.url"),
        (json!({"token": "x"}), "config.url"),
        (json!({"url": "ftp://x/"}), "config.url"),
        (
            json!({"url": format!("http://127.0.0.1:{port}/forbidden")}),
            "config.url",
        ),
    ] {
        let r = api
            .post(
                "/api/v1/plugin-instances",
                json!({"name": "x", "plugin": "echo-uploaded", "config": config}),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), field, "{}", r.body);
    }
    let secret = "s3cret-token-value-913";
    let created = api
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "hr", "plugin": "echo-uploaded", "config": {"url": url, "token": secret}}),
        )
        .await
        .expect(201);
    let etag = created.header("etag").to_string();
    let instance = created.body;
    let id = instance["id"].as_str().unwrap().to_string();
    assert_eq!(instance["secrets_set"], json!(["token"]));
    assert_eq!(instance["config"], json!({"url": url}));
    let fetched = api
        .get(&format!("/api/v1/plugin-instances/{id}"))
        .await
        .expect(200)
        .body;
    assert!(!fetched.to_string().contains(secret));

    let page = preview(&api, &id, 200).await.body;
    assert_eq!(
        page["page"]["records"][0]["attributes"]["department"],
        "R&D"
    );
    assert!(page["page"].get("logs").is_none(), "{page}");
    // Asked for, the call's own log lines come back with the page.
    let logged = api
        .post(
            &format!("/api/v1/plugin-instances/{id}/preview"),
            json!({"logs": true}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        logged["page"]["logs"],
        json!([{"level": "info", "message": "fetched page", "fields": {"people": "1"}}]),
        "{logged}"
    );
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /people "), "{head}");
    assert!(
        head.contains(&format!("authorization: bearer {secret}")),
        "{head}"
    );

    // PATCH keeps the secret unless it is replaced; a stale ETag is refused.
    let patched = api
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/plugin-instances/{id}"),
            Some(&json!({"name": "hr-berlin"})),
            &[("if-match", &etag)],
        )
        .await
        .expect(200)
        .body;
    assert_eq!(patched["secrets_set"], json!(["token"]));
    api.send(
        reqwest::Method::PATCH,
        &format!("/api/v1/plugin-instances/{id}"),
        Some(&json!({"name": "again"})),
        &[("if-match", &etag)],
    )
    .await
    .expect(412);

    // The same importer from the plugins directory may call no host at all:
    // an instance pointing it at one is refused when it is saved, naming
    // the field and the host, not when it first runs.
    let refused = api
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "closed", "plugin": "echo-importer", "config": {"url": url}}),
        )
        .await
        .expect(422)
        .body;
    assert_eq!(refused["error"]["field"], "config.url", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("allowed_hosts (none)"),
        "{message}"
    );
    // The two previews above, and nothing for the refused instance.
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the refused instance reached the source"
    );

    // Disabled plugins refuse calls but keep their instances.
    api.post("/api/v1/plugins/echo-uploaded/disable", json!({}))
        .await
        .expect(200);
    let r = preview(&api, &id, 409).await;
    assert_eq!(r.code(), "plugin_disabled");
    api.post("/api/v1/plugins/echo-uploaded/enable", json!({}))
        .await
        .expect(200);

    // The secret is nowhere in the audit log or in the data files.
    let audit = api
        .get("/api/v1/audit?resource_type=plugin_instance")
        .await
        .expect(200)
        .body;
    assert!(!audit.to_string().contains(secret));
    let actions: Vec<String> = api.get("/api/v1/audit").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for action in [
        "plugin.install",
        "plugin.disable",
        "plugin.enable",
        "plugin_instance.create",
        "plugin_instance.update",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing from {actions:?}"
        );
    }
    for entry in walk(s.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret in clear",
            entry.display()
        );
    }

    // Uploaded plugins and instances survive a restart.
    let mut s = s;
    s.restart_after_kill();
    let api = s.admin();
    api.get("/api/v1/plugins/echo-uploaded").await.expect(200);
    let page = preview(&api, &id, 200).await.body;
    assert_eq!(page["page"]["records"][0]["external_id"], "e1");

    // Removal: not while in use, never for directory plugins.
    let r = api
        .delete("/api/v1/plugins/echo-uploaded")
        .await
        .expect(409);
    assert_eq!(r.code(), "plugin_in_use");
    api.delete(&format!("/api/v1/plugin-instances/{id}"))
        .await
        .expect(204);
    api.delete("/api/v1/plugins/echo-uploaded")
        .await
        .expect(204);
    api.get("/api/v1/plugins/echo-uploaded").await.expect(404);
    let r = api
        .delete("/api/v1/plugins/rules-standard")
        .await
        .expect(409);
    assert_eq!(r.code(), "plugin_from_directory");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn backups_carry_uploaded_plugins_and_sealed_secrets() {
    let s = Server::start_with_plugins(&[]);
    let api = s.admin();
    let (port, seen) = fixture_server(r#"{"people":[],"next":null}"#.into());
    let wasm = std::fs::read(plugins_dir().join("echo-importer.wasm")).unwrap();
    let manifest = json!({
        "name": "echo-backed-up", "version": "0.1.0", "world": "directory-importer",
        "description": "", "allowed_hosts": [format!("127.0.0.1:{port}")],
        "config": [{"name": "url", "kind": "url", "required": true}, {"name": "token", "kind": "secret"}]
    });
    let component = base64::engine::general_purpose::STANDARD.encode(&wasm);
    api.post(
        "/api/v1/plugins",
        json!({"manifest": manifest, "component": component}),
    )
    .await
    .expect(201);
    let id = create_instance(
        &api,
        "hr",
        "echo-backed-up",
        json!({"url": format!("http://127.0.0.1:{port}/p"), "token": "restored-secret"}),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cohort.backup");
    let restored = dir.path().join("restored");
    let key_file = s.data_dir().join("secret.key");
    for args in [
        vec![
            "backup",
            "--output",
            file.to_str().unwrap(),
            "--server",
            &s.base,
            "--api-key",
            cohort_tests::ADMIN_KEY,
        ],
        vec![
            "restore",
            "--input",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new(cohort_tests::cohort_bin())
            .args(&args)
            .env_remove("COHORT_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The key is not in the backup, by design: `--key-file` both checks the
    // backup and installs the key in the restored directory.
    assert_eq!(
        std::fs::read(restored.join("secret.key")).unwrap(),
        std::fs::read(&key_file).unwrap()
    );

    let copy = Server::start_on(&restored, dir.path().join("restored.log"));
    let api = copy.admin();
    let plugin = api
        .get("/api/v1/plugins/echo-backed-up")
        .await
        .expect(200)
        .body;
    assert_eq!(plugin["source"], "upload");
    preview(&api, &id, 200).await;
    let head = seen.lock().unwrap().last().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("authorization: bearer restored-secret"),
        "{head}"
    );
}
