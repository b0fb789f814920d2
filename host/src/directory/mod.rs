//! The directory: users, devices, the bindings between them, and the
//! attribute schema. Every change is validated, written together with its
//! audit event in one transaction, and durable before the caller hears back.
//! Nothing here knows about HTTP.

mod attributes;
mod bindings;
mod collisions;
mod confusables;
mod devices;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod identity;
mod identity_reads;
mod indexes;
mod layout;
mod query;
pub mod read;
mod users;

pub use attributes::{
    AttrType, AttrValue, Attribute, AttributeUpdate, NewAttribute, SubjectKind, check_string,
    normalize_date, parse_value, schema, standard_schema, standard_type,
};
pub use bindings::Binding;
pub use collisions::Collision;
pub(crate) use collisions::rekey_identities;
pub(crate) use confusables::build_skeleton_index;
pub(crate) use devices::load as load_device;
pub use devices::{CheckIn, DEVICE_SORTS, Device, DeviceInput, Enrolled, OsFamily};
pub(crate) use indexes::build_serial_index;
pub use query::{AttrRef, Filter, ListQuery, Subject};
pub(crate) use users::load as load_user;
pub use users::{StateChange, USER_SORTS, User, UserInput, UserState};

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cohort_storage::{Store, WriteTxn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::audit;
use crate::auth::Actor;
use crate::clock::Clock;
use crate::error::DomainError;
use crate::json::{self, DecodeError};

/// The directory service. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Directory {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Called in order for every change (groups, then device credentials).
    listeners: Vec<Arc<dyn ChangeListener>>,
}

/// What changed in the directory, for state derived from it.
#[derive(Clone, Debug)]
pub enum Change {
    /// A user or device was created, changed or deleted.
    Subject {
        /// User or device.
        kind: SubjectKind,
        /// Its id.
        id: Uuid,
        /// The attributes that changed; `None` when it was created or deleted.
        attributes: Option<BTreeSet<String>>,
    },
    /// A user was bound to a device, or unbound.
    Binding {
        /// The user.
        user: Uuid,
        /// The device.
        device: Uuid,
    },
}

/// Derived state that must change in the same transaction as the directory
/// (group memberships): told of every change before the transaction commits,
/// and may write in it. An error aborts the whole change.
pub trait ChangeListener: Send + Sync {
    /// Called once per change, after the directory's own writes.
    fn changed(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        change: &Change,
    ) -> Result<(), DomainError>;
}

impl Directory {
    /// A directory over `store`, taking time from `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Directory {
            store,
            clock,
            listeners: Vec::new(),
        }
    }

    /// The same directory, also telling `listener` about every change
    /// (after the listeners added before it).
    pub fn with_listener(mut self, listener: Arc<dyn ChangeListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// The same directory, telling no listener: for a rehearsal of writes
    /// (an import's dry run) that derived state in memory (the group
    /// memberships) must never see.
    pub(crate) fn without_listeners(&self) -> Directory {
        Directory {
            store: self.store.clone(),
            clock: Arc::clone(&self.clock),
            listeners: Vec::new(),
        }
    }

    /// Audits the write of a user or device and tells the listeners which
    /// attributes changed (all of them when it is new), in the caller's
    /// transaction: one place, so users and devices cannot drift apart.
    #[allow(clippy::too_many_arguments)]
    fn record_write<T: Serialize>(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        action: &str,
        kind: SubjectKind,
        id: Uuid,
        at: DateTime<Utc>,
        before: Option<&T>,
        after: &T,
    ) -> Result<(), DomainError> {
        let changes = audit::diff(before, Some(after));
        let attributes = before.map(|_| changed_attributes(&changes));
        audit::record(
            txn,
            at,
            actor,
            audit::Record {
                action,
                resource_type: kind.as_str(),
                resource_id: id.to_string(),
                changes,
            },
        )?;
        self.emit(
            txn,
            actor,
            at,
            Change::Subject {
                kind,
                id,
                attributes,
            },
        )
    }

    pub(crate) fn emit(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        change: Change,
    ) -> Result<(), DomainError> {
        for l in &self.listeners {
            l.changed(txn, actor, now, &change)?;
        }
        Ok(())
    }
}

/// The attribute names an audit diff touches (`custom_attributes.x` is `x`),
/// plus `updated_at`, which every change moves.
pub(crate) fn changed_attributes(
    changes: &std::collections::BTreeMap<String, crate::audit::Change>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = changes
        .keys()
        .map(|k| {
            k.strip_prefix("custom_attributes.")
                .unwrap_or(k)
                .to_string()
        })
        .collect();
    out.insert("updated_at".into());
    out
}

/// Runs a write transaction and waits until it is durable: the one way the
/// domain changes anything.
pub(crate) async fn commit<T>(
    store: &Store,
    f: impl FnOnce(&mut cohort_storage::WriteTxn<'_>) -> Result<T, DomainError>,
) -> Result<T, DomainError> {
    Ok(store.write(f)?.durable().await?)
}

/// Resources with optimistic concurrency.
pub(crate) trait Versioned {
    fn version(&self) -> u64;

    /// Fails with `VersionMismatch` when the caller's If-Match is stale.
    fn check_version(&self, if_match: Option<u64>) -> Result<(), DomainError> {
        match if_match {
            Some(v) if v != self.version() => Err(DomainError::VersionMismatch {
                current: self.version(),
            }),
            _ => Ok(()),
        }
    }
}

/// Applies a JSON merge patch to the writable view of a resource and decodes
/// the result, so that a PATCH is validated exactly like a create.
pub(crate) fn decode_patch<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: &Value,
    read_only: &[(&str, &str)],
) -> Result<T, DomainError> {
    let Value::Object(fields) = patch else {
        return Err(DomainError::invalid(
            "",
            "a PATCH body must be a JSON object (RFC 7396 merge patch)",
        ));
    };
    for (field, reason) in read_only {
        if fields.contains_key(*field) {
            return Err(DomainError::invalid(
                *field,
                format!("is read-only: it {reason}"),
            ));
        }
    }
    let mut doc = serde_json::to_value(current).expect("domain types serialize");
    json::merge_patch(&mut doc, patch);
    json::from_value(doc).map_err(|e| match e {
        DecodeError::Shape { field, message } => DomainError::Invalid { field, message },
        DecodeError::Syntax { position, message } => DomainError::invalid(position, message),
        DecodeError::TooDeep { position, limit } => {
            DomainError::invalid(position, format!("nested more than {limit} levels deep"))
        }
    })
}
