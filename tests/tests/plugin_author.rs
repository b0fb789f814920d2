//! A new plugin author, played from an empty folder (issue #25): `cohort
//! plugin new`, `build`, `test` against the template's recorded exchanges,
//! `test --record` against a source of their own, `upload` to a server,
//! and a preview of an instance that reads that source, in Rust and in
//! Python. The other templates (IdP connector, rule evaluator) are built and
//! pass their own cases.
//!
//! Rust builds share `target/author-wasm`, as authors share
//! `~/.cache/cohort/plugin-target`: the first one builds `std` for wasm.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cohort_tests::{Fake, FakeReply};
use cohort_tests::{LOOPBACK_OPT_IN, Server};
use serde_json::{Value, json};

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/author-wasm")
}

/// `cohort <args>` in `dir`, as an author runs it, allowed to reach
/// loopback (where the tests' sources are).
fn cohort(dir: &Path, args: &[&str]) -> Output {
    cohort_with(dir, args, &[LOOPBACK_OPT_IN])
}

/// `cohort <args>` in `dir` with `env` besides.
fn cohort_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(cohort_tests::cohort_bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .env("COHORT_PLUGIN_TARGET_DIR", target_dir())
        .env_remove(LOOPBACK_OPT_IN.0)
        .env_remove("COHORT_API_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// An HR source on loopback: two pages of people, the second person
/// without an email.
fn source() -> Fake {
    Fake::start(|port, request| {
        assert_eq!(request.header("authorization"), Some("Bearer live-token"));
        if request.line.starts_with("GET /api/people?page=2 ") {
            FakeReply::json(&json!({"people": [
                {"id": "e3", "email": "grace@example.com", "first_name": "Grace", "title": "Admiral"}]}))
        } else if request.line.starts_with("GET /api/people ") {
            FakeReply::json(&json!({"people": [
                    {"id": "e1", "email": "ada@example.com", "first_name": "Ada", "department": "R&D"},
                    {"id": "e2", "first_name": "Nobody"}],
                "next": format!("http://127.0.0.1:{port}/api/people?page=2")}))
        } else {
            FakeReply::status("404 Not Found")
        }
    })
}

/// What the importer template maps the source's people to.
fn expected_records() -> Value {
    json!([
        {"kind": "user", "external_id": "e1",
         "attributes": {"email": "ada@example.com", "first_name": "Ada", "department": "R&D"}},
        {"kind": "user", "external_id": "e3",
         "attributes": {"email": "grace@example.com", "first_name": "Grace", "job_title": "Admiral"}},
    ])
}

/// The author's walk for an importer in `lang`, from `new` to a preview on
/// a server.
async fn importer_from_an_empty_folder(lang: &str) {
    let home = tempfile::tempdir().unwrap();
    let name = format!("hr-sync-{lang}");
    ok(&cohort(
        home.path(),
        &["plugin", "new", &name, "--kind", "importer", "--lang", lang],
    ));
    let project = home.path().join(&name);
    let manifest = std::fs::read_to_string(project.join("plugin.toml")).unwrap();
    assert!(
        manifest.contains(&format!("name = \"{name}\"")),
        "{manifest}"
    );

    let built = ok(&cohort(&project, &["plugin", "build", "--output", "json"]));
    let wasm = project.join("dist").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{built}");

    // The template's recorded case passes as written.
    let tested = ok(&cohort(&project, &["plugin", "test", "--output", "json"]));
    assert_eq!(tested["passed"], 1, "{tested}");
    assert_eq!(tested["failed"], 0);

    // A wrong expectation fails, and says what came out instead.
    let case = project.join("tests/cases/basic.json");
    let original = std::fs::read_to_string(&case).unwrap();
    let mut wrong: Value = serde_json::from_str(&original).unwrap();
    wrong["expect"]["records"][1]["attributes"]["email"] = json!("hopper@example.com");
    std::fs::write(&case, wrong.to_string()).unwrap();
    let failed = cohort(&project, &["plugin", "test"]);
    assert!(!failed.status.success());
    let why = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(why.contains("FAILED") && why.contains("but got:"), "{why}");
    std::fs::write(&case, &original).unwrap();
    // So does a case whose recorded request the plugin never makes.
    let mut extra: Value = serde_json::from_str(&original).unwrap();
    let mut unused = extra["exchanges"][1].clone();
    unused["request"]["url"] = json!("https://hr.example.com/api/people?page=3");
    extra["exchanges"].as_array_mut().unwrap().push(unused);
    std::fs::write(&case, extra.to_string()).unwrap();
    let failed = cohort(&project, &["plugin", "test"]);
    let why = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(
        why.contains("recorded but never requested: GET https://hr.example.com/api/people?page=3"),
        "{why}"
    );
    std::fs::write(&case, &original).unwrap();

    // The author points the plugin at their own source (on loopback here),
    // records a case against it, and replays it without the network.
    let source = source();
    let host = format!("127.0.0.1:{}", source.port);
    std::fs::write(
        project.join("plugin.toml"),
        manifest.replace(
            "allowed_hosts = [\"hr.example.com\"]",
            &format!("allowed_hosts = [\"{host}\"]"),
        ),
    )
    .unwrap();
    let live = project.join("tests/cases/live.json");
    let base_url = format!("http://{host}/api");
    let record = [
        "plugin",
        "test",
        "--record",
        "--case",
        "tests/cases/live.json",
    ];
    // A secret written into the case is refused: it would be committed.
    std::fs::write(
        &live,
        json!({"config": {"base_url": base_url, "api_token": "live-token"}}).to_string(),
    )
    .unwrap();
    let refused = cohort(&project, &record);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("$env:NAME"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::write(
        &live,
        json!({"config": {"base_url": base_url, "api_token": "$env:HR_TOKEN"}}).to_string(),
    )
    .unwrap();
    // Recording honours the [outbound] policy: without the loopback
    // opt-in, the plugin may not reach the source.
    let blocked = cohort_with(&project, &record, &[("HR_TOKEN", "live-token")]);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&live).unwrap()).unwrap();
    assert!(
        blocked.status.success(),
        "{}",
        String::from_utf8_lossy(&blocked.stderr)
    );
    assert!(
        written["expect"]["error"]
            .as_str()
            .unwrap()
            .contains("may not reach"),
        "{written}"
    );
    assert!(source.requests().is_empty(), "nothing reached the source");
    let recorded = ok(&cohort_with(
        &project,
        &[&record[..], &["--output", "json"]].concat(),
        &[LOOPBACK_OPT_IN, ("HR_TOKEN", "live-token")],
    ));
    assert_eq!(recorded["written"], 1, "{recorded}");
    assert_eq!(source.requests().len(), 2, "record reads both pages");
    let text = std::fs::read_to_string(&live).unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        written["exchanges"].as_array().unwrap().len(),
        2,
        "{written}"
    );
    assert_eq!(
        written["expect"]["records"],
        expected_records(),
        "{written}"
    );
    assert!(
        !text.contains("live-token"),
        "no credential is written: {text}"
    );
    assert_eq!(
        written["exchanges"][0]["request"]["headers"]["authorization"], "<redacted>",
        "{written}"
    );
    // The replay needs no network, and no token: the credential is checked
    // to be sent, not what it was.
    let replayed = ok(&cohort(
        &project,
        &[
            "plugin",
            "test",
            "--case",
            "tests/cases/live.json",
            "--output",
            "json",
        ],
    ));
    assert_eq!(replayed["passed"], 1, "{replayed}");
    assert_eq!(source.requests().len(), 2, "a replay sends nothing");
    // A header the plugin does not send fails the replay.
    let mut needs = written.clone();
    needs["exchanges"][0]["request"]["headers"]["x-api-key"] = json!("<redacted>");
    std::fs::write(&live, needs.to_string()).unwrap();
    let failed = cohort(
        &project,
        &["plugin", "test", "--case", "tests/cases/live.json"],
    );
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("requested but not recorded: GET http://127.0.0.1"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    std::fs::write(&live, text).unwrap();

    // Upload to a server, configure an instance, preview it.
    let server = Server::start_with(&[LOOPBACK_OPT_IN]);
    let uploaded = Command::new(cohort_tests::cohort_bin())
        .args([
            "plugin",
            "upload",
            "--server",
            server.base.as_str(),
            "--output",
            "json",
        ])
        .current_dir(&project)
        .env("COHORT_API_KEY", cohort_tests::ADMIN_KEY)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let installed = ok(&uploaded);
    assert_eq!(installed["manifest"]["name"], name.as_str(), "{installed}");
    let api = server.admin();
    let instance = api
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "hr", "plugin": name,
                   "config": {"base_url": base_url, "api_token": "live-token"}}),
        )
        .await
        .expect(201)
        .body;
    let id = instance["id"].as_str().unwrap();
    let mut records = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = api
            .post(
                &format!("/api/v1/plugin-instances/{id}/preview"),
                json!({"cursor": cursor, "logs": true}),
            )
            .await
            .expect(200)
            .body;
        let page = page.get("page").unwrap_or_else(|| panic!("{page}")).clone();
        records.extend(page["records"].as_array().unwrap().iter().cloned());
        assert!(
            page["logs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["message"] == "fetched page"),
            "{page}"
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(Value::Array(records), expected_records());
}

#[tokio::test]
async fn a_rust_importer_goes_from_an_empty_folder_to_a_preview_on_a_server() {
    importer_from_an_empty_folder("rust").await;
}

#[tokio::test]
async fn a_python_importer_goes_from_an_empty_folder_to_a_preview_on_a_server() {
    importer_from_an_empty_folder("python").await;
}

/// Every template builds and passes the cases it ships with.
#[test]
fn the_idp_connector_and_rule_evaluator_templates_build_and_pass_their_cases() {
    for lang in ["rust", "python"] {
        for kind in ["idp-connector", "rule-evaluator"] {
            let home = tempfile::tempdir().unwrap();
            let name = format!("my-{kind}-{lang}");
            ok(&cohort(
                home.path(),
                &["plugin", "new", &name, "--kind", kind, "--lang", lang],
            ));
            let project = home.path().join(&name);
            ok(&cohort(&project, &["plugin", "build", "--output", "json"]));
            let tested = ok(&cohort(&project, &["plugin", "test", "--output", "json"]));
            assert!(
                tested["passed"].as_u64().unwrap() >= 1,
                "{kind} {lang}: {tested}"
            );
            assert_eq!(tested["failed"], 0, "{kind} {lang}: {tested}");
            let packaged = ok(&cohort(
                &project,
                &["plugin", "package", "--strict", "--output", "json"],
            ));
            assert_eq!(packaged["name"], name.as_str());
        }
    }
}

/// `new` refuses what would go wrong later: a folder in use, a name a
/// server would refuse.
#[test]
fn new_refuses_a_folder_in_use_and_a_bad_name() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("used")).unwrap();
    std::fs::write(home.path().join("used/notes.txt"), "mine").unwrap();
    let used = cohort(
        home.path(),
        &["plugin", "new", "used", "--kind", "importer"],
    );
    assert!(!used.status.success());
    assert!(
        String::from_utf8_lossy(&used.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&used.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join("used/notes.txt")).unwrap(),
        "mine"
    );
    let bad = cohort(
        home.path(),
        &["plugin", "new", "Bad_Name", "--kind", "importer"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("lowercase letters"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!home.path().join("Bad_Name").exists(), "nothing is written");
}
