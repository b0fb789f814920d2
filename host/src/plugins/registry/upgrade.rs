//! Upgrading an uploaded plugin in place, and rolling back to the version
//! before. The plugin keeps its name, so its instances (with their secrets),
//! the import links and schedules that name those instances, and the groups
//! that name an evaluator all stay as they are; only the code and the
//! manifest change. The version replaced is kept, bytes included, so that a
//! rollback is one call and needs nothing uploaded again.

use std::sync::Arc;

use cohort_storage::{Committed, Keyspace, WriteTxn};

use super::{COMPONENTS, Error, Installed, PLUGINS, PluginView, Registry, Source, StoredPlugin};
use crate::auth::ManagePlugins;
use crate::error::DomainError;
use crate::plugins::manifest::{Manifest, World};
use crate::plugins::runtime::LoadedPlugin;

/// name → the `StoredPlugin` an upgrade replaced: what a rollback installs
/// again. Its component stays in `COMPONENTS` while this names it.
pub(super) const PREVIOUS: Keyspace = Keyspace::new("plugin_previous");

/// Checks an upgrade against what uses the plugin: the instances module's
/// answer to "do all my instances work with this manifest and this code?".
pub trait UpgradeCheck {
    /// Before the upgrade's transaction, so that the new code's answers
    /// (each instance's configuration, validated by the plugin) do not hold
    /// the writer lock.
    fn with_code(&self, manifest: &Manifest, loaded: &Arc<LoadedPlugin>) -> Result<(), Error>;

    /// Inside the upgrade's transaction: checks the records as they are
    /// then, and brings them in step (defaults of new fields).
    fn in_transaction(&self, txn: &mut WriteTxn<'_>, manifest: &Manifest) -> Result<(), Error>;
}

/// Why an upgrade is refused: what the admin must change first.
fn incompatible(field: &str, message: String) -> Error {
    Error::Domain(DomainError::Conflict {
        code: "incompatible_upgrade",
        field: Some(field.into()),
        message,
    })
}

impl Registry {
    /// Replaces uploaded plugin `manifest.name` with `component`. Refused
    /// unless the plugin was uploaded, the new version implements the same
    /// world (and loads: its WIT version is one this server speaks, and its
    /// `describe()` agrees with the manifest), and `check` accepts it.
    /// Blocking: it compiles the component.
    pub fn upgrade(
        &self,
        cap: &ManagePlugins<'_>,
        manifest: Manifest,
        component: &[u8],
        check: &dyn UpgradeCheck,
    ) -> Result<Committed<PluginView>, Error> {
        manifest.validate()?;
        self.replace(cap, manifest, component, check, "plugin.upgrade")
    }

    /// Installs again the version the last upgrade (or rollback) replaced,
    /// under the same checks as an upgrade; the version rolled back from
    /// becomes the one a further rollback returns to.
    pub fn roll_back(
        &self,
        cap: &ManagePlugins<'_>,
        name: &str,
        check: &dyn UpgradeCheck,
    ) -> Result<Committed<PluginView>, Error> {
        let previous: StoredPlugin = self
            .inner
            .store
            .get_json(PREVIOUS, name.as_bytes())?
            .ok_or_else(|| DomainError::Conflict {
                code: "no_previous_version",
                field: None,
                message: format!("plugin {name:?} has no earlier version to roll back to"),
            })?;
        let component = self
            .inner
            .store
            .get(COMPONENTS, previous.sha256.as_bytes())?
            .ok_or_else(|| {
                DomainError::Internal(format!(
                    "the component of {name:?} {} is missing",
                    previous.manifest.version
                ))
            })?;
        self.replace(cap, previous.manifest, &component, check, "plugin.rollback")
    }

