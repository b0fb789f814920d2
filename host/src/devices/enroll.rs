//! Enrollment: an agent presents an enrollment token and its device's facts,
//! and gets back the device and a credential bound to it.
//!
//! The token is the authorization, so it is checked inside the write
//! transaction that consumes it: transactions run one at a time, hence two
//! concurrent enrollments with a one-use token cannot both pass the check.
//!
//! A device whose serial number matches exactly one device in the directory
//! is enrolled *again* rather than duplicated: a re-imaged or reinstalled
//! machine keeps its id, bindings, group memberships and history, takes the
//! reported facts, and gets a new credential (the old one stops working).
//! That is what endpoint managers do, and it means a holder of a valid
//! enrollment token can take over the identity of a device whose serial
//! number they know; enrollment tokens are therefore short-lived,
//! use-limited secrets, and every re-enrollment is in the audit log as
//! `device.enroll` with the previous values.

use chrono::{DateTime, Utc};
use cohort_storage::StorageError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Devices;
use super::credentials::DeviceCredential;
use super::tokens::{StoredToken, TOKENS, TOKENS_BY_HASH, TokenState, token_actor_name};
use crate::audit::{self, Record};
use crate::auth::{Actor, Origin, hash_secret};
use crate::directory::{Device, DeviceInput};
use crate::error::DomainError;

/// Why an enrollment token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No enrollment token has this secret.
    #[error("unknown enrollment token")]
    Unknown,
    /// Its `expires_at` has passed.
    #[error("the enrollment token has expired; ask an admin for a new one")]
    Expired,
    /// It has enrolled as many devices as it allows.
    #[error("the enrollment token has been used as often as it allows; ask an admin for a new one")]
    Exhausted,
    /// An admin revoked it.
    #[error("the enrollment token was revoked")]
    Revoked,
}

impl TokenRefusal {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            TokenRefusal::Unknown => "invalid_enrollment_token",
            TokenRefusal::Expired => "enrollment_token_expired",
            TokenRefusal::Exhausted => "enrollment_token_exhausted",
            TokenRefusal::Revoked => "enrollment_token_revoked",
        }
    }
}

/// Why an enrollment failed. Nothing was written either way.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token cannot enroll.
    #[error(transparent)]
    Refused(#[from] TokenRefusal),
    /// The device's facts are invalid, its group unusable, or storage failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<StorageError> for EnrollError {
    fn from(e: StorageError) -> Self {
        EnrollError::Domain(e.into())
    }
}

/// The result of an enrollment: the only time the credential's secret is
/// returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrollment {
    /// The device as it now is.
    pub device: Device,
    /// The credential bound to it.
    pub credential: DeviceCredential,
    /// The credential's secret. The agent stores it and sends it as
    /// `Authorization: Bearer <secret>` from now on.
    pub secret: String,
    /// Whether an existing device (same serial number) was enrolled again.
    pub reenrolled: bool,
}

impl Devices {
    /// Why `presented` cannot enroll a device now, if it cannot. A read
    /// outside any transaction, for refusing early; [`Devices::enroll`]
    /// decides again where it counts.
    pub fn token_refusal(&self, presented: &str) -> Result<Option<TokenRefusal>, DomainError> {
        let hash = hash_secret(presented);
        let Some(id) = self.store.get(TOKENS_BY_HASH, hash.as_bytes())? else {
            return Ok(Some(TokenRefusal::Unknown));
        };
        let Some(stored) = self.store.get_json::<StoredToken>(TOKENS, &id)? else {
            return Ok(Some(TokenRefusal::Unknown));
        };
        Ok(refusal(stored.record.state(self.clock.now())))
    }

    /// Enrolls a device with the enrollment token `presented`: creates the
    /// device (or enrolls the one with its serial number again), issues its
    /// credential, adds it to the token's device group and counts the use,
    /// all in one transaction.
    pub async fn enroll(
        &self,
        presented: &str,
        origin: &Origin,
        input: DeviceInput,
    ) -> Result<Enrollment, EnrollError> {
        let now = self.clock.now();
        let hash = hash_secret(presented);
        let result = self.store.write(|txn| {
            let token_id = txn
                .get(TOKENS_BY_HASH, hash.as_bytes())?
                .ok_or(TokenRefusal::Unknown)?;
            let mut stored: StoredToken = txn
                .get_json(TOKENS, &token_id)?
                .ok_or(TokenRefusal::Unknown)?;
            if let Some(r) = refusal(stored.record.state(now)) {
                return Err(r.into());
            }
            let token = stored.record.id;
            let actor = Actor {
                name: token_actor_name(&token),
                key_id: Some(token.to_string()),
                origin: origin.clone(),
            };
            let enrolled = self.directory.enroll_device_in(txn, &actor, input, now)?;
            let device = enrolled.device.id;
            let issued = self
                .credentials
                .issue_in(txn, &actor, device, Some(token), now)?;
            if let Some(group) = &stored.record.device_group {
                self.groups
                    .add_enrolled_device_in(txn, &actor, group, device)?;
            }
            let before = stored.record.clone();
            stored.record.uses += 1;
            stored.record.last_used_at = Some(now);
            txn.put_json(TOKENS, token.as_bytes(), &stored)?;
            let mut changes = audit::diff(Some(&before), Some(&stored.record));
            changes.extend(audit::changes(&[(
                "device_id",
                Value::Null,
                json!(device.to_string()),
            )]));
            audit::record(
                txn,
                now,
                &actor,
                Record {
                    action: "device_enrollment_token.use",
                    resource_type: "device_enrollment_token",
                    resource_id: token.to_string(),
                    changes,
                },
            )?;
            Ok::<_, EnrollError>((enrolled, issued, token))
        });
        let (enrolled, issued, token) = match result {
            Ok(c) => c.durable().await?,
            Err(e) => {
                log_refusal(&e, now);
                return Err(e);
            }
        };
        tracing::info!(
            device = %enrolled.device.id,
            token = %token,
            reenrolled = enrolled.reenrolled,
            "device enrolled"
        );
        Ok(Enrollment {
            device: enrolled.device,
            credential: issued.credential,
            secret: issued.secret,
            reenrolled: enrolled.reenrolled,
        })
    }
}

fn refusal(state: TokenState) -> Option<TokenRefusal> {
    match state {
        TokenState::Active => None,
        TokenState::Expired => Some(TokenRefusal::Expired),
        TokenState::Exhausted => Some(TokenRefusal::Exhausted),
        TokenState::Revoked => Some(TokenRefusal::Revoked),
    }
}

fn log_refusal(e: &EnrollError, now: DateTime<Utc>) {
    if let EnrollError::Refused(r) = e {
        tracing::warn!(reason = r.code(), at = %now, "enrollment refused");
    }
}
