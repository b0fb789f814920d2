//! Enrollment tokens: what an admin hands to a device (or bakes into an
//! installer) so that its agent can enroll. A token expires, allows a fixed
//! number of enrollments, and may name a static device group that every
//! device it enrolls joins.
//!
//! A revoked token is kept (with `revoked_at`) rather than deleted, so that
//! the list shows what was handed out and an agent still holding it is told
//! it was revoked rather than that it never existed.

use chrono::{DateTime, Duration, Utc};
use cohort_storage::Keyspace;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Devices;
use crate::audit::{self, Record};
use crate::auth::{ManageKeys, Mutation, generate_secret, hash_secret};
use crate::directory::check_string;
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest};

/// token id (16 bytes; UUIDv7, so creation order) → `StoredToken` JSON.
pub(super) const TOKENS: Keyspace = Keyspace::new("device_enrollment_tokens");
/// SHA-256 of the token → token id. Enrollment is one lookup.
pub(super) const TOKENS_BY_HASH: Keyspace = Keyspace::new("device_enrollment_tokens_by_hash");

/// Every enrollment token starts with this: API keys and device credentials
/// have their own prefixes, so a misplaced secret gets a helpful error and
/// secret scanners can tell the kinds apart.
pub const TOKEN_PREFIX: &str = "cohort_enroll_";
/// Lifetime of a token created without `expires_at` or `ttl_seconds`: a week,
/// long enough to roll out a batch of machines, short enough that a token
/// forgotten in a ticket stops working.
pub const DEFAULT_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// The longest a token may live (90 days). A token is a bearer secret that
/// creates devices; one that never expires is one that leaks eventually.
pub const MAX_TTL_SECONDS: u64 = 90 * 24 * 3600;
/// The most enrollments one token may allow.
pub const MAX_USES: u32 = 10_000;

/// An enrollment token as stored and audited: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenRecord {
    /// Stable id (UUIDv7).
    pub id: Uuid,
    /// What the token is for, e.g. `Berlin office laptops`.
    pub name: String,
    /// The first characters of the secret, to tell tokens apart.
    pub token_prefix: String,
    /// After this instant the token enrolls nothing.
    pub expires_at: DateTime<Utc>,
    /// How many enrollments the token allows.
    pub max_uses: u32,
    /// How many enrollments it has made.
    pub uses: u32,
    /// The static device group every device enrolled with this token joins.
    pub device_group: Option<Uuid>,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// The API key that created it.
    pub created_by: String,
    /// The last enrollment made with it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; null while it is not.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether a token can enroll a device now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// It can.
    Active,
    /// `expires_at` has passed.
    Expired,
    /// `uses` has reached `max_uses`.
    Exhausted,
    /// An admin revoked it.
    Revoked,
}

impl TokenState {
    fn parse(s: &str) -> Option<TokenState> {
        Some(match s {
            "active" => TokenState::Active,
            "expired" => TokenState::Expired,
            "exhausted" => TokenState::Exhausted,
            "revoked" => TokenState::Revoked,
            _ => return None,
        })
    }
}

impl TokenRecord {
    /// The state at `now`. Revocation wins over exhaustion over expiry, so
    /// the state names the reason an admin acted on first.
    pub fn state(&self, now: DateTime<Utc>) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.uses >= self.max_uses {
            TokenState::Exhausted
        } else if self.expires_at <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    fn view(self, now: DateTime<Utc>) -> EnrollmentToken {
        EnrollmentToken {
            state: self.state(now),
            record: self,
        }
    }
}

/// An enrollment token as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EnrollmentToken {
    /// The stored fields.
    #[serde(flatten)]
    pub record: TokenRecord,
    /// Whether it can enroll a device now.
    pub state: TokenState,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredToken {
    #[serde(flatten)]
    pub(super) record: TokenRecord,
    pub(super) hash: String,
}

/// Input for a new enrollment token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// What the token is for, 1–128 characters.
    pub name: String,
    /// When it stops working; at most 90 days ahead. Give this or
    /// `ttl_seconds`, not both; neither means 7 days.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifetime in seconds from now, 1 to 7,776,000 (90 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// How many devices it may enroll, 1–10,000; default 1.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Id of a static device group that every device it enrolls joins.
    #[serde(default)]
    pub device_group: Option<Uuid>,
}

