//! Loading a plugin: compiling its component (or fetching it from the
//! cache), checking its `cohort:plugin` version and world before any of its
//! code runs, preparing its instances, and asking it to describe itself.
//!
//! Everything here can refuse a plugin; nothing here runs it more than the
//! one `describe` call.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::Component;

use super::health::{Health, HealthReport};
use super::{Runtime, WIT_VERSION};
use crate::plugins::bindings::directory_importer::DirectoryImporterPre;
use crate::plugins::bindings::idp_connector::IdpConnectorPre;
use crate::plugins::bindings::rule_evaluator::RuleEvaluatorPre;
use crate::plugins::bindings::types;
use crate::plugins::limits::PluginError;
use crate::plugins::manifest::{Manifest, World};
use crate::plugins::sandbox::Sandbox;

impl Runtime {
    /// Compile (or fetch from the cache) and prepare a component, checking
    /// its WIT version and world before any of its code runs, then ask it to
    /// describe itself.
    pub fn load(&self, manifest: Manifest, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
        let name = manifest.name.clone();
        let load_err = |message: String| PluginError::Load {
            plugin: name.clone(),
            message,
        };
        if !wasmparser_is_component(bytes) {
            return Err(load_err(
                "not a WebAssembly component (a core module must be turned into a component \
                 first: `wasm-tools component new`)"
                    .into(),
            ));
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| load_err(format!("{e:#}")))?;
        self.check_version(&component, manifest.world)
            .map_err(load_err)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("{e:#}")))?;
        let world = manifest.world;
        let pre = match world {
            World::RuleEvaluator => RuleEvaluatorPre::new(pre).map(WorldPre::Rules),
            World::DirectoryImporter => DirectoryImporterPre::new(pre).map(WorldPre::Importer),
            World::IdpConnector => IdpConnectorPre::new(pre).map(WorldPre::Idp),
        }
        .map_err(|e| {
            load_err(format!(
                "does not implement the {} world: {e:#}",
                world.as_str()
            ))
        })?;
        let mut plugin = LoadedPlugin {
            manifest: Arc::new(manifest),
            pre,
            health: Health::default(),
            info: PluginDescription::default(),
        };
        plugin.info = self.describe(&plugin)?;
        if let Some(config) = &plugin.info.config {
            check_config_agrees(&plugin.manifest, config).map_err(load_err)?;
        }
        Ok(plugin)
    }

    /// The `cohort:plugin` version a component was built against must be
    /// compatible with [`WIT_VERSION`]: same major, and for 0.x the same minor.
    fn check_version(&self, component: &Component, world: World) -> Result<(), String> {
        let ty = component.component_type();
        let names: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .chain(ty.exports(&self.engine).map(|(n, _)| n.to_owned()))
            .collect();
        let export = format!("cohort:plugin/{}", world.export());
        let mut found_export = false;
        for name in &names {
            let Some(rest) = name.strip_prefix("cohort:plugin/") else {
                continue;
            };
            if name.starts_with(&export) {
                found_export = true;
            }
            let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
            let parsed: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
            let (major, minor) = match parsed.as_slice() {
                [major, minor, _] => (*major, *minor),
                _ => return Err(format!("{name} has no cohort:plugin version")),
            };
            let (host_major, host_minor, _) = WIT_VERSION;
            let compatible =
                major == host_major && (major != 0 || minor == host_minor) && minor <= host_minor;
            if !compatible {
                return Err(format!(
                    "built against cohort:plugin@{version}; this server implements \
                     cohort:plugin@{host_major}.{host_minor}.x (see wit/VERSIONING.md)"
                ));
            }
        }
        if !found_export {
            return Err(format!(
                "the manifest says {} but the component does not export {export}; it exports: {}",
                world.as_str(),
                ty.exports(&self.engine)
                    .map(|(n, _)| n.to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    fn describe(&self, plugin: &LoadedPlugin) -> Result<PluginDescription, PluginError> {
        match &plugin.pre {
            WorldPre::Rules(pre) => {
                let info = self.run(plugin, "describe", 0, |store| {
                    let inst = pre.instantiate(&mut *store)?;
                    inst.cohort_plugin_rules().call_describe(&mut *store)
                })?;
                Ok(PluginDescription {
                    display_name: info.display_name,
                    description: info.description,
                    language: Some(info.language),
                    config: None,
                })
            }
            WorldPre::Importer(pre) => {
                let info = self.run(plugin, "describe", 0, |store| {
                    let inst = pre.instantiate(&mut *store)?;
                    inst.cohort_plugin_importer().call_describe(&mut *store)
                })?;
                Ok(PluginDescription::from_info(info))
            }
            WorldPre::Idp(pre) => {
                let info = self.run(plugin, "describe", 0, |store| {
                    let inst = pre.instantiate(&mut *store)?;
                    inst.cohort_plugin_idp().call_describe(&mut *store)
                })?;
                Ok(PluginDescription::from_info(info))
            }
        }
    }
}

pub(super) fn wasmparser_is_component(bytes: &[u8]) -> bool {
    // Magic, then version 0x0d 0x00 and layer 0x01 0x00 for components.
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// A plugin's `describe` must list exactly the manifest's config fields, with
/// the same kinds, so what the admin is asked for and what the plugin reads agree.
fn check_config_agrees(manifest: &Manifest, described: &[DescribedField]) -> Result<(), String> {
    let manifest_fields: Vec<(&str, &str, bool)> = manifest
        .config
        .iter()
        .map(|f| (f.name.as_str(), kind_name_manifest(f.kind), f.required))
        .collect();
    let plugin_fields: Vec<(&str, &str, bool)> = described
        .iter()
        .map(|f| (f.name.as_str(), f.kind, f.required))
        .collect();
    if manifest_fields != plugin_fields {
        return Err(format!(
            "the manifest's config fields {manifest_fields:?} differ from what the plugin \
             describes {plugin_fields:?} (name, kind, required)"
        ));
    }
    Ok(())
}

fn kind_name_manifest(k: crate::plugins::manifest::ConfigKind) -> &'static str {
    use crate::plugins::manifest::ConfigKind as K;
    match k {
        K::Text => "text",
        K::Secret => "secret",
        K::Url => "url",
        K::Number => "number",
        K::Boolean => "boolean",
        K::TextList => "text-list",
    }
}

fn kind_name_wit(k: types::ConfigKind) -> &'static str {
    use types::ConfigKind as K;
    match k {
        K::Text => "text",
        K::Secret => "secret",
        K::Url => "url",
        K::Number => "number",
        K::Boolean => "boolean",
        K::TextList => "text-list",
    }
}

/// The world-specific prepared instance.
pub(super) enum WorldPre {
    Rules(RuleEvaluatorPre<Sandbox>),
    Importer(DirectoryImporterPre<Sandbox>),
    Idp(IdpConnectorPre<Sandbox>),
}

/// A compiled, ready-to-instantiate plugin.
pub struct LoadedPlugin {
    pub(super) manifest: Arc<Manifest>,
    pub(super) pre: WorldPre,
    pub(super) health: Health,
    info: PluginDescription,
}

impl LoadedPlugin {
    /// The manifest it was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the plugin said about itself when loaded.
    pub fn description(&self) -> &PluginDescription {
        &self.info
    }

    /// Call counts and health.
    pub fn health(&self, unhealthy_after: u32) -> HealthReport {
        self.health.report(unhealthy_after)
    }

    pub(super) fn wrong_world(&self, expected: World) -> PluginError {
        PluginError::WrongWorld {
            plugin: self.manifest.name.clone(),
            expected: expected.as_str(),
            actual: self.manifest.world.as_str(),
        }
    }
}

/// What a plugin's `describe` returned.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct PluginDescription {
    /// Human name.
    pub display_name: String,
    /// What it does.
    pub description: String,
    /// For rule evaluators, the rule language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// For importers and connectors, the fields they described.
    #[serde(skip)]
    pub config: Option<Vec<DescribedField>>,
}

/// A config field as the plugin described it.
#[derive(Clone, Debug)]
pub struct DescribedField {
    name: String,
    kind: &'static str,
    required: bool,
    label: String,
    help: String,
}

impl PluginDescription {
    fn from_info(info: types::PluginInfo) -> Self {
        PluginDescription {
            display_name: info.display_name,
            description: info.description,
            language: None,
            config: Some(
                info.config
                    .into_iter()
                    .map(|f| DescribedField {
                        name: f.name,
                        kind: kind_name_wit(f.kind),
                        required: f.required,
                        label: f.label,
                        help: f.help,
                    })
                    .collect(),
            ),
        }
    }

    /// Where the manifest's labels and help texts say something else than
    /// the plugin's `describe()`. Not a reason to refuse the plugin (the
    /// manifest's text is what admins see), but a sign that one of the two
    /// was not updated: `cohort plugin package` warns of each.
    pub fn help_differences(&self, manifest: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        for described in self.config.iter().flatten() {
            let Some(spec) = manifest.config.iter().find(|f| f.name == described.name) else {
                continue;
            };
            for (what, ours, theirs) in [
                ("label", &spec.label, &described.label),
                ("help", &spec.help, &described.help),
            ] {
                if ours.trim() != theirs.trim() {
                    out.push(format!(
                        "field {}: the manifest's {what} {ours:?} differs from describe()'s {theirs:?}",
                        spec.name
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_component_binaries_are_taken_for_components() {
        assert!(wasmparser_is_component(b"\0asm\x0d\0\x01\0rest"));
        // A core module: version 1, layer 0.
        assert!(!wasmparser_is_component(b"\0asm\x01\0\0\0"));
        assert!(!wasmparser_is_component(b"\0asm\x0d\0"));
        assert!(!wasmparser_is_component(b"not wasm"));
    }
}
