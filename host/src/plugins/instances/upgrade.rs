//! What an upgrade of a plugin means for its instances: each must still be
//! a valid configuration of the new version, checked by the same rules as a
//! save and by the new code itself, before anything changes. Instances
//! keep their ids, secrets and names, so the import links, schedules and
//! sign-in routes that name them are untouched.

use std::collections::BTreeMap;
use std::sync::Arc;

use cohort_storage::{Committed, WriteTxn};
use serde_json::{Map, Value};

use super::{
    INSTANCES, INSTANCES_BY_PLUGIN, Instances, StoredInstance, check_config, config_error, entries,
    prefix,
};
use crate::auth::{ManagePlugins, Mutation};
use crate::error::DomainError;
use crate::plugins::manifest::{ConfigKind, Manifest, World};
use crate::plugins::registry::{Error, PluginView, UpgradeCheck};
use crate::plugins::runtime::LoadedPlugin;

/// An upgrade one instance cannot follow: named, with what to change.
fn refused(instance: &str, reason: impl std::fmt::Display) -> Error {
    Error::Domain(DomainError::Conflict {
        code: "incompatible_upgrade",
        field: Some("manifest.config".into()),
        message: format!("instance {instance:?} would not work with this version: {reason}"),
    })
}

/// The configuration `stored` gives `manifest`'s fields: its values for
/// the fields the manifest knows (others are kept, and not passed), with a
/// field whose secrecy changed refused, since its value would be shown or
/// lost.
fn config_for(
    manifest: &Manifest,
    old: Option<&Manifest>,
    stored: &StoredInstance,
    secrets: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, Error> {
    let name = &stored.public.name;
    let mut values = Map::new();
    for spec in &manifest.config {
        let public = stored.public.config.get(&spec.name);
        let secret = secrets.get(&spec.name);
        if let Some(Value::String(v)) = public
            && reveals_query(old, manifest, &spec.name, v)
        {
            return Err(refused(
                name,
                format!(
                    "field {} would show the query string of its URL, which is hidden now \
                     (a signed link is a credential); clear it first",
                    spec.name
                ),
            ));
        }
        match (spec.kind == ConfigKind::Secret, public, secret) {
            (true, Some(_), _) => {
                return Err(refused(
                    name,
                    format!("field {} becomes a secret; clear it first", spec.name),
                ));
            }
            (false, _, Some(_)) => {
                return Err(refused(
                    name,
                    format!("field {} is no longer a secret; clear it first", spec.name),
                ));
            }
            (_, Some(v), _) => {
                values.insert(spec.name.clone(), v.clone());
            }
            (_, _, Some(s)) => {
                values.insert(spec.name.clone(), Value::String(s.clone()));
            }
            _ => {}
        }
    }
    Ok(values)
}

/// Whether `value` of field `field`, shown with its query string hidden
/// under `old`, would be shown whole under `new` (the field stops being a
/// URL, or declares its query harmless).
fn reveals_query(old: Option<&Manifest>, new: &Manifest, field: &str, value: &str) -> bool {
    let hidden = |m: &Manifest| {
        m.config
            .iter()
            .find(|f| f.name == field)
            .is_some_and(|f| f.kind == ConfigKind::Url && !f.show_query)
    };
    let has_query =
        reqwest::Url::parse(value).is_ok_and(|u| u.query().is_some() || u.fragment().is_some());
    has_query && old.is_some_and(hidden) && !hidden(new)
}

/// The instances of one plugin, checked against a new version of it.
struct Following<'a> {
    instances: &'a Instances,
    plugin: String,
    /// The manifest running now.
    old: Option<Manifest>,
    now: chrono::DateTime<chrono::Utc>,
    actor: crate::auth::Actor,
}

impl Following<'_> {
    fn ids(&self, txn: Option<&WriteTxn<'_>>) -> Result<Vec<String>, Error> {
        let keys = match txn {
            Some(txn) => txn
                .scan_prefix(INSTANCES_BY_PLUGIN, &prefix(&self.plugin))?
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
            None => self
                .instances
                .store
                .scan(INSTANCES_BY_PLUGIN, &prefix(&self.plugin), None, false)
                .map(|e| e.map(|(k, _)| k))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let skip = prefix(&self.plugin).len();
        Ok(keys
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[skip..]).into_owned())
            .collect())
    }
}