/// A token just created: the only time its secret is returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The token's public record.
    #[serde(flatten)]
    pub token: EnrollmentToken,
    /// The secret. Give it to the agent as `Authorization: Bearer <secret>`
    /// on `POST /api/v1/devices/enroll`; Cohort keeps only its hash.
    pub secret: String,
}

/// The expiry a new token asks for, checked against `now`.
fn expiry(input: &NewEnrollmentToken, now: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
    let max = now + Duration::seconds(MAX_TTL_SECONDS as i64);
    match (input.expires_at, input.ttl_seconds) {
        (Some(_), Some(_)) => Err(DomainError::invalid(
            "ttl_seconds",
            "give expires_at or ttl_seconds, not both",
        )),
        (Some(at), None) if at <= now => {
            Err(DomainError::invalid("expires_at", "must be in the future"))
        }
        (Some(at), None) if at > max => Err(DomainError::invalid(
            "expires_at",
            format!("must be at most {} days ahead", MAX_TTL_SECONDS / 86_400),
        )),
        (Some(at), None) => Ok(at),
        (None, Some(ttl)) if ttl == 0 || ttl > MAX_TTL_SECONDS => Err(DomainError::invalid(
            "ttl_seconds",
            format!("must be from 1 to {MAX_TTL_SECONDS} (90 days)"),
        )),
        (None, ttl) => Ok(now + Duration::seconds(ttl.unwrap_or(DEFAULT_TTL_SECONDS) as i64)),
    }
}

pub(super) fn token_actor_name(id: &Uuid) -> String {
    format!("enrollment-token:{id}")
}

impl Devices {
    /// Creates an enrollment token; the secret is in the result and nowhere
    /// else.
    pub async fn create_token(
        &self,
        cap: &ManageKeys<'_>,
        input: NewEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, DomainError> {
        let name = input.name.trim();
        if name.is_empty() {
            return Err(DomainError::invalid("name", "must not be empty"));
        }
        check_string("name", name, 128)?;
        let now = self.clock.now();
        let expires_at = expiry(&input, now)?;
        let max_uses = input.max_uses.unwrap_or(1);
        if max_uses == 0 || max_uses > MAX_USES {
            return Err(DomainError::invalid(
                "max_uses",
                format!("must be from 1 to {MAX_USES}"),
            ));
        }
        let secret = generate_secret(TOKEN_PREFIX);
        let record = TokenRecord {
            id: Uuid::now_v7(),
            name: name.to_string(),
            token_prefix: secret.chars().take(TOKEN_PREFIX.len() + 4).collect(),
            expires_at,
            max_uses,
            uses: 0,
            device_group: input.device_group,
            created_at: now,
            created_by: cap.actor().name.clone(),
            last_used_at: None,
            revoked_at: None,
        };
        let record = self
            .store
            .write(|txn| {
                if let Some(g) = &record.device_group {
                    self.groups
                        .check_enrollment_group(&*txn, g, "device_group")?;
                }
                let hash = hash_secret(&secret);
                txn.put(
                    TOKENS_BY_HASH,
                    hash.as_bytes(),
                    record.id.as_bytes().to_vec(),
                );
                txn.put_json(
                    TOKENS,
                    record.id.as_bytes(),
                    &StoredToken {
                        record: record.clone(),
                        hash,
                    },
                )?;
                audit::record(
                    txn,
                    now,
                    cap.actor(),
                    Record {
                        action: "device_enrollment_token.create",
                        resource_type: "device_enrollment_token",
                        resource_id: record.id.to_string(),
                        changes: audit::diff(None, Some(&record)),
                    },
                )?;
                Ok::<_, DomainError>(record.clone())
            })?
            .durable()
            .await?;
        Ok(CreatedEnrollmentToken {
            token: record.view(now),
            secret,
        })
    }

    /// One token.
    pub fn get_token(&self, _: &ManageKeys<'_>, id: &Uuid) -> Result<EnrollmentToken, DomainError> {
        let stored: StoredToken = self
            .store
            .get_json(TOKENS, id.as_bytes())?
            .ok_or_else(|| DomainError::not_found("device_enrollment_token", id))?;
        Ok(stored.record.view(self.clock.now()))
    }

    /// Parses the `state` filter of the token list.
    pub fn token_state_filter(raw: Option<&str>) -> Result<Option<TokenState>, DomainError> {
        raw.map(|s| {
            TokenState::parse(s).ok_or_else(|| {
                DomainError::bad_query(
                    "state",
                    "must be one of active, expired, exhausted, revoked",
                )
            })
        })
        .transpose()
    }

    /// A page of tokens, oldest first, optionally only those in `state`.
    pub fn list_tokens(
        &self,
        _: &ManageKeys<'_>,
        state: Option<TokenState>,
        req: &PageRequest,
    ) -> Result<Page<EnrollmentToken>, DomainError> {
        let now = self.clock.now();
        let tag = match state {
            Some(s) => format!("enrollment_tokens:{s:?}"),
            None => "enrollment_tokens".to_string(),
        };
        let resume = req.resume_key(&tag)?;
        let entries = self.store.scan(TOKENS, b"", resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            let stored: StoredToken = cohort_storage::decode_json(TOKENS, v)?;
            let view = stored.record.view(now);
            Ok(state.is_none_or(|s| s == view.state).then_some(view).into())
        })
    }

