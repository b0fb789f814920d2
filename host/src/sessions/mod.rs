//! Sessions of signed-in users, and the tokens that carry them.
//!
//! A sign-in (through an IdP or a local password) opens a session. The
//! browser holds it as an opaque cookie: 256 random bits, of which only a
//! SHA-256 hash is stored, so a copy of the data directory opens no session.
//! Programs hold it as a signed JWT (EdDSA) naming the session, which
//! `GET /api/v1/me` accepts as well. The JWT is checked against the stored
//! session too, so signing out, suspending the user or expiry end both.
//!
//! Signing keys live in storage, their private halves sealed with the
//! server's secret key. Rotating makes a new key current; older keys keep
//! verifying the tokens they signed until those expire, and the public keys
//! are published at `/.well-known/jwks.json` for services that verify
//! Cohort's tokens themselves.

mod signing;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};
use cohort_storage::{Keyspace, Store, WriteTxn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Record};
use crate::auth::Actor;
use crate::clock::Clock;
use crate::directory::{User, UserState};
use crate::error::DomainError;
use crate::plugins::secrets::SecretBox;

pub use signing::{PublicKey, Signer};

/// Session id → `Session` JSON.
const SESSIONS: Keyspace = Keyspace::new("sessions");
/// SHA-256 of the cookie token → session id.
const SESSION_TOKENS: Keyspace = Keyspace::new("session_tokens");

/// How a session was opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Method {
    /// Through an identity provider.
    Idp {
        /// The IdP.
        idp_id: Uuid,
        /// Its name when the session opened.
        idp_name: String,
    },
    /// With the user's local password.
    Password,
}

/// A signed-in user's session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Stable id; the JWT's `sid`.
    pub id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// How the user signed in.
    pub method: Method,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it ends unless ended earlier.
    pub expires_at: DateTime<Utc>,
}

/// A session as stored: with the hash of its cookie, which the API never
/// shows.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    session: Session,
    token_hash: String,
}

/// A session just opened: the only time its secrets exist in clear.
pub struct Opened {
    /// The session.
    pub session: Session,
    /// The cookie value.
    pub cookie: String,
}

/// What a session token (cookie or JWT) resolves to.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The session.
    pub session: Session,
    /// Its user, as stored now.
    pub user: User,
}

/// A JWT for a session.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    /// The compact JWT; send as `Authorization: Bearer`.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// Why a session token was not accepted. Deliberately vague towards the
/// caller: which check failed is logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No session, an ended or expired one, or a token that does not verify.
    #[error("not signed in")]
    NotSignedIn,
    /// The store failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Opens, resolves and ends sessions.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    clock: Arc<dyn Clock>,
    signer: Arc<Signer>,
    lifetime: Duration,
    token_lifetime: Duration,
}

/// 256 random bits, URL-safe.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    B64.encode(bytes)
}

