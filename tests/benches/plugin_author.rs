//! What a plugin author waits for (issue #25), with the real `cohort`
//! binary and toolchains:
//!
//!     cargo build --release --bin cohort
//!     cargo bench -p cohort-tests --bench plugin_author
//!
//! - `cohort plugin build` of a new Rust crate on an empty target directory
//!   (std for wasm included, as on an author's first build), a rebuild after
//!   an edit, and a second new crate on the now warm shared directory;
//! - the same for Python (componentize-py);
//! - `cohort plugin test` of each (compiling the component, then the case);
//! - `cohort plugin upload` to a server, and the first preview of an
//!   instance reading a loopback source.
//!
//! Ends with the server's peak resident memory.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cohort_tests::{ADMIN_KEY, Fake, FakeReply, LOOPBACK_OPT_IN, Server};
use serde_json::json;

/// Runs `cohort <args>` in `dir` and returns its wall time in seconds.
fn timed(dir: &Path, target: &Path, args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new(cohort_tests::cohort_bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .env("COHORT_PLUGIN_TARGET_DIR", target)
        .env("COHORT_API_KEY", ADMIN_KEY)
        .env(LOOPBACK_OPT_IN.0, LOOPBACK_OPT_IN.1)
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "cohort {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn line(what: &str, seconds: f64) {
    println!("{what:<52} {seconds:>9.3} s");
}

fn touch(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let home = tempfile::tempdir().unwrap();
    let target = home.path().join("plugin-target");
    let h = home.path();

    timed(
        h,
        &target,
        &["plugin", "new", "first", "--kind", "importer"],
    );
    let first = h.join("first");
    line(
        "rust: build, new crate, empty target dir",
        timed(&first, &target, &["plugin", "build"]),
    );
    touch(&first.join("src/lib.rs"));
    line(
        "rust: rebuild after an edit",
        timed(&first, &target, &["plugin", "build"]),
    );
    timed(
        h,
        &target,
        &["plugin", "new", "second", "--kind", "idp-connector"],
    );
    line(
        "rust: build, another new crate, warm target dir",
        timed(&h.join("second"), &target, &["plugin", "build"]),
    );
    line(
        "rust: plugin test (1 case)",
        timed(&first, &target, &["plugin", "test"]),
    );

    timed(
        h,
        &target,
        &[
            "plugin", "new", "py", "--kind", "importer", "--lang", "python",
        ],
    );
    let py = h.join("py");
    line("python: build", timed(&py, &target, &["plugin", "build"]));
    touch(&py.join("app.py"));
    line(
        "python: rebuild after an edit",
        timed(&py, &target, &["plugin", "build"]),
    );
    line(
        "python: plugin test (1 case)",
        timed(&py, &target, &["plugin", "test"]),
    );

    let source = Fake::start(|_, _| {
        FakeReply::json(&json!({"people": [
            {"id": "e1", "email": "ada@example.com", "first_name": "Ada"}]}))
    });
    let host = format!("127.0.0.1:{}", source.port);
    let server = Server::start_with(&[LOOPBACK_OPT_IN]);
    let api = server.admin();
    for (dir, name) in [(&first, "first"), (&py, "py")] {
        let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
        std::fs::write(
            dir.join("plugin.toml"),
            manifest.replace(
                "allowed_hosts = [\"hr.example.com\"]",
                &format!("allowed_hosts = [\"{host}\"]"),
            ),
        )
        .unwrap();
        line(
            &format!("{name}: plugin upload (check, then install)"),
            timed(
                dir,
                &target,
                &["plugin", "upload", "--server", server.base.as_str()],
            ),
        );
        let instance = api
            .post(
                "/api/v1/plugin-instances",
                json!({"name": name, "plugin": name,
                       "config": {"base_url": format!("http://{host}/api"), "api_token": "t"}}),
            )
            .await
            .expect(201)
            .body;
        let id = instance["id"].as_str().unwrap();
        let started = Instant::now();
        let page = api
            .post(&format!("/api/v1/plugin-instances/{id}/preview"), json!({}))
            .await
            .expect(200)
            .body;
        line(
            &format!("{name}: first preview"),
            started.elapsed().as_secs_f64(),
        );
        assert_eq!(page["page"]["records"][0]["external_id"], "e1", "{page}");
    }
    if let Some(pid) = server.pid() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM")) {
            println!(
                "server peak resident memory: {}",
                hwm.trim_start_matches("VmHWM:").trim()
            );
        }
    }
}
