//! API keys. Only a SHA-256 hash of each key is stored: keys are 256 random
//! bits, so a fast hash is enough (a slow password hash would only make every
//! request slower), and a stolen data directory yields no usable key.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Actor, ManageKeys, Mutation, Origin, Principal, Role};
use crate::audit::{self, Record};
use crate::clock::Clock;
use crate::config::Secret;
use crate::error::DomainError;

/// key id → `StoredKey` JSON.
const KEYS: Keyspace = Keyspace::new("api_keys");
/// SHA-256 of the key → key id. Authentication is one lookup.
const KEYS_BY_HASH: Keyspace = Keyspace::new("api_keys_by_hash");
/// name → key id. Names are unique because the audit log names actors by them.
const KEYS_BY_NAME: Keyspace = Keyspace::new("api_keys_by_name");

/// Every generated key starts with this, so secret scanners can spot leaks.
const KEY_PREFIX: &str = "cohort_";
/// Configured bootstrap keys shorter than this are refused.
const MIN_KEY_LEN: usize = 24;

/// An API key as the API shows it: never the key itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Stable id.
    pub id: String,
    /// Unique name; the audit log's actor.
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// The first characters of a generated key, to tell keys apart; null for
    /// a bootstrap key taken from configuration, whose text Cohort never shows.
    pub key_prefix: Option<String>,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    public: ApiKey,
    hash: String,
}

/// Input for a new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Unique name, 1–64 characters of letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// The key's role.
    pub role: Role,
}

/// A key just created: the only time the secret is returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key's public record.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret. Store it now: Cohort keeps only its hash.
    pub secret: String,
}

/// Authentication and key management.
#[derive(Clone)]
pub struct ApiKeys {
    store: Store,
    clock: Arc<dyn Clock>,
}

/// The stored form of a bearer secret (API key, enrollment token, device
/// credential): lowercase hex SHA-256. Secrets are 256 random bits, so a
/// fast hash is enough and a slow one would only slow down every request.
pub(crate) fn hash_secret(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xF)] as char);
    }
    out
}

/// 256 random bits after `prefix`. Each kind of secret has its own prefix
/// so that secret scanners and people can tell what leaked.
pub(crate) fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", B64.encode(bytes))
}

fn generate() -> String {
    generate_secret(KEY_PREFIX)
}

fn hash(key: &str) -> String {
    hash_secret(key)
}

