//! `/api/v1/device-enrollment-tokens`, `POST /api/v1/devices/enroll` and
//! `/api/v1/devices/{id}/credential`: parse, authorize, call `devices`.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::devices::device_id;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, bearer, json_body};
use super::extract::{Authorized, needs};
use super::params::{IdPath, Paging, kind};
use super::{AppState, allow, allow_device};
use crate::auth::{Origin, Principal};
use crate::devices::{
    CreatedEnrollmentToken, DeviceCredential, Devices, EnrollError, Enrollment, EnrollmentToken,
    IssuedCredential, NewEnrollmentToken,
};
use crate::directory::DeviceInput;
use crate::page::Page;

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> Self {
        match e {
            EnrollError::Refused(r) => ApiError::unauthorized(r.to_string()).with_code(r.code()),
            EnrollError::Domain(d) => d.into(),
        }
    }
}

/// A page of enrollment tokens (documentation type for `Page<EnrollmentToken>`).
#[derive(Serialize, ToSchema)]
pub struct TokenPage {
    /// Oldest first.
    pub items: Vec<EnrollmentToken>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page<EnrollmentToken>> for TokenPage {
    fn from(p: Page<EnrollmentToken>) -> Self {
        TokenPage {
            items: p.items,
            next_cursor: p.next_cursor,
        }
    }
}

fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Create a device enrollment token. The secret is in this response only.
#[utoipa::path(
    post, path = "/api/v1/device-enrollment-tokens", tag = "enrollment",
    request_body = NewEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_token(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    ApiJson(input): ApiJson<NewEnrollmentToken>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage device enrollment tokens")?;
    let token = s.devices.create_token(&cap, input).await?;
    Ok(created(
        format!("/api/v1/device-enrollment-tokens/{}", token.token.record.id),
        token,
    ))
}

/// List device enrollment tokens (never their secrets), oldest first.
#[utoipa::path(
    get, path = "/api/v1/device-enrollment-tokens", tag = "enrollment",
    params(
        Paging,
        ("state" = Option<crate::devices::TokenState>, Query, description = "Only tokens in this state: active, expired, exhausted or revoked"),
    ),
    responses((status = 200, body = TokenPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_tokens(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    paging: Paging,
) -> Result<Json<TokenPage>, ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage device enrollment tokens")?;
    if let Some((name, _)) = paging
        .pairs
        .iter()
        .find(|(n, _)| !matches!(n.as_str(), "limit" | "cursor" | "state"))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("unknown query parameter {name:?}; this list takes limit, cursor and state"),
        )
        .with_field(name.clone()));
    }
    let state = Devices::token_state_filter(paging.get("state"))?;
    Ok(Json(
        s.devices.list_tokens(&cap, state, &paging.page)?.into(),
    ))
}

/// Get a device enrollment token.
#[utoipa::path(
    get, path = "/api/v1/device-enrollment-tokens/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = EnrollmentToken), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_token(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    IdPath(id, _): IdPath<kind::EnrollmentToken>,
) -> Result<Json<EnrollmentToken>, ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage device enrollment tokens")?;
    Ok(Json(s.devices.get_token(&cap, &id)?))
}

/// Revoke a device enrollment token, effective immediately. Devices it
/// enrolled keep their credentials. The token stays listed as `revoked`.
#[utoipa::path(
    delete, path = "/api/v1/device-enrollment-tokens/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn revoke_token(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    IdPath(id, _): IdPath<kind::EnrollmentToken>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_keys(), &p, "manage device enrollment tokens")?;
    s.devices.revoke_token(&cap, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enroll a device with an enrollment token (`Authorization: Bearer
/// cohort_enroll_...`). Creates the device, or enrolls again the one device
/// with the same serial number (200 instead of 201), and returns the
/// device credential the agent uses from now on. The secret is in this
/// response only.
#[utoipa::path(
    post, path = "/api/v1/devices/enroll", tag = "enrollment",
    request_body = DeviceInput,
    responses(
        (status = 201, description = "A new device was enrolled", body = Enrollment),
        (status = 200, description = "An existing device with this serial number was enrolled again", body = Enrollment),
        (status = 401, description = "No, an unknown, expired, used-up or revoked enrollment token (`invalid_enrollment_token`, `enrollment_token_expired`, `enrollment_token_exhausted`, `enrollment_token_revoked`)", body = ErrorBody),
        (status = 409, description = "Several devices have this serial number, or the token's device group can no longer take devices", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("enrollment_token" = []))
)]
pub async fn enroll(
    State(s): State<AppState>,
    origin: Origin,
    req: Request,
) -> Result<Response, ApiError> {
    let token = bearer(req.headers(), "enrollment token")?;
    // The token is checked before the body is read, so an unauthenticated
    // caller learns nothing about what a valid body looks like; the
    // enrollment checks it again in its transaction.
    if let Some(refusal) = s.devices.token_refusal(&token)? {
        return Err(EnrollError::Refused(refusal).into());
    }
    let input: DeviceInput = json_body(req, s.max_body_bytes).await?;
    let enrollment = s.devices.enroll(&token, &origin, input).await?;
    let location = format!("/api/v1/devices/{}", enrollment.device.id);
    if enrollment.reenrolled {
        let mut resp = Json(enrollment).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
        Ok(resp)
    } else {
        Ok(created(location, enrollment))
    }
}

/// The device's credential (never its secret): when it was issued, which
/// enrollment token enrolled the device, when it was last used. Readers,
/// and the device itself.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/credential", tag = "enrollment",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceCredential), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("device_credential" = []))
)]
pub async fn get_credential(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeviceCredential>, ApiError> {
    let id = device_id(&p, &id)?;
    let read = allow_device(p.read_device(&id), &p, "read the credential of")?;
    Ok(Json(s.devices.credentials().get(&read, &id)?))
}

/// Revoke the device's credential, effective immediately. The agent must
/// enroll again, or an admin rotate, before the device can check in.
#[utoipa::path(
    delete, path = "/api/v1/devices/{id}/credential", tag = "enrollment",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Revoked"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn revoke_credential(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
    IdPath(id, _): IdPath<kind::Device>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_keys(), &p, "revoke device credentials")?;
    s.devices.credentials().revoke(&cap, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the device's credential with a new secret; the old one stops
/// working at once. The device itself may rotate its own credential; an
/// admin may rotate any (or issue one to a device that has none). The new
/// secret is in this response only.
#[utoipa::path(
    post, path = "/api/v1/devices/{id}/credential/rotate", tag = "enrollment",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = IssuedCredential), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "The device's own credential was revoked, rotated or replaced while the request ran (`credential_replaced`); nothing was issued", body = ErrorBody)),
    security(("device_credential" = []), ("api_key" = []))
)]
pub async fn rotate_credential(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<IssuedCredential>, ApiError> {
    let id = device_id(&p, &id)?;
    let cap = allow_device(
        p.rotate_device_credential(&id),
        &p,
        "rotate the credential of",
    )?;
    Ok(Json(s.devices.credentials().rotate(&cap).await?))
}