    /// Revokes a token at once: it enrolls nothing more. Devices it already
    /// enrolled keep their credentials. Revoking a revoked token changes
    /// nothing.
    pub async fn revoke_token(
        &self,
        cap: &ManageKeys<'_>,
        id: &Uuid,
    ) -> Result<EnrollmentToken, DomainError> {
        let now = self.clock.now();
        let record = self
            .store
            .write(|txn| {
                let mut stored: StoredToken = txn
                    .get_json(TOKENS, id.as_bytes())?
                    .ok_or_else(|| DomainError::not_found("device_enrollment_token", id))?;
                if stored.record.revoked_at.is_some() {
                    return Ok(stored.record);
                }
                let before = stored.record.clone();
                stored.record.revoked_at = Some(now);
                txn.put_json(TOKENS, id.as_bytes(), &stored)?;
                audit::record(
                    txn,
                    now,
                    cap.actor(),
                    Record {
                        action: "device_enrollment_token.revoke",
                        resource_type: "device_enrollment_token",
                        resource_id: id.to_string(),
                        changes: audit::diff(Some(&before), Some(&stored.record)),
                    },
                )?;
                Ok::<_, DomainError>(stored.record)
            })?
            .durable()
            .await?;
        Ok(record.view(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(expires_at: Option<DateTime<Utc>>, ttl_seconds: Option<u64>) -> NewEnrollmentToken {
        NewEnrollmentToken {
            name: "t".into(),
            expires_at,
            ttl_seconds,
            max_uses: None,
            device_group: None,
        }
    }

    #[test]
    fn expiry_defaults_and_bounds() {
        let now = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            expiry(&input(None, None), now).unwrap(),
            now + Duration::days(7)
        );
        assert_eq!(
            expiry(&input(None, Some(60)), now).unwrap(),
            now + Duration::seconds(60)
        );
        let bad = |i| match expiry(&i, now) {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(input(None, Some(0))), "ttl_seconds");
        assert_eq!(bad(input(None, Some(MAX_TTL_SECONDS + 1))), "ttl_seconds");
        assert_eq!(bad(input(None, Some(u64::MAX))), "ttl_seconds");
        assert_eq!(bad(input(Some(now), None)), "expires_at");
        assert_eq!(
            bad(input(Some(now + Duration::days(91)), None)),
            "expires_at"
        );
        assert_eq!(
            bad(input(Some(now + Duration::days(1)), Some(5))),
            "ttl_seconds"
        );
        assert_eq!(
            expiry(&input(Some(now + Duration::days(90)), None), now).unwrap(),
            now + Duration::days(90)
        );
    }

    #[test]
    fn state_names_the_first_reason() {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let mut r = TokenRecord {
            id: Uuid::now_v7(),
            name: "t".into(),
            token_prefix: "cohort_enroll_abcd".into(),
            expires_at: now + Duration::seconds(1),
            max_uses: 2,
            uses: 1,
            device_group: None,
            created_at: now,
            created_by: "admin".into(),
            last_used_at: None,
            revoked_at: None,
        };
        assert_eq!(r.state(now), TokenState::Active);
        assert_eq!(r.state(now + Duration::seconds(1)), TokenState::Expired);
        r.uses = 2;
        assert_eq!(r.state(now), TokenState::Exhausted);
        r.revoked_at = Some(now);
        assert_eq!(r.state(now), TokenState::Revoked);
    }
}
