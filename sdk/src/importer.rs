//! Directory importers: the `directory-importer` world.
//!
//! Implement [`Importer`] and register it with
//! [`export_importer!`](crate::export_importer).

use std::marker::PhantomData;

use crate::bindings::directory_importer::exports::cohort::plugin::importer as wit;
pub use crate::bindings::directory_importer::exports::cohort::plugin::importer::{
    ImportError, Page, RecordProblem,
};
use crate::config::Config;
use crate::host::FetchError;
use crate::{ConfigEntry, ConfigError, PluginInfo};

/// A directory importer. The host calls [`fetch_page`](Importer::fetch_page)
/// until it returns no cursor.
pub trait Importer: 'static {
    /// Describe the importer and its configuration fields. The fields must
    /// match the manifest's `config` table.
    fn describe() -> PluginInfo;

    /// Check the configuration without contacting the source. The host has
    /// already checked required fields and kinds against the manifest; check
    /// what only the plugin knows (URL shapes, value ranges).
    fn validate_config(_config: &Config) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Fetch one page. `cursor` is `None` for the first page.
    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError>;
}

impl From<FetchError> for ImportError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Http(e) => ImportError::Http(e),
            FetchError::RateLimited(s) => ImportError::RateLimited(s),
            FetchError::Unauthorized(status) => {
                ImportError::Unauthorized(format!("the source answered {status}"))
            }
            FetchError::Status { status, body } => {
                ImportError::BadResponse(format!("status {status}: {body}"))
            }
            FetchError::Decode(m) => ImportError::BadResponse(m),
        }
    }
}

impl From<ConfigError> for ImportError {
    fn from(e: ConfigError) -> Self {
        ImportError::Config(e)
    }
}

/// Glue between an [`Importer`] and the generated bindings.
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: Importer> wit::Guest for Adapter<T> {
    fn describe() -> PluginInfo {
        T::describe()
    }
    fn validate_config(config: Vec<ConfigEntry>) -> Result<(), ConfigError> {
        T::validate_config(&Config::new(config))
    }
    fn fetch_page(config: Vec<ConfigEntry>, cursor: Option<String>) -> Result<Page, ImportError> {
        T::fetch_page(&Config::new(config), cursor)
    }
}

/// Register `$ty` (an [`Importer`]) as the component's importer.
#[macro_export]
macro_rules! export_importer {
    ($ty:ty) => {
        // Exports exist only in the WebAssembly build; a native build (unit
        // tests, benchmarks) links the plugin as an ordinary library.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __CohortImporter = $crate::importer::Adapter<$ty>;
            $crate::bindings::directory_importer::__export_directory_importer!(
                __CohortImporter with_types_in $crate::bindings::directory_importer
            );
        };
    };
}
