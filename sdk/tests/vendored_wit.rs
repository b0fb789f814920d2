//! The SDK carries its own copy of the WIT it builds against, so that the
//! crate builds on its own once published (it used to read `../wit`, outside
//! itself). The copy must stay the repository's `wit/` folder of the same
//! version, byte for byte: released WIT folders are frozen
//! (`wit/VERSIONING.md`), and a copy that drifted would build plugins
//! against a contract no server speaks.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn the_vendored_wit_is_the_repositorys_byte_for_byte() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"));
    let folder = format!("cohort-plugin@{}", cohort_sdk::WIT_VERSION);
    let vendored = sdk.join("wit").join(&folder);
    let source = sdk.join("../wit").join(&folder);
    let names = |dir: &Path| -> Vec<String> {
        files(dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&vendored),
        names(&source),
        "sdk/wit/{folder} and wit/{folder} hold different files; copy wit/{folder} into sdk/wit/"
    );
    for file in files(&source) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            std::fs::read(&file).unwrap() == std::fs::read(vendored.join(&name)).unwrap(),
            "sdk/wit/{folder}/{name} differs from wit/{folder}/{name}; copy it again"
        );
    }
}

/// What `cargo package` would publish: the WIT copy and the docs, not the
/// Python SDK or the templates beside it, and no path out of the crate (the
/// build would fail where the repository is not).
#[test]
fn the_crate_packages_on_its_own() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "package",
            "--list",
            "--allow-dirty",
            "--offline",
            "-p",
            "cohort-sdk",
        ])
        .current_dir(sdk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo package --list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    let folder = format!("wit/cohort-plugin@{}", cohort_sdk::WIT_VERSION);
    for wanted in [
        "Cargo.toml",
        "README.md",
        "src/lib.rs",
        &format!("{folder}/worlds.wit"),
        &format!("{folder}/host.wit"),
    ] {
        assert!(
            listed.lines().any(|l| l == wanted),
            "{wanted} is not in the package:\n{listed}"
        );
    }
    for unwanted in ["python/", "templates/"] {
        assert!(
            !listed.lines().any(|l| l.starts_with(unwanted)),
            "{unwanted} is in the package:\n{listed}"
        );
    }
    assert!(
        !listed.lines().any(|l| l == "test"),
        "sdk/test is in the package"
    );
    let lib = std::fs::read_to_string(sdk.join("src/lib.rs")).unwrap();
    assert!(
        !lib.contains("\"../"),
        "src/lib.rs reads a path outside the crate"
    );
}
