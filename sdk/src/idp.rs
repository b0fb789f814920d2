//! IdP connectors: the `idp-connector` world.
//!
//! Implement [`IdpConnector`] and register it with
//! [`export_idp_connector!`](crate::export_idp_connector).

use std::marker::PhantomData;

use crate::bindings::idp_connector::exports::cohort::plugin::idp as wit;
pub use crate::bindings::idp_connector::exports::cohort::plugin::idp::{
    Claims, ConnectorError, MappedIdentity, ProviderEndpoints, UserPage,
};
use crate::config::Config;
use crate::host::FetchError;
use crate::{ConfigEntry, ConfigError, PluginInfo};

/// An identity-provider connector.
pub trait IdpConnector: 'static {
    /// Describe the connector and its configuration fields.
    fn describe() -> PluginInfo;

    /// Check the settings without contacting the provider.
    fn validate_config(_config: &Config) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Derive the issuer and discovery details from the settings.
    fn endpoints(config: &Config) -> Result<ProviderEndpoints, ConnectorError>;

    /// Apply provider checks to validated claims (a JSON object) and map them
    /// to directory attributes.
    fn map_claims(
        config: &Config,
        claims: &serde_json::Value,
    ) -> Result<MappedIdentity, ConnectorError>;

    /// List the provider's users. The default says the connector has no user API.
    fn list_users(_config: &Config, _cursor: Option<String>) -> Result<UserPage, ConnectorError> {
        Err(ConnectorError::Other(
            "this connector cannot list users".into(),
        ))
    }
}

impl From<FetchError> for ConnectorError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Http(e) => ConnectorError::Http(e),
            other => ConnectorError::BadResponse(other.to_string()),
        }
    }
}

impl From<ConfigError> for ConnectorError {
    fn from(e: ConfigError) -> Self {
        ConnectorError::Config(e)
    }
}

/// Standard OpenID Connect claims and the directory attributes they fill.
pub const STANDARD_CLAIMS: &[(&str, &str)] = &[
    ("email", "email"),
    ("given_name", "first_name"),
    ("family_name", "last_name"),
    ("name", "display_name"),
];

/// A claim's value as a directory attribute: strings as text, arrays of
/// strings as lists, numbers and booleans as they are; `None` for empty
/// strings, objects and nulls.
pub fn claim_attribute(name: &str, value: &serde_json::Value) -> Option<crate::Attribute> {
    use serde_json::Value;
    Some(match value {
        Value::String(s) if !s.is_empty() => crate::Attribute::new(name, s.as_str()),
        Value::Number(n) => crate::Attribute::new(name, n.as_f64()?),
        Value::Bool(b) => crate::Attribute::new(name, *b),
        Value::Array(items) => crate::Attribute::new(
            name,
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect::<Vec<_>>(),
        ),
        _ => return None,
    })
}

/// The attributes of [`STANDARD_CLAIMS`] present in `claims`. With
/// `trust_email` false, `email` is left out: providers that say an email is
/// unverified must not have it matched against the directory.
pub fn standard_attributes(claims: &serde_json::Value, trust_email: bool) -> Vec<crate::Attribute> {
    STANDARD_CLAIMS
        .iter()
        .filter(|(claim, _)| trust_email || *claim != "email")
        .filter_map(|(claim, attr)| claims.get(*claim).and_then(|v| claim_attribute(attr, v)))
        .collect()
}

/// A required string claim.
pub fn string_claim<'a>(
    claims: &'a serde_json::Value,
    name: &str,
) -> Result<&'a str, ConnectorError> {
    claims
        .get(name)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConnectorError::BadResponse(format!("the ID token has no `{name}`")))
}

/// Glue between an [`IdpConnector`] and the generated bindings.
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: IdpConnector> wit::Guest for Adapter<T> {
    fn describe() -> PluginInfo {
        T::describe()
    }
    fn validate_config(config: Vec<ConfigEntry>) -> Result<(), ConfigError> {
        T::validate_config(&Config::new(config))
    }
    fn endpoints(config: Vec<ConfigEntry>) -> Result<ProviderEndpoints, ConnectorError> {
        T::endpoints(&Config::new(config))
    }
    fn map_claims(
        config: Vec<ConfigEntry>,
        claims: Claims,
    ) -> Result<MappedIdentity, ConnectorError> {
        let json: serde_json::Value = serde_json::from_str(&claims.json)
            .map_err(|e| ConnectorError::BadResponse(format!("claims are not JSON: {e}")))?;
        T::map_claims(&Config::new(config), &json)
    }
    fn list_users(
        config: Vec<ConfigEntry>,
        cursor: Option<String>,
    ) -> Result<UserPage, ConnectorError> {
        T::list_users(&Config::new(config), cursor)
    }
}

/// Register `$ty` (an [`IdpConnector`]) as the component's connector.
#[macro_export]
macro_rules! export_idp_connector {
    ($ty:ty) => {
        // Exports exist only in the WebAssembly build; a native build (unit
        // tests, benchmarks) links the plugin as an ordinary library.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __CohortIdpConnector = $crate::idp::Adapter<$ty>;
            $crate::bindings::idp_connector::__export_idp_connector!(
                __CohortIdpConnector with_types_in $crate::bindings::idp_connector
            );
        };
    };
}
