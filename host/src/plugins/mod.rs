//! Plugins: sandboxed WebAssembly components behind the `cohort:plugin` WIT
//! contract (`wit/`). The runtime runs them under limits; the registry keeps
//! track of which are installed and enabled; instances hold their config.

pub mod batch;
pub mod bindings;
mod footprint;
pub mod limits;
pub mod manifest;
pub mod runtime;
mod sandbox;
mod url_fields;

pub use limits::{Limits, PluginError};
pub use manifest::{Manifest, World};
pub use runtime::{LoadedPlugin, RuleSession, Runtime};
pub use sandbox::{HttpTap, LogLine};
pub mod instances;
pub mod registry;
pub mod secrets;

pub use instances::Instances;

/// A plugin compiled into the binary (see `host/build.rs`): its file name
/// in `target/plugins`, its manifest and its component.
pub struct Builtin {
    /// The file stem, for messages.
    pub file: &'static str,
    /// The manifest, TOML.
    pub manifest: &'static str,
    /// The WebAssembly component.
    pub component: &'static [u8],
}

/// The plugins this build ships, loaded unless `[plugins] builtin = false`.
pub static BUILTIN: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
pub use registry::Registry;
