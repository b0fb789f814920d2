//! Cohort's token signing keys (Ed25519). The newest key signs; every kept
//! key verifies, so rotating never cuts off a token already handed out.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, Store};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Record};
use crate::auth::{ManageKeys, Mutation};
use crate::clock::Clock;
use crate::error::DomainError;
use crate::plugins::secrets::SecretBox;

/// kid → `StoredKey` JSON.
const SIGNING_KEYS: Keyspace = Keyspace::new("session_signing_keys");
/// Keys kept for verification after rotation: tokens live at most an hour
/// by default, so two older keys cover rotations in quick succession.
const KEPT: usize = 3;
/// The audience of Cohort's own tokens.
pub const AUDIENCE: &str = "cohort";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    public: PublicKey,
    /// The 32-byte seed, sealed with the server's secret key.
    sealed_seed: String,
}

/// A signing key as published (never its private half).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    /// Key id, the JWT header's `kid`.
    pub kid: String,
    /// The Ed25519 public key, base64url (the JWK `x`).
    pub x: String,
    /// When it was created; the newest signs.
    pub created_at: DateTime<Utc>,
}

struct Loaded {
    public: PublicKey,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Signs and verifies session tokens.
pub struct Signer {
    store: Store,
    clock: Arc<dyn Clock>,
    secrets: SecretBox,
    issuer: String,
    /// Newest first.
    keys: RwLock<Vec<Arc<Loaded>>>,
    /// Set when another host sharing the store wrote (it may have rotated
    /// the keys): they are read again before the next use.
    stale: Arc<AtomicBool>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    iat: i64,
    exp: i64,
}

/// Why a token did not verify (logged, never shown).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No kept key has the token's kid.
    #[error("unknown key")]
    UnknownKey,
    /// Signature, algorithm, issuer, audience or format.
    #[error("{0}")]
    Invalid(String),
    /// Past `exp`.
    #[error("expired")]
    Expired,
}

fn load(secrets: &SecretBox, stored: StoredKey) -> Result<Loaded, DomainError> {
    let seed = secrets
        .open_value(
            &format!("session-key/{}", stored.public.kid),
            &stored.sealed_seed,
        )
        .map_err(|e| DomainError::Internal(e.to_string()))?;
    let seed: [u8; 32] = B64
        .decode(seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DomainError::Internal("a session signing key is corrupt".into()))?;
    let signing = SigningKey::from_bytes(&seed);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| DomainError::Internal(e.to_string()))?;
    let decoding = DecodingKey::from_ed_components(&stored.public.x)
        .map_err(|e| DomainError::Internal(e.to_string()))?;
    Ok(Loaded {
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding,
        public: stored.public,
    })
}

fn generate(secrets: &SecretBox, now: DateTime<Utc>) -> StoredKey {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let kid = Uuid::now_v7().to_string();
    StoredKey {
        sealed_seed: secrets.seal(&format!("session-key/{kid}"), &B64.encode(seed)),
        public: PublicKey {
            x: B64.encode(signing.verifying_key().as_bytes()),
            kid,
            created_at: now,
        },
    }
}

