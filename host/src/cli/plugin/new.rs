//! `cohort plugin new`: a plugin project from the SDK's templates
//! (`sdk/templates/`), embedded in the binary so that it works anywhere the
//! binary does. A template is a complete plugin that builds, passes its unit
//! tests and its recorded case as written; the new project differs only in
//! its name and in where it finds the SDK.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use cohort::plugins::manifest::Manifest;

/// Which world the plugin implements.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Brings people and devices in from another system.
    Importer,
    /// Lets people sign in through an identity provider.
    IdpConnector,
    /// A language for group rules.
    RuleEvaluator,
}

/// What the plugin is written in.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust, with the `cohort-sdk` crate.
    Rust,
    /// Python, with componentize-py and the `cohort_sdk` package.
    Python,
}

/// One file of a template: its path in the project and its text.
type File = (&'static str, &'static str);

macro_rules! template {
    ($dir:literal: $($path:literal),+ $(,)?) => {
        &[$(($path, include_str!(concat!("../../../../sdk/templates/", $dir, "/", $path)))),+]
    };
}

const RUST_IMPORTER: &[File] = template!("rust/importer":
    "Cargo.toml", "clippy.toml", "plugin.toml", "src/lib.rs", "tests/cases/basic.json");
const RUST_IDP: &[File] = template!("rust/idp-connector":
    "Cargo.toml", "clippy.toml", "plugin.toml", "src/lib.rs", "tests/cases/basic.json");
const RUST_RULES: &[File] = template!("rust/rule-evaluator":
    "Cargo.toml", "clippy.toml", "plugin.toml", "src/lib.rs", "tests/cases/basic.json",
    "tests/cases/unknown-attribute.json");
const PYTHON_IMPORTER: &[File] = template!("python/importer":
    "app.py", "plugin.toml", "tests/test_app.py", "tests/cases/basic.json");
const PYTHON_IDP: &[File] = template!("python/idp-connector":
    "app.py", "plugin.toml", "tests/test_app.py", "tests/cases/basic.json");
const PYTHON_RULES: &[File] = template!("python/rule-evaluator":
    "app.py", "rules.py", "plugin.toml", "tests/test_app.py", "tests/cases/basic.json",
    "tests/cases/unknown-attribute.json");

/// The Python SDK, copied into every Python project: componentize-py
/// bundles what it finds beside `app.py`, and a copy needs no pip index.
const PYTHON_SDK: &[File] = template!("../python":
    "cohort_sdk/__init__.py", "cohort_sdk/_wit.py", "cohort_sdk/config.py", "cohort_sdk/encoding.py", "cohort_sdk/errors.py", "cohort_sdk/host.py", "cohort_sdk/http.py", "cohort_sdk/idp.py", "cohort_sdk/log.py", "cohort_sdk/records.py", "cohort_sdk/rules.py", "cohort_sdk/testing.py");

/// The contract the server implements, for componentize-py (Rust projects
/// get it from the SDK crate's vendored copy).
pub const WIT: &[File] = &[
    (
        "wit/cohort-plugin@0.1.0/host.wit",
        include_str!("../../../../wit/cohort-plugin@0.1.0/host.wit"),
    ),
    (
        "wit/cohort-plugin@0.1.0/idp.wit",
        include_str!("../../../../wit/cohort-plugin@0.1.0/idp.wit"),
    ),
    (
        "wit/cohort-plugin@0.1.0/importer.wit",
        include_str!("../../../../wit/cohort-plugin@0.1.0/importer.wit"),
    ),
    (
        "wit/cohort-plugin@0.1.0/rules.wit",
        include_str!("../../../../wit/cohort-plugin@0.1.0/rules.wit"),
    ),
    (
        "wit/cohort-plugin@0.1.0/types.wit",
        include_str!("../../../../wit/cohort-plugin@0.1.0/types.wit"),
    ),
    (
        "wit/cohort-plugin@0.1.0/worlds.wit",
        include_str!("../../../../wit/cohort-plugin@0.1.0/worlds.wit"),
    ),
];

