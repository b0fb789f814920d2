//! Typed access to a plugin instance's configuration.

use crate::{ConfigEntry, ConfigError, ConfigValue, FieldProblem};

/// The configuration the host passed to a call. The host has already checked
/// it against the manifest's schema (required fields present, kinds right),
/// so the accessors below only fail on values the plugin itself refuses.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<ConfigEntry>,
}

impl Config {
    /// Wrap the entries passed to a call.
    pub fn new(entries: Vec<ConfigEntry>) -> Self {
        Config { entries }
    }

    fn get(&self, name: &str) -> Option<&ConfigValue> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.value)
    }

    /// A text, URL or secret field.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            ConfigValue::Text(s) | ConfigValue::Secret(s) => Some(s),
            _ => None,
        }
    }

    /// A text, URL or secret field that must be present and non-empty.
    pub fn require_text(&self, name: &str) -> Result<&str, ConfigError> {
        match self.text(name) {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ConfigError::Missing(name.to_owned())),
        }
    }

    /// A number field.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            ConfigValue::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A boolean field; absent means `default`.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        match self.get(name) {
            Some(ConfigValue::Boolean(b)) => *b,
            _ => default,
        }
    }

    /// A text-list field; absent means empty.
    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name) {
            Some(ConfigValue::TextList(l)) => l,
            _ => &[],
        }
    }
}

/// A [`ConfigError::Invalid`] for `field`.
pub fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(FieldProblem {
        field: field.to_owned(),
        message: message.into(),
    })
}

/// A configuration field for [`PluginInfo`](crate::PluginInfo)`::config`.
/// It must agree with the manifest's `[[config]]` entry of the same name:
/// the host refuses a plugin whose two descriptions differ.
pub fn field(
    name: &str,
    label: &str,
    help: &str,
    kind: crate::ConfigKind,
    required: bool,
) -> crate::ConfigField {
    crate::ConfigField {
        name: name.into(),
        label: label.into(),
        help: help.into(),
        kind,
        required,
    }
}
