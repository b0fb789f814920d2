//! The directory: users, devices, the bindings between them, and the
//! attribute schema. Every change is validated, written together with its
//! audit event in one transaction, and durable before the caller hears back.
//! Nothing here knows about HTTP.

mod attributes;
mod bindings;
mod devices;
pub mod keys;
mod query;
mod users;

pub use attributes::{
    AttrType, AttrValue, Attribute, AttributeUpdate, NewAttribute, SubjectKind, normalize_date,
    parse_value, standard_type,
};
pub use bindings::Binding;
pub use devices::{CheckIn, DEVICE_SORTS, Device, DeviceInput, OsFamily};
pub use query::{Filter, ListQuery, Subject};
pub use users::{StateChange, USER_SORTS, User, UserInput, UserState};

use std::sync::Arc;

use cohort_storage::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::Clock;
use crate::error::DomainError;
use crate::json::{self, DecodeError};

/// The directory service. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Directory {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl Directory {
    /// A directory over `store`, taking time from `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Directory { store, clock }
    }
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
    })
}
