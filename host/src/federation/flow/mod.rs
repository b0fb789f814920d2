//! The sign-in itself: routing an identifier, the authorization code flow
//! with PKCE against the upstream provider, and the callback that turns a
//! validated ID token into a Cohort session. Local passwords end in the
//! same place.
//!
//! A started sign-in is stored under its `state`: the PKCE verifier, the
//! nonce, where to go afterwards, and a hash of a random cookie set in the
//! browser that started it. The callback takes the record out in the same
//! transaction that reads it, so a `state` works once; it must come back
//! with that cookie, so a sign-in cannot be finished in another browser
//! (login CSRF); and it expires after ten minutes.
//!
//! Every outcome, success or each reason for failure, is an audit event,
//! with the client's address and user agent. Starting a sign-in is rate
//! limited per client address and per identifier (`throttle`); a refusal
//! for going too fast is not audited, since a flood of them would be a
//! flood of durable writes.
//!
//! A local password is answered without confirming it to anyone who may
//! not use it: an identifier routed to an IdP, a user for whom local sign-in
//! is off, and a user who is not active all get an answer that does not
//! depend on the password, after a hash that takes as long as a real check.
//!
//! This file is the service and what every path shares (return targets,
//! rate limits, the audit of refusals, sweeping sign-ins that never came
//! back); `oidc` is the code flow with the upstream provider, `admit` turns
//! a validated identity into a user and a session, and `password` is local
//! sign-in with its decoy timing.

mod admit;
mod oidc;
mod password;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use cohort_storage::Store;
use serde_json::Value;
use uuid::Uuid;

use super::Idp;
use super::id_token::KeyCache;
use super::layout::PENDING;
use super::refusal::{Reason, Refusal};
use super::routing;
use super::throttle::{self, SignInLimits};
use crate::audit::{self, Record};
use crate::auth::{Actor, Origin};
use crate::credentials::{Checked, Credentials};
use crate::directory::{Directory, User};
use crate::error::DomainError;
use crate::sessions::{Method, Opened, Sessions};

use oidc::Pending;

/// Longest wait for the provider's token endpoint or keys.
const PROVIDER_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// Where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/sign-in/callback";
/// Where a sign-in ends when no (allowed) target was asked for.
pub const DEFAULT_RETURN: &str = "/sign-in/done";

/// What to do after the identifier step.
pub enum Started {
    /// Send the browser to the provider.
    Redirect {
        /// The authorization URL.
        url: String,
    },
    /// Ask for the local password.
    Password,
}

/// A finished sign-in.
pub struct Finished {
    /// The session, with its cookie value.
    pub opened: Opened,
    /// Where to send the browser.
    pub return_to: String,
    /// Who signed in.
    pub user: User,
}

/// Settings the deployment gives sign-in.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Cohort's URL as browsers reach it, without a trailing slash.
    pub public_url: String,
    /// Absolute URLs a sign-in may return to, besides Cohort's own pages.
    pub allowed_redirects: Vec<String>,
    /// How fast sign-ins may be started.
    pub rate_limit: throttle::Policy,
}

/// The sign-in service.
#[derive(Clone)]
pub struct SignIn {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    federation: super::Federation,
    directory: Directory,
    sessions: Sessions,
    credentials: Credentials,
    settings: Settings,
    keys: KeyCache,
    http: reqwest::Client,
    limits: SignInLimits,
}

impl Inner {
    /// Opens the session and records the sign-in with its id, in the
    /// caller's transaction: neither exists without the other.
    fn open_session(
        &self,
        txn: &mut cohort_storage::WriteTxn<'_>,
        actor: &Actor,
        now: DateTime<Utc>,
        user: &User,
        method: Method,
        mut fields: Vec<(&str, Value)>,
    ) -> Result<Opened, DomainError> {
        let opened = self.sessions.open_in(txn, actor, user, method)?;
        fields.push(("session_id", Value::from(opened.session.id.to_string())));
        record_sign_in(
            txn,
            actor,
            now,
            "sign_in.success",
            &user.id.to_string(),
            &fields,
        )?;
        Ok(opened)
    }
}

fn actor(origin: &Origin) -> Actor {
    Actor::named("sign-in", origin.clone())
}

impl SignIn {
    /// The service.
    pub fn new(
        store: Store,
        federation: super::Federation,
        directory: Directory,
        sessions: Sessions,
        credentials: Credentials,
        settings: Settings,
    ) -> Result<SignIn, DomainError> {
        let http = federation
            .outbound()
            .client(PROVIDER_TIMEOUT)
            .map_err(|e| DomainError::Internal(format!("the outbound HTTP client: {e}")))?;
        let limits = SignInLimits::new(&settings.rate_limit).shared_through(store.clone());
        Ok(SignIn {
            inner: Arc::new(Inner {
                store,
                federation,
                directory,
                sessions,
                credentials,
                keys: KeyCache::default(),
                http,
                limits,
                settings,
            }),
        })
    }

    /// The sessions this service opens.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Cohort's public URL.
    pub fn public_url(&self) -> &str {
        &self.inner.settings.public_url
    }

