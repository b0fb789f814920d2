//! The wasmtime side of plugins: one `Engine` for the server, compiled
//! components cached on disk, instances from the pooling allocator, and the
//! bookkeeping that turns every way a call can go wrong into a
//! [`PluginError`] without touching the rest of the server.
//!
//! What lives how long (the Spin "factor" split):
//! - per server: the [`Runtime`] (engine, linker, epoch ticker);
//! - per plugin: a [`LoadedPlugin`] (compiled component, `InstancePre`, health);
//! - per call: a `Store` and an instance, dropped when the call returns, so no
//!   state leaks from one call (or one tenant's config) to the next. A
//!   [`RuleSession`] is the one exception: compiled rules are state by
//!   design, so the session keeps its instance for as long as the rules live.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreContextMut, Trap, UpdateDeadline,
};

use super::bindings::directory_importer::{DirectoryImporter, DirectoryImporterPre};
use super::bindings::idp_connector::{IdpConnector, IdpConnectorPre};
use super::bindings::rule_evaluator::{RuleEvaluator, RuleEvaluatorPre};
use super::bindings::{host, idp, importer, rules, types};
use super::footprint::Footprint;
use super::limits::{Limits, PluginError};
use super::manifest::{Manifest, World};
use super::sandbox::{CallAccount, Sandbox};

/// The `cohort:plugin` version this server implements.
pub const WIT_VERSION: (u64, u64, u64) = (0, 1, 0);

/// How often the epoch advances; the CPU budget is checked at this granularity.
const TICK: Duration = Duration::from_millis(5);

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("the plugin runtime could not start: {0}")]
pub struct StartError(String);

/// The server's plugin engine.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: Arc<Limits>,
    _ticker: Ticker,
}

