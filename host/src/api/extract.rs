//! Extractors that turn malformed requests into the standard error shape
//! instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Origin, Principal};
use crate::json::{self, DecodeError};

/// The id of the current request, set by the request-id middleware.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A JSON body: 415 without a JSON content type, 413 over the size limit,
/// 400 for malformed JSON (with line and column), 422 for a wrong shape
/// (naming the field).
pub struct ApiJson<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// How much of an oversized body is read and discarded before answering 413.
/// Closing a connection with unread request data makes the kernel send a
/// reset, and many clients then never see the 413; draining a bounded amount
/// lets them read it.
const DRAIN_FACTOR: usize = 16;

/// Reads the body up to `limit` bytes; `Ok(None)` when it is larger.
async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Option<Vec<u8>>, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", e.to_string())
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit.saturating_mul(DRAIN_FACTOR) {
                break;
            }
        }
    }
    Ok((seen <= limit).then_some(buf))
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        json_body(req, state.max_body_bytes).await.map(ApiJson)
    }
}

/// Reads a JSON body of at most `limit` bytes, with the same errors as
/// [`ApiJson`]. For the few endpoints whose bodies may be larger than the
/// global limit (plugin uploads).
pub async fn json_body<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
        .with_field("Content-Type"));
    }
    let Some(bytes) = read_limited(req.into_body(), limit).await? else {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        ));
    };
    match json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(DecodeError::Syntax { position, message }) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {message} at {position}"),
        )
        .with_field(position)),
        Err(DecodeError::TooDeep { position, limit }) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deep",
            format!(
                "the body nests objects and arrays more than {limit} levels deep (at {position}); \
                 {limit} is the limit"
            ),
        )
        .with_field(position)),
        Err(DecodeError::Shape { field, message }) => {
            Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
                    .with_field(field),
            )
        }
    }
}

/// A JSON merge patch (RFC 7396) body. Every resource it can patch is an
/// object, so a patch that is not one (it would replace the whole resource)
/// is refused with the other shape errors of a body: 422, before `If-Match`
/// is compared, as the OpenAPI document's `type: object` promises.
pub struct MergePatch(pub serde_json::Value);

impl FromRequest<AppState> for MergePatch {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let patch: serde_json::Value = json_body(req, state.max_body_bytes).await?;
        if !patch.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "a merge patch must be a JSON object of the fields to change",
            ));
        }
        Ok(MergePatch(patch))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(String::new())))
    }
}

/// The request's origin (id, client address, user agent), set by the
/// request-id middleware; what the audit log records for a change.
impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(origin_of(parts))
    }
}

fn origin_of(parts: &Parts) -> Origin {
    parts
        .extensions
        .get::<Origin>()
        .cloned()
        .unwrap_or_else(|| {
            Origin::internal(
                parts
                    .extensions
                    .get::<RequestId>()
                    .map(|r| r.0.clone())
                    .unwrap_or_default(),
            )
        })
}

/// What a handler requires of its caller, checked by [`Authorized`] before
/// any later extractor reads the body or the query: a caller who may not
/// call the endpoint at all learns that (403) before anything about the
/// shape of their input (400, 415 or 422).
pub trait Requirement {
    /// The action, for the 403's message: "a read-only key may not <WHAT>".
    const WHAT: &'static str;
    /// Whether the caller's role allows the action at all. Checks that need
    /// the request's data (which device) stay in the handler.
    fn met(p: &Principal) -> bool;
}

/// The authenticated caller, who meets `R`. Put it before the body and
/// query extractors: axum runs extractors in order.
pub struct Authorized<R>(pub Principal, pub std::marker::PhantomData<R>);

impl<R: Requirement> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, state).await?;
        if !R::met(&p) {
            return Err(ApiError::forbidden(&p.describe(), R::WHAT));
        }
        Ok(Authorized(p, std::marker::PhantomData))
    }
}

/// The [`Requirement`]s, one per capability of [`Principal`].
pub mod needs {
    use super::Requirement;
    use crate::auth::Principal;

    macro_rules! requirement {
        ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
            $(#[$doc])*
            pub enum $name {}
            impl Requirement for $name {
                const WHAT: &'static str = $what;
                fn met(p: &Principal) -> bool {
                    let check: fn(&Principal) -> bool = $check;
                    check(p)
                }
            }
        };
    }

    requirement!(
        /// [`Principal::read`].
        Read, "read the directory", |p| p.read().is_some()
    );
    requirement!(
        /// [`Principal::manage_directory`].
        ManageDirectory, "change the directory", |p| p.manage_directory().is_some()
    );
    requirement!(
        /// [`Principal::change_user_state`].
        ChangeUserState, "change users' states", |p| p.change_user_state().is_some()
    );
    requirement!(
        /// [`Principal::manage_plugins`].
        ManagePlugins, "manage plugins", |p| p.manage_plugins().is_some()
    );
    requirement!(
        /// [`Principal::manage_keys`].
        ManageKeys, "manage API keys and backups", |p| p.manage_keys().is_some()
    );
    requirement!(
        /// The role part of [`Principal::check_in_device`]: whose device it
        /// is (a credential checks in only its own) needs the path, and the
        /// handler checks it.
        CheckInDevice, "check in", |p| !matches!(
            p.check_in_device(&uuid::Uuid::nil()),
            Err(crate::auth::DeviceDenied::Role)
        )
    );
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let origin = origin_of(parts);
        let key = bearer(&parts.headers, "API key")?;
        bearer_principal(state, &key, &origin)
    }
}

