//! Local passwords, for users who sign in at Cohort rather than through an
//! identity provider.
//!
//! Passwords are hashed with argon2id (the crate's defaults: 19 MiB, two
//! passes, one lane, as OWASP recommends) and stored as PHC strings, which
//! carry their own parameters so they can be raised later without breaking
//! old hashes. An admin sets a password, or sends the user an activation
//! link (a single-use token, stored hashed, that expires) to set their own.
//! Using a link ends the user's other links, and a suspended user's link
//! sets nothing.
//!
//! Failed attempts are counted per user, and a user with too many in a short
//! time is refused for a while, so passwords cannot be guessed online. The
//! count is stored, so a restart does not hand out fresh guesses; it is
//! written with the audit event of the attempt ([`Checked::record_in`]), so
//! an attempt costs one durable write whether or not the user exists.
//!
//! A password checks out only for an active user. Anyone else (suspended,
//! staged, unknown) has a decoy hash verified in its place, so neither the
//! answer nor its time says whether the password was right.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use chrono::{DateTime, Duration, Utc};
use cohort_storage::{Keyspace, StorageError, Store, WriteTxn};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Record};
use crate::auth::{Actor, ManageDirectory, Mutation, Origin};
use crate::clock::Clock;
use crate::directory::{User, UserState};
use crate::error::DomainError;
use crate::sessions::{random_token, token_hash};

/// User id → `StoredPassword` JSON.
const PASSWORDS: Keyspace = Keyspace::new("passwords");
/// Hash of an activation token → `Activation` JSON.
const ACTIVATIONS: Keyspace = Keyspace::new("activations");
/// User id → the generation of their activation links (u64, big-endian).
/// Using a link moves it on, which ends every link of an older generation
/// at once, without an index of links by user.
const ACTIVATION_GENERATIONS: Keyspace = Keyspace::new("activation_generations");
/// User id → `Failures` JSON: recent failed password attempts.
const FAILURES: Keyspace = Keyspace::new("password_failures");

/// Shortest password accepted. Length matters more than composition rules
/// (NIST SP 800-63B), so there are none.
pub const MIN_LENGTH: usize = 12;
/// Longest: hashing cost grows with length.
pub const MAX_LENGTH: usize = 256;
/// Failed attempts within [`LOCKOUT`] after which a user is locked out for
/// [`LOCKOUT`].
pub const MAX_FAILURES: u32 = 5;
/// See [`MAX_FAILURES`].
pub const LOCKOUT: Duration = Duration::minutes(15);

#[derive(Serialize, Deserialize)]
struct StoredPassword {
    phc: String,
    set_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Activation {
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    /// The user's link generation when the link was made; links made
    /// before this field existed are generation 0, as users start.
    #[serde(default)]
    generation: u64,
}

/// A user's recent failed password attempts.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Failures {
    /// Failures since `since`.
    count: u32,
    /// The first failure of the window.
    since: DateTime<Utc>,
    /// Set by the failure that reached [`MAX_FAILURES`].
    locked_until: Option<DateTime<Utc>>,
}

impl Failures {
    /// Whether the record still counts at `now`: a lock not yet over, or a
    /// window not yet closed. Otherwise the user starts afresh.
    fn live(&self, now: DateTime<Utc>) -> bool {
        match self.locked_until {
            Some(until) => until > now,
            None => self.since + LOCKOUT > now,
        }
    }
}

/// Attempts being checked right now, per user: counted against the limit
/// until their outcome is recorded, so parallel guesses cannot all slip in
/// under it.
type InFlight = Arc<Mutex<HashMap<Uuid, u32>>>;

/// A password checked for a sign-in. Its outcome is recorded with
/// [`Checked::record_in`], in the transaction of the sign-in's audit event
/// or session; until then (until it is dropped) it counts as a failure
/// towards the lockout.
pub struct Checked {
    /// The password is the user's, and the user is active.
    pub ok: bool,
    /// The user whose count the outcome goes to (none: unknown user, or a
    /// check made only to take the time one takes).
    user: Option<Uuid>,
    in_flight: InFlight,
}