    fn redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.inner.settings.public_url)
    }

    /// Where a sign-in may return: a path on Cohort itself, or exactly one
    /// of the registered URLs. Anything else is refused rather than
    /// replaced, so a wrong link is noticed.
    pub fn check_return_to(&self, target: Option<&str>) -> Result<String, Refusal> {
        return_target(&self.inner.settings.allowed_redirects, target)
    }

    /// Takes one sign-in start from the client's address and, when there is
    /// one, the identifier; refuses with `rate_limited` when either is
    /// spent.
    fn throttle(&self, origin: &Origin, identifier: Option<&str>) -> Result<(), Refusal> {
        let now = self.inner.federation.now();
        // The identifier's limit is the account's: a user's username and
        // email address would otherwise each have an allowance of their
        // own. What names no user counts under its identity key (the
        // limiter keys it as `directory::identity` does).
        let account = identifier.and_then(|i| {
            routing::find_user(&self.inner.store, i.trim())
                .ok()
                .flatten()
                .map(|u| format!("\u{0}user {}", u.id))
        });
        let identifier = account.as_deref().or(identifier);
        self.inner
            .limits
            .check(now, origin.client_address, identifier)
            .map_err(|limited| {
                tracing::debug!(
                    request_id = %origin.request_id,
                    client = ?origin.client_address,
                    scope = ?limited.scope,
                    retry_after = limited.retry_after,
                    "sign-in rate limited"
                );
                Refusal::rate_limited(limited)
            })
    }

    /// Deletes started sign-ins that never came back.
    pub async fn sweep(&self) -> Result<usize, DomainError> {
        let now = self.inner.federation.now();
        // And the shared sign-in limits' buckets whose time has passed.
        let store = self.inner.store.clone();
        let micros = now.timestamp_micros();
        match tokio::task::spawn_blocking(move || store.sweep_rates(micros)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(buckets = n, "spent rate buckets removed"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not sweep the shared rate buckets"),
            Err(e) => tracing::warn!(error = %e, "sweeping the shared rate buckets panicked"),
        }
        let expired: Vec<Vec<u8>> = self
            .inner
            .store
            .scan(PENDING, b"", None, false)
            .filter_map(Result::ok)
            .filter(|(_, v)| {
                cohort_storage::decode_json::<Pending>(PENDING, v)
                    .map_or(true, |p| p.expires_at <= now)
            })
            .map(|(k, _)| k)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        self.inner
            .store
            .write(|txn| {
                for k in &expired {
                    txn.delete(PENDING, k);
                }
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(expired.len())
    }

    /// Records a refused sign-in, with the outcome of a password check when
    /// there was one (so the lockout count and the event commit together).
    /// Failing to write it is logged, not shown: the user's answer is the
    /// refusal either way.
    async fn audit_failure(
        &self,
        origin: &Origin,
        r: &Refusal,
        idp: Option<&Idp>,
        subject: Option<&str>,
        user_id: Option<Uuid>,
        checked: Option<&Checked>,
    ) {
        tracing::info!(request_id = %origin.request_id, client = ?origin.client_address, reason = r.reason.code(), detail = %r.detail, "sign-in refused");
        let actor = actor(origin);
        let now = self.inner.federation.now();
        let mut fields = vec![
            ("reason", Value::from(r.reason.code())),
            ("detail", Value::from(r.detail.clone())),
        ];
        if let Some(i) = idp {
            fields.push(("idp", Value::from(i.name.clone())));
        }
        if let Some(s) = subject {
            fields.push(("subject", Value::from(s)));
        }
        let resource = user_id.map_or_else(|| "-".to_string(), |u| u.to_string());
        let written = self.inner.store.write(|txn| {
            if let Some(c) = checked {
                c.record_in(txn, now)?;
            }
            record_sign_in(txn, &actor, now, "sign_in.failure", &resource, &fields)?;
            Ok::<_, DomainError>(())
        });
        let result = match written {
            Ok(c) => c.durable().await.map_err(DomainError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "could not audit a refused sign-in");
        }
    }
}

fn record_sign_in(
    txn: &mut cohort_storage::WriteTxn<'_>,
    actor: &Actor,
    now: DateTime<Utc>,
    action: &str,
    resource_id: &str,
    fields: &[(&str, Value)],
) -> Result<(), DomainError> {
    let changes: Vec<(&str, Value, Value)> = fields
        .iter()
        .map(|(k, v)| (*k, Value::Null, v.clone()))
        .collect();
    audit::record(
        txn,
        now,
        actor,
        Record {
            action,
            resource_type: "sign_in",
            resource_id: resource_id.to_string(),
            changes: audit::changes(&changes),
        },
    )?;
    Ok(())
}

/// See [`SignIn::check_return_to`]: a local path is one that stays on
/// Cohort (no scheme-relative `//`, no backslash a browser would read as a
/// slash, no control characters); anything else must be registered exactly.
fn return_target(allowed: &[String], target: Option<&str>) -> Result<String, Refusal> {
    let Some(t) = target.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_RETURN.into());
    };
    let local = t.starts_with('/')
        && !t.starts_with("//")
        && !t.starts_with("/\\")
        && !t.chars().any(|c| c.is_control() || c == '\\');
    if local || allowed.iter().any(|a| a == t) {
        return Ok(t.to_string());
    }
    Err(Refusal::new(
        Reason::RedirectNotAllowed,
        "This sign-in link asks to continue to an address Cohort does not know. Ask your administrator to register it.",
        format!("return_to {t:?} is not registered"),
    ))
}
