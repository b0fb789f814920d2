//! `/api/v1/me`: the signed-in user, for the user's own programs (a
//! session cookie or a session JWT, not an API key). Also the admin side of
//! local passwords and session keys.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::extract::{Authorized, needs};
use super::params::{IdPath, kind};
use super::sign_in::{SESSION_COOKIE, read_cookie};
use super::{AppState, allow};
use crate::auth::{Actor, Origin};
use crate::credentials::ActivationLink;
use crate::directory::User;
use crate::sessions::{IssuedToken, PublicKey, Session, SignedIn};

/// A signed-in user, from `Authorization: Bearer <session JWT>` or the
/// session cookie.
pub struct Me(pub SignedIn);

impl FromRequestParts<AppState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let sessions = s.sign_in.sessions();
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let found = match (bearer, read_cookie(s, &parts.headers, SESSION_COOKIE)) {
            (Some(token), _) => sessions.from_jwt(token),
            (None, Some(c)) => sessions.from_cookie(c),
            (None, None) => {
                return Err(ApiError::unauthorized(
                    "not signed in: send the session cookie or Authorization: Bearer <session token>",
                ));
            }
        };
        match found {
            Ok(signed_in) => Ok(Me(signed_in)),
            Err(crate::sessions::SessionError::NotSignedIn) => Err(ApiError::unauthorized(
                "the session has ended, expired, or the token is not valid",
            )),
            Err(crate::sessions::SessionError::Domain(e)) => Err(e.into()),
        }
    }
}

/// The signed-in user and their session.
#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    /// The user.
    pub user: User,
    /// The session.
    pub session: Session,
}

/// Who is signed in.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "sign-in",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)),
    security(("session" = []))
)]
pub async fn me(Me(m): Me) -> Json<MeResponse> {
    Json(MeResponse {
        user: m.user,
        session: m.session,
    })
}

/// A session JWT for the current session, for programs that cannot hold
/// the cookie. It expires with the session at the latest.
#[utoipa::path(
    post, path = "/api/v1/me/token", tag = "sign-in",
    responses((status = 200, body = IssuedToken), (status = 401, body = ErrorBody)),
    security(("session" = []))
)]
pub async fn token(State(s): State<AppState>, Me(m): Me) -> Result<Json<IssuedToken>, ApiError> {
    Ok(Json(s.sign_in.sessions().issue_token(&m.session)?))
}

/// Signs out: ends the session the cookie or token belongs to.
#[utoipa::path(
    post, path = "/api/v1/me/sign-out", tag = "sign-in",
    responses((status = 204), (status = 401, body = ErrorBody)),
    security(("session" = []))
)]
pub async fn sign_out(
    State(s): State<AppState>,
    origin: Origin,
    Me(m): Me,
) -> Result<StatusCode, ApiError> {
    let actor = Actor::named(format!("user:{}", m.user.username), origin);
    s.sign_in.sessions().end(&actor, &m.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new password for a user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordInput {
    /// 12 to 256 characters.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
}

/// Set a user's local password (hashed with argon2id; never returned).
#[utoipa::path(
    put, path = "/api/v1/users/{id}/password", tag = "sign-in",
    params(("id" = String, Path, description = "User id")),
    request_body = PasswordInput,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn set_password(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::User>,
    ApiJson(input): ApiJson<PasswordInput>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "set passwords")?;
    s.credentials
        .set_password(&cap, &id, input.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user's local password.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}/password", tag = "sign-in",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn clear_password(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::User>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "remove passwords")?;
    s.credentials.clear_password(&cap, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an activation link with which the user sets their own password.
/// It works once and expires after 72 hours.
#[utoipa::path(
    post, path = "/api/v1/users/{id}/activation-link", tag = "sign-in",
    params(("id" = String, Path, description = "User id")),
    responses((status = 201, body = ActivationLink), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn activation_link(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::User>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "create activation links")?;
    let link = s.credentials.activation_link(&cap, &id).await?;
    Ok((StatusCode::CREATED, Json(link)).into_response())
}

/// The session signing keys.
#[derive(Serialize, ToSchema)]
pub struct SessionKeys {
    /// Newest (signing) first.
    pub items: Vec<PublicKey>,
}

/// List the session signing keys (public halves).
#[utoipa::path(
    get, path = "/api/v1/session-keys", tag = "sign-in",
    responses((status = 200, body = SessionKeys)),
    security(("api_key" = []))
)]
pub async fn list_session_keys(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<SessionKeys>, ApiError> {
    allow(p.read(), &p, "read session keys")?;
    Ok(Json(SessionKeys {
        items: s.sign_in.sessions().signer().public_keys(),
    }))
}

/// Rotate the session signing key: a new key signs from now on; tokens
/// signed by the two previous keys stay valid until they expire.
#[utoipa::path(
    post, path = "/api/v1/session-keys/rotate", tag = "sign-in",
    responses((status = 201, body = PublicKey)),
    security(("api_key" = []))
)]
pub async fn rotate_session_key(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_keys(), &p, "rotate session keys")?;
    let key = s.sign_in.sessions().signer().rotate(&cap).await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

/// `GET /.well-known/jwks.json`: the public keys of session tokens.
pub async fn jwks(State(s): State<AppState>, _: HeaderMap) -> Response {
    let mut resp = Json(s.sign_in.sessions().signer().jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("max-age=300"),
    );
    resp
}
