//! Plugin instances: a plugin configured for one use ("BambooHR for the
//! Berlin office"). Config is checked against the manifest's schema, then by
//! the plugin itself, before anything is stored. Secret fields are sealed
//! with the server key, never returned and never logged; the API only says
//! which secrets are set.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cohort_storage::{Committed, Keyspace, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

use super::bindings::types;
use super::manifest::{ConfigKind, Manifest};
use super::registry::{Error, Registry, prefix};
use super::secrets::SecretBox;
use super::{PluginError, World};
use crate::audit::{self, Change, Record};
use crate::auth::{ManagePlugins, Mutation};
use crate::clock::Clock;
use crate::error::DomainError;

mod preview;
mod upgrade;

pub use preview::{
    PreviewPage, PreviewProblem, PreviewRecord, SourceError, connector_error_message,
    http_error_message, preview_page, source_error,
};

/// id → `StoredInstance` JSON.
const INSTANCES: Keyspace = Keyspace::new("plugin_instances");
/// name → id. Instance names are unique.
const INSTANCES_BY_NAME: Keyspace = Keyspace::new("plugin_instances_by_name");
/// plugin ++ 0 ++ id → (). Which instances use a plugin.
const INSTANCES_BY_PLUGIN: Keyspace = Keyspace::new("plugin_instances_by_plugin");

/// A configured plugin, as the API shows it: secrets are never included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The plugin it configures.
    pub plugin: String,
    /// Non-secret configuration values.
    #[schema(value_type = Object)]
    pub config: BTreeMap<String, Value>,
    /// Names of the secret fields that have a value.
    pub secrets_set: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Increments on every change; the ETag.
    pub version: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredInstance {
    #[serde(flatten)]
    public: Instance,
    /// field → sealed value.
    sealed: BTreeMap<String, String>,
}

/// Input for a new instance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// Unique name, 1–64 letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// The plugin to configure (an importer or IdP connector).
    pub plugin: String,
    /// Values by field name, as the manifest's `config` describes them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

/// A change to an instance. `config` is merged: a field set to `null` is
/// removed, a field left out keeps its value (secrets included).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdate {
    /// A new name.
    pub name: Option<String>,
    /// Fields to set or (with `null`) remove.
    #[schema(value_type = Object)]
    pub config: Option<Map<String, Value>>,
}

/// Plugin instances.
#[derive(Clone)]
pub struct Instances {
    store: Store,
    clock: Arc<dyn Clock>,
    registry: Registry,
    secrets: SecretBox,
}

/// Checked configuration: plain values and secrets, apart.
struct Checked {
    public: BTreeMap<String, Value>,
    secrets: BTreeMap<String, String>,
}

