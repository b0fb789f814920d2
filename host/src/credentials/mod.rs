//! Local passwords, for users who sign in at Cohort rather than through an
//! identity provider.
//!
//! Passwords are hashed with argon2id (the crate's defaults: 19 MiB, two
//! passes, one lane, as OWASP recommends) and stored as PHC strings, which
//! carry their own parameters so they can be raised later without breaking
//! old hashes. An admin sets a password, or sends the user an activation
//! link (a single-use token, stored hashed, that expires) to set their own.
//! Failed attempts are counted per user, and a user with too many in a short
//! time is refused for a while, so passwords cannot be guessed online.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use chrono::{DateTime, Duration, Utc};
use cohort_storage::{Keyspace, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Record};
use crate::auth::{Actor, ManageDirectory, Mutation};
use crate::clock::Clock;
use crate::directory::User;
use crate::directory::keys::USERS;
use crate::error::DomainError;
use crate::sessions::{random_token, token_hash};

/// User id → `StoredPassword` JSON.
const PASSWORDS: Keyspace = Keyspace::new("passwords");
/// Hash of an activation token → `Activation` JSON.
const ACTIVATIONS: Keyspace = Keyspace::new("activations");

/// Shortest password accepted. Length matters more than composition rules
/// (NIST SP 800-63B), so there are none.
pub const MIN_LENGTH: usize = 12;
/// Longest: hashing cost grows with length.
pub const MAX_LENGTH: usize = 256;
/// Failed attempts before a user is locked out for [`LOCKOUT`].
const MAX_FAILURES: u32 = 5;
const LOCKOUT: StdDuration = StdDuration::from_secs(15 * 60);

#[derive(Serialize, Deserialize)]
struct StoredPassword {
    phc: String,
    set_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Activation {
    user_id: Uuid,
    expires_at: DateTime<Utc>,
}

/// An activation link just created.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationLink {
    /// The link to send the user; it works once.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Why a password sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Wrong password, unknown user, or no password set: one answer for
    /// all, so the form does not reveal who exists.
    #[error("the username or password is not correct")]
    Wrong,
    /// Too many recent failures.
    #[error("too many failed attempts; try again later")]
    LockedOut,
    /// The store failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Local passwords and activation links.
#[derive(Clone)]
pub struct Credentials {
    store: Store,
    clock: Arc<dyn Clock>,
    public_url: String,
    activation_lifetime: Duration,
    failures: Arc<Mutex<HashMap<Uuid, (u32, Instant)>>>,
    /// Hashes in flight at once: each takes 19 MiB and a core, and anyone
    /// can ask for one through the sign-in form.
    hashing: Arc<tokio::sync::Semaphore>,
}

/// Whether `password` meets the policy, so callers can refuse it before
/// writing anything else.
pub fn check_policy(password: &str) -> Result<(), DomainError> {
    let n = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&n) {
        return Err(DomainError::invalid(
            "password",
            format!("must be {MIN_LENGTH} to {MAX_LENGTH} characters"),
        ));
    }
    Ok(())
}

fn hash(password: &str) -> Result<String, DomainError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("password hashing failed: {e}")))
}

fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash that nothing matches, verified for unknown users so that their
/// answer takes as long as a real one.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password, never valid").unwrap_or_default())
}

impl Credentials {
    /// Passwords over `store`; links point at `public_url`.
    pub fn new(store: Store, clock: Arc<dyn Clock>, public_url: String) -> Credentials {
        Credentials {
            store,
            clock,
            public_url,
            activation_lifetime: Duration::hours(72),
            failures: Arc::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    /// Whether `user` has a local password.
    pub fn has_password(&self, user: &Uuid) -> Result<bool, DomainError> {
        Ok(self.store.get(PASSWORDS, user.as_bytes())?.is_some())
    }

    /// Sets a user's password (an admin's action).
    pub async fn set_password(
        &self,
        cap: &ManageDirectory<'_>,
        user: &Uuid,
        password: String,
    ) -> Result<(), DomainError> {
        check_policy(&password)?;
        if self.store.get(USERS, user.as_bytes())?.is_none() {
            return Err(DomainError::not_found("user", user));
        }
        let phc = tokio::task::spawn_blocking(move || hash(&password))
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))??;
        self.store_password(cap.actor(), user, phc, None).await
    }

    async fn store_password(
        &self,
        actor: &Actor,
        user: &Uuid,
        phc: String,
        used_activation: Option<&str>,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        self.store
            .write(|txn| {
                if !txn.contains(USERS, user.as_bytes())? {
                    return Err(DomainError::not_found("user", user));
                }
                let had = txn.contains(PASSWORDS, user.as_bytes())?;
                if let Some(token) = used_activation {
                    // Checked again in the transaction: two submissions of
                    // one link cannot both set a password.
                    let key = token_hash(token);
                    if !txn.contains(ACTIVATIONS, key.as_bytes())? {
                        return Err(DomainError::invalid(
                            "token",
                            "this link has expired or was used",
                        ));
                    }
                    txn.delete(ACTIVATIONS, key.as_bytes());
                }
                txn.put_json(
                    PASSWORDS,
                    user.as_bytes(),
                    &StoredPassword {
                        phc: phc.clone(),
                        set_at: now,
                    },
                )?;
                audit::record(
                    txn,
                    now,
                    actor,
                    Record {
                        action: "user.password_set",
                        resource_type: "user",
                        resource_id: user.to_string(),
                        // Never the hash: only that a password is now set.
                        changes: audit::changes(&[(
                            "password",
                            Value::from(if had { "set" } else { "none" }),
                            Value::from(if used_activation.is_some() {
                                "set by the user (activation link)"
                            } else {
                                "set"
                            }),
                        )]),
                    },
                )?;
                Ok(())
            })?
            .durable()
            .await?;
        self.failures.lock().remove(user);
        Ok(())
    }

