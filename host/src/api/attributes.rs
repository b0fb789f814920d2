//! `/api/v1/attributes`: the attribute schema, standard and custom.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, query_pairs};
use super::extract::{Authorized, needs};
use super::{AppState, allow};
use crate::directory::{Attribute, AttributeUpdate, NewAttribute, SubjectKind};

/// The schema, as a list.
#[derive(Serialize, ToSchema)]
pub struct AttributeList {
    /// Standard attributes first, then custom ones by name.
    pub items: Vec<Attribute>,
}

fn subject(raw: &str) -> Result<SubjectKind, ApiError> {
    SubjectKind::parse(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no subject kind {raw:?}; use user or device"),
        )
    })
}

/// List the attribute schema. The schema is small, so it is not paginated.
#[utoipa::path(
    get, path = "/api/v1/attributes", tag = "attributes",
    params(("subject" = Option<SubjectKind>, Query, description = "user or device")),
    responses((status = 200, body = AttributeList), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_attributes(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    RawQuery(q): RawQuery,
) -> Result<Json<AttributeList>, ApiError> {
    let read = allow(p.read(), &p, "read the attribute schema")?;
    let mut kind = None;
    for (name, value) in query_pairs(q.as_deref())? {
        match name.as_str() {
            "subject" => {
                kind = Some(SubjectKind::parse(&value).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        "must be user or device",
                    )
                    .with_field("subject")
                })?)
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "unknown query parameter",
                )
                .with_field(other));
            }
        }
    }
    Ok(Json(AttributeList {
        items: s.directory.list_attributes(&read, kind)?,
    }))
}

/// Declare a custom attribute.
#[utoipa::path(
    post, path = "/api/v1/attributes", tag = "attributes",
    request_body = NewAttribute,
    responses((status = 201, body = Attribute), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_attribute(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<NewAttribute>,
) -> Result<(StatusCode, Json<Attribute>), ApiError> {
    let cap = allow(p.manage_directory(), &p, "declare attributes")?;
    Ok((
        StatusCode::CREATED,
        Json(s.directory.create_attribute(&cap, input).await?),
    ))
}

/// Get one attribute.
#[utoipa::path(
    get, path = "/api/v1/attributes/{subject}/{name}", tag = "attributes",
    params(("subject" = String, Path, description = "user or device"), ("name" = String, Path)),
    responses((status = 200, body = Attribute), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_attribute(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Attribute>, ApiError> {
    let read = allow(p.read(), &p, "read the attribute schema")?;
    Ok(Json(s.directory.get_attribute(
        &read,
        subject(&kind)?,
        &name,
    )?))
}

/// Change a custom attribute's description (its type is fixed).
#[utoipa::path(
    patch, path = "/api/v1/attributes/{subject}/{name}", tag = "attributes",
    params(("subject" = String, Path, description = "user or device"), ("name" = String, Path)),
    request_body = AttributeUpdate,
    responses((status = 200, body = Attribute), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn update_attribute(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    Path((kind, name)): Path<(String, String)>,
    ApiJson(update): ApiJson<AttributeUpdate>,
) -> Result<Json<Attribute>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change attributes")?;
    Ok(Json(
        s.directory
            .update_attribute(&cap, subject(&kind)?, &name, update)
            .await?,
    ))
}

/// Delete a custom attribute that no user or device has a value for.
#[utoipa::path(
    delete, path = "/api/v1/attributes/{subject}/{name}", tag = "attributes",
    params(("subject" = String, Path, description = "user or device"), ("name" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, description = "Still in use", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_attribute(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "delete attributes")?;
    s.directory
        .delete_attribute(&cap, subject(&kind)?, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