/// Advances the engine's epoch so running guests notice their deadline.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine. `cache_dir` keeps compiled components between
    /// restarts, keyed by a hash of the component and the engine settings.
    pub fn new(limits: Limits, cache_dir: Option<&Path>) -> Result<Runtime, StartError> {
        let err = |e: wasmtime::Error| StartError(format!("{e:#}"));
        let mut config = Config::new();
        config.wasm_component_model(true);
        if limits.fuel.is_some() {
            config.consume_fuel(true);
        } else {
            config.epoch_interruption(true);
        }
        let slots = limits.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            // Components from other languages are several core modules
            // (runtime, libc, adapter) with a memory and tables each.
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_memory_size(limits.memory_bytes)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(4 << 20)
            // Reset the first pages of a returned slot with memset instead of
            // madvise: cheaper than a syscall plus the page faults that
            // follow when the next instance touches its stack and data.
            .linear_memory_keep_resident(128 << 10)
            .table_keep_resident(16 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| StartError(e.to_string()))?;
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(Cache::new(cache).map_err(err)?));
        }
        let engine = Engine::new(&config).map_err(err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(err)?;
        host::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(&mut linker, |s| s)
            .map_err(err)?;

        let stop = Arc::new(AtomicBool::new(false));
        if limits.fuel.is_none() {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| StartError(e.to_string()))?;
        }
        Ok(Runtime {
            engine,
            linker,
            limits: Arc::new(limits),
            _ticker: Ticker { stop },
        })
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

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

    fn new_store(&self, plugin: &LoadedPlugin) -> Store<Sandbox> {
        let mut store = Store::new(
            &self.engine,
            Sandbox::new(plugin.manifest.clone(), self.limits.clone()),
        );
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        if self.limits.fuel.is_none() {
            store.epoch_deadline_callback(on_deadline);
        }
        store
    }

    fn begin(&self, store: &mut Store<Sandbox>, name: &'static str) {
        store.data_mut().call = CallAccount::new(name);
        store.data_mut().memory_refused = false;
        match self.limits.fuel {
            Some(fuel) => {
                // Fuel is only ever set here, so this cannot fail.
                let _ = store.set_fuel(fuel);
            }
            None => store.set_epoch_deadline(ticks(self.limits.cpu)),
        }
    }

    /// Turn a failed call into the error that names what happened.
    fn classify(&self, store: &Store<Sandbox>, err: wasmtime::Error) -> PluginError {
        let data = store.data();
        let plugin = data.plugin.name.clone();
        if data.call.wall_exceeded {
            return PluginError::WallLimit {
                plugin,
                limit_ms: self.limits.wall.as_millis() as u64,
            };
        }
        if data.call.cpu_exceeded || matches!(err.downcast_ref::<Trap>(), Some(Trap::OutOfFuel)) {
            return PluginError::CpuLimit {
                plugin,
                limit_ms: self.limits.cpu.as_millis() as u64,
            };
        }
        if data.memory_refused {
            return PluginError::MemoryLimit {
                plugin,
                limit_mb: (self.limits.memory_bytes >> 20) as u64,
            };
        }
        let message = format!("{err:#}");
        if message.contains("maximum concurrent") || message.contains("instance limit") {
            return PluginError::Busy;
        }
        // Name the trap itself ("wasm `unreachable` instruction executed",
        // which is what a Rust panic becomes), not the backtrace around it.
        let message = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => err.root_cause().to_string(),
        };
        PluginError::Trap {
            plugin,
            message: message.chars().take(500).collect(),
        }
    }

    /// Run one call in a fresh store, with limits, classification, output
    /// cap and health accounting.
    fn run<R: Footprint>(
        &self,
        plugin: &LoadedPlugin,
        name: &'static str,
        input_bytes: usize,
        f: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        if input_bytes > self.limits.input_bytes {
            return Err(PluginError::InputTooLarge {
                size: input_bytes,
                limit: self.limits.input_bytes,
            });
        }
        let mut store = self.new_store(plugin);
        self.begin(&mut store, name);
        let result = f(&mut store);
        self.settle(plugin, &store, result, |_| Ok(()))
    }

    /// Classify, cap and check a call's result, then count it (once) in the
    /// plugin's health.
    fn settle<R: Footprint>(
        &self,
        plugin: &LoadedPlugin,
        store: &Store<Sandbox>,
        result: wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), String>,
    ) -> Result<R, PluginError> {
        let call = &store.data().call;
        if call.logs_dropped > 0 {
            tracing::warn!(
                plugin = %plugin.manifest.name,
                call = call.name,
                dropped = call.logs_dropped,
                limit_bytes = self.limits.log_bytes,
                "plugin log lines dropped: per-call log limit reached"
            );
        }
        let result = match result {
            Ok(value) => {
                let size = value.footprint();
                if size > self.limits.output_bytes {
                    Err(PluginError::OutputTooLarge {
                        plugin: plugin.manifest.name.clone(),
                        size,
                        limit: self.limits.output_bytes,
                    })
                } else if let Err(message) = check(&value) {
                    Err(PluginError::InvalidOutput {
                        plugin: plugin.manifest.name.clone(),
                        message,
                    })
                } else {
                    Ok(value)
                }
            }
            Err(e) => Err(self.classify(store, e)),
        };
        plugin.health.record(call.name, result.as_ref().err());
        if let Err(e) = &result {
            tracing::warn!(
                plugin = %plugin.manifest.name,
                call = call.name,
                code = e.code(),
                error = %e,
                "plugin call failed"
            );
        }
        result
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
        let input = config.footprint() + cursor.map_or(0, str::len);
        self.with_importer(plugin, "fetch-page", input, |i, s| {
            i.cohort_plugin_importer()
                .call_fetch_page(s, config, cursor)
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

    /// Compile rules with a rule-evaluator plugin. The session keeps the
    /// instance (and the compiled rules) for later batches.
    pub fn compile_rules(
        self: &Arc<Self>,
        plugin: Arc<LoadedPlugin>,
        kind: types::SubjectKind,
        schema: &[types::AttributeDef],
        sources: &[rules::RuleSource],
    ) -> Result<Result<RuleSession, rules::CompileError>, PluginError> {
        let WorldPre::Rules(pre) = &plugin.pre else {
            return Err(plugin.wrong_world(World::RuleEvaluator));
        };
        let input = schema.footprint() + sources.footprint();
        if input > self.limits.input_bytes {
            return Err(PluginError::InputTooLarge {
                size: input,
                limit: self.limits.input_bytes,
            });
        }
        let mut store = self.new_store(&plugin);
        self.begin(&mut store, "compile");
        let result = (|| {
            let inst = pre.instantiate(&mut store)?;
            let compiled = inst
                .cohort_plugin_rules()
                .call_compile(&mut store, kind, schema, sources)?;
            Ok((inst, compiled))
        })();
        let (inst, compiled) = match self.settle(&plugin, &store, result.map(Opaque), |_| Ok(())) {
            Ok(Opaque(v)) => v,
            Err(e) => return Err(e),
        };
        Ok(compiled.map(|rules| RuleSession {
            runtime: Arc::clone(self),
            plugin,
            inner: Mutex::new(SessionInner {
                store,
                instance: inst,
                rules,
                poisoned: false,
            }),
            count: sources.len() as u32,
        }))
    }
}

fn on_deadline(mut ctx: StoreContextMut<'_, Sandbox>) -> wasmtime::Result<UpdateDeadline> {
    let data = ctx.data_mut();
    if data.call.started.elapsed() >= data.limits.wall {
        data.call.wall_exceeded = true;
        return Err(Trap::Interrupt.into());
    }
    let used = data.call.cpu_used();
    if used >= data.limits.cpu {
        data.call.cpu_exceeded = true;
        return Err(Trap::Interrupt.into());
    }
    Ok(UpdateDeadline::Continue(ticks(data.limits.cpu - used)))
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros().div_ceil(TICK.as_micros()) as u64).max(1)
}

fn wasmparser_is_component(bytes: &[u8]) -> bool {
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

fn kind_name_manifest(k: super::manifest::ConfigKind) -> &'static str {
    use super::manifest::ConfigKind as K;
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
enum WorldPre {
    Rules(RuleEvaluatorPre<Sandbox>),
    Importer(DirectoryImporterPre<Sandbox>),
    Idp(IdpConnectorPre<Sandbox>),
}

/// A compiled, ready-to-instantiate plugin.
pub struct LoadedPlugin {
    manifest: Arc<Manifest>,
    pre: WorldPre,
    health: Health,
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

    fn wrong_world(&self, expected: World) -> PluginError {
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
                    })
                    .collect(),
            ),
        }
    }
}