    /// Removes a user's password: they can then only sign in through an
    /// identity provider (or a new activation link).
    pub async fn clear_password(
        &self,
        cap: &ManageDirectory<'_>,
        user: &Uuid,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let actor = cap.actor().clone();
        self.store
            .write(|txn| {
                if !txn.contains(PASSWORDS, user.as_bytes())? {
                    return Err(DomainError::not_found("password of user", user));
                }
                txn.delete(PASSWORDS, user.as_bytes());
                audit::record(
                    txn,
                    now,
                    &actor,
                    Record {
                        action: "user.password_clear",
                        resource_type: "user",
                        resource_id: user.to_string(),
                        changes: audit::changes(&[(
                            "password",
                            Value::from("set"),
                            Value::from("none"),
                        )]),
                    },
                )?;
                Ok(())
            })?
            .durable()
            .await?;
        Ok(())
    }

    /// Creates a single-use link with which the user sets their password.
    pub async fn activation_link(
        &self,
        cap: &ManageDirectory<'_>,
        user: &Uuid,
    ) -> Result<ActivationLink, DomainError> {
        let now = self.clock.now();
        let token = random_token();
        let expires_at = now + self.activation_lifetime;
        let actor = cap.actor().clone();
        self.store
            .write(|txn| {
                if !txn.contains(USERS, user.as_bytes())? {
                    return Err(DomainError::not_found("user", user));
                }
                txn.put_json(
                    ACTIVATIONS,
                    token_hash(&token).as_bytes(),
                    &Activation {
                        user_id: *user,
                        expires_at,
                    },
                )?;
                audit::record(
                    txn,
                    now,
                    &actor,
                    Record {
                        action: "user.activation_link",
                        resource_type: "user",
                        resource_id: user.to_string(),
                        changes: audit::changes(&[(
                            "activation_expires_at",
                            Value::Null,
                            Value::from(expires_at.to_rfc3339()),
                        )]),
                    },
                )?;
                Ok(())
            })?
            .durable()
            .await?;
        Ok(ActivationLink {
            url: format!(
                "{}/activate?token={token}",
                self.public_url.trim_end_matches('/')
            ),
            expires_at,
        })
    }

    /// The user an activation token is for, if it is live.
    pub fn activation_user(&self, token: &str) -> Result<Option<User>, DomainError> {
        let Some(a) = self
            .store
            .get_json::<Activation>(ACTIVATIONS, token_hash(token).as_bytes())?
        else {
            return Ok(None);
        };
        if a.expires_at <= self.clock.now() {
            return Ok(None);
        }
        Ok(self.store.get_json(USERS, a.user_id.as_bytes())?)
    }

    /// Sets the password through an activation token, which is then used up.
    pub async fn activate(&self, token: &str, password: String) -> Result<User, DomainError> {
        let user = self
            .activation_user(token)?
            .ok_or_else(|| DomainError::invalid("token", "this link has expired or was used"))?;
        check_policy(&password)?;
        let phc = tokio::task::spawn_blocking(move || hash(&password))
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))??;
        let actor = Actor {
            name: format!("user:{}", user.username),
            key_id: None,
            request_id: String::new(),
        };
        self.store_password(&actor, &user.id, phc, Some(token))
            .await?;
        Ok(user)
    }

    /// Checks `password` for `user` (None: no such user, answered the same
    /// way and in the same time).
    pub async fn check(&self, user: Option<&User>, password: &str) -> Result<(), PasswordError> {
        // The attempt is counted before the hash is checked, so parallel
        // guesses cannot all slip under the limit.
        if let Some(u) = user {
            let mut failures = self.failures.lock();
            let entry = failures.entry(u.id).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= LOCKOUT {
                *entry = (0, Instant::now());
            }
            if entry.0 >= MAX_FAILURES {
                return Err(PasswordError::LockedOut);
            }
            entry.0 += 1;
        }
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let stored = match user {
            Some(u) => self
                .store
                .get_json::<StoredPassword>(PASSWORDS, u.id.as_bytes())
                .map_err(DomainError::from)?,
            None => None,
        };
        let phc = stored.map_or_else(|| decoy().to_string(), |s| s.phc);
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify(&phc, &password))
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let Some(u) = user else {
            return Err(PasswordError::Wrong);
        };
        if ok
            && self
                .store
                .get(PASSWORDS, u.id.as_bytes())
                .ok()
                .flatten()
                .is_some()
        {
            self.failures.lock().remove(&u.id);
            return Ok(());
        }
        Err(PasswordError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let phc = hash("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify(&phc, "correct horse battery"));
        assert!(!verify(&phc, "correct horse batterz"));
        assert!(!verify(decoy(), "anything"));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("twelve chars").is_ok());
        assert!(check_policy(&"x".repeat(257)).is_err());
    }
}
