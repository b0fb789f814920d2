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
pub mod instances;
pub mod registry;
pub mod secrets;

pub use instances::Instances;
pub use registry::Registry;
