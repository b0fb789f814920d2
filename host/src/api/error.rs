//! The one place where errors become HTTP responses. Every error an API
//! client can see has the same shape:
//!
//! ```json
//! {"error": {"code": "username_taken", "message": "...", "field": "username"}}
//! ```
//!
//! `code` is stable and meant for programs; `message` is for people; `field`
//! names the offending input (a dotted JSON path, a query parameter or a
//! header) when there is one. Internal details go to the log, not the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::DomainError;
use cohort_storage::StorageError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

/// The error envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, query parameter or header, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Replaces the stable code (a 401 that says why the credential was
    /// refused, say).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let f = field.into();
        self.field = (!f.is_empty()).then_some(f);
        self
    }

    /// 401: no or unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the caller (as `Principal::describe` names it: "an API key
    /// with role read-only") may not do this.
    pub fn forbidden(who: &str, what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{who} may not {what}"),
        )
    }

    /// 404 for a route that does not exist.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The offending field, query parameter or header, if named.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The status this error is sent with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            DomainError::Conflict {
                code,
                field,
                message,
            } => ApiError::new(StatusCode::CONFLICT, code, message)
                .with_field(field.unwrap_or_default()),
            DomainError::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
                    .with_field(field)
            }
            DomainError::Identity { field, error } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                error.code(),
                error.to_string(),
            )
            .with_field(field),
            DomainError::Limit {
                code,
                field,
                message,
            } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field),
            DomainError::InvalidRule { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rule", message)
                    .with_field(field)
            }
            // Like any other discovery problem, the admin's to fix (a wrong
            // issuer, a missing `[outbound]` exception): 422, with a code
            // that says which and no transport detail.
            DomainError::Outbound { field, what, error } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                error.code(),
                format!("the {what} could not be fetched: {error}; the server log has the cause"),
            )
            .with_field(field),
            DomainError::Plugin(p) => p.into(),
            DomainError::BadQuery { field, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_field(field)
            }
            DomainError::VersionMismatch { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                e.to_string(),
            )
            .with_field("If-Match"),
            DomainError::InvalidTransition { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state_transition",
                e.to_string(),
            )
            .with_field("state"),
            DomainError::Storage(StorageError::Poisoned(_)) => {
                tracing::error!(error = %e, "write refused: storage is poisoned");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage cannot accept writes; see the server log",
                )
            }
            DomainError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
            DomainError::Storage(inner) => {
                tracing::error!(error = %inner, "storage error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<crate::plugins::PluginError> for ApiError {
    fn from(e: crate::plugins::PluginError) -> Self {
        use crate::plugins::PluginError as P;
        let status = match &e {
            P::NotFound(_) => StatusCode::NOT_FOUND,
            P::Disabled(_) | P::WrongWorld { .. } => StatusCode::CONFLICT,
            P::InputTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            P::Load { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            P::Busy => StatusCode::SERVICE_UNAVAILABLE,
            // The plugin misbehaved: the server is fine, the upstream
            // "gateway" (the plugin) is not.
            _ => StatusCode::BAD_GATEWAY,
        };
        let field = matches!(e, P::Load { .. }).then_some("component");
        let err = ApiError::new(status, e.code(), e.to_string());
        match field {
            Some(f) => err.with_field(f),
            None => err,
        }
    }
}

impl From<crate::plugins::registry::Error> for ApiError {
    fn from(e: crate::plugins::registry::Error) -> Self {
        match e {
            crate::plugins::registry::Error::Domain(d) => d.into(),
            crate::plugins::registry::Error::Plugin(p) => p.into(),
        }
    }
}

impl From<cohort_storage::StorageError> for ApiError {
    fn from(e: cohort_storage::StorageError) -> Self {
        DomainError::from(e).into()
    }
}
