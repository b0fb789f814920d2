//! `/api/v1/audit`: query and export the audit log.

use std::io::Write;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::error::{ApiError, ErrorBody};
use super::extract::query_pairs;
use super::extract::{Authorized, needs};
use super::params::Paging;
use super::{AppState, allow};
use crate::audit::{AuditEvent, AuditFilter, ExportFormat};
use crate::page::Page;

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_field(field)
}

fn parse_time(field: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            bad(
                field,
                "must be an RFC 3339 date-time, e.g. 2026-01-31T00:00:00Z",
            )
        })
}

/// Parses filters; `extra` names further parameters the endpoint accepts.
fn parse_filter(pairs: &[(String, String)], extra: &[&str]) -> Result<AuditFilter, ApiError> {
    let mut f = AuditFilter::default();
    for (name, value) in pairs {
        match name.as_str() {
            "from" => f.from = Some(parse_time("from", value)?),
            "to" => f.to = Some(parse_time("to", value)?),
            "actor" => f.actor = Some(value.clone()),
            "action" => f.action = Some(value.clone()),
            "resource_type" => f.resource_type = Some(value.clone()),
            "resource_id" => f.resource_id = Some(value.clone()),
            "order" => {
                f.oldest_first = match value.as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(bad("order", "must be asc or desc")),
                }
            }
            other if extra.contains(&other) => {}
            other => return Err(bad(other, "unknown query parameter")),
        }
    }
    Ok(f)
}

/// Query the audit log, newest first by default.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "audit",
    params(
        ("from" = Option<DateTime<Utc>>, Query, description = "Events at or after this RFC 3339 time"),
        ("to" = Option<DateTime<Utc>>, Query, description = "Events before this RFC 3339 time"),
        ("actor" = Option<String>, Query, description = "API key name"),
        ("action" = Option<String>, Query, description = "e.g. user.create"),
        ("resource_type" = Option<String>, Query, description = "user, device, binding, attribute, api_key"),
        ("resource_id" = Option<String>, Query, description = "Needs resource_type"),
        ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "desc (default) or asc"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Items per page, 1-500 (default 50)"), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<AuditEvent>), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn query(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Paging { page, pairs }: Paging,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    let read = allow(p.read(), &p, "read the audit log")?;
    let filter = parse_filter(&pairs, &["limit", "cursor"])?;
    Ok(Json(s.audit.query(&read, &filter, &page)?))
}

/// Sends what the blocking exporter writes to the response body in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// Export matching events as JSON lines (default) or CSV, streamed.
#[utoipa::path(
    get, path = "/api/v1/audit/export", tag = "audit",
    params(
        ("format" = Option<String>, Query, pattern = "^(jsonl|csv)$", description = "jsonl (default) or csv; in CSV, a cell that starts with =, +, -, @, tab or carriage return is prefixed with ' so that spreadsheets do not run it as a formula"),
        ("from" = Option<DateTime<Utc>>, Query), ("to" = Option<DateTime<Utc>>, Query), ("actor" = Option<String>, Query),
        ("action" = Option<String>, Query), ("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query),
        ("order" = Option<String>, Query, pattern = "^(asc|desc)$"),
    ),
    responses(
        (status = 200, description = "The events", content(("application/x-ndjson"), ("text/csv"))),
        (status = 400, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn export(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let read = allow(p.read(), &p, "export the audit log")?;
    let pairs = query_pairs(q.as_deref())?;
    let filter = parse_filter(&pairs, &["format"])?;
    let format = match pairs
        .iter()
        .find(|(n, _)| n == "format")
        .map(|(_, v)| v.as_str())
    {
        None | Some("jsonl") => ExportFormat::JsonLines,
        Some("csv") => ExportFormat::Csv,
        Some(_) => return Err(bad("format", "must be jsonl or csv")),
    };
    filter.check()?;
    let (tx, rx) = mpsc::channel(4);
    let audit = s.audit.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let result = audit.export(&read, &filter, format, &mut w).and_then(|_| {
            w.flush().map_err(|e| {
                crate::error::DomainError::Storage(cohort_storage::StorageError::Io(e))
            })
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "audit export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
        }
    });
    let (content_type, ext) = match format {
        ExportFormat::JsonLines => ("application/x-ndjson", "jsonl"),
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"cohort-audit.{ext}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}
