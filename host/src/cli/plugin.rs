//! `cohort plugin …`: for plugin authors. `package` loads a built component
//! exactly as a server would (the same manifest checks, the same WIT version
//! check, the same `describe()` comparison), without a server, so that what
//! only shows in WebAssembly is found before an upload; it writes the upload
//! body and prints the component's SHA-256. `upload` does the same check,
//! then installs the plugin on a server, or upgrades it in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Subcommand;
use cohort::clock::SystemClock;
use cohort::config::PluginsConfig;
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
    /// Load a built component as a server would, and write the upload
    /// body (`{"manifest": …, "component": base64}`) for it.
    Package {
        /// The component (`.wasm`).
        component: PathBuf,
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
        /// The component (`.wasm`).
        component: PathBuf,
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
}

/// Loads `component` under `manifest` with a plugin runtime under the
/// configured `[plugins]` limits: the server's own checks, run here. It runs
/// the component's `describe()`, which may contact its allowed hosts.
fn check(
    component: &Path,
    manifest: Option<&Path>,
    limits: &PluginsConfig,
) -> anyhow::Result<Checked> {
    let manifest_path = manifest.map_or_else(|| PathBuf::from("plugin.toml"), Path::to_path_buf);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading the manifest {}", manifest_path.display()))?;
    let manifest = Manifest::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    let bytes = std::fs::read(component)
        .with_context(|| format!("reading the component {}", component.display()))?;
    let runtime = Runtime::new(Limits::from_config(limits), None, Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("starting the plugin runtime: {e}"))?;
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
    limits: &PluginsConfig,
    command: Plugin,
) -> anyhow::Result<()> {
    match command {
        Plugin::Package {
            component,
            manifest,
            out,
            strict,
        } => {
            let checked = check(&component, manifest.as_deref(), limits)?;
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
            let checked = check(&component, manifest.as_deref(), limits)?;
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