    fn replace(
        &self,
        cap: &ManagePlugins<'_>,
        manifest: Manifest,
        component: &[u8],
        check: &dyn UpgradeCheck,
        action: &'static str,
    ) -> Result<Committed<PluginView>, Error> {
        let name = manifest.name.clone();
        let _one_at_a_time = self.inner.upgrading.lock();
        // Not held across the store write (see `set_enabled`).
        let (old_world, source) = {
            let installed = self.inner.installed.read();
            let entry = installed
                .get(&name)
                .ok_or_else(|| DomainError::not_found("plugin", &name))?;
            (entry.loaded.manifest().world, entry.source)
        };
        if source != Source::Upload {
            return Err(incompatible(
                "manifest.name",
                format!(
                    "plugin {name:?} was not uploaded ({source:?}); replace its files in the \
                     plugins directory instead"
                ),
            ));
        }
        if manifest.world != old_world {
            return Err(incompatible(
                "manifest.world",
                format!(
                    "plugin {name:?} is a {}, and an upgrade cannot make it a {}; install the \
                     new plugin under another name",
                    old_world.as_str(),
                    manifest.world.as_str()
                ),
            ));
        }
        if old_world == World::RuleEvaluator {
            // Its groups hold compiled sessions of the running code, which
            // this host would keep using while the others load the new one.
            return Err(incompatible(
                "manifest.world",
                format!(
                    "plugin {name:?} is a rule evaluator, which is not upgraded in place yet; \
                     install the new version under another name and point the groups at it"
                ),
            ));
        }
        let loaded = Arc::new(self.inner.runtime.load(manifest.clone(), component)?);
        let now = self.inner.clock.now();
        if let Err(refusal) = check.with_code(&manifest, &loaded) {
            // The new code ran, with the instances' configurations and
            // secrets: that is on the record even though nothing changed.
            let refused = StoredPlugin::of(&manifest, component, now);
            self.inner
                .store
                .write(|txn| {
                    super::audit_change(txn, now, cap, "plugin.upgrade_refused", None, &refused)
                })?
                .durable_blocking()?;
            return Err(refusal);
        }
        let stored = StoredPlugin::of(&manifest, component, now);
        let sha256 = stored.sha256.clone();
        let committed = self.inner.store.write(|txn| -> Result<(), Error> {
            let before: StoredPlugin = txn
                .get_json(PLUGINS, name.as_bytes())?
                .ok_or_else(|| DomainError::not_found("plugin", &name))?;
            check.in_transaction(txn, &manifest)?;
            // The version displaced from "previous" loses its bytes unless
            // another record still names them.
            if let Some(dropped) = txn.get_json::<StoredPlugin>(PREVIOUS, name.as_bytes())?
                && dropped.sha256 != before.sha256
                && dropped.sha256 != sha256
                && !named_elsewhere(txn, &name, &dropped.sha256)?
            {
                txn.delete(COMPONENTS, dropped.sha256.as_bytes());
            }
            txn.put_json(PREVIOUS, name.as_bytes(), &before)?;
            txn.put_json(PLUGINS, name.as_bytes(), &stored)?;
            txn.put(COMPONENTS, sha256.as_bytes(), component.to_vec());
            super::audit_change(txn, now, cap, action, Some(&before), &stored)?;
            Ok(())
        })?;
        let mut installed = self.inner.installed.write();
        let enabled = installed.get(&name).is_none_or(|i| i.enabled);
        let entry = Installed {
            loaded,
            source: Source::Upload,
            sha256,
            size_bytes: component.len() as u64,
            installed_at: now,
            enabled,
        };
        let view = self.view(&entry);
        installed.insert(name, entry);
        Ok(committed.map(|()| view))
    }
}

/// Whether a plugin other than `name`, or the kept earlier version of one,
/// names component `sha256`. The caller accounts for `name`'s own records,
/// which it is replacing or removing.
pub(super) fn named_elsewhere(txn: &WriteTxn<'_>, name: &str, sha256: &str) -> Result<bool, Error> {
    for ks in [PLUGINS, PREVIOUS] {
        for (k, v) in txn.scan_prefix(ks, b"")? {
            if k.as_slice() == name.as_bytes() {
                continue;
            }
            if cohort_storage::decode_json::<StoredPlugin>(ks, &v).is_ok_and(|p| p.sha256 == sha256)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
