//! Why a sign-in was refused, as one closed set of reasons. Each reason
//! carries everything the edges need (its stable code for tests and the
//! audit log, its HTTP status, the title of its page), so that adding a
//! reason is one place, and a status cannot be forgotten in a string match
//! somewhere else.

use axum::http::StatusCode;

use super::throttle::{self, Limited};
use crate::error::DomainError;

/// The reasons a sign-in (or a password activation) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The form's CSRF token is missing or stale.
    Csrf,
    /// The form or the callback's query is malformed.
    InvalidRequest,
    /// A `return_to` outside the allowed targets.
    RedirectNotAllowed,
    /// A callback for a `state` Cohort never issued or already used.
    UnknownState,
    /// A callback from another browser than the one that started.
    StateMismatch,
    /// A callback after the ten minutes a sign-in may take.
    StateExpired,
    /// The provider answered the authorization request with an error.
    ProviderError,
    /// The provider's token endpoint failed.
    TokenExchangeFailed,
    /// The ID token did not validate.
    InvalidIdToken,
    /// The plugin connector refused the identity.
    ConnectorRejected,
    /// The identity provider is turned off.
    IdpDisabled,
    /// Routing sends the identifier to an identity provider.
    NotLocal,
    /// Local sign-in is off for a group the user is in.
    LocalDisabled,
    /// Routing sends the matched user to another way of signing in.
    WrongIdp,
    /// Just-in-time creation of the user failed.
    JitFailed,
    /// No account matches the identity.
    NoMatch,
    /// More than one account matches the identity.
    Ambiguous,
    /// The identity lacks the attribute matching needs.
    MissingAttribute,
    /// The identity's account name is not acceptable (confusable, invisible).
    InvalidIdentity,
    /// The account is staged or suspended.
    UserNotActive,
    /// The username or password is not correct.
    WrongPassword,
    /// Too many failed passwords for the account.
    LockedOut,
    /// Too many sign-ins started from an address or for an identifier.
    RateLimited,
    /// The activation link expired or was used.
    ActivationInvalid,
    /// The password set through an activation link is too weak.
    WeakPassword,
    /// Something failed at Cohort.
    Internal,
}

impl Reason {
    /// The stable, machine-readable code (JSON answers, pages, audit log).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Csrf => "csrf",
            Reason::InvalidRequest => "invalid_request",
            Reason::RedirectNotAllowed => "redirect_not_allowed",
            Reason::UnknownState => "unknown_state",
            Reason::StateMismatch => "state_mismatch",
            Reason::StateExpired => "state_expired",
            Reason::ProviderError => "provider_error",
            Reason::TokenExchangeFailed => "token_exchange_failed",
            Reason::InvalidIdToken => "invalid_id_token",
            Reason::ConnectorRejected => "connector_rejected",
            Reason::IdpDisabled => "idp_disabled",
            Reason::NotLocal => "not_local",
            Reason::LocalDisabled => "local_disabled",
            Reason::WrongIdp => "wrong_idp",
            Reason::JitFailed => "jit_failed",
            Reason::NoMatch => "no_match",
            Reason::Ambiguous => "ambiguous",
            Reason::MissingAttribute => "missing_attribute",
            Reason::InvalidIdentity => "invalid_identity",
            Reason::UserNotActive => "user_not_active",
            Reason::WrongPassword => "wrong_password",
            Reason::LockedOut => "locked_out",
            Reason::RateLimited => "rate_limited",
            Reason::ActivationInvalid => "activation_invalid",
            Reason::WeakPassword => "weak_password",
            Reason::Internal => "internal",
        }
    }

    /// The HTTP status of the refusal's page or JSON answer: 401 for a
    /// wrong password, 429 for going too fast, 403 for a caller who is
    /// known but may not sign in (this way), 502 for a provider that
    /// failed, 400 for a request that cannot be followed.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::WrongPassword => StatusCode::UNAUTHORIZED,
            Reason::LockedOut | Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Reason::NoMatch
            | Reason::Ambiguous
            | Reason::UserNotActive
            | Reason::IdpDisabled
            | Reason::ConnectorRejected
            | Reason::LocalDisabled
            | Reason::MissingAttribute
            | Reason::NotLocal
            | Reason::JitFailed
            | Reason::WrongIdp
            | Reason::InvalidIdentity => StatusCode::FORBIDDEN,
            Reason::TokenExchangeFailed => StatusCode::BAD_GATEWAY,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Csrf
            | Reason::InvalidRequest
            | Reason::RedirectNotAllowed
            | Reason::UnknownState
            | Reason::StateMismatch
            | Reason::StateExpired
            | Reason::ProviderError
            | Reason::InvalidIdToken
            | Reason::ActivationInvalid
            | Reason::WeakPassword => StatusCode::BAD_REQUEST,
        }
    }

    /// The title of the refusal's page: specific where the person can act
    /// on it, "Sign-in failed" where there is nothing more to tell them.
    pub fn title(self) -> &'static str {
        match self {
            Reason::NoMatch => "No matching account",
            Reason::Ambiguous => "Account is ambiguous",
            Reason::InvalidIdentity => "Account name not accepted",
            Reason::UserNotActive => "Account not active",
            Reason::IdpDisabled => "Sign-in is turned off",
            Reason::LocalDisabled => "Password sign-in is turned off",
            Reason::RateLimited => "Too many attempts",
            _ => "Sign-in failed",
        }
    }
}

/// Why a sign-in was refused. `reason` is stable (tests, audit); `message`
/// is shown to the user.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// What kind of refusal: its code, status and title.
    pub reason: Reason,
    /// For the user's page; never reveals more than they may know.
    pub message: String,
    /// For the audit log and the server log: the detail an admin needs.
    pub detail: String,
    /// Seconds after which trying again can succeed (`Retry-After`), for
    /// refusals that are about going too fast.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal with its reason, the user's message and the admin's detail.
    pub fn new(reason: Reason, message: impl Into<String>, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub(super) fn rate_limited(limited: Limited) -> Refusal {
        let detail = match limited.scope {
            throttle::Scope::Address => "too many sign-ins started from this address",
            throttle::Scope::Identifier => "too many sign-ins started for this identifier",
        };
        Refusal {
            retry_after: Some(limited.retry_after),
            ..Refusal::new(
                Reason::RateLimited,
                format!(
                    "Too many sign-in attempts. Wait {} and try again.",
                    wait_text(limited.retry_after)
                ),
                detail,
            )
        }
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            Reason::Internal,
            "Sign-in failed because of a problem at Cohort. Try again, or ask your administrator.",
            e.to_string(),
        )
    }
}

/// "a second", "12 seconds", "3 minutes": how long to wait, for people.
fn wait_text(seconds: u64) -> String {
    match seconds {
        0 | 1 => "a second".into(),
        2..=119 => format!("{seconds} seconds"),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Self {
        Refusal::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn going_too_fast_says_how_long_to_wait_and_sets_retry_after() {
        let r = Refusal::rate_limited(Limited {
            scope: throttle::Scope::Identifier,
            retry_after: 150,
        });
        assert_eq!(r.reason.code(), "rate_limited");
        assert_eq!(r.reason.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.retry_after, Some(150));
        assert!(r.message.contains("Wait 3 minutes"), "{}", r.message);
        assert_eq!(r.detail, "too many sign-ins started for this identifier");
    }

    #[test]
    fn a_domain_failure_is_internal_and_keeps_its_detail_from_the_user() {
        let r = Refusal::from(DomainError::Internal("disk full".into()));
        assert_eq!(r.reason.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.detail.contains("disk full"));
        assert!(!r.message.contains("disk full"));
    }
}