fn check_config(manifest: &Manifest, values: &Map<String, Value>) -> Result<Checked, DomainError> {
    let mut public = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    // A field's default stands for a value the instance did not set, and is
    // checked as one (a URL default must be reachable, hold no credentials).
    let mut values = values.clone();
    for spec in &manifest.config {
        if let Some(default) = &spec.default
            && !values.contains_key(&spec.name)
        {
            values.insert(spec.name.clone(), default.clone());
        }
    }
    for (name, value) in &values {
        let field = format!("config.{name}");
        let Some(spec) = manifest.config.iter().find(|f| &f.name == name) else {
            let known: Vec<&str> = manifest.config.iter().map(|f| f.name.as_str()).collect();
            return Err(DomainError::invalid(
                field,
                format!(
                    "plugin {} has no such field; its fields are: {}",
                    manifest.name,
                    if known.is_empty() {
                        "(none)".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let ok = match (spec.kind, value) {
            (ConfigKind::Secret, Value::String(_)) => true,
            (ConfigKind::Text, Value::String(s)) => {
                super::url_fields::check_text(&field, s)?;
                true
            }
            (ConfigKind::Url, Value::String(s)) => {
                let parsed = reqwest::Url::parse(s);
                match parsed {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        super::url_fields::check(&field, &u)?;
                        super::url_fields::check_reachable(manifest, &field, &u)?;
                    }
                    _ => {
                        return Err(DomainError::invalid(
                            field,
                            "must be an absolute http(s) URL",
                        ));
                    }
                }
                true
            }
            (ConfigKind::Number, Value::Number(_)) => true,
            (ConfigKind::Boolean, Value::Bool(_)) => true,
            (ConfigKind::TextList, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(s) = item {
                        super::url_fields::check_text(&format!("{field}/{i}"), s)?;
                    }
                }
                items.iter().all(Value::is_string)
            }
            _ => false,
        };
        if !ok {
            let expected = match spec.kind {
                ConfigKind::Text | ConfigKind::Secret | ConfigKind::Url => "a string",
                ConfigKind::Number => "a number",
                ConfigKind::Boolean => "true or false",
                ConfigKind::TextList => "an array of strings",
            };
            return Err(DomainError::invalid(field, format!("must be {expected}")));
        }
        if spec.kind == ConfigKind::Secret {
            secrets.insert(name.clone(), value.as_str().unwrap_or_default().to_owned());
        } else {
            public.insert(name.clone(), value.clone());
        }
    }
    for spec in manifest.config.iter().filter(|f| f.required) {
        if !public.contains_key(&spec.name) && !secrets.contains_key(&spec.name) {
            return Err(DomainError::invalid(
                format!("config.{}", spec.name),
                "is required",
            ));
        }
    }
    Ok(Checked { public, secrets })
}

/// An instance's configuration as its plugin receives it, after the checks
/// a save makes: what `cohort plugin test` runs a component with.
pub fn config_entries(
    manifest: &Manifest,
    values: &Map<String, Value>,
) -> Result<Vec<types::ConfigEntry>, DomainError> {
    Ok(entries(manifest, &check_config(manifest, values)?))
}

fn entries(manifest: &Manifest, checked: &Checked) -> Vec<types::ConfigEntry> {
    let mut out = Vec::new();
    for spec in &manifest.config {
        let value = if let Some(s) = checked.secrets.get(&spec.name) {
            types::ConfigValue::Secret(s.clone())
        } else if let Some(v) = checked.public.get(&spec.name) {
            match v {
                Value::String(s) => types::ConfigValue::Text(s.clone()),
                Value::Number(n) => types::ConfigValue::Number(n.as_f64().unwrap_or_default()),
                Value::Bool(b) => types::ConfigValue::Boolean(*b),
                Value::Array(items) => types::ConfigValue::TextList(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => continue,
            }
        } else {
            continue;
        };
        out.push(types::ConfigEntry {
            name: spec.name.clone(),
            value,
        });
    }
    out
}

/// A plugin's refusal of a configuration, naming the field.
pub fn config_error(e: types::ConfigError) -> DomainError {
    match e {
        types::ConfigError::Missing(f) => {
            DomainError::invalid(format!("config.{f}"), "is required by the plugin")
        }
        types::ConfigError::Invalid(p) => {
            DomainError::invalid(format!("config.{}", p.field), p.message)
        }
        types::ConfigError::Other(m) => DomainError::invalid("config", m),
    }
}

/// Converts a WIT value to JSON for the API.
pub fn value_json(v: &types::Value) -> Value {
    match v {
        types::Value::Text(s) => Value::String(s.clone()),
        types::Value::Number(n) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        types::Value::Boolean(b) => Value::Bool(*b),
        types::Value::Timestamp(ms) => DateTime::<Utc>::from_timestamp_millis(*ms)
            .map_or(Value::Null, |t| Value::String(t.to_rfc3339())),
        types::Value::TextList(l) => Value::Array(l.iter().cloned().map(Value::String).collect()),
    }
}

fn secret_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> BTreeMap<String, Change> {
    let redacted = |present: bool| {
        if present {
            Value::from("[secret]")
        } else {
            Value::Null
        }
    };
    let mut out = BTreeMap::new();
    for name in before.keys().chain(after.keys()) {
        if before.get(name) != after.get(name) {
            out.insert(
                format!("secrets.{name}"),
                Change {
                    before: redacted(before.contains_key(name)),
                    after: if after.contains_key(name) {
                        Value::from("[secret, changed]")
                    } else {
                        Value::Null
                    },
                },
            );
        }
    }
    out
}

impl Instances {
    /// Instances over `store`, sealing secrets with `secrets`.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        registry: Registry,
        secrets: SecretBox,
    ) -> Self {
        Instances {
            store,
            clock,
            registry,
            secrets,
        }
    }

    fn manifest_for(&self, plugin: &str) -> Result<Manifest, DomainError> {
        let manifest = self.registry.manifest(plugin).ok_or_else(|| {
            DomainError::invalid("plugin", format!("no plugin named {plugin:?} is installed"))
        })?;
        if manifest.world == World::RuleEvaluator {
            return Err(DomainError::invalid(
                "plugin",
                format!("{plugin} is a rule evaluator; rule evaluators take no configuration"),
            ));
        }
        Ok(manifest)
    }

    /// Ask the plugin whether it accepts the configuration.
    fn plugin_validate(&self, manifest: &Manifest, checked: &Checked) -> Result<(), Error> {
        let config = entries(manifest, checked);
        let plugin = self.registry.callable(&manifest.name, manifest.world)?;
        let runtime = self.registry.runtime();
        let verdict = match manifest.world {
            World::DirectoryImporter => runtime.importer_validate_config(&plugin, &config)?,
            World::IdpConnector => runtime.idp_validate_config(&plugin, &config)?,
            World::RuleEvaluator => Ok(()),
        };
        verdict.map_err(|e| Error::Domain(config_error(e)))
    }

    fn load(&self, id: &str) -> Result<StoredInstance, DomainError> {
        self.store
            .get_json::<StoredInstance>(INSTANCES, id.as_bytes())?
            .ok_or_else(|| DomainError::not_found("plugin instance", id))
    }

    fn unseal(&self, stored: &StoredInstance) -> Result<BTreeMap<String, String>, DomainError> {
        stored
            .sealed
            .iter()
            .map(|(name, sealed)| {
                self.secrets
                    .open_value(&format!("{}/{name}", stored.public.id), sealed)
                    .map(|plain| (name.clone(), plain))
                    .map_err(|e| DomainError::invalid(format!("config.{name}"), e.to_string()))
            })
            .collect()
    }

    fn seal(&self, id: &str, secrets: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        secrets
            .iter()
            .map(|(name, plain)| {
                (
                    name.clone(),
                    self.secrets.seal(&format!("{id}/{name}"), plain),
                )
            })
            .collect()
    }

    /// `instance` as API callers see it: URL fields without their query
    /// values or user information (see [`super::url_fields`]).
    fn view(&self, mut instance: Instance) -> Instance {
        let manifest = self.registry.manifest(&instance.plugin);
        super::url_fields::redact_config(manifest.as_ref(), &mut instance.config);
        instance
    }

    /// An audit diff over `before` and `after`, with URL fields redacted as
    /// in [`Self::view`].
    fn changes(
        manifest: Option<&Manifest>,
        before: Option<&Instance>,
        after: Option<&Instance>,
    ) -> BTreeMap<String, Change> {
        let mut changes = audit::diff(before, after);
        super::url_fields::redact_changes(manifest, &mut changes);
        changes
    }

    /// Create an instance. Blocking: the plugin validates the config.
    pub fn create(
        &self,
        cap: &ManagePlugins<'_>,
        input: NewInstance,
    ) -> Result<Committed<Instance>, Error> {
        crate::error::check_name(&input.name)?;
        let manifest = self.manifest_for(&input.plugin)?;
        let checked = check_config(&manifest, &input.config)?;
        self.plugin_validate(&manifest, &checked)?;
        let now = self.clock.now();
        let id = Uuid::now_v7().to_string();
        let instance = Instance {
            id: id.clone(),
            name: input.name.clone(),
            plugin: input.plugin.clone(),
            config: checked.public.clone(),
            secrets_set: checked.secrets.keys().cloned().collect(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let stored = StoredInstance {
            public: instance.clone(),
            sealed: self.seal(&id, &checked.secrets),
        };
        let committed = self.store.write(|txn| -> Result<Instance, Error> {
            if txn.contains(INSTANCES_BY_NAME, input.name.as_bytes())? {
                return Err(DomainError::Conflict {
                    code: "name_taken",
                    field: Some("name".into()),
                    message: format!("a plugin instance named {:?} already exists", input.name),
                }
                .into());
            }
            txn.put_json(INSTANCES, id.as_bytes(), &stored)?;
            txn.put(
                INSTANCES_BY_NAME,
                input.name.as_bytes(),
                id.as_bytes().to_vec(),
            );
            let mut key = prefix(&input.plugin);
            key.extend_from_slice(id.as_bytes());
            txn.put(INSTANCES_BY_PLUGIN, &key, Vec::new());
            let mut changes = Self::changes(Some(&manifest), None, Some(&instance));
            changes.extend(secret_changes(&BTreeMap::new(), &checked.secrets));
            audit::record(
                txn,
                now,
                cap.actor(),
                Record {
                    action: "plugin_instance.create",
                    resource_type: "plugin_instance",
                    resource_id: id.clone(),
                    changes,
                },
            )?;
            Ok(instance.clone())
        })?;
        Ok(committed.map(|i| self.view(i)))
    }

    /// All instances, oldest first. Instances are configured by hand and few,
    /// so the list is not paginated.
    pub fn list(&self) -> Result<Vec<Instance>, DomainError> {
        self.store
            .scan(INSTANCES, b"", None, false)
            .map(|r| {
                let (_, v) = r?;
                let stored = cohort_storage::decode_json::<StoredInstance>(INSTANCES, &v)?;
                Ok(self.view(stored.public))
            })
            .collect()
    }

    /// One instance.
    pub fn get(&self, id: &str) -> Result<Instance, DomainError> {
        Ok(self.view(self.load(id)?.public))
    }

    /// An instance's configuration as its plugin receives it, secrets in
    /// clear: for the host's own calls to the plugin (an IdP's connector).
    /// Never returned through the API.
    pub(crate) fn plugin_config(
        &self,
        id: &str,
    ) -> Result<(Manifest, Vec<types::ConfigEntry>), DomainError> {
        let stored = self.load(id)?;
        let manifest = self.manifest_for(&stored.public.plugin)?;
        let checked = Checked {
            public: stored.public.config.clone(),
            secrets: self.unseal(&stored)?,
        };
        let config = entries(&manifest, &checked);
        Ok((manifest, config))
    }

    /// Change an instance. Blocking: the plugin validates the merged config.
    pub fn update(
        &self,
        cap: &ManagePlugins<'_>,
        id: &str,
        input: InstanceUpdate,
        if_match: Option<u64>,
    ) -> Result<Committed<Instance>, Error> {
        let stored = self.load(id)?;
        if let Some(v) = if_match
            && v != stored.public.version
        {
            return Err(DomainError::VersionMismatch {
                current: stored.public.version,
            }
            .into());
        }
        let manifest = self.manifest_for(&stored.public.plugin)?;
        let old_secrets = self.unseal(&stored)?;
        let mut merged: Map<String, Value> = stored
            .public
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(
                old_secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone()))),
            )
            .collect();
        for (k, v) in input.config.unwrap_or_default() {
            if v.is_null() {
                merged.remove(&k);
            } else {
                let v =
                    super::url_fields::keep_stored(&v, stored.public.config.get(&k)).unwrap_or(v);
                merged.insert(k, v);
            }
        }
        let checked = check_config(&manifest, &merged)?;
        let name = input.name.unwrap_or_else(|| stored.public.name.clone());
        crate::error::check_name(&name)?;
        self.plugin_validate(&manifest, &checked)?;
        let now = self.clock.now();
        let before = stored.public.clone();
        let after = Instance {
            name: name.clone(),
            config: checked.public.clone(),
            secrets_set: checked.secrets.keys().cloned().collect(),
            updated_at: now,
            version: before.version + 1,
            ..before.clone()
        };
        let new_stored = StoredInstance {
            public: after.clone(),
            sealed: self.seal(id, &checked.secrets),
        };
        let committed = self.store.write(|txn| -> Result<Instance, Error> {
            let current: Option<StoredInstance> = txn.get_json(INSTANCES, id.as_bytes())?;
            match current {
                Some(c) if c.public.version == before.version => {}
                Some(c) => {
                    return Err(DomainError::VersionMismatch {
                        current: c.public.version,
                    }
                    .into());
                }
                None => return Err(DomainError::not_found("plugin instance", id).into()),
            }
            if name != before.name {
                if txn.contains(INSTANCES_BY_NAME, name.as_bytes())? {
                    return Err(DomainError::Conflict {
                        code: "name_taken",
                        field: Some("name".into()),
                        message: format!("a plugin instance named {name:?} already exists"),
                    }
                    .into());
                }
                txn.delete(INSTANCES_BY_NAME, before.name.as_bytes());
                txn.put(INSTANCES_BY_NAME, name.as_bytes(), id.as_bytes().to_vec());
            }
            txn.put_json(INSTANCES, id.as_bytes(), &new_stored)?;
            let mut changes = Self::changes(Some(&manifest), Some(&before), Some(&after));
            changes.extend(secret_changes(&old_secrets, &checked.secrets));
            audit::record(
                txn,
                now,
                cap.actor(),
                Record {
                    action: "plugin_instance.update",
                    resource_type: "plugin_instance",
                    resource_id: id.to_owned(),
                    changes,
                },
            )?;
            Ok(after.clone())
        })?;
        Ok(committed.map(|i| self.view(i)))
    }

    /// Removes an uploaded plugin, refused while any instance uses it. The
    /// count is taken from this module's own index, inside the removal's
    /// transaction.
    pub fn remove_plugin(
        &self,
        cap: &ManagePlugins<'_>,
        name: &str,
    ) -> Result<Committed<()>, Error> {
        self.registry.remove(cap, name, |txn| {
            Ok(txn.scan_prefix(INSTANCES_BY_PLUGIN, &prefix(name))?.len())
        })
    }

    /// Delete an instance.
    pub fn delete(&self, cap: &ManagePlugins<'_>, id: &str) -> Result<Committed<()>, Error> {
        let now = self.clock.now();
        let committed = self.store.write(|txn| -> Result<(), Error> {
            let stored: StoredInstance = txn
                .get_json(INSTANCES, id.as_bytes())?
                .ok_or_else(|| DomainError::not_found("plugin instance", id))?;
            txn.delete(INSTANCES, id.as_bytes());
            txn.delete(INSTANCES_BY_NAME, stored.public.name.as_bytes());
            let mut key = prefix(&stored.public.plugin);
            key.extend_from_slice(id.as_bytes());
            txn.delete(INSTANCES_BY_PLUGIN, &key);
            let manifest = self.registry.manifest(&stored.public.plugin);
            let mut changes = Self::changes(manifest.as_ref(), Some(&stored.public), None);
            changes.extend(secret_changes(
                &stored
                    .sealed
                    .keys()
                    .map(|k| (k.clone(), String::new()))
                    .collect(),
                &BTreeMap::new(),
            ));
            audit::record(
                txn,
                now,
                cap.actor(),
                Record {
                    action: "plugin_instance.delete",
                    resource_type: "plugin_instance",
                    resource_id: id.to_owned(),
                    changes,
                },
            )?;
            Ok(())
        })?;
        Ok(committed)
    }

    /// Fetch one page from an importer instance without importing anything.
    /// Blocking: runs the plugin, which may call its source over HTTP.
    /// One page of an importer instance, imported nowhere; with `logs`,
    /// the lines the plugin logged while reading it.
    pub fn preview(
        &self,
        id: &str,
        cursor: Option<&str>,
        logs: bool,
    ) -> Result<Result<PreviewPage, SourceError>, Error> {
        let stored = self.load(id)?;
        let manifest = self.manifest_for(&stored.public.plugin)?;
        if manifest.world != World::DirectoryImporter {
            return Err(PluginError::WrongWorld {
                plugin: manifest.name.clone(),
                expected: World::DirectoryImporter.as_str(),
                actual: manifest.world.as_str(),
            }
            .into());
        }
        let checked = Checked {
            public: stored.public.config.clone(),
            secrets: self.unseal(&stored)?,
        };
        let config = entries(&manifest, &checked);
        let plugin = self.registry.callable(&manifest.name, manifest.world)?;
        let (page, lines) = self
            .registry
            .runtime()
            .importer_fetch_page_logged(&plugin, &config, cursor);
        let lines = logs.then_some(lines);
        Ok(match page? {
            Ok(page) => Ok(PreviewPage {
                logs: lines,
                ..preview_page(page)
            }),
            Err(e) => Err(SourceError {
                logs: lines,
                ..source_error(e)
            }),
        })
    }
}
