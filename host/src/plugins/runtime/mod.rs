//! The wasmtime side of plugins: one `Engine` for the server, compiled
//! components cached on disk, instances from the pooling allocator, and the
//! bookkeeping that turns every way a call can go wrong into a
//! [`PluginError`](crate::plugins::PluginError) without touching the rest of
//! the server.
//!
//! What lives how long (the Spin "factor" split):
//! - per server: the [`Runtime`] (engine, linker, epoch ticker);
//! - per plugin: a [`LoadedPlugin`] (compiled component, `InstancePre`, health);
//! - per call: a `Store` and an instance, dropped when the call returns, so no
//!   state leaks from one call (or one tenant's config) to the next. A
//!   [`RuleSession`] is the one exception: compiled rules are state by
//!   design, so the session keeps its instance for as long as the rules live.
//!
//! Building the engine lives here; compiling and preparing a component is in
//! `load.rs`, one call under its limits in `call.rs`, the typed entry points
//! of the importer and IdP worlds in `exports.rs`, compiled rules in
//! `session.rs`, and the per-plugin counters the API reports in `health.rs`.

mod call;
mod exports;
mod health;
mod load;
mod session;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use super::bindings::host;
use super::limits::Limits;
use super::sandbox::Sandbox;
use crate::clock::Clock;

pub use health::{HealthReport, LastError};
pub use load::{DescribedField, LoadedPlugin, PluginDescription};
pub use session::RuleSession;

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
    /// Stamps plugin failures for their health report.
    clock: Arc<dyn Clock>,
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
    /// `clock` stamps the failures a plugin's health reports.
    pub fn new(
        limits: Limits,
        cache_dir: Option<&Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Runtime, StartError> {
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
                        #[allow(clippy::disallowed_methods)] // The epoch ticker's period.
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
            clock,
            _ticker: Ticker { stop },
        })
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Instance-level state the ticker shares; kept here so tests can assert the
/// epoch interval without reaching into the thread.
pub const EPOCH_TICK: Duration = TICK;
