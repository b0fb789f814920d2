//! Device credentials: the bearer secret an enrolled agent presents. Each
//! one is bound to one device id and becomes a principal that can check in
//! for that device, read it and rotate its own secret, nothing else.
//!
//! A device has at most one credential. Rotation and re-enrollment replace
//! it (with a new credential id, so the audit log tells the secrets apart);
//! the old secret stops working in the same transaction. Deleting the device
//! revokes it: this type is a directory [`ChangeListener`], so every path
//! that deletes a device does so, not only the API.
//!
//! `last_used_at` is kept in memory as credentials authenticate and written
//! to the store once a minute ([`DeviceCredentials::flush_usage`]): a durable
//! write on every check-in would double the cost of the check-in, for a
//! timestamp that only needs to be about right. Reads merge the in-memory
//! value, so a live server always shows the latest use; a crash loses at
//! most the last minute of it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, Store, WriteTxn};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Record};
use crate::auth::{
    Actor, ManageKeys, Mutation, Origin, Principal, Read, RotateDeviceCredential, generate_secret,
    hash_secret,
};
use crate::clock::Clock;
use crate::directory::{Change, ChangeListener, SubjectKind};
use crate::error::DomainError;

/// device id (16 bytes) → `StoredCredential` JSON.
const CREDENTIALS: Keyspace = Keyspace::new("device_credentials");
/// SHA-256 of the secret → device id. Authentication is one lookup.
const CREDENTIALS_BY_HASH: Keyspace = Keyspace::new("device_credentials_by_hash");

/// Every device credential starts with this (see `TOKEN_PREFIX`).
pub const CREDENTIAL_PREFIX: &str = "cohort_device_";

/// A device credential as the API shows it: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceCredential {
    /// Id of this secret; a new one with every rotation.
    pub id: Uuid,
    /// The device it is bound to.
    pub device_id: Uuid,
    /// The first characters of the secret, to tell credentials apart.
    pub key_prefix: String,
    /// When this secret was issued (enrollment or rotation).
    pub issued_at: DateTime<Utc>,
    /// The enrollment token the device enrolled with; null for a credential
    /// an admin issued to a device created another way.
    pub enrollment_token_id: Option<Uuid>,
    /// The last request made with it, to the minute after a restart.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A credential just issued: the only time the secret is returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedCredential {
    /// The credential's public record.
    #[serde(flatten)]
    pub credential: DeviceCredential,
    /// The secret. The agent stores it and sends it as
    /// `Authorization: Bearer <secret>`; Cohort keeps only its hash.
    pub secret: String,
}

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    #[serde(flatten)]
    public: DeviceCredential,
    hash: String,
}

/// Uses not yet written to the store: credential id → (device id, last use).
type Usage = HashMap<Uuid, (Uuid, DateTime<Utc>)>;

/// Authentication and lifecycle of device credentials. Cheap to clone.
#[derive(Clone)]
pub struct DeviceCredentials {
    store: Store,
    clock: Arc<dyn Clock>,
    usage: Arc<Mutex<Usage>>,
}

fn actor_name(device: &Uuid) -> String {
    format!("device:{device}")
}

