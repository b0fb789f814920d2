//! The audit log: one event for every change, written in the same storage
//! transaction as the change itself, so the log can never miss a change or
//! record one that did not happen.
//!
//! Events carry a before/after diff of the fields that changed. Values that
//! are secrets never reach this module: callers diff public views only.

mod query;

pub use query::{AuditFilter, AuditLog, ExportFormat};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, StorageError, WriteTxn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Actor;

/// seq (8 bytes, big-endian) → `AuditEvent` JSON. Event ids grow with commit
/// order, so this is also the log in order.
pub(super) const EVENTS: Keyspace = Keyspace::new("audit");
/// actor ++ 0 ++ seq → (). Events of one actor.
pub(super) const BY_ACTOR: Keyspace = Keyspace::new("audit_by_actor");
/// resource type ++ 0 ++ resource id ++ 0 ++ seq → (). History of one resource.
pub(super) const BY_RESOURCE: Keyspace = Keyspace::new("audit_by_resource");
/// time (µs since epoch, 8 bytes) ++ seq → (). Time-range queries.
pub(super) const BY_TIME: Keyspace = Keyspace::new("audit_by_time");

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Increasing event id; also the pagination order.
    pub id: u64,
    /// When the change was committed.
    pub time: DateTime<Utc>,
    /// The API key name (or `system`) that made the change.
    pub actor: String,
    /// The API key id, when the actor is a key.
    pub actor_key_id: Option<String>,
    /// What happened, `<resource>.<verb>`: `user.create`, `user.state_change`, …
    pub action: String,
    /// `user`, `device`, `binding`, `attribute`, `api_key`.
    pub resource_type: String,
    /// The id of the changed resource.
    pub resource_id: String,
    /// Changed fields with their values before and after. Custom attributes
    /// appear as `custom_attributes.<name>`.
    pub changes: BTreeMap<String, Change>,
    /// The request that made the change (`X-Request-Id`).
    pub request_id: String,
    /// The address of the client that made the request: the connection's
    /// peer, or behind a trusted proxy (`[http] trusted_proxies`) the
    /// address it forwarded. Null for changes Cohort made on its own, and in
    /// events recorded before addresses were.
    #[serde(default)]
    pub client_address: Option<String>,
    /// The request's `User-Agent`, at most 256 characters, as the client
    /// sent it (so as trustworthy as the client).
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// A field's value before and after a change; `null` means absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = FieldChange)]
pub struct Change {
    /// The value before, or null when the field was unset.
    pub before: Value,
    /// The value after, or null when the field is now unset.
    pub after: Value,
}

/// What a mutation tells the audit log, besides who and when.
pub struct Record<'a> {
    /// See [`AuditEvent::action`].
    pub action: &'a str,
    /// See [`AuditEvent::resource_type`].
    pub resource_type: &'a str,
    /// See [`AuditEvent::resource_id`].
    pub resource_id: String,
    /// See [`AuditEvent::changes`]; build it with [`diff`].
    pub changes: BTreeMap<String, Change>,
}

/// Changes given field by field as (name, before, after), for events that
/// are not the diff of two versions of a record (a membership, a binding).
pub fn changes(fields: &[(&str, Value, Value)]) -> BTreeMap<String, Change> {
    fields
        .iter()
        .map(|(k, before, after)| {
            (
                k.to_string(),
                Change {
                    before: before.clone(),
                    after: after.clone(),
                },
            )
        })
        .collect()
}

/// Fields that change on every write and would only add noise to diffs.
const NOISE: &[&str] = &["version", "updated_at"];