impl Checked {
    /// Records the outcome inside `txn`: a failure counts towards the
    /// lockout (and starts it at the limit), a success clears the count.
    pub fn record_in(
        &self,
        txn: &mut WriteTxn<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let Some(user) = self.user else {
            return Ok(());
        };
        if self.ok {
            txn.delete(FAILURES, user.as_bytes());
            return Ok(());
        }
        let mut f = txn
            .get_json::<Failures>(FAILURES, user.as_bytes())?
            .filter(|f| f.live(now))
            .unwrap_or(Failures {
                count: 0,
                since: now,
                locked_until: None,
            });
        f.count += 1;
        if f.count >= MAX_FAILURES {
            f.locked_until = Some(now + LOCKOUT);
        }
        txn.put_json(FAILURES, user.as_bytes(), &f)
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        if let Some(user) = self.user {
            let mut in_flight = self.in_flight.lock();
            if let Some(n) = in_flight.get_mut(&user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    in_flight.remove(&user);
                }
            }
        }
    }
}

/// An activation link just created.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationLink {
    /// The link to send the user; it works once.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Why a password could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too many recent failures; no hash was checked.
    #[error("too many failed attempts; try again later")]
    LockedOut {
        /// When the lock ends; unknown while other attempts for the user
        /// are still being checked.
        until: Option<DateTime<Utc>>,
    },
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
    in_flight: InFlight,
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
            in_flight: Arc::default(),
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
        if !crate::directory::read::user_exists(&self.store, user)? {
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
                if !crate::directory::read::user_exists(txn, user)? {
                    return Err(DomainError::not_found("user", user));
                }
                let had = txn.contains(PASSWORDS, user.as_bytes())?;
                if let Some(token) = used_activation {
                    // Checked again in the transaction: two submissions of
                    // one link (or of two links) cannot both set a password,
                    // and a suspension since the form was shown counts.
                    let key = token_hash(token);
                    let live = txn
                        .get_json::<Activation>(ACTIVATIONS, key.as_bytes())?
                        .is_some_and(|a| {
                            a.user_id == *user
                                && a.expires_at > now
                                && generation(&*txn, user).is_ok_and(|g| g == a.generation)
                        });
                    if !live {
                        return Err(DomainError::invalid(
                            "token",
                            "this link has expired or was used",
                        ));
                    }
                    let u: User = crate::directory::read::user(txn, user)?
                        .ok_or_else(|| DomainError::not_found("user", user))?;
                    refuse_suspended(&u)?;
                    txn.delete(ACTIVATIONS, key.as_bytes());
                    let next = generation(&*txn, user)? + 1;
                    txn.put(
                        ACTIVATION_GENERATIONS,
                        user.as_bytes(),
                        next.to_be_bytes().to_vec(),
                    );
                }
                txn.delete(FAILURES, user.as_bytes());
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
                if !crate::directory::read::user_exists(txn, user)? {
                    return Err(DomainError::not_found("user", user));
                }
                let generation = generation(&*txn, user)?;
                txn.put_json(
                    ACTIVATIONS,
                    token_hash(&token).as_bytes(),
                    &Activation {
                        user_id: *user,
                        expires_at,
                        generation,
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

    /// The user a live activation token is for: it exists, has not
    /// expired, and no other link of the user's has been used since it was
    /// made. The user may be suspended; [`Credentials::activate`] refuses
    /// them.
    pub fn activation_user(&self, token: &str) -> Result<Option<User>, DomainError> {
        let Some(a) = self
            .store
            .get_json::<Activation>(ACTIVATIONS, token_hash(token).as_bytes())?
        else {
            return Ok(None);
        };
        if a.expires_at <= self.clock.now() || generation(&self.store, &a.user_id)? != a.generation
        {
            return Ok(None);
        }
        Ok(crate::directory::read::user(&self.store, &a.user_id)?)
    }

    /// Sets the password through an activation token, which is then used
    /// up with every other link of the user's. Refused for a suspended user
    /// (the link stays, for when they are reinstated).
    pub async fn activate(
        &self,
        origin: &Origin,
        token: &str,
        password: String,
    ) -> Result<User, DomainError> {
        let user = self
            .activation_user(token)?
            .ok_or_else(|| DomainError::invalid("token", "this link has expired or was used"))?;
        refuse_suspended(&user)?;
        check_policy(&password)?;
        let phc = tokio::task::spawn_blocking(move || hash(&password))
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))??;
        let actor = Actor::named(format!("user:{}", user.username), origin.clone());
        self.store_password(&actor, &user.id, phc, Some(token))
            .await?;
        Ok(user)
    }

    /// Checks `password` for `user`, the same way and in the same time
    /// whoever it is. `None` (no such user, or one who may not use a
    /// password) verifies the decoy and counts nothing. A known user's
    /// attempt counts towards their lockout from now until the outcome is
    /// recorded; a locked-out user gets [`PasswordError::LockedOut`] and no
    /// hash is checked.
    pub async fn check(
        &self,
        user: Option<&User>,
        password: &str,
    ) -> Result<Checked, PasswordError> {
        let now = self.clock.now();
        let mut checked = Checked {
            ok: false,
            user: None,
            in_flight: Arc::clone(&self.in_flight),
        };
        if let Some(u) = user {
            // Read under the lock, and released only after the outcome is
            // written: an attempt is always in one count or the other.
            let mut in_flight = self.in_flight.lock();
            let recorded = self
                .store
                .get_json::<Failures>(FAILURES, u.id.as_bytes())
                .map_err(DomainError::from)?
                .filter(|f| f.live(now));
            if let Some(until) = recorded.as_ref().and_then(|f| f.locked_until) {
                return Err(PasswordError::LockedOut { until: Some(until) });
            }
            let pending = in_flight.get(&u.id).copied().unwrap_or(0);
            if recorded.map_or(0, |f| f.count) + pending >= MAX_FAILURES {
                return Err(PasswordError::LockedOut { until: None });
            }
            *in_flight.entry(u.id).or_insert(0) += 1;
            checked.user = Some(u.id);
        }
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let stored = match user {
            Some(u) if u.state == UserState::Active => self
                .store
                .get_json::<StoredPassword>(PASSWORDS, u.id.as_bytes())
                .map_err(DomainError::from)?,
            _ => None,
        };
        let real = stored.is_some();
        let phc = stored.map_or_else(|| decoy().to_string(), |s| s.phc);
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify(&phc, &password))
            .await
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        // The password may have been removed while it was being checked.
        checked.ok = ok
            && real
            && user.is_some_and(|u| {
                self.store
                    .get(PASSWORDS, u.id.as_bytes())
                    .ok()
                    .flatten()
                    .is_some()
            });
        Ok(checked)
    }
}