impl DeviceCredentials {
    /// Device credentials over `store`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        DeviceCredentials {
            store,
            clock,
            usage: Arc::default(),
        }
    }

    /// The principal for a presented device credential, or `None` when it
    /// is not one. The audit log names it `device:<device id>`.
    pub fn authenticate(
        &self,
        presented: &str,
        origin: &Origin,
    ) -> Result<Option<Principal>, DomainError> {
        let hash = hash_secret(presented);
        let Some(device) = self.store.get(CREDENTIALS_BY_HASH, hash.as_bytes())? else {
            return Ok(None);
        };
        let Some(stored) = self
            .store
            .get_json::<StoredCredential>(CREDENTIALS, &device)?
        else {
            return Ok(None);
        };
        // The index and the record change together; checking the hash again
        // keeps a stale index entry from ever authenticating.
        if stored.hash != hash {
            return Ok(None);
        }
        let c = stored.public;
        self.usage
            .lock()
            .insert(c.id, (c.device_id, self.clock.now()));
        let actor = Actor {
            name: actor_name(&c.device_id),
            key_id: Some(c.id.to_string()),
            origin: origin.clone(),
        };
        Ok(Some(Principal::for_device(actor, c.device_id)))
    }

    /// The in-memory last use of `c`, when newer than the stored one.
    fn with_usage(&self, mut c: DeviceCredential) -> DeviceCredential {
        if let Some((_, at)) = self.usage.lock().get(&c.id)
            && c.last_used_at.is_none_or(|l| l < *at)
        {
            c.last_used_at = Some(*at);
        }
        c
    }

    /// The credential of `device`.
    pub fn get(&self, _: &Read, device: &Uuid) -> Result<DeviceCredential, DomainError> {
        let stored: StoredCredential = self
            .store
            .get_json(CREDENTIALS, device.as_bytes())?
            .ok_or_else(|| DomainError::not_found("device credential", device))?;
        Ok(self.with_usage(stored.public))
    }

    /// Removes `device`'s credential in the caller's transaction; returns it
    /// when there was one.
    fn remove_in(
        &self,
        txn: &mut WriteTxn<'_>,
        device: &Uuid,
    ) -> Result<Option<DeviceCredential>, DomainError> {
        let Some(stored) = txn.get_json::<StoredCredential>(CREDENTIALS, device.as_bytes())? else {
            return Ok(None);
        };
        txn.delete(CREDENTIALS_BY_HASH, stored.hash.as_bytes());
        txn.delete(CREDENTIALS, device.as_bytes());
        Ok(Some(stored.public))
    }

    /// Issues a new secret for `device` in the caller's transaction,
    /// replacing the one it had. `enrollment` is the token that enrolled it:
    /// `None` keeps the previous credential's.
    pub(super) fn issue_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        device: Uuid,
        enrollment: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<IssuedCredential, DomainError> {
        let previous = self.remove_in(txn, &device)?;
        let secret = generate_secret(CREDENTIAL_PREFIX);
        let hash = hash_secret(&secret);
        let credential = DeviceCredential {
            id: Uuid::now_v7(),
            device_id: device,
            key_prefix: secret.chars().take(CREDENTIAL_PREFIX.len() + 4).collect(),
            issued_at: now,
            enrollment_token_id: enrollment
                .or_else(|| previous.as_ref().and_then(|p| p.enrollment_token_id)),
            last_used_at: None,
        };
        txn.put(
            CREDENTIALS_BY_HASH,
            hash.as_bytes(),
            device.as_bytes().to_vec(),
        );
        txn.put_json(
            CREDENTIALS,
            device.as_bytes(),
            &StoredCredential {
                public: credential.clone(),
                hash,
            },
        )?;
        audit::record(
            txn,
            now,
            actor,
            Record {
                action: if previous.is_some() {
                    "device_credential.rotate"
                } else {
                    "device_credential.issue"
                },
                resource_type: "device_credential",
                resource_id: device.to_string(),
                changes: audit::diff(previous.as_ref(), Some(&credential)),
            },
        )?;
        Ok(IssuedCredential { credential, secret })
    }

    /// Replaces the credential of the capability's device with a new secret;
    /// the old one stops working at once. An admin may also use this to
    /// issue the first credential of a device created through the API or an
    /// import, or one whose credential was revoked.
    pub async fn rotate(
        &self,
        cap: &RotateDeviceCredential<'_>,
    ) -> Result<IssuedCredential, DomainError> {
        let device = cap.device();
        let now = self.clock.now();
        self.store
            .write(|txn| {
                crate::directory::load_device(txn, &device)?;
                if let Some(presented) = cap.presented_credential() {
                    let current = txn.get_json::<StoredCredential>(CREDENTIALS, device.as_bytes())?;
                    if current.is_none_or(|c| c.public.id.to_string() != presented) {
                        return Err(DomainError::Conflict {
                            code: "credential_replaced",
                            field: None,
                            message: "the credential this request was made with was revoked or replaced while the request ran; nothing was changed".into(),
                        });
                    }
                }
                self.issue_in(txn, cap.actor(), device, None, now)
            })?
            .durable()
            .await
            .map_err(Into::into)
    }

    /// Revokes `device`'s credential: the agent must enroll again (or an
    /// admin rotate) before it can check in.
    pub async fn revoke(&self, cap: &ManageKeys<'_>, device: &Uuid) -> Result<(), DomainError> {
        let now = self.clock.now();
        self.store
            .write(|txn| {
                let removed = self
                    .remove_in(txn, device)?
                    .ok_or_else(|| DomainError::not_found("device credential", device))?;
                record_revoke(txn, now, cap.actor(), &removed)
            })?
            .durable()
            .await?;
        Ok(())
    }

    /// Writes the last-used times gathered since the previous flush; returns
    /// how many credentials it updated. A use of a secret that has since
    /// been replaced or revoked is dropped.
    pub async fn flush_usage(&self) -> Result<usize, DomainError> {
        let pending = std::mem::take(&mut *self.usage.lock());
        if pending.is_empty() {
            return Ok(0);
        }
        let result = self.store.write(|txn| {
            let mut n = 0;
            for (id, (device, at)) in &pending {
                let Some(mut stored) =
                    txn.get_json::<StoredCredential>(CREDENTIALS, device.as_bytes())?
                else {
                    continue;
                };
                if stored.public.id != *id || stored.public.last_used_at.is_some_and(|l| l >= *at) {
                    continue;
                }
                stored.public.last_used_at = Some(*at);
                txn.put_json(CREDENTIALS, device.as_bytes(), &stored)?;
                n += 1;
            }
            Ok::<_, DomainError>(n)
        });
        match result {
            Ok(committed) => Ok(committed.durable().await?),
            Err(e) => {
                // Keep what could not be written for the next flush, unless
                // a newer use has been recorded meanwhile.
                let mut usage = self.usage.lock();
                for (id, v) in pending {
                    usage.entry(id).or_insert(v);
                }
                Err(e)
            }
        }
    }
}

fn record_revoke(
    txn: &mut WriteTxn<'_>,
    now: DateTime<Utc>,
    actor: &Actor,
    removed: &DeviceCredential,
) -> Result<(), DomainError> {
    audit::record(
        txn,
        now,
        actor,
        Record {
            action: "device_credential.revoke",
            resource_type: "device_credential",
            resource_id: removed.device_id.to_string(),
            changes: audit::diff(Some(removed), None),
        },
    )?;
    Ok(())
}

impl ChangeListener for DeviceCredentials {
    /// A deleted device's credential goes with it, in the same transaction.
    fn changed(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        change: &Change,
    ) -> Result<(), DomainError> {
        let Change::Subject {
            kind: SubjectKind::Device,
            id,
            attributes: None,
        } = change
        else {
            return Ok(());
        };
        if crate::directory::read::subject_exists(txn, SubjectKind::Device, id)? {
            return Ok(());
        }
        if let Some(removed) = self.remove_in(txn, id)? {
            record_revoke(txn, now, actor, &removed)?;
        }
        Ok(())
    }
}