/// The fields that differ between two JSON views of a resource (`None` for
/// "did not exist"). Objects nested one level (custom attributes) are diffed
/// per key.
pub fn diff<T: Serialize>(before: Option<&T>, after: Option<&T>) -> BTreeMap<String, Change> {
    let flat = |v: Option<&T>| -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let Some(Value::Object(map)) =
            v.map(|v| serde_json::to_value(v).expect("domain types serialize"))
        else {
            return out;
        };
        for (k, v) in map {
            if NOISE.contains(&k.as_str()) {
                continue;
            }
            match v {
                Value::Object(inner) => {
                    for (ik, iv) in inner {
                        out.insert(format!("{k}.{ik}"), iv);
                    }
                }
                Value::Null => {}
                other => {
                    out.insert(k, other);
                }
            }
        }
        out
    };
    let (b, a) = (flat(before), flat(after));
    let mut changes = BTreeMap::new();
    for key in b.keys().chain(a.keys()) {
        let (bv, av) = (b.get(key), a.get(key));
        if bv != av && !changes.contains_key(key) {
            changes.insert(
                key.clone(),
                Change {
                    before: bv.cloned().unwrap_or(Value::Null),
                    after: av.cloned().unwrap_or(Value::Null),
                },
            );
        }
    }
    changes
}

/// Appends an event inside the caller's transaction, with all its indexes.
pub fn record(
    txn: &mut WriteTxn<'_>,
    time: DateTime<Utc>,
    actor: &Actor,
    rec: Record<'_>,
) -> Result<u64, StorageError> {
    if txn.is_rehearsal() {
        // Nothing happens in a rehearsal (a dry run), so nothing is on the
        // record; and a dry run of a large import would otherwise hold an
        // event per change in memory.
        return Ok(0);
    }
    let seq = txn.next_sequence(EVENTS)?;
    let event = AuditEvent {
        id: seq,
        time,
        actor: actor.name.clone(),
        actor_key_id: actor.key_id.clone(),
        action: rec.action.to_string(),
        resource_type: rec.resource_type.to_string(),
        resource_id: rec.resource_id,
        changes: rec.changes,
        request_id: actor.origin.request_id.clone(),
        client_address: actor.origin.client_address.map(|a| a.to_string()),
        user_agent: actor.origin.user_agent.clone(),
    };
    let s = seq.to_be_bytes();
    txn.put_json(EVENTS, &s, &event)?;
    txn.put(
        BY_ACTOR,
        &[event.actor.as_bytes(), &[0], &s].concat(),
        Vec::new(),
    );
    txn.put(
        BY_RESOURCE,
        &[
            event.resource_type.as_bytes(),
            &[0],
            event.resource_id.as_bytes(),
            &[0],
            &s,
        ]
        .concat(),
        Vec::new(),
    );
    txn.put(BY_TIME, &[&time_key(time)[..], &s].concat(), Vec::new());
    Ok(seq)
}

/// Microseconds since the epoch, big-endian, clamped at zero so keys sort.
pub(crate) fn time_key(t: DateTime<Utc>) -> [u8; 8] {
    (t.timestamp_micros().max(0) as u64).to_be_bytes()
}

/// Every stored event in order, for unit tests elsewhere that check what
/// was audited without going through a capability.
#[cfg(test)]
pub(crate) fn all_events(store: &cohort_storage::Store) -> Vec<AuditEvent> {
    store
        .scan(EVENTS, b"", None, false)
        .filter_map(|e| cohort_storage::decode_json(EVENTS, &e.ok()?.1).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_lists_only_changed_fields_and_flattens_custom_attributes() {
        let before =
            json!({"a": 1, "b": "x", "version": 1, "custom_attributes": {"k": 1, "gone": true}});
        let after =
            json!({"a": 1, "b": "y", "version": 2, "custom_attributes": {"k": 2, "new": "n"}});
        let d = diff(Some(&before), Some(&after));
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            [
                "b",
                "custom_attributes.gone",
                "custom_attributes.k",
                "custom_attributes.new"
            ]
        );
        assert_eq!(
            d["b"],
            Change {
                before: json!("x"),
                after: json!("y")
            }
        );
        assert_eq!(d["custom_attributes.gone"].after, Value::Null);
    }

    #[test]
    fn create_and_delete_diff_against_nothing() {
        let v = json!({"a": 1, "n": null});
        let created = diff(None, Some(&v));
        assert_eq!(created.len(), 1);
        assert_eq!(created["a"].before, Value::Null);
        let deleted = diff(Some(&v), None);
        assert_eq!(deleted["a"].after, Value::Null);
    }
}
