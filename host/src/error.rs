//! The domain's error type. It says what went wrong in domain terms; the HTTP
//! layer (`api::error`) alone decides which status and code that becomes.

use cohort_storage::StorageError;

/// Why a domain operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The addressed resource does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `user`, `device`, `binding`, …
        kind: &'static str,
        /// The id or name that was looked up.
        id: String,
    },
    /// The change would break a uniqueness or referential rule.
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code, e.g. `username_taken`.
        code: &'static str,
        /// The input field at fault, when there is one.
        field: Option<String>,
        /// A sentence for people.
        message: String,
    },
    /// The input is well-formed but breaks a rule of the directory.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, as a dotted path (`custom_attributes.level`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A username or email breaks the identity rules of
    /// [`crate::directory::identity`] (invisible characters, mixed scripts,
    /// characters RFC 8265 disallows, a bad domain).
    #[error("{field}: {error} ({})", error.code())]
    Identity {
        /// `username` or `email`.
        field: String,
        /// Which rule, with its stable code.
        error: crate::directory::identity::IdentityError,
    },
    /// A list query has a bad parameter.
    #[error("{field}: {message}")]
    BadQuery {
        /// The query parameter at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Optimistic concurrency: the caller edited an older version.
    #[error("the resource has changed (current version {current}); fetch it again and retry")]
    VersionMismatch {
        /// The version now stored.
        current: u64,
    },
    /// The requested user state change is not one of the allowed transitions.
    #[error("cannot change state from {from} to {to}; allowed: {allowed}")]
    InvalidTransition {
        /// Current state.
        from: &'static str,
        /// Requested state.
        to: &'static str,
        /// The states reachable from `from`.
        allowed: String,
    },
    /// The input passes one of the limits of [`crate::limits`].
    #[error("{field}: {message}")]
    Limit {
        /// `too_long`, `too_deep` or `too_many`.
        code: &'static str,
        /// Where, as a path: `rule/conditions/1/expression`.
        field: String,
        /// What the limit is, for the admin.
        message: String,
    },
    /// A group rule is malformed or refers to something it may not.
    #[error("{field}: {message}")]
    InvalidRule {
        /// Where in the rule, as a path: `rule/conditions/1/operator`.
        field: String,
        /// What is wrong, for the admin.
        message: String,
    },
    /// An outbound request the operation needs was refused by the outbound
    /// policy or got no answer. The transport's detail is in the log only.
    #[error("{field}: the {what} could not be fetched: {error}")]
    Outbound {
        /// The input that named the upstream (`instance`).
        field: String,
        /// What was being fetched, for people.
        what: &'static str,
        /// Why, as a stable code.
        error: crate::outbound::OutboundError,
    },
    /// A plugin the operation needs could not be called or failed.
    #[error(transparent)]
    Plugin(#[from] crate::plugins::PluginError),
    /// The storage layer failed; the change was not made.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something Cohort holds is unusable (a sealed key that no longer
    /// opens). The message is for the log, not the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`DomainError::InvalidRule`].
    pub fn invalid_rule(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::InvalidRule {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`DomainError::BadQuery`].
    pub fn bad_query(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::BadQuery {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`DomainError::NotFound`].
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        DomainError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// The rule for names people choose and other records refer to (API keys,
/// plugin instances): 1–64 letters, digits, `.`, `_` or `-`, so they are safe
/// in URLs, logs and the audit log's actor field.
pub fn check_name(name: &str) -> Result<(), DomainError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "name",
            "must be 1-64 characters of letters, digits, '.', '_' or '-'",
        ))
    }
}