/// The name each template's plugin has, replaced by the new one.
fn template_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Importer => "my-importer",
        Kind::IdpConnector => "my-idp",
        Kind::RuleEvaluator => "my-rules",
    }
}

fn files(kind: Kind, lang: Lang) -> &'static [File] {
    match (lang, kind) {
        (Lang::Rust, Kind::Importer) => RUST_IMPORTER,
        (Lang::Rust, Kind::IdpConnector) => RUST_IDP,
        (Lang::Rust, Kind::RuleEvaluator) => RUST_RULES,
        (Lang::Python, Kind::Importer) => PYTHON_IMPORTER,
        (Lang::Python, Kind::IdpConnector) => PYTHON_IDP,
        (Lang::Python, Kind::RuleEvaluator) => PYTHON_RULES,
    }
}

/// The `cohort-sdk` dependency line: the given path, else the SDK of the
/// checkout this binary was built from. The crate is not on crates.io yet,
/// and a name there that Cohort does not own is not one to build against.
fn sdk_dependency(sdk_path: Option<&Path>) -> anyhow::Result<String> {
    let path = match sdk_path {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--sdk-path {}", p.display()))?,
        None => Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk"))
            .canonicalize()
            .ok()
            .filter(|p| p.join("Cargo.toml").is_file())
            .context(
                "this cohort binary was not built from a checkout that is still here, so give the \
                 SDK with --sdk-path <Cohort checkout>/sdk",
            )?,
    };
    if !path.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml: not the SDK", path.display());
    }
    Ok(format!(
        "cohort-sdk = {{ path = {:?} }}",
        path.display().to_string()
    ))
}

/// What `new` made, for the summary it prints.
pub struct Created {
    pub dir: PathBuf,
    pub files: Vec<String>,
}

/// Write a new project for a `kind` plugin in `lang` called `name` into
/// `dir`, which must not exist or be empty.
pub fn create(
    dir: &Path,
    name: Option<&str>,
    kind: Kind,
    lang: Lang,
    sdk_path: Option<&Path>,
) -> anyhow::Result<Created> {
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        bail!(
            "{} is not empty; give a new folder for the project",
            dir.display()
        );
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .context("give the plugin's name with --name")?,
    };
    let placeholder = template_name(kind);
    // The name goes into TOML, Rust and Python text: check it before it is
    // written anywhere, with the server's own rule.
    let (_, manifest) = files(kind, lang)
        .iter()
        .find(|(path, _)| *path == "plugin.toml")
        .context("the template has no plugin.toml")?;
    let mut manifest = Manifest::from_toml(manifest).map_err(|e| anyhow::anyhow!("{e}"))?;
    manifest.name = name.clone();
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("the name {name:?}: {e}"))?;
    let dependency = match lang {
        Lang::Rust => Some(sdk_dependency(sdk_path)?),
        Lang::Python => None,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (path, text) in files(kind, lang) {
        let mut text = text.replace(placeholder, &name);
        if *path == "Cargo.toml" {
            let dependency = dependency.as_deref().unwrap_or_default();
            text = text
                .lines()
                .map(|l| {
                    if l.starts_with("cohort-sdk = ") {
                        dependency
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
        }
        out.push(((*path).to_string(), text));
    }
    if lang == Lang::Python {
        for (path, text) in PYTHON_SDK.iter().chain(WIT) {
            out.push(((*path).to_string(), (*text).to_string()));
        }
    }
    out.push((".gitignore".into(), gitignore(lang).into()));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in &out {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(Created {
        dir: dir.to_path_buf(),
        files: out.into_iter().map(|(p, _)| p).collect(),
    })
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/dist/\n/target/\nCargo.lock.orig\n",
        Lang::Python => "/dist/\n__pycache__/\n",
    }
}
