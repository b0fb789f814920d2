//! `/api/v1/api-keys` and `/api/v1/whoami`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::extract::{Authorized, needs};
use super::{AppState, allow};
use crate::auth::{ApiKey, CreatedKey, NewApiKey, Principal, Role};

/// All API keys.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// Oldest first.
    pub items: Vec<ApiKey>,
}

/// The caller, as Cohort sees it.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// The key's name.
    pub name: String,
    /// The key's id.
    pub key_id: Option<String>,
    /// The key's role (`device` for a device credential).
    pub role: Role,
    /// The device a device credential is bound to; absent for API keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<uuid::Uuid>,
}

/// List API keys (never their secrets).
#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_keys(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
) -> Result<Json<KeyList>, ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage API keys")?;
    Ok(Json(KeyList {
        items: s.keys.list(&cap)?,
    }))
}

/// Create an API key. The secret is in this response only.
#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api-keys",
    request_body = NewApiKey,
    responses((status = 201, body = CreatedKey), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_key(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    ApiJson(input): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage API keys")?;
    Ok((StatusCode::CREATED, Json(s.keys.create(&cap, input).await?)))
}

/// Revoke an API key, effective immediately.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn revoke_key(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage API keys")?;
    s.keys.revoke(&cap, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the presented key belongs to. Any valid key or device credential
/// may ask.
#[utoipa::path(
    get, path = "/api/v1/whoami", tag = "api-keys",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("device_credential" = []))
)]
pub async fn whoami(p: Principal) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: p.actor().name.clone(),
        key_id: p.actor().key_id.clone(),
        role: p.role(),
        device_id: p.device(),
    })
}
