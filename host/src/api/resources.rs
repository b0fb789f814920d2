//! `/api/v1/resources` and effective access: parse, authorize, call the
//! access service.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, MergePatch, if_match, versioned};
use super::extract::{Authorized, needs};
use super::params::{IdPair, IdPath, Paging, kind};
use super::{AppState, allow};
use crate::access::{Grantee, GroupBinding, Resource, ResourceInput, SubjectAccess};
use crate::directory::SubjectKind;
use crate::page::Page;

fn resource_response(status: StatusCode, r: Resource) -> Response {
    versioned(status, r.version, "/api/v1/resources", r.id, r)
}

/// List resources.
#[utoipa::path(
    get, path = "/api/v1/resources", tag = "access",
    params(
        ("type" = Option<String>, Query, description = "Only resources of this type"),
        Paging,
    ),
    responses((status = 200, body = Page<Resource>), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_resources(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    paging: Paging,
) -> Result<Json<Page<Resource>>, ApiError> {
    let read = allow(p.read(), &p, "read resources")?;
    Ok(Json(s.access.list_resources(
        &read,
        paging.get("type"),
        &paging.page,
    )?))
}

/// Create a resource.
#[utoipa::path(
    post, path = "/api/v1/resources", tag = "access",
    request_body = ResourceInput,
    responses((status = 201, body = Resource), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_resource(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<ResourceInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "create resources")?;
    let r = s.access.create_resource(&cap, input).await?;
    Ok(resource_response(StatusCode::CREATED, r))
}

/// Get a resource.
#[utoipa::path(
    get, path = "/api/v1/resources/{id}", tag = "access",
    params(("id" = String, Path, description = "Resource id")),
    responses((status = 200, body = Resource), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_resource(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Resource>,
) -> Result<Response, ApiError> {
    let read = allow(p.read(), &p, "read resources")?;
    let r = s.access.get_resource(&read, &id)?;
    Ok(resource_response(StatusCode::OK, r))
}

/// Change a resource with a JSON merge patch.
#[utoipa::path(
    patch, path = "/api/v1/resources/{id}", tag = "access",
    params(("id" = String, Path, description = "Resource id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body(content = Object, description = "Merge patch over the fields of ResourceInput", content_type = "application/merge-patch+json"),
    responses((status = 200, body = Resource), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn update_resource(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Resource>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change resources")?;
    let r = s
        .access
        .update_resource(&cap, &id, &patch, if_match(&headers)?)
        .await?;
    Ok(resource_response(StatusCode::OK, r))
}

/// Delete a resource and its bindings.
#[utoipa::path(
    delete, path = "/api/v1/resources/{id}", tag = "access",
    params(("id" = String, Path, description = "Resource id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_resource(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Resource>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "delete resources")?;
    s.access.delete_resource(&cap, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Names a group to bind.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = GroupIdInput)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    /// The group.
    pub group_id: Uuid,
}

/// Groups bound to a resource.
#[utoipa::path(
    get, path = "/api/v1/resources/{id}/groups", tag = "access",
    params(("id" = String, Path, description = "Resource id")),
    responses((status = 200, body = Vec<GroupBinding>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn resource_groups(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Resource>,
) -> Result<Json<Vec<GroupBinding>>, ApiError> {
    let read = allow(p.read(), &p, "read resources")?;
    Ok(Json(s.access.resource_groups(&read, &id)?))
}

/// Bind a group to a resource; its members reach the resource.
#[utoipa::path(
    post, path = "/api/v1/resources/{id}/groups", tag = "access",
    params(("id" = String, Path, description = "Resource id")),
    request_body = GroupRef,
    responses((status = 200, body = GroupBinding), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn bind_resource(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Resource>,
    ApiJson(body): ApiJson<GroupRef>,
) -> Result<Json<GroupBinding>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "bind resources")?;
    Ok(Json(
        s.access.bind_resource(&cap, &id, &body.group_id).await?,
    ))
}

/// Unbind a group from a resource.
#[utoipa::path(
    delete, path = "/api/v1/resources/{id}/groups/{group}", tag = "access",
    params(("id" = String, Path, description = "Resource id"), ("group" = String, Path, description = "Group id")),
    responses((status = 204, description = "Unbound"), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn unbind_resource(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPair(id, group, _): IdPair<kind::Resource, kind::Group>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "bind resources")?;
    s.access.unbind_resource(&cap, &id, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who can reach a resource, and through which groups.
#[utoipa::path(
    get, path = "/api/v1/resources/{id}/access", tag = "access",
    params(
        ("id" = String, Path, description = "Resource id"),
        Paging,
    ),
    responses((status = 200, body = Page<Grantee>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn grantees(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Resource>,
    Paging { page, .. }: Paging,
) -> Result<Json<Page<Grantee>>, ApiError> {
    let read = allow(p.read(), &p, "read access")?;
    Ok(Json(s.access.grantees(&read, &id, &page)?))
}

/// The groups of the other kind bound to a group: device groups of a user
/// group (its users may use their devices), or user groups of a device group.
#[utoipa::path(
    get, path = "/api/v1/groups/{id}/groups", tag = "access",
    params(("id" = String, Path, description = "Group id")),
    responses((status = 200, body = Vec<GroupBinding>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn bound_groups(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Group>,
) -> Result<Json<Vec<GroupBinding>>, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    Ok(Json(s.access.bound_groups(&read, &id)?))
}

/// Bind a user group to a device group.
#[utoipa::path(
    post, path = "/api/v1/groups/{id}/groups", tag = "access",
    params(("id" = String, Path, description = "Group id")),
    request_body = GroupRef,
    responses((status = 204, description = "Bound"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn bind_groups(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    ApiJson(body): ApiJson<GroupRef>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "bind groups")?;
    s.access
        .bind_groups(&cap, &id, &body.group_id, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unbind a user group from a device group.
#[utoipa::path(
    delete, path = "/api/v1/groups/{id}/groups/{other}", tag = "access",
    params(("id" = String, Path, description = "Group id"), ("other" = String, Path, description = "The bound group's id")),
    responses((status = 204, description = "Unbound"), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn unbind_groups(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPair(id, other, _): IdPair<kind::Group, kind::Group>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "bind groups")?;
    s.access.bind_groups(&cap, &id, &other, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a user can reach, and through which groups.
#[utoipa::path(
    get, path = "/api/v1/users/{id}/access", tag = "access",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = SubjectAccess), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn user_access(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::User>,
) -> Result<Json<SubjectAccess>, ApiError> {
    let read = allow(p.read(), &p, "read access")?;
    Ok(Json(s.access.subject_access(
        &read,
        SubjectKind::User,
        &id,
    )?))
}

/// What a device can reach, and through which groups.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/access", tag = "access",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = SubjectAccess), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn device_access(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Device>,
) -> Result<Json<SubjectAccess>, ApiError> {
    let read = allow(p.read(), &p, "read access")?;
    Ok(Json(s.access.subject_access(
        &read,
        SubjectKind::Device,
        &id,
    )?))
}
