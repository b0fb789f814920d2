//! The typed entry points of the importer and IdP worlds, one per WIT
//! function: each prepares a fresh instance of the right world and runs one
//! call in it, with the input's size counted against the limit.

use wasmtime::Store;

use super::Runtime;
use super::load::{LoadedPlugin, WorldPre};
use crate::plugins::bindings::directory_importer::{DirectoryImporter, DirectoryImporterPre};
use crate::plugins::bindings::idp_connector::{IdpConnector, IdpConnectorPre};
use crate::plugins::bindings::{idp, importer, types};
use crate::plugins::footprint::Footprint;
use crate::plugins::limits::PluginError;
use crate::plugins::manifest::World;
use crate::plugins::sandbox::Sandbox;

impl Runtime {
    fn importer<'a>(
        &self,
        plugin: &'a LoadedPlugin,
    ) -> Result<&'a DirectoryImporterPre<Sandbox>, PluginError> {
        match &plugin.pre {
            WorldPre::Importer(pre) => Ok(pre),
            _ => Err(plugin.wrong_world(World::DirectoryImporter)),
        }
    }

    fn idp<'a>(
        &self,
        plugin: &'a LoadedPlugin,
    ) -> Result<&'a IdpConnectorPre<Sandbox>, PluginError> {
        match &plugin.pre {
            WorldPre::Idp(pre) => Ok(pre),
            _ => Err(plugin.wrong_world(World::IdpConnector)),
        }
    }

    fn with_importer<R: Footprint>(
        &self,
        plugin: &LoadedPlugin,
        name: &'static str,
        input: usize,
        f: impl FnOnce(&DirectoryImporter, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let pre = self.importer(plugin)?;
        self.run(plugin, name, input, |store| {
            let inst = pre.instantiate(&mut *store)?;
            f(&inst, store)
        })
    }

    fn with_idp<R: Footprint>(
        &self,
        plugin: &LoadedPlugin,
        name: &'static str,
        input: usize,
        f: impl FnOnce(&IdpConnector, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let pre = self.idp(plugin)?;
        self.run(plugin, name, input, |store| {
            let inst = pre.instantiate(&mut *store)?;
            f(&inst, store)
        })
    }

    /// Instantiate the plugin in a fresh store and drop it, without calling
    /// anything: the fixed cost every per-call instance pays. Used by the
    /// benchmarks and as a cheap liveness probe.
    pub fn instantiate_only(&self, plugin: &LoadedPlugin) -> Result<(), PluginError> {
        let mut store = self.new_store(plugin);
        self.begin(&mut store, "instantiate");
        let result = match &plugin.pre {
            WorldPre::Rules(pre) => pre.instantiate(&mut store).map(drop),
            WorldPre::Importer(pre) => pre.instantiate(&mut store).map(drop),
            WorldPre::Idp(pre) => pre.instantiate(&mut store).map(drop),
        };
        result.map_err(|e| self.classify(&store, e))
    }

    /// `importer.describe` in a fresh instance: the cost of one small call
    /// including instantiation.
    pub fn importer_describe(
        &self,
        plugin: &LoadedPlugin,
    ) -> Result<types::PluginInfo, PluginError> {
        self.with_importer(plugin, "describe", 0, |i, s| {
            i.cohort_plugin_importer().call_describe(s)
        })
    }

    /// `importer.validate-config`.
    pub fn importer_validate_config(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
    ) -> Result<Result<(), types::ConfigError>, PluginError> {
        self.with_importer(plugin, "validate-config", config.footprint(), |i, s| {
            i.cohort_plugin_importer().call_validate_config(s, config)
        })
    }

    /// `importer.fetch-page`.
    pub fn importer_fetch_page(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
        cursor: Option<&str>,
    ) -> Result<Result<importer::Page, importer::ImportError>, PluginError> {
        self.importer_fetch_page_logged(plugin, config, cursor).0
    }

    /// `importer.fetch-page`, with the lines the plugin logged during it:
    /// what an instance's preview shows its author.
    #[allow(clippy::type_complexity)] // The call's answer, and its log.
    pub fn importer_fetch_page_logged(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
        cursor: Option<&str>,
    ) -> (
        Result<Result<importer::Page, importer::ImportError>, PluginError>,
        Vec<crate::plugins::sandbox::LogLine>,
    ) {
        let input = config.footprint() + cursor.map_or(0, str::len);
        let pre = match self.importer(plugin) {
            Ok(pre) => pre,
            Err(e) => return (Err(e), Vec::new()),
        };
        self.run_logged(plugin, "fetch-page", input, true, |store| {
            let inst = pre.instantiate(&mut *store)?;
            inst.cohort_plugin_importer()
                .call_fetch_page(store, config, cursor)
        })
    }

    /// `idp.validate-config`.
    pub fn idp_validate_config(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
    ) -> Result<Result<(), types::ConfigError>, PluginError> {
        self.with_idp(plugin, "validate-config", config.footprint(), |i, s| {
            i.cohort_plugin_idp().call_validate_config(s, config)
        })
    }

    /// `idp.endpoints`.
    pub fn idp_endpoints(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
    ) -> Result<Result<idp::ProviderEndpoints, idp::ConnectorError>, PluginError> {
        self.with_idp(plugin, "endpoints", config.footprint(), |i, s| {
            i.cohort_plugin_idp().call_endpoints(s, config)
        })
    }

    /// `idp.map-claims`.
    pub fn idp_map_claims(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
        claims_json: &str,
    ) -> Result<Result<idp::MappedIdentity, idp::ConnectorError>, PluginError> {
        let claims = idp::Claims {
            json: claims_json.to_owned(),
        };
        self.with_idp(
            plugin,
            "map-claims",
            config.footprint() + claims_json.len(),
            |i, s| i.cohort_plugin_idp().call_map_claims(s, config, &claims),
        )
    }

    /// `idp.list-users`.
    pub fn idp_list_users(
        &self,
        plugin: &LoadedPlugin,
        config: &[types::ConfigEntry],
        cursor: Option<&str>,
    ) -> Result<Result<idp::UserPage, idp::ConnectorError>, PluginError> {
        let input = config.footprint() + cursor.map_or(0, str::len);
        self.with_idp(plugin, "list-users", input, |i, s| {
            i.cohort_plugin_idp().call_list_users(s, config, cursor)
        })
    }
}
