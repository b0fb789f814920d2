//! The limits every plugin call runs under, and the structured errors a call
//! that breaks one gets.

use std::sync::Arc;
use std::time::Duration;

use crate::config::PluginsConfig;

/// Per-call limits, fixed when the runtime starts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// CPU budget (time executing guest code, host calls excluded).
    pub cpu: Duration,
    /// Wall-clock budget including outbound HTTP.
    pub wall: Duration,
    /// When set, CPU is metered with this much fuel instead of time.
    pub fuel: Option<u64>,
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Input bytes per call.
    pub input_bytes: usize,
    /// Output bytes per call.
    pub output_bytes: usize,
    /// Log bytes per call.
    pub log_bytes: usize,
    /// Longest outbound request.
    pub http_timeout: Duration,
    /// Largest outbound response body.
    pub http_response_bytes: usize,
    /// Consecutive failures before a plugin is reported unhealthy.
    pub unhealthy_after: u32,
    /// Pool slots (and concurrent calls).
    pub max_instances: u32,
    /// Where outbound HTTP may go besides the manifest's `allowed_hosts`:
    /// never to an internal address, unless `[outbound]` allows it.
    pub outbound: Arc<crate::outbound::Outbound>,
    /// The time a plugin reads (`now-millis`): the server's clock, so that a
    /// plugin's idea of now moves with a test's.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Answers plugins' HTTP requests instead of the network, or watches
    /// what the network answers: `cohort plugin test` replays and records
    /// exchanges through it. `None` on a server.
    pub http_tap: Option<Arc<dyn crate::plugins::HttpTap>>,
}

impl Limits {
    /// Limits from the `[plugins]` configuration.
    pub fn from_config(c: &PluginsConfig) -> Self {
        Limits {
            cpu: Duration::from_millis(c.cpu_ms.max(1)),
            wall: Duration::from_millis(c.wall_ms.max(c.cpu_ms).max(1)),
            fuel: c.fuel,
            memory_bytes: (c.memory_mb.max(1) as usize) << 20,
            input_bytes: (c.input_kb as usize) << 10,
            output_bytes: (c.output_kb as usize) << 10,
            log_bytes: (c.log_kb as usize) << 10,
            http_timeout: Duration::from_millis(c.http_timeout_ms.max(1)),
            http_response_bytes: (c.http_response_kb as usize) << 10,
            unhealthy_after: c.unhealthy_after.max(1),
            max_instances: c.max_instances.max(2),
            outbound: Arc::default(),
            clock: Arc::new(crate::clock::SystemClock),
            http_tap: None,
        }
    }
}

impl Limits {
    /// These limits, with outbound requests under `outbound`.
    pub fn with_outbound(self, outbound: Arc<crate::outbound::Outbound>) -> Self {
        Limits { outbound, ..self }
    }

    /// These limits, with plugins' HTTP requests answered or watched by
    /// `tap`.
    pub fn with_http_tap(self, tap: Arc<dyn crate::plugins::HttpTap>) -> Self {
        Limits {
            http_tap: Some(tap),
            ..self
        }
    }

    /// These limits, with plugins reading the time from `clock`.
    pub fn with_clock(self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        Limits { clock, ..self }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&PluginsConfig::default())
    }
}

/// Why a plugin call produced no result. The plugin's *own* errors (a
/// rejected config, an upstream 401) are not here: they come back as values
/// of the world's error types, because they are answers, not failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// No plugin of that name is loaded.
    #[error("plugin \"{0}\" is not installed")]
    NotFound(String),
    /// The plugin is installed but an admin disabled it.
    #[error("plugin \"{0}\" is disabled")]
    Disabled(String),
    /// The plugin implements another world than the call needs.
    #[error("plugin \"{plugin}\" is a {actual}, not a {expected}")]
    WrongWorld {
        /// The plugin.
        plugin: String,
        /// The world the call needs.
        expected: &'static str,
        /// The plugin's world.
        actual: &'static str,
    },
    /// The call used up its CPU (or fuel) budget and was stopped.
    #[error("plugin \"{plugin}\" exceeded its CPU budget of {limit_ms} ms and was stopped")]
    CpuLimit {
        /// The plugin.
        plugin: String,
        /// The budget.
        limit_ms: u64,
    },
    /// The call ran past its wall-clock budget (usually slow outbound HTTP).
    #[error("plugin \"{plugin}\" exceeded its wall-clock budget of {limit_ms} ms")]
    WallLimit {
        /// The plugin.
        plugin: String,
        /// The budget.
        limit_ms: u64,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error("plugin \"{plugin}\" exceeded its memory limit of {limit_mb} MiB")]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// The cap.
        limit_mb: u64,
    },
    /// The input was larger than the per-call cap; the plugin was not called.
    #[error("input of {size} bytes exceeds the plugin input limit of {limit} bytes")]
    InputTooLarge {
        /// Input size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The plugin returned more than the per-call output cap.
    #[error("plugin \"{plugin}\" returned {size} bytes, over the output limit of {limit} bytes")]
    OutputTooLarge {
        /// The plugin.
        plugin: String,
        /// Output size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The plugin trapped (panicked, hit `unreachable`, divided by zero…).
    #[error("plugin \"{plugin}\" crashed: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The trap, as wasmtime describes it.
        message: String,
    },
    /// The plugin returned data that breaks the contract (bad indices, wrong sizes).
    #[error("plugin \"{plugin}\" returned invalid data: {message}")]
    InvalidOutput {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// The component could not be compiled or instantiated.
    #[error("plugin \"{plugin}\" could not be loaded: {message}")]
    Load {
        /// The plugin.
        plugin: String,
        /// Why.
        message: String,
    },
    /// The host ran out of capacity (all instance slots busy). Retry.
    #[error("all plugin instance slots are busy")]
    Busy,
}

impl PluginError {
    /// A short stable code for the API and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::NotFound(_) => "plugin_not_found",
            PluginError::Disabled(_) => "plugin_disabled",
            PluginError::WrongWorld { .. } => "plugin_wrong_world",
            PluginError::CpuLimit { .. } => "plugin_cpu_limit",
            PluginError::WallLimit { .. } => "plugin_wall_limit",
            PluginError::MemoryLimit { .. } => "plugin_memory_limit",
            PluginError::InputTooLarge { .. } => "plugin_input_too_large",
            PluginError::OutputTooLarge { .. } => "plugin_output_too_large",
            PluginError::Trap { .. } => "plugin_trap",
            PluginError::InvalidOutput { .. } => "plugin_invalid_output",
            PluginError::Load { .. } => "plugin_load_failed",
            PluginError::Busy => "plugin_busy",
        }
    }

    /// Whether this failure counts against the plugin's health: it
    /// misbehaved, rather than being asked for something impossible.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            PluginError::CpuLimit { .. }
                | PluginError::WallLimit { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::OutputTooLarge { .. }
                | PluginError::Trap { .. }
                | PluginError::InvalidOutput { .. }
        )
    }
}
