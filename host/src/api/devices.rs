//! `/api/v1/devices`: parse, authorize, call the directory, shape the answer.

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, MergePatch, if_match, versioned};
use super::extract::{Authorized, needs};
use super::params::{IdPath, Paging, kind, parse_id};
use super::{AppState, allow, allow_device};
use crate::auth::Principal;
use crate::directory::{Binding, CheckIn, Device, DeviceInput, SubjectKind};
use crate::page::Page;

fn device_response(status: StatusCode, device: Device) -> Response {
    versioned(status, device.version, "/api/v1/devices", device.id, device)
}

/// List devices, filtered by attribute and sorted by an indexed key.
#[utoipa::path(
    get, path = "/api/v1/devices", tag = "devices",
    params(
        Paging,
        ("sort" = Option<String>, Query, pattern = "^-?(created_at|hostname)$", description = "created_at (default) or hostname; prefix '-' for descending"),
        ("os_family" = Option<String>, Query, description = "Filter by OS family. Any other attribute name filters too"),
    ),
    responses((status = 200, body = Page<Device>), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_devices(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Paging { page, pairs }: Paging,
) -> Result<Json<Page<Device>>, ApiError> {
    let read = allow(p.read(), &p, "read devices")?;
    let query = s.directory.device_query(&pairs)?;
    Ok(Json(s.directory.list_devices(&read, &query, &page)?))
}

/// Create a device.
#[utoipa::path(
    post, path = "/api/v1/devices", tag = "devices",
    request_body = DeviceInput,
    responses((status = 201, body = Device), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_device(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<DeviceInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "create devices")?;
    let device = s.directory.create_device(&cap, input).await?;
    Ok(device_response(StatusCode::CREATED, device))
}

/// Get a device. A device credential may read its own device only.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = Device), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("device_credential" = []))
)]
pub async fn get_device(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = device_id(&p, &id)?;
    let read = allow_device(p.read_device(&id), &p, "read")?;
    let device = s.directory.get_device(&read, &id)?;
    Ok(device_response(StatusCode::OK, device))
}

/// The device id in the path. For a device credential, an id that is not
/// even a UUID is another device too (403, not 404), so that a credential
/// learns nothing about which ids exist.
pub(super) fn device_id(p: &Principal, raw: &str) -> Result<uuid::Uuid, ApiError> {
    match (uuid::Uuid::parse_str(raw), p.device()) {
        (Ok(id), _) => Ok(id),
        (Err(_), Some(own)) => Err(super::device_mismatch(own, "act for")),
        (Err(_), None) => parse_id::<kind::Device>(raw),
    }
}

/// Change a device's fields with a JSON merge patch (RFC 7396).
#[utoipa::path(
    patch, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body(content = Object, description = "Merge patch over the fields of DeviceInput", content_type = "application/merge-patch+json"),
    responses((status = 200, body = Device), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn update_device(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Device>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change devices")?;
    let device = s
        .directory
        .update_device(&cap, &id, &patch, if_match(&headers)?)
        .await?;
    Ok(device_response(StatusCode::OK, device))
}

/// Delete a device, with its user bindings.
#[utoipa::path(
    delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_device(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Device>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "delete devices")?;
    s.directory
        .delete_device(&cap, &id, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Report a device's current attributes and update `last_contact`. For the
/// device's own credential, `device-agent` keys and admins; a device
/// credential checking in for another device gets 403 `device_mismatch`.
#[utoipa::path(
    post, path = "/api/v1/devices/{id}/check-in", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body = CheckIn,
    responses((status = 200, body = Device), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Another device has the reported serial number (`serial_number_taken`)", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("device_credential" = []), ("api_key" = []))
)]
pub async fn check_in(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::CheckInDevice>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = device_id(&p, &id)?;
    let cap = allow_device(p.check_in_device(&id), &p, "check in")?;
    // Whose device it is needs the path, so the body is read only now: a
    // credential reporting for another device learns nothing about the
    // body's shape, and cannot make the server wait for one.
    let ApiJson(report) = ApiJson::<CheckIn>::from_request(req, &s).await?;
    let device = s.directory.check_in_device(&cap, report).await?;
    Ok(device_response(StatusCode::OK, device))
}

/// The users bound to a device.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/users", tag = "bindings",
    params(("id" = String, Path, description = "Device id"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Items per page, 1-500 (default 50)"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Binding>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn device_users(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Device>,
    Paging { page, .. }: Paging,
) -> Result<Json<Page<Binding>>, ApiError> {
    let read = allow(p.read(), &p, "read bindings")?;
    Ok(Json(s.directory.list_bindings(
        &read,
        SubjectKind::Device,
        &id,
        &page,
    )?))
}
