//! Operational endpoints: health, readiness, metrics, the OpenAPI document,
//! and online backups.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{AppState, allow};
use crate::auth::Principal;

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or why not.
    pub status: String,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: storage accepts writes. Fails after a flush error, so a load
/// balancer stops sending traffic to an instance that cannot persist.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.failure() {
        None => Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: format!("storage unavailable: {reason}"),
            }),
        )
            .into_response(),
    }
}

/// Prometheus metrics. Unauthenticated, like most scrape targets: it carries
/// request counts and latencies, no directory data.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// The OpenAPI 3 document for this API, generated from the code.
pub async fn openapi(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_ref().clone(),
    )
        .into_response()
}

/// A consistent backup of the whole store, taken while the server runs, as
/// the portable JSON-lines format `cohort restore` reads. Admin only: it
/// contains every record (API keys only as hashes).
#[utoipa::path(
    post, path = "/api/v1/backup", tag = "ops",
    responses((status = 200, description = "The backup file", content_type = "application/x-ndjson"), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn backup(State(s): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    allow(p.manage_keys(), &p, "take backups")?;
    let store = s.store.clone();
    let dir = s.data_dir.clone();
    // Export to a local file first: the snapshot holds the writer lock, which
    // must not wait on a slow client.
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, std::io::Error> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".backup-")
            .tempfile_in(&dir)?;
        let summary = store
            .export(&mut std::io::BufWriter::new(tmp.as_file_mut()))
            .map_err(std::io::Error::other)?;
        tracing::info!(entries = summary.entries, "backup exported");
        // The open handle outlives the path, which is removed on drop.
        tmp.reopen()
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "backup task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "backup failed; see the server log",
        )
    })?
    .map_err(|e| {
        tracing::error!(error = %e, "backup failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "backup failed; see the server log",
        )
    })?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"cohort.backup\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