impl Signer {
    /// Loads the kept keys, creating the first one on a new store.
    pub(super) fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        secrets: SecretBox,
        issuer: String,
    ) -> Result<Signer, DomainError> {
        let stale = Arc::new(AtomicBool::new(false));
        store.on_foreign_write({
            let stale = Arc::clone(&stale);
            move || stale.store(true, Ordering::SeqCst)
        });
        let signer = Signer {
            store,
            clock,
            secrets,
            issuer,
            keys: RwLock::new(Vec::new()),
            stale,
        };
        signer.reload()?;
        if signer.keys.read().is_empty() {
            let key = generate(&signer.secrets, signer.clock.now());
            signer
                .store
                .write(|txn| {
                    txn.put_json(SIGNING_KEYS, key.public.kid.as_bytes(), &key)?;
                    Ok::<_, DomainError>(())
                })?
                .durable_blocking()?;
            signer.reload()?;
        }
        Ok(signer)
    }

    fn reload(&self) -> Result<(), DomainError> {
        let mut loaded = Vec::new();
        for entry in self.store.scan(SIGNING_KEYS, b"", None, false) {
            let (_, v) = entry?;
            let stored: StoredKey = cohort_storage::decode_json(SIGNING_KEYS, &v)?;
            let kid = stored.public.kid.clone();
            // A key sealed with another secret key (a backup restored into
            // a data directory with a new one) is skipped, not fatal: the
            // tokens it signed stop verifying, sessions stay, and a new key
            // is made if none is left. It is kept in storage in case the
            // right secret key comes back.
            match load(&self.secrets, stored) {
                Ok(k) => loaded.push(Arc::new(k)),
                Err(e) => {
                    tracing::warn!(kid = %kid, error = %e, "a session signing key cannot be opened with this secret key; skipped");
                }
            }
        }
        loaded.sort_by_key(|k| std::cmp::Reverse(k.public.created_at));
        *self.keys.write() = loaded;
        Ok(())
    }

    /// Reads the keys again if another host may have changed them.
    fn catch_up(&self) {
        if self.stale.swap(false, Ordering::SeqCst)
            && let Err(e) = self.reload()
        {
            self.stale.store(true, Ordering::SeqCst);
            tracing::warn!(error = %e, "reading the session signing keys again failed");
        }
    }

    /// The kept public keys, newest (the signing one) first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.catch_up();
        self.keys.read().iter().map(|k| k.public.clone()).collect()
    }

    /// The published key set (RFC 7517).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .public_keys()
            .into_iter()
            .map(|k| {
                json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                       "kid": k.kid, "x": k.x})
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Makes a new key the signing key; keys beyond the newest few are
    /// dropped, and tokens they signed stop verifying.
    pub async fn rotate(&self, cap: &ManageKeys<'_>) -> Result<PublicKey, DomainError> {
        let now = self.clock.now();
        let key = generate(&self.secrets, now);
        let public = key.public.clone();
        let dropped: Vec<String> = self
            .public_keys()
            .into_iter()
            .skip(KEPT - 1)
            .map(|k| k.kid)
            .collect();
        let actor = cap.actor().clone();
        self.store
            .write(|txn| {
                txn.put_json(SIGNING_KEYS, key.public.kid.as_bytes(), &key)?;
                for kid in &dropped {
                    txn.delete(SIGNING_KEYS, kid.as_bytes());
                }
                audit::record(
                    txn,
                    now,
                    &actor,
                    Record {
                        action: "session_key.rotate",
                        resource_type: "session_key",
                        resource_id: key.public.kid.clone(),
                        changes: audit::changes(&[(
                            "dropped",
                            serde_json::Value::Null,
                            json!(dropped),
                        )]),
                    },
                )?;
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        self.reload()?;
        Ok(public)
    }

    /// A token for session `sid` of `user`.
    pub(super) fn sign(
        &self,
        user: &Uuid,
        sid: &Uuid,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<String, DomainError> {
        self.catch_up();
        let key = self
            .keys
            .read()
            .first()
            .cloned()
            .ok_or_else(|| DomainError::Internal("no session signing key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.public.kid.clone());
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: user.to_string(),
            sid: sid.to_string(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| DomainError::Internal(e.to_string()))
    }

    /// The session a token names, if it verifies.
    pub(super) fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Uuid, VerifyError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        self.catch_up();
        let key = self
            .keys
            .read()
            .iter()
            .find(|k| k.public.kid == kid)
            .cloned()
            .ok_or(VerifyError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| VerifyError::Invalid(e.to_string()))?
            .claims;
        if claims.exp <= now.timestamp() {
            return Err(VerifyError::Expired);
        }
        Uuid::parse_str(&claims.sid).map_err(|e| VerifyError::Invalid(e.to_string()))
    }
}
