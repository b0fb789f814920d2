//! Which plugins are installed and enabled. Two sources:
//! - the plugins directory (`[plugins] directory`), read at start-up: files
//!   an operator manages, so the API can disable but not delete them;
//! - uploads through the API: the component is stored, content-addressed,
//!   in the same transaction as its record (so backups carry it), and only
//!   after it has compiled and described itself, so a broken upload leaves
//!   nothing.
//!
//! Enabled/disabled is stored per name for both sources and survives restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cohort_storage::{Committed, Keyspace, Store, WriteTxn};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::runtime::{HealthReport, PluginDescription};
use super::{LoadedPlugin, Manifest, PluginError, Runtime, World};
use crate::audit::{self, Change, Record};
use crate::auth::{ManagePlugins, Mutation};
use crate::clock::Clock;
use crate::error::DomainError;

mod reconcile;
mod upgrade;

pub use upgrade::UpgradeCheck;

/// name → `StoredPlugin` JSON, for uploaded plugins.
const PLUGINS: Keyspace = Keyspace::new("plugins");
/// name → `{"enabled": bool}`, for every plugin whose state an admin changed.
const PLUGIN_STATE: Keyspace = Keyspace::new("plugin_state");
/// sha256 (hex) → component bytes of uploaded plugins.
const COMPONENTS: Keyspace = Keyspace::new("plugin_components");

/// Errors of plugin management: the directory's rules or the plugin's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A domain rule (not found, conflict, invalid input) or storage failure.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The plugin failed or could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl From<cohort_storage::StorageError> for Error {
    fn from(e: cohort_storage::StorageError) -> Self {
        Error::Domain(e.into())
    }
}

/// Where an installed plugin came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = PluginSource)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The plugins directory; managed as files.
    Directory,
    /// Uploaded through the API.
    Upload,
    /// Shipped inside the `cohort` binary. A plugin of the same name in the
    /// plugins directory, or uploaded earlier, takes its place.
    Builtin,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredPlugin {
    manifest: Manifest,
    sha256: String,
    size_bytes: u64,
    installed_at: DateTime<Utc>,
}

/// Audits the install, upgrade or rollback of a plugin: the manifest's
/// changes, with its `version` (which the generic diff leaves out, as the
/// ETag of other resources; here it is the plugin's own, and the change
/// admins look for first) and the component's SHA-256.
fn audit_change(
    txn: &mut WriteTxn<'_>,
    now: DateTime<Utc>,
    cap: &ManagePlugins<'_>,
    action: &'static str,
    before: Option<&StoredPlugin>,
    after: &StoredPlugin,
) -> Result<(), DomainError> {
    let mut changes = audit::diff(before.map(|b| &b.manifest), Some(&after.manifest));
    let value = |f: fn(&StoredPlugin) -> &String| before.map(|b| f(b).clone());
    for (field, was, now_is) in [
        (
            "version",
            value(|p| &p.manifest.version),
            &after.manifest.version,
        ),
        ("sha256", value(|p| &p.sha256), &after.sha256),
    ] {
        if was.as_ref() != Some(now_is) {
            changes.insert(
                field.into(),
                Change {
                    before: was.map_or(serde_json::Value::Null, Into::into),
                    after: now_is.clone().into(),
                },
            );
        }
    }
    audit::record(
        txn,
        now,
        cap.actor(),
        Record {
            action,
            resource_type: "plugin",
            resource_id: after.manifest.name.clone(),
            changes,
        },
    )?;
    Ok(())
}

