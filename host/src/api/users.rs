//! `/api/v1/users`: parse, authorize, call the directory, shape the answer.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, MergePatch, if_match, versioned};
use super::extract::{Authorized, needs};
use super::params::{IdPair, IdPath, Paging, kind};
use super::{AppState, allow};
use crate::directory::{Binding, StateChange, SubjectKind, User, UserInput};
use crate::page::Page;

/// A user with its ETag and, for creates, its Location.
pub(super) fn user_response(status: StatusCode, user: User) -> Response {
    versioned(status, user.version, "/api/v1/users", user.id, user)
}

/// List users, filtered by attribute and sorted by an indexed key.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "users",
    params(
        Paging,
        ("sort" = Option<String>, Query, pattern = "^-?(created_at|username|email)$", description = "created_at (default), username or email; prefix '-' for descending"),
        ("state" = Option<String>, Query, description = "Filter by state. Any other attribute name filters too, e.g. department=Sales; repeat a name to match any of several values"),
    ),
    responses(
        (status = 200, description = "A page of users", body = Page<User>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_users(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Paging { page, pairs }: Paging,
) -> Result<Json<Page<User>>, ApiError> {
    let read = allow(p.read(), &p, "read users")?;
    let query = s.directory.user_query(&pairs)?;
    Ok(Json(s.directory.list_users(&read, &query, &page)?))
}

/// Create a user.
#[utoipa::path(
    post, path = "/api/v1/users", tag = "users",
    request_body = UserInput,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 409, description = "Username or email taken, or a look-alike (UTS #39 confusable) of another user's (`confusable`)", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_user(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<UserInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "create users")?;
    let user = s.directory.create_user(&cap, input).await?;
    Ok(user_response(StatusCode::CREATED, user))
}

/// Get a user.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user; ETag carries its version", body = User), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_user(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::User>,
) -> Result<Response, ApiError> {
    let read = allow(p.read(), &p, "read users")?;
    let user = s.directory.get_user(&read, &id)?;
    Ok(user_response(StatusCode::OK, user))
}

/// Change a user's fields with a JSON merge patch (RFC 7396). `null` clears a
/// field. Send `If-Match` to fail with 412 when someone else changed the
/// user first.
#[utoipa::path(
    patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body(content = Object, description = "Merge patch over the fields of UserInput", content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, description = "Stale If-Match", body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn update_user(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::User>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change users")?;
    let user = s
        .directory
        .update_user(&cap, &id, &patch, if_match(&headers)?)
        .await?;
    Ok(user_response(StatusCode::OK, user))
}

/// Delete a user, with their device bindings.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_user(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::User>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "delete users")?;
    s.directory
        .delete_user(&cap, &id, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move a user to another state: staged → active, active → suspended,
/// suspended → active. Allowed for admin and help-desk keys.
#[utoipa::path(
    post, path = "/api/v1/users/{id}/state", tag = "users",
    params(("id" = String, Path, description = "User id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body = StateChange,
    responses(
        (status = 200, description = "The user in its new state", body = User),
        (status = 409, description = "Transition not allowed", body = ErrorBody),
        (status = 412, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn change_state(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ChangeUserState>,
    IdPath(id, _): IdPath<kind::User>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StateChange>,
) -> Result<Response, ApiError> {
    let cap = allow(p.change_user_state(), &p, "change user state")?;
    let user = s
        .directory
        .change_user_state(&cap, &id, body.state, if_match(&headers)?)
        .await?;
    Ok(user_response(StatusCode::OK, user))
}

/// The devices bound to a user.
#[utoipa::path(
    get, path = "/api/v1/users/{id}/devices", tag = "bindings",
    params(("id" = String, Path, description = "User id"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Items per page, 1-500 (default 50)"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Binding>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn user_devices(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::User>,
    Paging { page, .. }: Paging,
) -> Result<Json<Page<Binding>>, ApiError> {
    let read = allow(p.read(), &p, "read bindings")?;
    Ok(Json(s.directory.list_bindings(
        &read,
        SubjectKind::User,
        &id,
        &page,
    )?))
}

/// Bind a user to a device. Idempotent: 201 when created, 200 when it existed.
#[utoipa::path(
    put, path = "/api/v1/users/{id}/devices/{device_id}", tag = "bindings",
    params(("id" = String, Path, description = "User id"), ("device_id" = String, Path, description = "Device id")),
    responses((status = 201, body = Binding), (status = 200, body = Binding), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn bind_device(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPair(id, device_id, _): IdPair<kind::User, kind::Device>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "bind devices")?;
    let (binding, created) = s.directory.bind(&cap, &id, &device_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(binding)).into_response())
}

/// Unbind a user from a device.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}/devices/{device_id}", tag = "bindings",
    params(("id" = String, Path, description = "User id"), ("device_id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Unbound"), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn unbind_device(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPair(id, device_id, _): IdPair<kind::User, kind::Device>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "unbind devices")?;
    s.directory.unbind(&cap, &id, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