impl UpgradeCheck for Following<'_> {
    fn with_code(&self, manifest: &Manifest, loaded: &Arc<LoadedPlugin>) -> Result<(), Error> {
        let runtime = self.instances.registry.runtime();
        for id in self.ids(None)? {
            let stored = self.instances.load(&id)?;
            let secrets = self.instances.unseal(&stored)?;
            let values = config_for(manifest, self.old.as_ref(), &stored, &secrets)?;
            let checked =
                check_config(manifest, &values).map_err(|e| refused(&stored.public.name, e))?;
            let config = entries(manifest, &checked);
            let verdict = match manifest.world {
                World::DirectoryImporter => runtime.importer_validate_config(loaded, &config)?,
                World::IdpConnector => runtime.idp_validate_config(loaded, &config)?,
                World::RuleEvaluator => Ok(()),
            };
            verdict.map_err(|e| refused(&stored.public.name, config_error(e)))?;
        }
        Ok(())
    }

    fn in_transaction(&self, txn: &mut WriteTxn<'_>, manifest: &Manifest) -> Result<(), Error> {
        for id in self.ids(Some(txn))? {
            let Some(mut stored) = txn.get_json::<StoredInstance>(INSTANCES, id.as_bytes())? else {
                continue;
            };
            // The secrets' values were checked above; here only which are
            // set matters, and that an instance added since is checked too.
            let names: BTreeMap<String, String> = stored
                .sealed
                .keys()
                .map(|k| (k.clone(), String::new()))
                .collect();
            let values = config_for(manifest, self.old.as_ref(), &stored, &names)?;
            let checked =
                check_config(manifest, &values).map_err(|e| refused(&stored.public.name, e))?;
            // Defaults of fields the instance did not set: written, so that
            // the instance shows what it runs with.
            let added: BTreeMap<String, Value> = checked
                .public
                .into_iter()
                .filter(|(k, _)| !stored.public.config.contains_key(k))
                .collect();
            if added.is_empty() {
                continue;
            }
            let before = stored.public.clone();
            stored.public.config.extend(added);
            stored.public.version += 1;
            stored.public.updated_at = self.now;
            txn.put_json(INSTANCES, id.as_bytes(), &stored)?;
            crate::audit::record(
                txn,
                self.now,
                &self.actor,
                crate::audit::Record {
                    action: "plugin_instance.update",
                    resource_type: "plugin_instance",
                    resource_id: id.clone(),
                    changes: Instances::changes(
                        Some(manifest),
                        Some(&before),
                        Some(&stored.public),
                    ),
                },
            )?;
        }
        Ok(())
    }
}

impl Instances {
    /// Upgrades uploaded plugin `manifest.name` in place (see
    /// `registry::upgrade`): refused, naming the instance and the reason,
    /// unless every instance is a valid configuration of the new version.
    /// Blocking: it compiles the component and calls it.
    pub fn upgrade_plugin(
        &self,
        cap: &ManagePlugins<'_>,
        manifest: Manifest,
        component: &[u8],
    ) -> Result<Committed<PluginView>, Error> {
        let check = self.following(cap, &manifest.name);
        self.registry.upgrade(cap, manifest, component, &check)
    }

    /// Rolls plugin `name` back to the version its last upgrade replaced,
    /// under the same checks.
    pub fn roll_back_plugin(
        &self,
        cap: &ManagePlugins<'_>,
        name: &str,
    ) -> Result<Committed<PluginView>, Error> {
        let check = self.following(cap, name);
        self.registry.roll_back(cap, name, &check)
    }

