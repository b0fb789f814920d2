//! Catching up with the plugins other hosts sharing the store installed,
//! upgraded, removed, enabled or disabled.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    COMPONENTS, Installed, PLUGIN_STATE, PLUGINS, Registry, Source, StoredPlugin, StoredState,
};
use crate::error::DomainError;

impl Registry {
    pub(super) fn reconcile(&self) -> Result<(), DomainError> {
        let store = &self.inner.store;
        // Enabled or disabled first, and on their own: a plugin disabled
        // through another host must stop whatever else fails below.
        let names: Vec<String> = self.inner.installed.read().keys().cloned().collect();
        let mut states = Vec::with_capacity(names.len());
        for name in names {
            let enabled = store
                .get_json::<StoredState>(PLUGIN_STATE, name.as_bytes())?
                .map(|s| s.enabled)
                .unwrap_or(true);
            states.push((name, enabled));
        }
        {
            let mut installed = self.inner.installed.write();
            for (name, enabled) in states {
                if let Some(i) = installed.get_mut(&name) {
                    i.enabled = enabled;
                }
            }
        }
        let mut stored: BTreeMap<String, StoredPlugin> = BTreeMap::new();
        for entry in store.scan(PLUGINS, b"", None, false) {
            let (key, value) = entry?;
            // One record this build cannot read (a newer host's) is that
            // plugin's problem, not the others'.
            match cohort_storage::decode_json::<StoredPlugin>(PLUGINS, &value) {
                Ok(p) => {
                    stored.insert(p.manifest.name.clone(), p);
                }
                Err(e) => {
                    tracing::warn!(plugin = %String::from_utf8_lossy(&key), error = %e, "a stored plugin cannot be read");
                }
            }
        }
        // Uploads another host made, or replaced with other code: compiled
        // outside the lock.
        let new: Vec<StoredPlugin> = {
            let installed = self.inner.installed.read();
            stored
                .values()
                .filter(|p| match installed.get(&p.manifest.name) {
                    None => true,
                    // Other code, or the same code under a new manifest
                    // (an upgrade that only changed the version).
                    Some(i) => {
                        i.source == Source::Upload
                            && (i.sha256 != p.sha256 || i.loaded.manifest() != &p.manifest)
                    }
                })
                .cloned()
                .collect()
        };
        let mut loaded = Vec::new();
        for p in new {
            let result = store
                .get(COMPONENTS, p.sha256.as_bytes())?
                .ok_or_else(|| format!("component {} is missing from the store", p.sha256))
                .and_then(|bytes| {
                    self.inner
                        .runtime
                        .load(p.manifest.clone(), &bytes)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(l) => loaded.push((p, l)),
                Err(error) => {
                    tracing::error!(plugin = %p.manifest.name, error = %error, "a plugin another host uploaded failed to load");
                }
            }
        }
        let mut installed = self.inner.installed.write();
        // Uploads another host removed.
        installed.retain(|name, i| i.source != Source::Upload || stored.contains_key(name));
        for (p, l) in loaded {
            let enabled = store
                .get_json::<StoredState>(PLUGIN_STATE, p.manifest.name.as_bytes())?
                .map(|s| s.enabled)
                .unwrap_or(true);
            let name = p.manifest.name.clone();
            // Only where no plugin of the directory or the build has the
            // name (uploads of those names are refused).
            if installed
                .get(&name)
                .is_none_or(|i| i.source == Source::Upload)
            {
                installed.insert(
                    name,
                    Installed {
                        loaded: Arc::new(l),
                        source: Source::Upload,
                        sha256: p.sha256,
                        size_bytes: p.size_bytes,
                        installed_at: p.installed_at,
                        enabled,
                    },
                );
            }
        }
        Ok(())
    }
}