/// The generation of a user's activation links (0 until one is used).
fn generation(r: &impl cohort_storage::Reader, user: &Uuid) -> Result<u64, DomainError> {
    Ok(r.get(ACTIVATION_GENERATIONS, user.as_bytes())?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// A suspended user's activation link sets nothing: suspending someone
/// must not leave them a way back in.
fn refuse_suspended(user: &User) -> Result<(), DomainError> {
    if user.state == UserState::Suspended {
        return Err(DomainError::Conflict {
            code: "user_not_active",
            field: None,
            message: "the account is suspended".into(),
        });
    }
    Ok(())
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

    use crate::auth::{Principal, Role};
    use crate::clock::TestClock;
    use crate::directory::{Directory, UserInput};

    const PASSWORD: &str = "correct horse battery";

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        clock: Arc<TestClock>,
        directory: Directory,
        admin: Principal,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = crate::test_support::open_store(dir.path());
            store.migrate(crate::migrations::MIGRATIONS).unwrap();
            let clock = TestClock::at_system_time();
            let directory = Directory::new(store.clone(), clock.clone());
            Fixture {
                _dir: dir,
                store,
                clock,
                directory,
                admin: Principal::new(Actor::system("test"), Role::Admin),
            }
        }

        /// Credentials as a freshly started server has them.
        fn credentials(&self) -> Credentials {
            Credentials::new(
                self.store.clone(),
                self.clock.clone(),
                "http://cohort".into(),
            )
        }

        async fn user(&self, name: &str, creds: &Credentials) -> User {
            let cap = self.admin.manage_directory().unwrap();
            let user = self
                .directory
                .create_user(
                    &cap,
                    UserInput {
                        username: name.into(),
                        email: format!("{name}@example.com"),
                        state: Some(UserState::Active),
                        ..UserInput::default()
                    },
                )
                .await
                .unwrap();
            creds
                .set_password(&cap, &user.id, PASSWORD.into())
                .await
                .unwrap();
            user
        }

        async fn suspend(&self, user: &User) -> User {
            let cap = self.admin.change_user_state().unwrap();
            self.directory
                .change_user_state(&cap, &user.id, UserState::Suspended, None)
                .await
                .unwrap()
        }

        /// Checks and records the outcome, as a sign-in does.
        async fn attempt(
            &self,
            creds: &Credentials,
            user: &User,
            password: &str,
        ) -> Result<bool, PasswordError> {
            let checked = creds.check(Some(user), password).await?;
            let now = self.clock.now();
            self.store
                .write(|txn| checked.record_in(txn, now))
                .unwrap()
                .durable()
                .await
                .unwrap();
            Ok(checked.ok)
        }
    }

    #[tokio::test]
    async fn the_lockout_is_stored_and_outlasts_a_restart() {
        let f = Fixture::new();
        let creds = f.credentials();
        let ada = f.user("ada", &creds).await;
        for _ in 0..MAX_FAILURES {
            assert!(!f.attempt(&creds, &ada, "not the password").await.unwrap());
        }
        let locked = f.attempt(&creds, &ada, PASSWORD).await.unwrap_err();
        let until = f.clock.now() + LOCKOUT;
        assert!(matches!(locked, PasswordError::LockedOut { until: Some(t) } if t == until));
        // A new instance over the same store (a restart) still refuses.
        let restarted = f.credentials();
        assert!(matches!(
            f.attempt(&restarted, &ada, PASSWORD).await,
            Err(PasswordError::LockedOut { .. })
        ));
        // Once the lock is over, the right password works and clears the count.
        f.clock.advance(LOCKOUT);
        assert!(f.attempt(&restarted, &ada, PASSWORD).await.unwrap());
        assert!(f.store.get(FAILURES, ada.id.as_bytes()).unwrap().is_none());
    }

    #[tokio::test]
    async fn failures_outside_the_window_start_the_count_again() {
        let f = Fixture::new();
        let creds = f.credentials();
        let ada = f.user("ada", &creds).await;
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!f.attempt(&creds, &ada, "nope nope nope").await.unwrap());
        }
        f.clock.advance(LOCKOUT);
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!f.attempt(&creds, &ada, "nope nope nope").await.unwrap());
        }
        assert!(f.attempt(&creds, &ada, PASSWORD).await.unwrap());
    }

    #[tokio::test]
    async fn attempts_being_checked_count_until_recorded() {
        let f = Fixture::new();
        let creds = f.credentials();
        let ada = f.user("ada", &creds).await;
        let mut pending = Vec::new();
        for _ in 0..MAX_FAILURES {
            pending.push(creds.check(Some(&ada), "guess guess guess").await.unwrap());
        }
        assert!(matches!(
            creds.check(Some(&ada), PASSWORD).await,
            Err(PasswordError::LockedOut { until: None })
        ));
        // Dropped without an outcome (the request went away): not counted.
        pending.clear();
        assert!(creds.check(Some(&ada), PASSWORD).await.unwrap().ok);
    }

    #[tokio::test]
    async fn a_password_does_not_check_out_for_a_suspended_user() {
        let f = Fixture::new();
        let creds = f.credentials();
        let ada = f.user("ada", &creds).await;
        let ada = f.suspend(&ada).await;
        assert!(!f.attempt(&creds, &ada, PASSWORD).await.unwrap());
        assert!(!f.attempt(&creds, &ada, "not the password").await.unwrap());
        // Unknown users: the decoy, never a match, nothing counted.
        assert!(!creds.check(None, PASSWORD).await.unwrap().ok);
    }

    #[tokio::test]
    async fn using_an_activation_link_ends_the_others_and_suspension_stops_them() {
        let f = Fixture::new();
        let creds = f.credentials();
        let cap = f.admin.manage_directory().unwrap();
        let ada = f.user("ada", &creds).await;
        let token = |link: &ActivationLink| link.url.split("token=").nth(1).unwrap().to_string();
        let first = token(&creds.activation_link(&cap, &ada.id).await.unwrap());
        let second = token(&creds.activation_link(&cap, &ada.id).await.unwrap());
        let origin = Origin::internal("test");
        creds
            .activate(&origin, &first, "a brand new passphrase".into())
            .await
            .unwrap();
        assert!(creds.activation_user(&first).unwrap().is_none());
        assert!(creds.activation_user(&second).unwrap().is_none());
        assert!(matches!(
            creds.activate(&origin, &second, "another new passphrase".into()).await,
            Err(DomainError::Invalid { field, .. }) if field == "token"
        ));
        // A link made after that one works, unless the user is suspended.
        let third = token(&creds.activation_link(&cap, &ada.id).await.unwrap());
        assert!(creds.activation_user(&third).unwrap().is_some());
        let ada = f.suspend(&ada).await;
        assert!(matches!(
            creds
                .activate(&origin, &third, "suspended passphrase".into())
                .await,
            Err(DomainError::Conflict {
                code: "user_not_active",
                ..
            })
        ));
        // Nothing was set: after reinstatement the old password still works.
        let cap_state = f.admin.change_user_state().unwrap();
        let ada = f
            .directory
            .change_user_state(&cap_state, &ada.id, UserState::Active, None)
            .await
            .unwrap();
        assert!(
            f.attempt(&creds, &ada, "a brand new passphrase")
                .await
                .unwrap()
        );
        // And the link is still there for them.
        assert!(creds.activation_user(&third).unwrap().is_some());
    }
}
