//! The plugin command line for authors (issue #25): `cohort plugin
//! package` checks a built component as a server would, without one, and
//! `cohort plugin upload` installs or upgrades it on a server.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use cohort_tests::Server;
use serde_json::Value;

/// `cohort plugin package` loads a built component as a server would,
/// without one: it writes the upload body and names the component's
/// SHA-256, warns where the manifest's help texts disagree with
/// `describe()`, and refuses a manifest whose fields the component does not
/// describe. `cohort plugin upload` installs the checked component on a
/// server, and `--upgrade` replaces it in place.
#[tokio::test]
async fn the_plugin_cli_packages_checks_and_uploads_without_a_server_in_between() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let plugins = cohort_tests::plugins_dir();
    let manifest = std::fs::read_to_string(plugins.join("personio.toml"))
        .unwrap()
        .replace("name = \"personio\"", "name = \"personio-cli\"");
    std::fs::write(dir.path().join("plugin.toml"), &manifest).unwrap();
    let cli = |args: &[&str]| {
        Command::new(cohort_tests::cohort_bin())
            .args(args)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let wasm = plugins.join("personio.wasm");
    let wasm = wasm.to_str().unwrap();
    let out = cli(&["plugin", "package", wasm, "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["name"], "personio-cli", "{summary}");
    assert_eq!(summary["world"], "directory-importer");
    assert_eq!(summary["wit_version"], "0.1.0");
    let bytes = std::fs::read(plugins.join("personio.wasm")).unwrap();
    let sha: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(summary["sha256"], sha.as_str());
    let body: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("personio-cli-0.1.0.cohort-plugin.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(body["manifest"]["name"], "personio-cli");
    // Every plugin this repository ships says in describe() what its
    // manifest says, so none warns even with --strict.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shipped = 0;
    for entry in std::fs::read_dir(&plugins).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let component = path.with_extension("wasm");
        let out = cli(&[
            "plugin",
            "package",
            component.to_str().unwrap(),
            "--manifest",
            path.to_str().unwrap(),
            "--strict",
            "--out",
            "shipped.json",
        ]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        shipped += 1;
    }
    assert!(
        shipped >= 10,
        "only {shipped} plugins in {}",
        plugins.display()
    );
    // A help text edited in the manifest only is a warning, an error with
    // --strict.
    std::fs::write(
        dir.path().join("edited.toml"),
        manifest.replace(
            "The API credentials' client id",
            "The client id of the API credentials",
        ),
    )
    .unwrap();
    let edited = cli(&["plugin", "package", wasm, "--manifest", "edited.toml"]);
    assert!(edited.status.success());
    let stderr = String::from_utf8_lossy(&edited.stderr).into_owned();
    assert!(
        stderr.contains("warning: field client_id: the manifest's help"),
        "{stderr}"
    );
    let strict = cli(&[
        "plugin",
        "package",
        wasm,
        "--manifest",
        "edited.toml",
        "--strict",
    ]);
    assert!(!strict.status.success());
    // A manifest the component does not match is refused, with the reason.
    std::fs::write(
        dir.path().join("wrong.toml"),
        manifest.replace("name = \"client_id\"", "name = \"client\""),
    )
    .unwrap();
    let wrong = cli(&["plugin", "package", wasm, "--manifest", "wrong.toml"]);
    assert!(!wrong.status.success());
    let reason = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert!(
        reason.contains("differ from what the plugin describes"),
        "{reason}"
    );

    // Upload, then upgrade in place, over the API.
    let s = Server::start();
    let upload = |extra: &[&str]| {
        let mut args = vec!["plugin", "upload", wasm, "--server", s.base.as_str()];
        args.extend_from_slice(extra);
        Command::new(cohort_tests::cohort_bin())
            .args(&args)
            .current_dir(dir.path())
            .env("COHORT_API_KEY", cohort_tests::ADMIN_KEY)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let out = upload(&["--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(installed["source"], "upload", "{installed}");
    let again = upload(&[]);
    assert!(!again.status.success(), "installing twice must fail");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("plugin_exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    std::fs::write(
        dir.path().join("plugin.toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .unwrap();
    let upgraded = upload(&["--upgrade", "--output", "json"]);
    assert!(
        upgraded.status.success(),
        "{}",
        String::from_utf8_lossy(&upgraded.stderr)
    );
    let api = s.admin();
    let shown = api
        .get("/api/v1/plugins/personio-cli")
        .await
        .expect(200)
        .body;
    assert_eq!(shown["manifest"]["version"], "0.2.0", "{shown}");
}
