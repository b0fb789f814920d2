//! `cohort plugin …`: for plugin authors, from an empty folder to a plugin
//! on a server. `new` writes a project from the SDK's templates; `build`
//! makes its component; `test` runs that component through the server's
//! runtime against recorded HTTP exchanges. `package` loads a built
//! component exactly as a server would (the same manifest checks, the same
//! WIT version check, the same `describe()` comparison), without a server,
//! so that what only shows in WebAssembly is found before an upload; it
//! writes the upload body and prints the component's SHA-256. `upload` does
//! the same check, then installs the plugin on a server, or upgrades it in
//! place.

mod build;
mod new;
mod test;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Subcommand;
use cohort::clock::SystemClock;
use cohort::config::Config;
use cohort::plugins::manifest::Manifest;
use cohort::plugins::{Limits, Runtime};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Target;
use super::table::{self, Shape};

/// Plugin authoring.
#[derive(Subcommand, Debug)]
pub enum Plugin {
    /// Start a plugin project in a new folder, from the SDK's templates.
    New {
        /// The folder to create (it may exist if empty).
        dir: PathBuf,
        /// What the plugin does.
        #[arg(long, value_enum)]
        kind: new::Kind,
        /// What it is written in.
        #[arg(long, value_enum, default_value_t = new::Lang::Rust)]
        lang: new::Lang,
        /// The plugin's name; the folder's name by default.
        #[arg(long)]
        name: Option<String>,
        /// Rust: the `sdk/` folder of a Cohort checkout to build against;
        /// by default the checkout this binary was built from, if present.
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
    /// Build the project's component into `dist/<name>.wasm`.
    Build {
        /// The project; the current directory by default.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Rust: where cargo builds. One directory for every project, so
        /// that std is built once: $COHORT_PLUGIN_TARGET_DIR, else
        /// ~/.cache/cohort/plugin-target.
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Run the built component against the project's cases
    /// (`tests/cases/*.json`): recorded HTTP exchanges and what must come out.
    Test {
        /// The project; the current directory by default.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Only these case files.
        #[arg(long = "case", value_name = "FILE")]
        cases: Vec<PathBuf>,
        /// Write each case's outcome into its `expect` instead of comparing.
        #[arg(long, conflicts_with = "record")]
        bless: bool,
        /// Send the requests to the network, and write what was asked and
        /// answered into each case's `exchanges`, and the outcome into its
        /// `expect`. Request headers are not written.
        #[arg(long)]
        record: bool,
        /// Print the plugin's log lines.
        #[arg(long)]
        logs: bool,
    },
    /// Load a built component as a server would, and write the upload
    /// body (`{"manifest": …, "component": base64}`) for it.
    Package {
        /// The component; `dist/<name>.wasm` by default.
        component: Option<PathBuf>,
        /// The manifest; `plugin.toml` in the current directory by default.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Where to write the upload body; `<name>-<version>.cohort-plugin.json`
        /// by default.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Treat the warnings (help texts that differ from `describe()`) as
        /// errors.
        #[arg(long)]
        strict: bool,
    },
    /// Check the component as `package` does, then install it on a server
    /// (`POST /api/v1/plugins`), or with `--upgrade` replace the installed
    /// version in place (`PUT /api/v1/plugins/{name}`).
    Upload {
        /// The component; `dist/<name>.wasm` by default.
        component: Option<PathBuf>,
        /// The manifest; `plugin.toml` in the current directory by default.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Upgrade the installed plugin of that name instead of installing.
        #[arg(long)]
        upgrade: bool,
    },
}

/// What a component says about itself once loaded, and what to warn about.
struct Checked {
    manifest: Manifest,
    bytes: Vec<u8>,
    sha256: String,
    summary: Value,
    warnings: Vec<String>,
    runtime: Arc<Runtime>,
    loaded: Arc<cohort::plugins::LoadedPlugin>,
}

/// Reads and checks a manifest, as an upload would.
fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the manifest {}", path.display()))?;
    let manifest =
        Manifest::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(manifest)
}

/// A plugin runtime under the configured `[plugins]` limits and
/// `[outbound]` policy, as a server would run the plugin; with `tap`, its
/// HTTP requests go through the tap first. Compiled components are cached
/// (the configured cache, else `~/.cache/cohort/compiled-plugins`), so that
/// `test`, `package` and `upload` of the same build compile it once: a
/// Python component takes seconds.
fn runtime(config: &Config, tap: Option<Arc<test::Tap>>) -> anyhow::Result<Arc<Runtime>> {
    let outbound = Arc::new(cohort::outbound::Outbound::new(config.outbound.policy()));
    let mut limits = Limits::from_config(&config.plugins).with_outbound(outbound);
    if let Some(tap) = tap {
        limits = limits.with_http_tap(tap);
    }
    let cache = config
        .plugins
        .cache_dir
        .clone()
        .or_else(|| build::user_cache().map(|c| c.join("compiled-plugins")));
    let runtime = Runtime::new(limits, cache.as_deref(), Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("starting the plugin runtime: {e}"))?;
    Ok(Arc::new(runtime))
}

/// Loads the component under `manifest` (`plugin.toml` by default; the
/// component `dist/<name>.wasm` beside it by default) with a runtime as a
/// server's: the server's own checks, run here. It runs the component's
/// `describe()`, which may contact its allowed hosts.
fn check(
    component: Option<&Path>,
    manifest: Option<&Path>,
    config: &Config,
    tap: Option<Arc<test::Tap>>,
) -> anyhow::Result<Checked> {
    let manifest_path = manifest.map_or_else(|| PathBuf::from("plugin.toml"), Path::to_path_buf);
    let manifest = read_manifest(&manifest_path)?;
    let component = component.map_or_else(
        || {
            manifest_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("dist")
                .join(format!("{}.wasm", manifest.name))
        },
        Path::to_path_buf,
    );
    let bytes = std::fs::read(&component).with_context(|| {
        format!(
            "reading the component {} (build it with `cohort plugin build`)",
            component.display()
        )
    })?;
    let runtime = runtime(config, tap)?;
    let loaded = runtime
        .load(manifest.clone(), &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", component.display()))?;
    let info = loaded.description();
    let warnings = info.help_differences(&manifest);
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (major, minor, patch) = cohort::plugins::runtime::WIT_VERSION;
    let wit_version = format!("{major}.{minor}.{patch}");
    let summary = json!({
        "name": manifest.name,
        "version": manifest.version,
        "world": manifest.world.as_str(),
        "wit_version": wit_version,
        "display_name": info.display_name,
        "description": info.description,
        "config_fields": manifest.config.len(),
        "allowed_hosts": manifest.allowed_hosts,
        "sha256": sha256,
        "size_bytes": bytes.len(),
    });
    Ok(Checked {
        manifest,
        bytes,
        sha256,
        summary,
        warnings,
        runtime,
        loaded: Arc::new(loaded),
    })
}

fn upload_body(checked: &Checked) -> Value {
    json!({
        "manifest": checked.manifest,
        "component": base64::engine::general_purpose::STANDARD.encode(&checked.bytes),
    })
}

fn warn(checked: &Checked) {
    for w in &checked.warnings {
        eprintln!("warning: {}", table::printable(w));
    }
}

/// Runs one plugin command and prints its result.
pub async fn run(
    target: &Target,
    default_server: &str,
    config: &Config,
    command: Plugin,
) -> anyhow::Result<()> {
    match command {
        Plugin::New {
            dir,
            kind,
            lang,
            name,
            sdk_path,
        } => {
            let created = new::create(&dir, name.as_deref(), kind, lang, sdk_path.as_deref())?;
            let summary = json!({
                "dir": created.dir.display().to_string(),
                "files": created.files,
            });
            table::print(target.output, &summary, Shape::One);
            eprintln!(
                "next: cd {} && cohort plugin build && cohort plugin test",
                created.dir.display()
            );
        }
        Plugin::Build { dir, target_dir } => {
            let manifest = read_manifest(&dir.join("plugin.toml"))?;
            let target_dir = target_dir.or_else(build::default_target_dir).context(
                "no home directory for the shared build directory: give --target-dir or \
                 COHORT_PLUGIN_TARGET_DIR",
            )?;
            let started = cohort::clock::Stopwatch::start();
            let dir_for_build = dir.clone();
            let name = manifest.name.clone();
            let world = manifest.world.as_str().to_string();
            let out = tokio::task::spawn_blocking(move || {
                build::build(&dir_for_build, &name, &world, &target_dir)
            })
            .await??;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or_default();
            let summary = json!({
                "component": out.display().to_string(),
                "size_bytes": size,
                "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            });
            table::print(target.output, &summary, Shape::One);
        }
        Plugin::Test {
            dir,
            cases,
            bless,
            record,
            logs,
        } => {
            let cases = if cases.is_empty() {
                test::find_cases(&dir)?
            } else {
                cases
            };
            let mode = match (bless, record) {
                (_, true) => test::Run::Record,
                (true, false) => test::Run::Bless,
                (false, false) => test::Run::Check,
            };
            let config = config.clone();
            let report = tokio::task::spawn_blocking(move || -> anyhow::Result<test::Report> {
                let tap = test::new_tap();
                let checked = check(
                    None,
                    Some(&dir.join("plugin.toml")),
                    &config,
                    Some(Arc::clone(&tap)),
                )?;
                warn(&checked);
                test::run_cases(&checked.runtime, &tap, &checked.loaded, &cases, mode, logs)
            })
            .await??;
            for name in &report.written {
                eprintln!("wrote {name}; review it before committing it");
            }
            for place in &report.review {
                eprintln!("review: {}", table::printable(place));
            }
            for name in &report.passed {
                eprintln!("ok      {name}");
            }
            for (name, why) in &report.failed {
                eprintln!("FAILED  {name}\n{}", indent(why));
            }
            let summary = json!({
                "passed": report.passed.len(),
                "failed": report.failed.len(),
                "written": report.written.len(),
            });
            table::print(target.output, &summary, Shape::One);
            if !report.failed.is_empty() {
                bail!(
                    "{} of {} case(s) failed",
                    report.failed.len(),
                    cases_len(&report)
                );
            }
        }
        Plugin::Package {
            component,
            manifest,
            out,
            strict,
        } => {
            let checked = check(component.as_deref(), manifest.as_deref(), config, None)?;
            warn(&checked);
            if strict && !checked.warnings.is_empty() {
                bail!("{} warning(s) with --strict", checked.warnings.len());
            }
            let output = out.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "{}-{}.cohort-plugin.json",
                    checked.manifest.name, checked.manifest.version
                ))
            });
            let body = serde_json::to_vec(&upload_body(&checked))?;
            std::fs::write(&output, body)
                .with_context(|| format!("writing {}", output.display()))?;
            let mut summary = checked.summary;
            summary["package"] = json!(output.display().to_string());
            table::print(target.output, &summary, Shape::One);
            eprintln!(
                "{}: sha256 {}; upload it with `cohort plugin upload` or POST it to /api/v1/plugins",
                output.display(),
                checked.sha256
            );
        }
        Plugin::Upload {
            component,
            manifest,
            upgrade,
        } => {
            // The key before the check, which compiles and runs the plugin.
            let client = super::client(target, default_server)?;
            let checked = check(component.as_deref(), manifest.as_deref(), config, None)?;
            warn(&checked);
            let body = upload_body(&checked);
            let installed = if upgrade {
                let path = format!("/api/v1/plugins/{}", super::seg(&checked.manifest.name));
                client.call(Method::PUT, &path, Some(body)).await?
            } else {
                client
                    .call(Method::POST, "/api/v1/plugins", Some(body))
                    .await?
            };
            let shown = json!({
                "name": installed["manifest"]["name"],
                "version": installed["manifest"]["version"],
                "world": installed["manifest"]["world"],
                "enabled": installed["enabled"],
                "source": installed["source"],
                "sha256": installed["sha256"],
            });
            match target.output {
                table::Output::Json => table::print(target.output, &installed, Shape::One),
                table::Output::Table => table::print(target.output, &shown, Shape::One),
            }
        }
    }
    Ok(())
}

fn cases_len(report: &test::Report) -> usize {
    report.passed.len() + report.failed.len()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
