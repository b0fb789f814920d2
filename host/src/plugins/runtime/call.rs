//! One call into a plugin under its limits: a fresh store, fuel or an epoch
//! deadline for CPU and wall time, and the bookkeeping after it returns that
//! turns each way a call can fail into the [`PluginError`] naming it, caps the
//! output, and counts the call in the plugin's health.

use std::time::Duration;

use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};

use super::load::LoadedPlugin;
use super::{Runtime, TICK};
use crate::plugins::footprint::Footprint;
use crate::plugins::limits::PluginError;
use crate::plugins::sandbox::{CallAccount, Sandbox};

impl Runtime {
    pub(super) fn new_store(&self, plugin: &LoadedPlugin) -> Store<Sandbox> {
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

    pub(super) fn begin(&self, store: &mut Store<Sandbox>, name: &'static str) {
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
    pub(super) fn classify(&self, store: &Store<Sandbox>, err: wasmtime::Error) -> PluginError {
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
    pub(super) fn run<R: Footprint>(
        &self,
        plugin: &LoadedPlugin,
        name: &'static str,
        input_bytes: usize,
        f: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.run_logged(plugin, name, input_bytes, false, f).0
    }

    /// [`Runtime::run`], also handing back the lines the plugin logged
    /// during the call (within the per-call log limit) when `keep_lines`.
    pub(super) fn run_logged<R: Footprint>(
        &self,
        plugin: &LoadedPlugin,
        name: &'static str,
        input_bytes: usize,
        keep_lines: bool,
        f: impl FnOnce(&mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> (
        Result<R, PluginError>,
        Vec<crate::plugins::sandbox::LogLine>,
    ) {
        if input_bytes > self.limits.input_bytes {
            return (
                Err(PluginError::InputTooLarge {
                    size: input_bytes,
                    limit: self.limits.input_bytes,
                }),
                Vec::new(),
            );
        }
        let mut store = self.new_store(plugin);
        self.begin(&mut store, name);
        store.data_mut().call.keep_lines = keep_lines;
        let result = f(&mut store);
        let settled = self.settle(plugin, &store, result, |_| Ok(()));
        (settled, std::mem::take(&mut store.data_mut().call.lines))
    }

    /// Classify, cap and check a call's result, then count it (once) in the
    /// plugin's health.
    pub(super) fn settle<R: Footprint>(
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
        plugin
            .health
            .record(call.name, result.as_ref().err(), &*self.clock);
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

pub(super) fn ticks(d: Duration) -> u64 {
    (d.as_micros().div_ceil(TICK.as_micros()) as u64).max(1)
}

/// A value the output cap does not apply to (handles, unit).
pub(super) struct Opaque<T>(pub(super) T);

impl<T> Footprint for Opaque<T> {
    fn footprint(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_whole_ticks_rounded_up_and_never_zero() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(TICK), 1);
        assert_eq!(ticks(TICK + Duration::from_micros(1)), 2);
        assert_eq!(ticks(TICK * 200), 200);
    }
}
