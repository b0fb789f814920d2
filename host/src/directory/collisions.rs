//! Re-keying the username and email indexes under the identity rules of
//! [`super::identity`], and what happens to the users it finds sharing one
//! identity.
//!
//! Before those rules the indexes held `str::to_lowercase` keys, so two
//! users could hold spellings that are now one identity (`kate@example.com`
//! and the same with a Kelvin sign, or with a zero-width space). Merging
//! them would hand one person's account to the other, and deleting either
//! loses data, so neither is done: both users are kept, the index points at
//! the older one (UUIDv7 ids sort by creation), and the younger one is
//! written down here as a collision. When the server next starts, each new
//! collision gets one `user.identity_collision` audit event and a warn log,
//! so an admin finds them with `GET /api/v1/audit?action=user.identity_collision`
//! and resolves them by renaming or deleting one user. Until then the
//! younger user is not found by username or email look-ups (sign-in
//! matching included), only by id.

use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, StorageError, WriteTxn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::layout::{self, USERS, USERS_BY_EMAIL, USERS_BY_USERNAME};
use crate::audit::{self, Record};
use crate::auth::Actor;

/// field ++ 0 ++ younger user id → [`Collision`]. Written by the re-keying
/// migration, read at start-up to report what is new.
pub const IDENTITY_COLLISIONS: Keyspace = Keyspace::new("identity_collisions");

/// Two users whose username or email is one identity under the new rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collision {
    /// `username` or `email`.
    pub field: String,
    /// The identity key both values have.
    pub key: String,
    /// The user the index keeps (the older one).
    pub kept_user_id: Uuid,
    /// Its value as stored.
    pub kept_value: String,
    /// The user left out of the index.
    pub user_id: Uuid,
    /// Its value as stored.
    pub value: String,
    /// When the audit event was written; `None` until then.
    pub reported_at: Option<DateTime<Utc>>,
}

fn corrupt(detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        keyspace: USERS.name().to_string(),
        detail: detail.into(),
    }
}

/// Migration step: rebuilds both indexes from the stored users. It reads
/// the two JSON fields alone, so later changes to `User` cannot break it.
pub(crate) fn rekey_identities(txn: &mut WriteTxn<'_>) -> Result<(), StorageError> {
    for ks in [USERS_BY_USERNAME, USERS_BY_EMAIL] {
        let old: Vec<Vec<u8>> = txn
            .scan_prefix(ks, b"")?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in old {
            txn.delete(ks, &k);
        }
    }
    let mut users = Vec::new();
    txn.for_each_prefix(USERS, b"", |k, v| {
        let user: Value = cohort_storage::decode_json(USERS, v)?;
        let id = Uuid::from_slice(k).map_err(|_| corrupt("a user key is not a 16-byte id"))?;
        let field = |name: &str| user[name].as_str().unwrap_or_default().to_string();
        users.push((id, field("username"), field("email")));
        Ok::<_, StorageError>(())
    })?;
    // Key order is id order, which is creation order: the older user wins.
    for (id, username, email) in users {
        type KeyFn = fn(&str) -> Vec<u8>;
        let indexes: [(_, _, KeyFn, _); 2] = [
            (USERS_BY_USERNAME, "username", layout::username, username),
            (USERS_BY_EMAIL, "email", layout::email, email),
        ];
        for (ks, field, key_of, value) in indexes {
            let key = key_of(&value);
            match txn.get(ks, &key)? {
                None => txn.put(ks, &key, id.as_bytes().to_vec()),
                Some(holder) => {
                    let kept = Uuid::from_slice(&holder)
                        .map_err(|_| corrupt("an index entry is not a 16-byte id"))?;
                    let kept_value = txn
                        .get_json::<Value>(USERS, kept.as_bytes())?
                        .and_then(|u| u[field].as_str().map(String::from))
                        .unwrap_or_default();
                    let collision = Collision {
                        field: field.to_string(),
                        key: String::from_utf8_lossy(&key).into_owned(),
                        kept_user_id: kept,
                        kept_value,
                        user_id: id,
                        value,
                        reported_at: None,
                    };
                    // A later re-keying finds the collisions of an earlier
                    // one again: those stay as they are, reported once.
                    let at = collision_key(field, &id);
                    let known = txn.get_json::<Collision>(IDENTITY_COLLISIONS, &at)?;
                    if known.is_some_and(|k| k.key == collision.key && k.kept_user_id == kept) {
                        continue;
                    }
                    txn.put_json(IDENTITY_COLLISIONS, &at, &collision)?;
                }
            }
        }
    }
    Ok(())
}

fn collision_key(field: &str, id: &Uuid) -> Vec<u8> {
    layout::join(&[field.as_bytes(), &[0], id.as_bytes()])
}

impl super::Directory {
    /// Writes one audit event and one warn log for every collision the
    /// re-keying found that has not been reported yet; at start-up, where
    /// the injected clock is at hand (migrations have none). Returns how
    /// many it reported. The log names ids only; the values (personal data)
    /// are in the audit event, which only admins read.
    pub fn report_identity_collisions(&self) -> Result<usize, StorageError> {
        let now = self.clock.now();
        let actor = Actor::system("identity-migration");
        let pending: Vec<(Vec<u8>, Collision)> = self
            .store
            .scan(IDENTITY_COLLISIONS, b"", None, false)
            .map(|e| {
                let (k, v) = e?;
                Ok((
                    k,
                    cohort_storage::decode_json::<Collision>(IDENTITY_COLLISIONS, &v)?,
                ))
            })
            .collect::<Result<Vec<_>, StorageError>>()?
            .into_iter()
            .filter(|(_, c)| c.reported_at.is_none())
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let count = pending.len();
        self.store
            .write(|txn| {
                for (k, c) in &pending {
                    tracing::warn!(
                        field = %c.field,
                        user_id = %c.user_id,
                        kept_user_id = %c.kept_user_id,
                        "two users share one identity under the normalisation rules; the older keeps the index, rename or delete one"
                    );
                    audit::record(
                        txn,
                        now,
                        &actor,
                        Record {
                            action: "user.identity_collision",
                            resource_type: "user",
                            resource_id: c.user_id.to_string(),
                            changes: audit::changes(&[
                                ("field", Value::Null, Value::from(c.field.clone())),
                                ("value", Value::Null, Value::from(c.value.clone())),
                                ("identity_key", Value::Null, Value::from(c.key.clone())),
                                (
                                    "kept_user_id",
                                    Value::Null,
                                    Value::from(c.kept_user_id.to_string()),
                                ),
                                ("kept_value", Value::Null, Value::from(c.kept_value.clone())),
                            ]),
                        },
                    )?;
                    let reported = Collision {
                        reported_at: Some(now),
                        ..c.clone()
                    };
                    txn.put_json(IDENTITY_COLLISIONS, k, &reported)?;
                }
                Ok::<_, StorageError>(())
            })?
            .durable_blocking()?;
        Ok(count)
    }
}

#[cfg(test)]
#[path = "collisions_tests.rs"]
mod tests;
