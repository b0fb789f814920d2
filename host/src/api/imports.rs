//! `/api/v1/import-runs`: import runs from importer plugins. Parse,
//! authorize, call the imports service.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, query_pairs};
use super::extract::{Authorized, needs};
use super::params::{IdPath, kind};
use super::{AppState, allow};
use crate::provisioning::imports::{ChangePage, ImportInput, ImportRun, Schedule, ScheduleInput};

/// Runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunList {
    /// The last 50.
    pub items: Vec<ImportRun>,
}

/// Start an import run. It runs in the background: poll the run. A dry run
/// plans without writing; a run over the change limit waits for approval.
#[utoipa::path(
    post, path = "/api/v1/import-runs", tag = "imports",
    request_body = ImportInput,
    responses((status = 202, body = ImportRun), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn start_run(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<ImportInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "run imports")?;
    let run = s.imports.start(&cap, input).await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// The last 50 import runs.
#[utoipa::path(
    get, path = "/api/v1/import-runs", tag = "imports",
    responses((status = 200, body = RunList)),
    security(("api_key" = []))
)]
pub async fn list_runs(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<RunList>, ApiError> {
    allow(p.read(), &p, "read import runs")?;
    Ok(Json(RunList {
        items: s.imports.list(50)?,
    }))
}

/// One import run.
#[utoipa::path(
    get, path = "/api/v1/import-runs/{id}", tag = "imports",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = ImportRun), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_run(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::ImportRun>,
) -> Result<Json<ImportRun>, ApiError> {
    allow(p.read(), &p, "read import runs")?;
    Ok(Json(s.imports.get(&id)?))
}

/// The changes a dry run, or a run awaiting approval, plans: create,
/// update (field by field, before and after) and suspend.
#[utoipa::path(
    get, path = "/api/v1/import-runs/{id}/changes", tag = "imports",
    params(("id" = String, Path, description = "Run id"), ("offset" = Option<usize>, Query, description = "Changes to skip (default 0)"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 100")),
    responses((status = 200, body = ChangePage), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn run_changes(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::ImportRun>,
    RawQuery(q): RawQuery,
) -> Result<Json<ChangePage>, ApiError> {
    allow(p.read(), &p, "read import runs")?;
    let pairs = query_pairs(q.as_deref())?;
    let number = |name: &str, default: usize, range: std::ops::RangeInclusive<usize>| {
        let Some((_, v)) = pairs.iter().find(|(n, _)| n == name) else {
            return Ok(default);
        };
        v.parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!(
                        "must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
                .with_field(name)
            })
    };
    let offset = number("offset", 0, 0..=usize::MAX)?;
    let limit = number("limit", 100, 1..=1000)?;
    Ok(Json(s.imports.changes(&id, offset, limit)?))
}

/// Approve a run the brake stopped: its plan is applied now.
#[utoipa::path(
    post, path = "/api/v1/import-runs/{id}/approve", tag = "imports",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = ImportRun), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn approve_run(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::ImportRun>,
) -> Result<Json<ImportRun>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "approve imports")?;
    Ok(Json(s.imports.approve(&cap, &id).await?))
}

/// Import schedules.
#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    /// By name.
    pub items: Vec<Schedule>,
}

/// List import schedules.
#[utoipa::path(
    get, path = "/api/v1/import-schedules", tag = "imports",
    responses((status = 200, body = ScheduleList)),
    security(("api_key" = []))
)]
pub async fn list_schedules(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<ScheduleList>, ApiError> {
    allow(p.read(), &p, "read import schedules")?;
    Ok(Json(ScheduleList {
        items: s.imports.schedules()?,
    }))
}

/// Repeat an import every few hours. A turn is skipped while the last run
/// is still running or waits for approval.
#[utoipa::path(
    post, path = "/api/v1/import-schedules", tag = "imports",
    request_body = ScheduleInput,
    responses((status = 201, body = Schedule), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_schedule(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<ScheduleInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "schedule imports")?;
    let schedule = s.imports.create_schedule(&cap, input).await?;
    Ok((StatusCode::CREATED, Json(schedule)).into_response())
}

/// Delete an import schedule; its runs stay.
#[utoipa::path(
    delete, path = "/api/v1/import-schedules/{id}", tag = "imports",
    params(("id" = String, Path, description = "Schedule id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_schedule(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::ImportSchedule>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "delete import schedules")?;
    s.imports.delete_schedule(&cap, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
