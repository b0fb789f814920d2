//! The plugin manifest: what a plugin is, which world it implements, which
//! hosts it may call and what configuration it takes. The host reads it
//! before it runs any of the plugin's code, so nothing in it can be decided
//! by the plugin at run time.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::DomainError;
use crate::limits::{MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH, toml_depth};

/// Longest plugin name.
const MAX_NAME: usize = 64;

/// A plugin's manifest (`<name>.toml` beside `<name>.wasm`, or the `manifest`
/// object of an upload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name: lowercase letters, digits and `-`, e.g. `bamboohr`.
    pub name: String,
    /// The plugin's own version, `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// Which world the component implements.
    pub world: World,
    /// One sentence for admins.
    pub description: String,
    /// Hosts the plugin may send HTTP requests to: `api.example.com` (default
    /// port of the scheme), `api.example.com:8443`, or `*.example.com` (any
    /// subdomain, default port). Everything else is refused.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Configuration fields of an instance of the plugin.
    #[serde(default)]
    pub config: Vec<ConfigFieldSpec>,
}

/// The plugin kinds, one per WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `rule-evaluator`: decides group membership.
    RuleEvaluator,
    /// `idp-connector`: an upstream identity provider.
    IdpConnector,
    /// `directory-importer`: pulls people and devices from a source.
    DirectoryImporter,
}

impl World {
    /// The world's name in WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            World::RuleEvaluator => "rule-evaluator",
            World::IdpConnector => "idp-connector",
            World::DirectoryImporter => "directory-importer",
        }
    }

    /// The interface the world exports, without package or version.
    pub fn export(self) -> &'static str {
        match self {
            World::RuleEvaluator => "rules",
            World::IdpConnector => "idp",
            World::DirectoryImporter => "importer",
        }
    }
}

/// One configuration field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFieldSpec {
    /// Machine name: lowercase letters, digits and `_`.
    pub name: String,
    /// Short label.
    #[serde(default)]
    pub label: String,
    /// Help text.
    #[serde(default)]
    pub help: String,
    /// How the value is entered and stored; `secret` values are encrypted at
    /// rest and never returned.
    pub kind: ConfigKind,
    /// Whether an instance must set it.
    #[serde(default)]
    pub required: bool,
    /// For `url` fields: the query string carries nothing secret, so API
    /// views and the audit log show it. By default they show only the
    /// parameter names, since signed links (`?sig=...`) are credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub show_query: bool,
    /// The value an instance that sets none gets, when it is saved and
    /// when an upgrade meets it: a new required field needs one, or the
    /// upgrade is refused for the instances that lack it. Not for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default: Option<serde_json::Value>,
}

/// The kind of a configuration field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigKind {
    /// A string.
    Text,
    /// A write-only string.
    Secret,
    /// An absolute http(s) URL.
    Url,
    /// A number.
    Number,
    /// true / false.
    Boolean,
    /// A list of strings.
    TextList,
}

