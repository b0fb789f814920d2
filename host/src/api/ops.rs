//! Operational endpoints: health, readiness, metrics, the OpenAPI document,
//! and online backups.

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::principal_if_any;
use super::extract::{Authorized, needs};
use super::{AppState, allow};
use crate::auth::Origin;
use crate::groups::WaitingGroup;

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

/// Most waiting groups `/readyz` names; the count covers the rest.
const MAX_LISTED: usize = 100;

/// Whether this instance can do its job, and if not, what is missing.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`, or what is wrong, in a sentence.
    pub status: String,
    /// Why storage refuses writes, when it does (after a failed flush). The
    /// engine's own message (which, for PostgreSQL, may name hosts, roles
    /// and files) only to a caller whose key may read the directory; a
    /// fixed sentence to anyone else.
    pub storage: Option<String>,
    /// With several hosts over PostgreSQL: milliseconds since this host last
    /// confirmed that its in-memory state follows every other host's
    /// writes. Absent on the embedded engines. Over 10 s, the host is not
    /// ready.
    pub replication_lag_ms: Option<i64>,
    /// Whether this host runs the scheduled work (import schedules,
    /// exemption expiry, the daily recompute) at the moment. With several
    /// hosts one does; when it dies, another takes over within a
    /// scheduler tick.
    pub runs_scheduled_work: bool,
    /// This host's number among the hosts sharing the store, held while it
    /// lives. Import and recompute runs record the number of the host that
    /// runs them (`host`); a run whose host stopped is marked failed. Shown
    /// only to a caller whose key may read the directory, like the groups.
    pub host: Option<u32>,
    /// Rule-evaluator plugins that dynamic groups need and that cannot be
    /// called: not installed (no plugins directory, or one without them),
    /// disabled, or not rule evaluators.
    pub missing_evaluators: Vec<String>,
    /// How many dynamic groups wait for them.
    pub waiting_group_count: usize,
    /// Those groups (the first 100 by name), which keep their members as
    /// they are until their evaluator is back. Listed only for a caller
    /// with a key that may read the directory (admin, help-desk,
    /// read-only): `/readyz` answers anyone who can reach it, and group
    /// names say things about people (`Leavers March`). Empty otherwise;
    /// the count and the plugins are for everyone.
    pub waiting_groups: Vec<WaitingGroup>,
}

/// Readiness: storage accepts writes, and every dynamic group's rule
/// evaluator is loaded. A load balancer stops sending traffic to an
/// instance that cannot persist, or whose groups would not follow their
/// rules; the body says which plugins are missing and how many groups
/// wait, and names those groups to a caller whose key may read the
/// directory. No key is needed; a missing or unknown one is not an error.
///
/// `?scope=host` asks only about what is particular to this host (its
/// storage and its replication lag), for a load balancer choosing between
/// hosts: a missing rule evaluator is the same on every host, and taking
/// them all out would also take out the API call that enables it again.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    params(("scope" = Option<String>, Query, description = "`host`: only this host's storage and replication lag; `all` (the default): also the rule evaluators")),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness), (status = 400, body = ErrorBody)),
    security((), ("api_key" = []))
)]
pub async fn readyz(
    State(s): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut host_only = false;
    let pairs = match super::extract::query_pairs(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    for (name, value) in pairs {
        match (name.as_str(), value.as_str()) {
            ("scope", "host") => host_only = true,
            ("scope", "all") => host_only = false,
            ("scope", _) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "scope must be `host` or `all`",
                )
                .with_field("scope")
                .into_response();
            }
            // Unknown parameters are ignored, as on every other endpoint.
            _ => {}
        }
    }
    let names_groups = principal_if_any(&s, &headers, &origin).is_some_and(|p| p.read().is_some());
    let storage = s.store.failure().map(|reason| {
        if names_groups {
            reason
        } else {
            "storage refuses writes after a failed flush".to_string()
        }
    });
    let groups = s.groups.clone();
    let waiting = tokio::task::spawn_blocking(move || groups.waiting_for_evaluators())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let (waiting, groups_error) = match waiting {
        Ok(w) => (w, None),
        Err(e) => {
            tracing::error!(error = %e, "readiness: could not read the groups");
            (Vec::new(), Some(e))
        }
    };
    let mut missing: Vec<String> = waiting.iter().map(|g| g.evaluator.clone()).collect();
    missing.sort();
    missing.dedup();
    let mut problems = Vec::new();
    if let Some(reason) = &storage {
        problems.push(format!("storage unavailable: {reason}"));
    }
    let replication_lag_ms = s.replication.lag_ms();
    if let Some(lag) = replication_lag_ms
        && lag > crate::replication::MAX_LAG_MS
    {
        problems.push(format!(
            "replica behind: no contact with the database for {lag} ms"
        ));
    }
    if let Some(e) = &groups_error {
        // The error text is for the log (above) and readers of the
        // directory, like the storage reason.
        if names_groups {
            problems.push(format!("groups unreadable: {e}"));
        } else {
            problems.push("groups unreadable".to_string());
        }
    }
    if !missing.is_empty() && !host_only {
        problems.push(format!(
            "rule evaluators not loaded: {} ({} dynamic group{} cannot follow {} rule{})",
            missing.join(", "),
            waiting.len(),
            if waiting.len() == 1 { "" } else { "s" },
            if waiting.len() == 1 { "its" } else { "their" },
            if waiting.len() == 1 { "" } else { "s" },
        ));
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if problems.is_empty() {
            "ok".into()
        } else {
            problems.join("; ")
        },
        storage,
        replication_lag_ms,
        runs_scheduled_work: s.replication.runs_scheduled_work(),
        host: names_groups.then(|| s.store.host()),
        missing_evaluators: missing,
        waiting_group_count: waiting.len(),
        waiting_groups: if names_groups {
            waiting.into_iter().take(MAX_LISTED).collect()
        } else {
            Vec::new()
        },
    };
    (status, Json(body)).into_response()
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
        {
            let mut text = s.metrics.render();
            if let Some(lag) = s.replication.lag_ms() {
                text.push_str(
                    "# HELP cohort_replication_lag_seconds Time since this host last confirmed it follows the other hosts' writes.\n# TYPE cohort_replication_lag_seconds gauge\n",
                );
                text.push_str(&format!(
                    "cohort_replication_lag_seconds {:.3}\n",
                    lag as f64 / 1000.0
                ));
            }
            text
        },
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
/// the portable JSON-lines format `cohort restore` reads, authenticated with
/// a key derived from the server's secret key. Admin only: it contains every
/// record (API keys only as hashes).
#[utoipa::path(
    post, path = "/api/v1/backup", tag = "ops",
    responses((status = 200, description = "The backup file", content_type = "application/x-ndjson"), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn backup(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageKeys>,
) -> Result<Response, ApiError> {
    allow(p.manage_keys(), &p, "take backups")?;
    let store = s.store.clone();
    let dir = s.data_dir.clone();
    let key = s.backup_key.clone();
    let created = u64::try_from(s.clock.now().timestamp()).unwrap_or(0);
    // Export to a local file first: the snapshot holds the writer lock, which
    // must not wait on a slow client.
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, std::io::Error> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".backup-")
            .tempfile_in(&dir)?;
        let summary = store
            .export(
                &mut std::io::BufWriter::new(tmp.as_file_mut()),
                &key,
                created,
            )
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