/// The stored form of a token.
pub(crate) fn token_hash(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

impl Sessions {
    /// Sessions over `store`; `issuer` is Cohort's public URL (the JWT
    /// `iss`). Loads or creates the signing key.
    pub fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        secrets: SecretBox,
        issuer: String,
        lifetime: Duration,
        token_lifetime: Duration,
    ) -> Result<Sessions, DomainError> {
        let signer = Signer::open(store.clone(), Arc::clone(&clock), secrets, issuer)?;
        Ok(Sessions {
            store,
            clock,
            signer: Arc::new(signer),
            lifetime,
            token_lifetime,
        })
    }

    /// Opens a session for `user` inside the caller's transaction, with its
    /// audit event, so a sign-in and its session commit together.
    pub(crate) fn open_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        user: &User,
        method: Method,
    ) -> Result<Opened, DomainError> {
        let now = self.clock.now();
        let cookie = random_token();
        let session = Session {
            id: Uuid::now_v7(),
            user_id: user.id,
            method,
            created_at: now,
            expires_at: now + self.lifetime,
        };
        let hash = token_hash(&cookie);
        txn.put(
            SESSION_TOKENS,
            hash.as_bytes(),
            session.id.as_bytes().to_vec(),
        );
        txn.put_json(
            SESSIONS,
            session.id.as_bytes(),
            &Stored {
                session: session.clone(),
                token_hash: hash,
            },
        )?;
        audit::record(
            txn,
            now,
            actor,
            Record {
                action: "session.open",
                resource_type: "session",
                resource_id: session.id.to_string(),
                changes: audit::diff(None, Some(&session)),
            },
        )?;
        Ok(Opened { session, cookie })
    }

    /// The session a cookie names, if it is live and its user active.
    pub fn from_cookie(&self, cookie: &str) -> Result<SignedIn, SessionError> {
        let id = self
            .store
            .get(SESSION_TOKENS, token_hash(cookie).as_bytes())
            .map_err(DomainError::from)?
            .and_then(|b| Uuid::from_slice(&b).ok())
            .ok_or(SessionError::NotSignedIn)?;
        self.live(&id)
    }

    /// The session a JWT names, if the token verifies and the session is
    /// live.
    pub fn from_jwt(&self, token: &str) -> Result<SignedIn, SessionError> {
        let sid = self.signer.verify(token, self.clock.now()).map_err(|e| {
            tracing::debug!(error = %e, "session token refused");
            SessionError::NotSignedIn
        })?;
        self.live(&sid)
    }

    fn live(&self, id: &Uuid) -> Result<SignedIn, SessionError> {
        let session = self
            .store
            .get_json::<Stored>(SESSIONS, id.as_bytes())
            .map_err(DomainError::from)?
            .ok_or(SessionError::NotSignedIn)?
            .session;
        if session.expires_at <= self.clock.now() {
            return Err(SessionError::NotSignedIn);
        }
        let user: User = crate::directory::read::user(&self.store, &session.user_id)
            .map_err(DomainError::from)?
            .ok_or(SessionError::NotSignedIn)?;
        if user.state != UserState::Active {
            return Err(SessionError::NotSignedIn);
        }
        Ok(SignedIn { session, user })
    }

    /// A JWT for a live session; it expires with the session at the latest.
    pub fn issue_token(&self, session: &Session) -> Result<IssuedToken, DomainError> {
        let now = self.clock.now();
        let expires_at = (now + self.token_lifetime).min(session.expires_at);
        let token = self
            .signer
            .sign(&session.user_id, &session.id, now, expires_at)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Ends a session (signing out).
    pub async fn end(&self, actor: &Actor, session: &Session) -> Result<(), DomainError> {
        let now = self.clock.now();
        self.store
            .write(|txn| {
                end_in(txn, actor, now, session)?;
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(())
    }

    /// Deletes expired sessions. Returns how many.
    pub async fn sweep(&self) -> Result<usize, DomainError> {
        let now = self.clock.now();
        let expired: Vec<Stored> = self
            .store
            .scan(SESSIONS, b"", None, false)
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| cohort_storage::decode_json::<Stored>(SESSIONS, &v).ok())
            .filter(|s| s.session.expires_at <= now)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let n = expired.len();
        self.store
            .write(|txn| {
                for s in &expired {
                    txn.delete(SESSIONS, s.session.id.as_bytes());
                    txn.delete(SESSION_TOKENS, s.token_hash.as_bytes());
                }
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(n)
    }

    /// The signing keys, for rotation and the published key set.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

fn end_in(
    txn: &mut WriteTxn<'_>,
    actor: &Actor,
    now: DateTime<Utc>,
    session: &Session,
) -> Result<(), DomainError> {
    // Read back inside the transaction: the cookie hash is only stored.
    if let Some(stored) = txn.get_json::<Stored>(SESSIONS, session.id.as_bytes())? {
        txn.delete(SESSION_TOKENS, stored.token_hash.as_bytes());
    }
    txn.delete(SESSIONS, session.id.as_bytes());
    audit::record(
        txn,
        now,
        actor,
        Record {
            action: "session.end",
            resource_type: "session",
            resource_id: session.id.to_string(),
            changes: audit::changes(&[(
                "user_id",
                serde_json::Value::String(session.user_id.to_string()),
                serde_json::Value::Null,
            )]),
        },
    )?;
    Ok(())
}