/// The principal for a bearer secret: a device credential (tried first for
/// its prefix, since check-ins are most of the traffic) or an API key. An
/// enrollment token is refused with a pointer to the one endpoint that
/// takes it.
fn bearer_principal(state: &AppState, key: &str, origin: &Origin) -> Result<Principal, ApiError> {
    use crate::devices::{CREDENTIAL_PREFIX, TOKEN_PREFIX};
    if key.starts_with(CREDENTIAL_PREFIX)
        && let Some(p) = state.devices.credentials().authenticate(key, origin)?
    {
        return Ok(p);
    }
    if let Some(p) = state.keys.authenticate(key, origin)? {
        return Ok(p);
    }
    Err(if key.starts_with(TOKEN_PREFIX) {
        ApiError::unauthorized(
            "this is a device enrollment token: it is accepted only by POST /api/v1/devices/enroll, which returns the device credential to use here",
        )
    } else if key.starts_with(CREDENTIAL_PREFIX) {
        ApiError::unauthorized(
            "invalid device credential: it was rotated or revoked, or its device deleted; enroll the device again",
        )
    } else {
        ApiError::unauthorized("invalid API key")
    })
}

/// The caller, when the request carries a valid bearer secret; `None` for
/// no secret or one that authenticates nobody. For endpoints that answer
/// everyone and tell an authenticated reader more.
pub fn principal_if_any(
    state: &AppState,
    headers: &HeaderMap,
    origin: &Origin,
) -> Option<Principal> {
    let key = bearer(headers, "API key").ok()?;
    bearer_principal(state, &key, origin).ok()
}

/// The bearer secret of a request, or a 401 naming what is missing.
pub fn bearer(headers: &HeaderMap, what: &str) -> Result<String, ApiError> {
    let header = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(format!(
            "missing {what}: send Authorization: Bearer <{what}>"
        ))
    })?;
    header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "malformed Authorization header: expected Bearer <{what}>"
            ))
        })
}

/// The version an `If-Match` header demands, if any. `*` matches anything;
/// an ETag Cohort did not issue can never match (412 follows).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "If-Match is not ASCII",
            )
            .with_field("If-Match")
        })?
        .trim();
    if v == "*" {
        return Ok(None);
    }
    let tag = v.strip_prefix("W/").unwrap_or(v);
    Ok(Some(tag.trim_matches('"').parse::<u64>().unwrap_or(0)))
}

/// Checks that every path segment and query parameter percent-decodes to
/// UTF-8. Names the first parameter that does not (`path` for the path).
pub fn check_target(path: &str, query: Option<&str>) -> Result<(), ApiError> {
    use percent_encoding::percent_decode_str;
    if percent_decode_str(path).decode_utf8().is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path is not valid UTF-8 once percent-decoded",
        )
        .with_field("path"));
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // `+` is a space in a query string; it never changes validity.
        let decode = |s: &str| percent_decode_str(s).decode_utf8().is_ok();
        let name_text = percent_decode_str(name).decode_utf8_lossy().into_owned();
        if !decode(name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "the query parameter name {name_text:?} is not valid UTF-8 once percent-decoded"
                ),
            )
            .with_field(name_text));
        }
        if !decode(value) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("the value of {name_text} is not valid UTF-8 once percent-decoded"),
            )
            .with_field(name_text));
        }
    }
    Ok(())
}

/// The query string as name/value pairs, in order.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("malformed query string: {e}"),
        )
    })
}

/// The ETag of a resource version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// A versioned resource as a response: its ETag always, and its `Location`
/// (`{collection}/{id}`) when it was just created.
pub fn versioned<T: serde::Serialize>(
    status: axum::http::StatusCode,
    version: u64,
    collection: &str,
    id: uuid::Uuid,
    body: T,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::ETAG,
        etag(version).parse().expect("etag is ASCII"),
    );
    if status == axum::http::StatusCode::CREATED {
        headers.insert(
            axum::http::header::LOCATION,
            format!("{collection}/{id}")
                .parse()
                .expect("location is ASCII"),
        );
    }
    (status, headers, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn if_match_accepts_strong_weak_and_star() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"7\""));
        assert_eq!(if_match(&h).unwrap(), Some(7));
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"8\""));
        assert_eq!(if_match(&h).unwrap(), Some(8));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(if_match(&h).unwrap(), Some(0));
    }

    #[test]
    fn targets_must_decode_to_utf8() {
        assert!(check_target("/api/v1/users", Some("department=R%26D&q=caf%C3%A9+x")).is_ok());
        assert!(check_target("/api/v1/users", Some("&&a&=b")).is_ok());
        let e = check_target("/api/v1/users", Some("a=1&department=%FF")).unwrap_err();
        assert_eq!(
            (e.status(), e.field()),
            (StatusCode::BAD_REQUEST, Some("department"))
        );
        let e = check_target("/api/v1/users", Some("%C3=1")).unwrap_err();
        assert_eq!(e.field(), Some("\u{fffd}"));
        let e = check_target("/api/v1/users/%FF", None).unwrap_err();
        assert_eq!(e.field(), Some("path"));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