    fn following(&self, cap: &ManagePlugins<'_>, plugin: &str) -> Following<'_> {
        Following {
            instances: self,
            plugin: plugin.to_string(),
            old: self.registry.manifest(plugin),
            now: self.clock.now(),
            actor: cap.actor().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(fields: &str) -> Manifest {
        Manifest::from_toml(&format!(
            "name = \"hr\"\nversion = \"2.0.0\"\nworld = \"directory-importer\"\n\
             description = \"d\"\n{fields}"
        ))
        .unwrap()
    }

    fn instance(public: Value, secrets: &[&str]) -> (StoredInstance, BTreeMap<String, String>) {
        let stored: StoredInstance = serde_json::from_value(json_instance(public)).unwrap();
        let secrets = secrets
            .iter()
            .map(|s| (s.to_string(), "v".to_string()))
            .collect();
        (stored, secrets)
    }

    fn json_instance(config: Value) -> Value {
        serde_json::json!({"id": "i", "name": "hr-main", "plugin": "hr", "config": config,
            "secrets_set": [], "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "version": 1, "sealed": {}})
    }

    /// A new required field is followed when it has a default and refused,
    /// naming the instance and the field, when it has none; a field that
    /// changes secrecy is refused; a field the new version dropped is kept
    /// and not passed.
    #[test]
    fn instances_follow_an_upgrade_only_where_they_stay_valid() {
        let (stored, secrets) = instance(serde_json::json!({"region": "eu", "old": 1}), &["token"]);
        let with_default = manifest(
            "[[config]]\nname = \"region\"\nkind = \"text\"\n\
             [[config]]\nname = \"token\"\nkind = \"secret\"\nrequired = true\n\
             [[config]]\nname = \"tier\"\nkind = \"text\"\nrequired = true\ndefault = \"basic\"\n",
        );
        let values = config_for(&with_default, None, &stored, &secrets).unwrap();
        assert!(!values.contains_key("old"));
        let checked = check_config(&with_default, &values).unwrap();
        assert_eq!(checked.public["tier"], "basic");
        assert_eq!(checked.secrets["token"], "v");

        let without = manifest(
            "[[config]]\nname = \"token\"\nkind = \"secret\"\n\
             [[config]]\nname = \"tier\"\nkind = \"text\"\nrequired = true\n",
        );
        let values = config_for(&without, None, &stored, &secrets).unwrap();
        let e = check_config(&without, &values).err().unwrap();
        assert_eq!(
            refused("hr-main", e).to_string(),
            "instance \"hr-main\" would not work with this version: config.tier: is required"
        );

        let exposed = manifest("[[config]]\nname = \"token\"\nkind = \"text\"\n");
        let e = config_for(&exposed, None, &stored, &secrets).err().unwrap();
        assert!(e.to_string().contains("token is no longer a secret"), "{e}");
        let hidden = manifest("[[config]]\nname = \"region\"\nkind = \"secret\"\n");
        let e = config_for(&hidden, None, &stored, &secrets).err().unwrap();
        assert!(e.to_string().contains("region becomes a secret"), "{e}");

        // A signed link stays hidden: a URL field may not become text, nor
        // declare its query harmless, while an instance holds one.
        let (stored, secrets) = instance(
            serde_json::json!({"feed": "https://files.example/x.csv?sig=S"}),
            &[],
        );
        let url = manifest("[[config]]\nname = \"feed\"\nkind = \"url\"\n");
        for shown in [
            "[[config]]\nname = \"feed\"\nkind = \"text\"\n",
            "[[config]]\nname = \"feed\"\nkind = \"url\"\nshow_query = true\n",
        ] {
            let e = config_for(&manifest(shown), Some(&url), &stored, &secrets)
                .err()
                .unwrap();
            assert!(e.to_string().contains("query string"), "{e}");
        }
        assert!(config_for(&url, Some(&url), &stored, &secrets).is_ok());
    }

    #[test]
    fn a_default_must_fit_its_field() {
        for fields in [
            "[[config]]\nname = \"token\"\nkind = \"secret\"\ndefault = \"x\"\n",
            "[[config]]\nname = \"n\"\nkind = \"number\"\ndefault = \"x\"\n",
        ] {
            let text = format!(
                "name = \"hr\"\nversion = \"2.0.0\"\nworld = \"directory-importer\"\n\
                 description = \"d\"\n{fields}"
            );
            let m = Manifest::from_toml(&text);
            let refused = m.and_then(|m| m.validate().map(|()| m));
            assert!(refused.is_err(), "{fields}");
        }
    }
}
