//! Local password sign-in, for identifiers routing keeps at Cohort. The
//! answer never confirms a password to anyone who may not use it: an
//! identifier routed to an IdP, a user for whom local sign-in is off, and a
//! user who is not active all get an answer that does not depend on the
//! password, after a decoy hash that takes as long as a real check. Apart
//! from the code flow because it shares nothing with it but the session
//! and the audit event at the end.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Finished, SignIn, actor};
use crate::auth::Origin;
use crate::credentials::{Checked, PasswordError};
use crate::directory::{SubjectKind, User, UserState};
use crate::error::DomainError;
use crate::federation::refusal::{Reason, Refusal};
use crate::federation::routing::{self, Target};
use crate::sessions::Method;

impl SignIn {
    /// The password step for an identifier that routing sends to local
    /// sign-in.
    pub async fn password(
        &self,
        origin: &Origin,
        identifier: &str,
        password: &str,
        return_to: String,
    ) -> Result<Finished, Refusal> {
        self.throttle(origin, Some(identifier))?;
        let (user, checked) = match self.check_password(identifier, password).await {
            Ok(found) => found,
            Err(failed) => {
                self.audit_failure(
                    origin,
                    &failed.refusal,
                    None,
                    None,
                    failed.user_id,
                    failed.checked.as_ref(),
                )
                .await;
                return Err(failed.refusal);
            }
        };
        let actor = actor(origin);
        let now = self.inner.federation.now();
        let inner = &self.inner;
        let opened = inner
            .store
            .write(|txn| {
                checked.record_in(txn, now)?;
                let opened = inner.open_session(
                    txn,
                    &actor,
                    now,
                    &user,
                    Method::Password,
                    vec![("method", Value::from("password"))],
                )?;
                Ok::<_, DomainError>(opened)
            })?
            .durable()
            .await
            .map_err(DomainError::from)?;
        drop(checked);
        Ok(Finished {
            opened,
            return_to,
            user,
        })
    }

    /// Decides a password attempt. Whoever may not sign in with a password
    /// (routed to an IdP, local sign-in off for them) is told so whatever
    /// the password, after a decoy hash; anyone else's password is checked,
    /// and only an active user's can be right, so a suspended or staged
    /// user hears "wrong password" as a stranger would.
    async fn check_password(
        &self,
        identifier: &str,
        password: &str,
    ) -> Result<(User, Checked), FailedPassword> {
        let store = &self.inner.store;
        let failed = |refusal: Refusal, user_id: Option<Uuid>| FailedPassword {
            refusal,
            user_id,
            checked: None,
        };
        let routing = routing::load(store).map_err(|e| failed(e.into(), None))?;
        let users = crate::directory::schema(store, SubjectKind::User)
            .map_err(|e| failed(e.into(), None))?;
        let now = self.inner.federation.now();
        let route = routing::route(store, &users, &routing, identifier, now)
            .map_err(|e| failed(e.into(), None))?;
        let user = routing::find_user(store, identifier).map_err(|e| failed(e.into(), None))?;
        let user_id = user.as_ref().map(|u| u.id);
        let credentials = &self.inner.credentials;
        // Takes the time a real check takes; the answer is already decided.
        let decoy = || async {
            credentials
                .check(None, password)
                .await
                .map(drop)
                .map_err(|e| failed(password_error(e, now), user_id))
        };
        if let Target::Idp { .. } = route.target {
            decoy().await?;
            return Err(failed(
                Refusal::new(
                    Reason::NotLocal,
                    "Your account signs in through your organization's identity provider. Start again.",
                    "routing sends this identifier to an identity provider",
                ),
                user_id,
            ));
        }
        if let Some(u) = &user {
            for g in &routing.local_sign_in_disabled_for {
                if crate::groups::read::is_member(store, g, &u.id)
                    .map_err(|e| failed(DomainError::from(e).into(), user_id))?
                {
                    decoy().await?;
                    return Err(failed(
                        Refusal::new(
                            Reason::LocalDisabled,
                            "Signing in with a password is turned off for your account. Ask your administrator.",
                            format!("member of group {g}, for which local sign-in is off"),
                        ),
                        user_id,
                    ));
                }
            }
        }
        let checked = credentials
            .check(user.as_ref(), password)
            .await
            .map_err(|e| failed(password_error(e, now), user_id))?;
        match user {
            Some(u) if checked.ok => Ok((u, checked)),
            user => {
                let detail = match &user {
                    None => "no such user".to_string(),
                    Some(u) if u.state != UserState::Active => format!(
                        "user is {}; answered as a wrong password, so that the password is not confirmed",
                        u.state.as_str()
                    ),
                    Some(_) => "wrong password, or no password set".to_string(),
                };
                Err(FailedPassword {
                    refusal: Refusal::new(
                        Reason::WrongPassword,
                        "The username or password is not correct.",
                        detail,
                    ),
                    user_id,
                    checked: Some(checked),
                })
            }
        }
    }
}

/// A password attempt that did not sign in: the answer, the user it was
/// about, and the check whose outcome goes into the lockout count.
struct FailedPassword {
    refusal: Refusal,
    user_id: Option<Uuid>,
    checked: Option<Checked>,
}

/// The refusal for a password that could not be checked at all.
pub(super) fn password_error(e: PasswordError, now: DateTime<Utc>) -> Refusal {
    match e {
        PasswordError::LockedOut { until } => {
            let mut r = Refusal::new(
                Reason::LockedOut,
                "Too many failed attempts. Wait a few minutes and try again.",
                "too many recent failures",
            );
            r.retry_after = until.map(|t| (t - now).num_seconds().max(1) as u64);
            r
        }
        PasswordError::Domain(e) => e.into(),
    }
}
