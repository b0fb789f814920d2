//! Embeds the plugins Cohort ships (the rule evaluator and every importer
//! and identity provider, as `plugins/build` leaves them in
//! `target/plugins`), so that a fresh `cohort serve` has dynamic groups and
//! importers without a plugins directory.
//!
//! The components are built by `plugins/build` rather than here because
//! they need a wasm32 toolchain that a build script cannot count on. When
//! none are found the server still builds, with a warning, and has no
//! built-in plugins; `COHORT_BUILTIN_PLUGINS_DIR` points elsewhere (a
//! target directory of its own, say).

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=COHORT_BUILTIN_PLUGINS_DIR");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = std::env::var_os("COHORT_BUILTIN_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target/plugins"));
    // A directory's time changes when files are added or removed in it.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut found: Vec<(String, PathBuf, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter_map(|wasm| {
            let toml = wasm.with_extension("toml");
            let name = wasm.file_stem()?.to_string_lossy().into_owned();
            toml.exists().then_some((name, wasm, toml))
        })
        .collect();
    found.sort();
    let mut code = String::from("&[\n");
    for (name, wasm, toml) in &found {
        println!("cargo:rerun-if-changed={}", wasm.display());
        println!("cargo:rerun-if-changed={}", toml.display());
        let _ = writeln!(
            code,
            "    crate::plugins::Builtin {{ file: {name:?}, manifest: include_str!({toml:?}), component: include_bytes!({wasm:?}) }},"
        );
    }
    code.push(']');
    if found.is_empty() {
        println!(
            "cargo:warning=no built-in plugins embedded: {} has none; run plugins/build first for a server with dynamic groups and importers",
            dir.display()
        );
    }
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("builtin_plugins.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("writing {}: {e}", out.display());
    }
}