impl ApiKeys {
    /// Key management over `store`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        ApiKeys { store, clock }
    }

    /// The principal for a presented key, or `None` for an unknown key.
    pub fn authenticate(
        &self,
        presented: &str,
        origin: &Origin,
    ) -> Result<Option<Principal>, DomainError> {
        let Some(id) = self.store.get(KEYS_BY_HASH, hash(presented).as_bytes())? else {
            return Ok(None);
        };
        let Some(stored) = self.store.get_json::<StoredKey>(KEYS, &id)? else {
            return Ok(None);
        };
        let actor = Actor {
            name: stored.public.name,
            key_id: Some(stored.public.id),
            origin: origin.clone(),
        };
        Ok(Some(Principal::new(actor, stored.public.role)))
    }

    /// Creates the first admin key when the store has none. Returns the
    /// generated secret when one was generated (to be printed once); a
    /// configured key is used as given.
    pub fn bootstrap(&self, configured: Option<&Secret>) -> Result<Option<String>, DomainError> {
        if !self.store.keyspace_is_empty(KEYS)? {
            return Ok(None);
        }
        let (secret, generated) = match configured {
            Some(s) if s.expose().len() < MIN_KEY_LEN => {
                return Err(DomainError::invalid(
                    "bootstrap_admin_key",
                    format!("must be at least {MIN_KEY_LEN} characters"),
                ));
            }
            Some(s) => (s.expose().to_string(), false),
            None => (generate(), true),
        };
        let actor = Actor::system("bootstrap");
        self.insert(&actor, "bootstrap-admin", Role::Admin, &secret)?
            .durable_blocking()?;
        Ok(generated.then_some(secret))
    }

    fn insert(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
        secret: &str,
    ) -> Result<cohort_storage::Committed<ApiKey>, DomainError> {
        let now = self.clock.now();
        let key = ApiKey {
            id: Uuid::now_v7().to_string(),
            name: name.to_string(),
            role,
            key_prefix: secret
                .starts_with(KEY_PREFIX)
                .then(|| secret.chars().take(KEY_PREFIX.len() + 4).collect()),
            created_at: now,
        };
        self.store.write(|txn| {
            if txn.contains(KEYS_BY_NAME, name.as_bytes())? {
                return Err(DomainError::Conflict {
                    code: "name_taken",
                    field: Some("name".into()),
                    message: format!("an API key named {name:?} already exists"),
                });
            }
            let h = hash(secret);
            if txn.contains(KEYS_BY_HASH, h.as_bytes())? {
                return Err(DomainError::Conflict {
                    code: "key_exists",
                    field: None,
                    message: "this key is already registered".into(),
                });
            }
            txn.put_json(
                KEYS,
                key.id.as_bytes(),
                &StoredKey {
                    public: key.clone(),
                    hash: h.clone(),
                },
            )?;
            txn.put(KEYS_BY_HASH, h.as_bytes(), key.id.as_bytes().to_vec());
            txn.put(KEYS_BY_NAME, name.as_bytes(), key.id.as_bytes().to_vec());
            audit::record(
                txn,
                now,
                actor,
                Record {
                    action: "api_key.create",
                    resource_type: "api_key",
                    resource_id: key.id.clone(),
                    changes: audit::diff(None, Some(&key)),
                },
            )?;
            Ok(key.clone())
        })
    }

    /// Creates a key; the secret is in the result and nowhere else.
    pub async fn create(
        &self,
        cap: &ManageKeys<'_>,
        input: NewApiKey,
    ) -> Result<CreatedKey, DomainError> {
        crate::error::check_name(&input.name)?;
        if input.role == Role::Device {
            return Err(DomainError::invalid(
                "role",
                "device credentials are issued by enrollment (POST /api/v1/devices/enroll), not as API keys",
            ));
        }
        let secret = generate();
        let key = self
            .insert(cap.actor(), &input.name, input.role, &secret)?
            .durable()
            .await?;
        Ok(CreatedKey { key, secret })
    }

    /// All keys, oldest first. Key counts are small, so this is not paginated.
    pub fn list(&self, _: &ManageKeys<'_>) -> Result<Vec<ApiKey>, DomainError> {
        self.store
            .scan(KEYS, b"", None, false)
            .map(|r| {
                let (_, v) = r?;
                Ok(cohort_storage::decode_json::<StoredKey>(KEYS, &v)?.public)
            })
            .collect()
    }

    /// Revokes a key at once. A caller cannot revoke the key it is using, so
    /// an admin cannot lock everyone out by accident.
    pub async fn revoke(&self, cap: &ManageKeys<'_>, id: &str) -> Result<(), DomainError> {
        let actor = cap.actor();
        if actor.key_id.as_deref() == Some(id) {
            return Err(DomainError::Conflict {
                code: "key_in_use",
                field: None,
                message: "a key cannot revoke itself; use another admin key".into(),
            });
        }
        let now = self.clock.now();
        self.store
            .write(|txn| {
                let stored: StoredKey = txn
                    .get_json(KEYS, id.as_bytes())?
                    .ok_or_else(|| DomainError::not_found("api_key", id))?;
                txn.delete(KEYS, id.as_bytes());
                txn.delete(KEYS_BY_HASH, stored.hash.as_bytes());
                txn.delete(KEYS_BY_NAME, stored.public.name.as_bytes());
                audit::record(
                    txn,
                    now,
                    actor,
                    Record {
                        action: "api_key.revoke",
                        resource_type: "api_key",
                        resource_id: id.to_string(),
                        changes: audit::diff(Some(&stored.public), None),
                    },
                )?;
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(())
    }
}