/// Call and failure counters of one plugin. Consecutive failures are
/// counted per function: a plugin whose `evaluate` always traps is unhealthy
/// even though its `compile` keeps succeeding in between.
#[derive(Default)]
struct Health {
    calls: AtomicU64,
    failures: AtomicU64,
    consecutive: Mutex<std::collections::HashMap<&'static str, u32>>,
    last_error: Mutex<Option<LastError>>,
}

/// The most recent failed call.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LastError {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The error code, e.g. `plugin_cpu_limit`.
    pub code: String,
    /// The error message.
    pub message: String,
}

/// A plugin's health as the API reports it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `healthy`, or `unhealthy` after too many consecutive failed calls.
    pub status: &'static str,
    /// Calls made since the server started.
    pub calls: u64,
    /// Calls that failed because the plugin misbehaved (trap, limit, bad output).
    pub failures: u64,
    /// Failures since the last successful call.
    pub consecutive_failures: u32,
    /// The most recent failure.
    pub last_error: Option<LastError>,
}

impl Health {
    fn record(&self, call: &'static str, error: Option<&PluginError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match error {
            Some(e) if e.is_plugin_fault() => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *self.consecutive.lock().entry(call).or_default() += 1;
                *self.last_error.lock() = Some(LastError {
                    at: Utc::now(),
                    code: e.code().to_owned(),
                    message: e.to_string(),
                });
            }
            Some(_) => {}
            None => {
                self.consecutive.lock().remove(call);
            }
        }
    }

    fn report(&self, unhealthy_after: u32) -> HealthReport {
        let consecutive = self.consecutive.lock().values().copied().max().unwrap_or(0);
        HealthReport {
            status: if consecutive >= unhealthy_after {
                "unhealthy"
            } else {
                "healthy"
            },
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: consecutive,
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// Compiled rules living in their evaluator's instance.
pub struct RuleSession {
    runtime: Arc<Runtime>,
    plugin: Arc<LoadedPlugin>,
    inner: Mutex<SessionInner>,
    count: u32,
}

struct SessionInner {
    store: Store<Sandbox>,
    instance: RuleEvaluator,
    rules: ResourceAny,
    /// After a trap the instance's state is unknown; it is never entered again.
    poisoned: bool,
}

/// A value the output cap does not apply to (handles, unit).
struct Opaque<T>(T);

impl<T> Footprint for Opaque<T> {
    fn footprint(&self) -> usize {
        0
    }
}

impl RuleSession {
    /// Evaluate a batch. The result is checked against the contract (bitmap
    /// size, indices) before it is returned. After a failed call the session
    /// refuses further batches: compile the rules again.
    pub fn evaluate(
        &self,
        batch: &rules::SubjectBatch,
        options: rules::EvaluateOptions,
    ) -> Result<Result<rules::Evaluation, rules::EvaluateError>, PluginError> {
        let runtime = &*self.runtime;
        let input = batch.footprint();
        if input > runtime.limits.input_bytes {
            return Err(PluginError::InputTooLarge {
                size: input,
                limit: runtime.limits.input_bytes,
            });
        }
        let mut inner = self.inner.lock();
        if inner.poisoned {
            return Err(PluginError::Trap {
                plugin: self.plugin.manifest.name.clone(),
                message: "an earlier call on these compiled rules failed; compile them again"
                    .into(),
            });
        }
        let SessionInner {
            store,
            instance,
            rules: handle,
            ..
        } = &mut *inner;
        runtime.begin(store, "evaluate");
        let result = instance.cohort_plugin_rules().rule_set().call_evaluate(
            &mut *store,
            *handle,
            batch,
            options,
        );
        let subjects = batch.row_offsets.len().saturating_sub(1);
        let count = self.count;
        let result = runtime.settle(&self.plugin, store, result, |r| match r {
            Ok(evaluation) => check_evaluation(evaluation, count, subjects),
            Err(_) => Ok(()),
        });
        if result.is_err() {
            inner.poisoned = true;
        }
        result
    }

    /// Number of rules compiled.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no rules were compiled.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

fn check_evaluation(e: &rules::Evaluation, rules: u32, subjects: usize) -> Result<(), String> {
    let words = subjects.div_ceil(64);
    if e.words_per_rule as usize != words {
        return Err(format!(
            "words-per-rule is {}, expected {words} for {subjects} subjects",
            e.words_per_rule
        ));
    }
    if e.matches.len() != words * rules as usize {
        return Err(format!(
            "the match bitmap has {} words, expected {}",
            e.matches.len(),
            words * rules as usize
        ));
    }
    if !subjects.is_multiple_of(64) && words > 0 {
        let tail_mask = !0u64 << (subjects % 64);
        for r in 0..rules as usize {
            if e.matches[r * words + words - 1] & tail_mask != 0 {
                return Err(format!(
                    "rule {r} matches subjects past the end of the batch"
                ));
            }
        }
    }
    let bad = |rule: u32, subject: u32| rule >= rules || subject as usize >= subjects;
    if let Some(x) = e.explanations.iter().find(|x| bad(x.rule, x.subject)) {
        return Err(format!(
            "an explanation refers to rule {} / subject {}, out of range",
            x.rule, x.subject
        ));
    }
    if let Some(x) = e.errors.iter().find(|x| bad(x.rule, x.subject)) {
        return Err(format!(
            "an error refers to rule {} / subject {}, out of range",
            x.rule, x.subject
        ));
    }
    Ok(())
}

/// Instance-level state the ticker shares; kept here so tests can assert the
/// epoch interval without reaching into the thread.
pub const EPOCH_TICK: Duration = TICK;