impl Manifest {
    /// Parse a manifest file. Size and nesting are checked before the TOML
    /// parser sees the text ([`MAX_MANIFEST_BYTES`], [`MAX_MANIFEST_DEPTH`]):
    /// a plugin directory may hold files nobody has read.
    pub fn from_toml(text: &str) -> Result<Manifest, DomainError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(DomainError::Limit {
                code: "too_long",
                field: "manifest".into(),
                message: format!(
                    "the manifest is {} bytes long; the limit is {MAX_MANIFEST_BYTES}",
                    text.len()
                ),
            });
        }
        if let Err(e) = toml_depth(text, MAX_MANIFEST_DEPTH) {
            return Err(DomainError::Limit {
                code: "too_deep",
                field: "manifest".into(),
                message: format!(
                    "the manifest nests more than {MAX_MANIFEST_DEPTH} levels deep at byte {}; \
                     the limit is {MAX_MANIFEST_DEPTH}",
                    e.offset
                ),
            });
        }
        let manifest: Manifest = toml::from_str(text).map_err(|e| DomainError::Invalid {
            field: "manifest".into(),
            message: e.message().to_owned(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check the fields serde cannot.
    pub fn validate(&self) -> Result<(), DomainError> {
        let invalid = |field: &str, message: String| DomainError::Invalid {
            field: format!("manifest.{field}"),
            message,
        };
        if self.name.is_empty()
            || self.name.len() > MAX_NAME
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || self.name.starts_with('-')
        {
            return Err(invalid(
                "name",
                format!("must be 1-{MAX_NAME} lowercase letters, digits or '-'"),
            ));
        }
        let parts: Vec<&str> = self.version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid("version", "must be MAJOR.MINOR.PATCH".into()));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if let Err(m) = HostPattern::parse(host) {
                return Err(invalid(&format!("allowed_hosts[{i}]"), m));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, field) in self.config.iter().enumerate() {
            if field.name.is_empty()
                || !field
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(invalid(
                    &format!("config[{i}].name"),
                    "must be lowercase letters, digits or '_'".into(),
                ));
            }
            if let Some(default) = &field.default {
                let fits = match field.kind {
                    ConfigKind::Secret => false,
                    ConfigKind::Text | ConfigKind::Url => default.is_string(),
                    ConfigKind::Number => default.is_number(),
                    ConfigKind::Boolean => default.is_boolean(),
                    ConfigKind::TextList => default
                        .as_array()
                        .is_some_and(|items| items.iter().all(serde_json::Value::is_string)),
                };
                if !fits {
                    return Err(invalid(
                        &format!("config[{i}].default"),
                        if field.kind == ConfigKind::Secret {
                            "a secret field has no default".into()
                        } else {
                            format!("must be a value of kind {:?}", field.kind)
                        },
                    ));
                }
            }
            if field.show_query && field.kind != ConfigKind::Url {
                return Err(invalid(
                    &format!("config[{i}].show_query"),
                    "applies to url fields only".into(),
                ));
            }
            if !seen.insert(field.name.as_str()) {
                return Err(invalid(
                    &format!("config[{i}].name"),
                    format!("\"{}\" appears twice", field.name),
                ));
            }
        }
        Ok(())
    }

    /// Whether the manifest lets the plugin call `host` on `port`.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.allowed_hosts.iter().any(|entry| {
            HostPattern::parse(entry).is_ok_and(|p| p.matches(host, port, default_port))
        })
    }
}

/// A parsed `allowed_hosts` entry.
struct HostPattern<'a> {
    host: &'a str,
    wildcard: bool,
    port: Option<u16>,
}

impl<'a> HostPattern<'a> {
    fn parse(entry: &'a str) -> Result<Self, String> {
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("\"{entry}\" has an invalid port"))?,
                ),
            ),
            None => (entry, None),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(format!(
                "\"{entry}\" is not a lowercase host name, IPv4 address or *.domain, with an optional :port"
            ));
        }
        Ok(HostPattern {
            host,
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        host_ok && port == self.port.unwrap_or(default_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(hosts: &[&str]) -> Manifest {
        Manifest {
            name: "x".into(),
            version: "1.0.0".into(),
            world: World::DirectoryImporter,
            description: String::new(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            config: Vec::new(),
        }
    }

    #[test]
    fn host_patterns() {
        let m = manifest(&["api.example.com", "*.okta.com", "127.0.0.1:8080"]);
        assert!(m.allows("api.example.com", 443, 443));
        assert!(!m.allows("api.example.com", 8443, 443));
        assert!(!m.allows("evil-api.example.com", 443, 443));
        assert!(m.allows("acme.okta.com", 443, 443));
        assert!(!m.allows("okta.com", 443, 443));
        assert!(!m.allows("acmeokta.com", 443, 443));
        assert!(m.allows("127.0.0.1", 8080, 80));
        assert!(!m.allows("127.0.0.1", 80, 80));
        assert!(manifest(&["Bad Host"]).validate().is_err());
        assert!(manifest(&["h:99999"]).validate().is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_names() {
        let err = Manifest::from_toml(
            "name='x'\nversion='1.0.0'\nworld='rule-evaluator'\ndescription=''\nsurprise=1",
        )
        .unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
        let err = Manifest::from_toml(
            "name='X'\nversion='1.0.0'\nworld='rule-evaluator'\ndescription=''",
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::Invalid { ref field, .. } if field == "manifest.name"));
    }
}