impl StoredPlugin {
    /// The record of `component` installed under `manifest` at `now`.
    fn of(manifest: &Manifest, component: &[u8], now: DateTime<Utc>) -> StoredPlugin {
        StoredPlugin {
            manifest: manifest.clone(),
            sha256: sha256_hex(component),
            size_bytes: component.len() as u64,
            installed_at: now,
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct StoredState {
    enabled: bool,
}

struct Installed {
    loaded: Arc<LoadedPlugin>,
    source: Source,
    sha256: String,
    size_bytes: u64,
    installed_at: DateTime<Utc>,
    enabled: bool,
}

/// An installed plugin as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// The manifest.
    pub manifest: Manifest,
    /// What the plugin says about itself.
    pub info: PluginDescription,
    /// Whether calls are allowed.
    pub enabled: bool,
    /// Where it came from.
    pub source: Source,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Component size.
    pub size_bytes: u64,
    /// When it was installed (for directory plugins: when this server loaded it).
    pub installed_at: DateTime<Utc>,
    /// Call counts and health since the server started.
    pub health: HealthReport,
}

/// A plugin file that did not load at start-up.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LoadFailure {
    /// The file.
    pub file: String,
    /// Why it did not load.
    pub error: String,
}

/// The installed plugins.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    store: Store,
    clock: Arc<dyn Clock>,
    installed: RwLock<BTreeMap<String, Installed>>,
    failures: Vec<LoadFailure>,
    /// Set when another host sharing the store wrote: it may have uploaded,
    /// removed, enabled or disabled a plugin. Read again before the next
    /// use, so that a plugin disabled through one host stops on all.
    stale: Arc<std::sync::atomic::AtomicBool>,
    /// Held by an upgrade or rollback from its check to its update of
    /// `installed`, so that two of one plugin land in the order they
    /// committed. Never taken while the store's writer is held elsewhere.
    upgrading: parking_lot::Mutex<()>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Registry {
    /// Load the plugins directory and the uploaded plugins. A plugin that
    /// fails to load is reported (log and API), never fatal: one bad file
    /// must not keep the directory from starting.
    pub fn open(
        runtime: Arc<Runtime>,
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Option<&Path>,
        builtin: &[super::Builtin],
    ) -> Result<Registry, DomainError> {
        let mut installed = BTreeMap::new();
        let mut failures = Vec::new();
        let now = clock.now();
        let state = |name: &str| -> Result<bool, DomainError> {
            Ok(store
                .get_json::<StoredState>(PLUGIN_STATE, name.as_bytes())?
                .map(|s| s.enabled)
                .unwrap_or(true))
        };
        if let Some(dir) = directory {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| {
                    DomainError::invalid(
                        "plugins.directory",
                        format!("cannot read {}: {e}", dir.display()),
                    )
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            files.sort();
            for wasm_path in files {
                let file = wasm_path.display().to_string();
                let result = (|| -> Result<(LoadedPlugin, Vec<u8>), String> {
                    let manifest_path = wasm_path.with_extension("toml");
                    let text = read_manifest(&manifest_path)
                        .map_err(|e| format!("no manifest {}: {e}", manifest_path.display()))?;
                    let manifest = Manifest::from_toml(&text).map_err(|e| e.to_string())?;
                    let bytes = std::fs::read(&wasm_path).map_err(|e| e.to_string())?;
                    let loaded = runtime.load(manifest, &bytes).map_err(|e| e.to_string())?;
                    Ok((loaded, bytes))
                })();
                match result {
                    Ok((loaded, bytes)) => {
                        let name = loaded.manifest().name.clone();
                        if installed.contains_key(&name) {
                            failures.push(LoadFailure {
                                file,
                                error: format!("a plugin named {name} is already loaded"),
                            });
                            continue;
                        }
                        tracing::info!(plugin = %name, file = %file, "loaded plugin");
                        installed.insert(
                            name.clone(),
                            Installed {
                                enabled: state(&name)?,
                                loaded: Arc::new(loaded),
                                source: Source::Directory,
                                sha256: sha256_hex(&bytes),
                                size_bytes: bytes.len() as u64,
                                installed_at: now,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::error!(file = %file, error = %error, "plugin failed to load");
                        failures.push(LoadFailure { file, error });
                    }
                }
            }
        }
        for b in builtin {
            let file = format!("(built in) {}", b.file);
            let result = Manifest::from_toml(b.manifest)
                .map_err(|e| e.to_string())
                .and_then(|manifest| {
                    if installed.contains_key(&manifest.name) {
                        return Ok(None);
                    }
                    runtime
                        .load(manifest, b.component)
                        .map(Some)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(Some(loaded)) => {
                    let name = loaded.manifest().name.clone();
                    installed.insert(
                        name.clone(),
                        Installed {
                            enabled: state(&name)?,
                            loaded: Arc::new(loaded),
                            source: Source::Builtin,
                            sha256: sha256_hex(b.component),
                            size_bytes: b.component.len() as u64,
                            installed_at: now,
                        },
                    );
                }
                Ok(None) => {
                    tracing::info!(plugin = %b.file, "built-in plugin replaced by one of the same name");
                }
                Err(error) => {
                    tracing::error!(file = %file, error = %error, "built-in plugin failed to load");
                    failures.push(LoadFailure { file, error });
                }
            }
        }
        for entry in store.scan(PLUGINS, b"", None, false) {
            let (key, value) = entry?;
            // A record this build cannot read (written by a newer host) is
            // that plugin's failure, not the server's: reported, and the
            // others load.
            let stored: StoredPlugin = match cohort_storage::decode_json(PLUGINS, &value) {
                Ok(s) => s,
                Err(e) => {
                    let file = format!("(uploaded) {}", String::from_utf8_lossy(&key));
                    tracing::error!(file = %file, error = %e, "a stored plugin cannot be read");
                    failures.push(LoadFailure {
                        file,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let name = stored.manifest.name.clone();
            let file = format!("(uploaded) {name}");
            let loaded = store
                .get(COMPONENTS, stored.sha256.as_bytes())?
                .ok_or_else(|| format!("component {} is missing from the store", stored.sha256))
                .and_then(|bytes| {
                    runtime
                        .load(stored.manifest.clone(), &bytes)
                        .map_err(|e| e.to_string())
                });
            match loaded {
                Ok(loaded) if !installed.contains_key(&name) => {
                    installed.insert(
                        name.clone(),
                        Installed {
                            enabled: state(&name)?,
                            loaded: Arc::new(loaded),
                            source: Source::Upload,
                            sha256: stored.sha256,
                            size_bytes: stored.size_bytes,
                            installed_at: stored.installed_at,
                        },
                    );
                }
                Ok(_) => failures.push(LoadFailure {
                    file,
                    error: format!(
                        "a plugin named {name} is already loaded from the plugins directory or \
                         built in; the upload is not used"
                    ),
                }),
                Err(error) => {
                    tracing::error!(plugin = %name, error = %error, "uploaded plugin failed to load");
                    failures.push(LoadFailure { file, error });
                }
            }
        }
        let stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        store.on_foreign_write({
            let stale = Arc::clone(&stale);
            move || stale.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        Ok(Registry {
            inner: Arc::new(Inner {
                runtime,
                store,
                clock,
                installed: RwLock::new(installed),
                failures,
                stale,
                upgrading: parking_lot::Mutex::new(()),
            }),
        })
    }

    /// Brings the installed plugins in line with the store when another
    /// host may have changed them (see `Inner::stale`).
    fn catch_up(&self) {
        use std::sync::atomic::Ordering;
        if !self.inner.stale.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.reconcile() {
            self.inner.stale.store(true, Ordering::SeqCst);
            tracing::warn!(error = %e, "reading the plugins another host changed failed");
        }
    }

    /// The runtime plugins run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    fn view(&self, i: &Installed) -> PluginView {
        PluginView {
            manifest: i.loaded.manifest().clone(),
            info: i.loaded.description().clone(),
            enabled: i.enabled,
            source: i.source,
            sha256: i.sha256.clone(),
            size_bytes: i.size_bytes,
            installed_at: i.installed_at,
            health: i.loaded.health(self.inner.runtime.limits().unhealthy_after),
        }
    }

    /// Every installed plugin, by name, and the files that failed to load.
    pub fn list(&self) -> (Vec<PluginView>, Vec<LoadFailure>) {
        self.catch_up();
        let installed = self.inner.installed.read();
        (
            installed.values().map(|i| self.view(i)).collect(),
            self.inner.failures.clone(),
        )
    }

    /// One plugin.
    pub fn get(&self, name: &str) -> Result<PluginView, DomainError> {
        self.catch_up();
        let installed = self.inner.installed.read();
        installed
            .get(name)
            .map(|i| self.view(i))
            .ok_or_else(|| DomainError::not_found("plugin", name))
    }

    /// The loaded plugin for a call: it must exist, be enabled and be of `world`.
    pub fn callable(&self, name: &str, world: World) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.catch_up();
        let installed = self.inner.installed.read();
        let i = installed
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        if !i.enabled {
            return Err(PluginError::Disabled(name.to_owned()));
        }
        if i.loaded.manifest().world != world {
            return Err(PluginError::WrongWorld {
                plugin: name.to_owned(),
                expected: world.as_str(),
                actual: i.loaded.manifest().world.as_str(),
            });
        }
        Ok(i.loaded.clone())
    }

    /// The world of an installed plugin (enabled or not).
    pub fn world(&self, name: &str) -> Option<World> {
        self.catch_up();
        self.inner
            .installed
            .read()
            .get(name)
            .map(|i| i.loaded.manifest().world)
    }

    /// The manifest of an installed plugin (enabled or not).
    pub fn manifest(&self, name: &str) -> Option<Manifest> {
        self.catch_up();
        self.inner
            .installed
            .read()
            .get(name)
            .map(|i| i.loaded.manifest().clone())
    }

    /// Install an uploaded component. Blocking: it compiles the component.
    pub fn install(
        &self,
        cap: &ManagePlugins<'_>,
        manifest: Manifest,
        component: &[u8],
    ) -> Result<Committed<PluginView>, Error> {
        manifest.validate()?;
        let name = manifest.name.clone();
        // Every name this build ships, loaded here or not: an upload stored
        // through a host with built-ins off must not take a built-in's
        // place (and its instances' secrets) on the others.
        let shipped = super::BUILTIN
            .iter()
            .any(|b| Manifest::from_toml(b.manifest).is_ok_and(|m| m.name == name));
        if shipped {
            return Err(DomainError::Conflict {
                code: "plugin_builtin",
                field: Some("manifest.name".into()),
                message: format!(
                    "{name:?} is built into this server; to replace it, put a component of that \
                     name in the plugins directory"
                ),
            }
            .into());
        }
        if self.inner.installed.read().contains_key(&name) {
            return Err(DomainError::Conflict {
                code: "plugin_exists",
                field: Some("manifest.name".into()),
                message: format!("a plugin named {name:?} is already installed; remove it first"),
            }
            .into());
        }
        let loaded = self.inner.runtime.load(manifest.clone(), component)?;
        let now = self.inner.clock.now();
        let stored = StoredPlugin::of(&manifest, component, now);
        let sha256 = stored.sha256.clone();
        let committed = self.inner.store.write(|txn| -> Result<(), Error> {
            if txn.contains(PLUGINS, name.as_bytes())? {
                return Err(DomainError::Conflict {
                    code: "plugin_exists",
                    field: Some("manifest.name".into()),
                    message: format!("a plugin named {name:?} is already installed"),
                }
                .into());
            }
            txn.put_json(PLUGINS, name.as_bytes(), &stored)?;
            txn.put(COMPONENTS, sha256.as_bytes(), component.to_vec());
            txn.delete(PLUGIN_STATE, name.as_bytes());
            audit_change(txn, now, cap, "plugin.install", None, &stored)?;
            Ok(())
        })?;
        let installed = Installed {
            loaded: Arc::new(loaded),
            source: Source::Upload,
            sha256,
            size_bytes: component.len() as u64,
            installed_at: now,
            enabled: true,
        };
        let view = self.view(&installed);
        self.inner.installed.write().insert(name, installed);
        Ok(committed.map(|()| view))
    }

    /// Enable or disable a plugin. Disabled plugins keep their instances;
    /// calls to them fail with `plugin_disabled`.
    pub fn set_enabled(
        &self,
        cap: &ManagePlugins<'_>,
        name: &str,
        enabled: bool,
    ) -> Result<Committed<PluginView>, Error> {
        // The registry's lock is never held across a store write: write
        // transactions call into the registry (`callable`) with the store's
        // writer held, and the two orders would deadlock.
        let before = self
            .inner
            .installed
            .read()
            .get(name)
            .map(|e| e.enabled)
            .ok_or_else(|| DomainError::not_found("plugin", name))?;
        let now = self.inner.clock.now();
        let committed = self.inner.store.write(|txn| -> Result<(), Error> {
            txn.put_json(PLUGIN_STATE, name.as_bytes(), &StoredState { enabled })?;
            if before != enabled {
                audit::record(
                    txn,
                    now,
                    cap.actor(),
                    Record {
                        action: if enabled {
                            "plugin.enable"
                        } else {
                            "plugin.disable"
                        },
                        resource_type: "plugin",
                        resource_id: name.to_owned(),
                        changes: BTreeMap::from([(
                            "enabled".to_owned(),
                            Change {
                                before: before.into(),
                                after: enabled.into(),
                            },
                        )]),
                    },
                )?;
            }
            Ok(())
        })?;
        let mut installed = self.inner.installed.write();
        let entry = installed
            .get_mut(name)
            .ok_or_else(|| DomainError::not_found("plugin", name))?;
        entry.enabled = enabled;
        let view = self.view(entry);
        Ok(committed.map(|()| view))
    }

    /// Remove an uploaded plugin. Refused while instances use it
    /// (`instances` counts them inside the removal's transaction, so none can
    /// be added in between), and for plugins from the plugins directory
    /// (delete the file instead). Instances own their records, so they are
    /// asked rather than read: see [`super::Instances::remove_plugin`].
    pub(super) fn remove(
        &self,
        cap: &ManagePlugins<'_>,
        name: &str,
        instances: impl FnOnce(&WriteTxn<'_>) -> Result<usize, DomainError>,
    ) -> Result<Committed<()>, Error> {
        // Not held across the store write (see `set_enabled`).
        let installed = self.inner.installed.read();
        let entry = installed
            .get(name)
            .ok_or_else(|| DomainError::not_found("plugin", name))?;
        if entry.source == Source::Builtin {
            return Err(DomainError::Conflict {
                code: "plugin_builtin",
                field: None,
                message: format!(
                    "plugin {name:?} is built into this server; disable it instead, or replace it \
                     through the plugins directory"
                ),
            }
            .into());
        }
        if entry.source == Source::Directory {
            return Err(DomainError::Conflict {
                code: "plugin_from_directory",
                field: None,
                message: format!(
                    "plugin {name:?} was loaded from the plugins directory; delete its files there, \
                     or disable it"
                ),
            }
            .into());
        }
        let now = self.inner.clock.now();
        drop(installed);
        let committed = self.inner.store.write(|txn| -> Result<(), Error> {
            // As stored now: another host may have upgraded it.
            let StoredPlugin {
                manifest, sha256, ..
            } = txn
                .get_json(PLUGINS, name.as_bytes())?
                .ok_or_else(|| DomainError::not_found("plugin", name))?;
            let users = instances(txn)?;
            if users > 0 {
                return Err(DomainError::Conflict {
                    code: "plugin_in_use",
                    field: None,
                    message: format!("plugin {name:?} has {users} instance(s); delete them first"),
                }
                .into());
            }
            txn.delete(PLUGINS, name.as_bytes());
            txn.delete(PLUGIN_STATE, name.as_bytes());
            let previous = txn.get_json::<StoredPlugin>(upgrade::PREVIOUS, name.as_bytes())?;
            txn.delete(upgrade::PREVIOUS, name.as_bytes());
            // Content-addressed: keep the bytes if another name uses them.
            let mut hashes = vec![sha256.clone()];
            hashes.extend(previous.map(|p| p.sha256));
            for hash in hashes {
                if !upgrade::named_elsewhere(txn, name, &hash)? {
                    txn.delete(COMPONENTS, hash.as_bytes());
                }
            }
            audit::record(
                txn,
                now,
                cap.actor(),
                Record {
                    action: "plugin.remove",
                    resource_type: "plugin",
                    resource_id: name.to_owned(),
                    changes: audit::diff(Some(&manifest), None),
                },
            )?;
            Ok(())
        })?;
        self.inner.installed.write().remove(name);
        Ok(committed)
    }
}

/// Key prefix for per-plugin index entries.
/// Reads a manifest file, at most one byte past
/// [`crate::limits::MAX_MANIFEST_BYTES`] (enough for
/// [`Manifest::from_toml`] to refuse it), so that a huge file in the
/// plugin directory is not read whole.
fn read_manifest(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(crate::limits::MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

pub(crate) fn prefix(name: &str) -> Vec<u8> {
    let mut p = name.as_bytes().to_vec();
    p.push(0);
    p
}
