//! What an importer's preview shows: its page as JSON, and its errors in
//! words an admin reads. `cohort plugin test` shows a plugin's author the
//! same.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{config_error, value_json};
use crate::plugins::bindings::{importer, types};

/// One page of records from an importer, for the admin to check a
/// configuration before running an import.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewPage {
    /// Records as the plugin mapped them.
    pub records: Vec<PreviewRecord>,
    /// Records the plugin skipped, with reasons.
    pub problems: Vec<PreviewProblem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// What the plugin logged while it read the page, when the preview
    /// asked for it (`"logs": true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<crate::plugins::LogLine>>,
}

/// A mapped record.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewRecord {
    /// `user` or `device`.
    pub kind: &'static str,
    /// The source's id.
    pub external_id: String,
    /// Attributes by name.
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, Value>,
}

/// A skipped record.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewProblem {
    /// The source's id, when known.
    pub external_id: Option<String>,
    /// Why it was skipped.
    pub message: String,
}

/// Why the importer produced no page: its own typed error.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceError {
    /// `config`, `unauthorized`, `rate_limited`, `http`, `bad_response` or `other`.
    pub kind: &'static str,
    /// Details.
    pub message: String,
    /// For `rate_limited`: seconds to wait.
    pub retry_after: Option<u32>,
    /// What the plugin logged before it gave up, when the preview asked for
    /// it (`"logs": true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<crate::plugins::LogLine>>,
}

/// A page as the API shows it.
pub fn preview_page(page: importer::Page) -> PreviewPage {
    PreviewPage {
        records: page
            .records
            .into_iter()
            .map(|r| PreviewRecord {
                kind: match r.kind {
                    types::SubjectKind::User => "user",
                    types::SubjectKind::Device => "device",
                },
                external_id: r.external_id,
                attributes: r
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), value_json(&a.value)))
                    .collect(),
            })
            .collect(),
        problems: page
            .problems
            .into_iter()
            .map(|p| PreviewProblem {
                external_id: p.external_id,
                message: p.message,
            })
            .collect(),
        next_cursor: page.next_cursor,
        logs: None,
    }
}

/// A plugin's failed request in words an admin reads, not the variant's
/// debug form.
pub fn http_error_message(e: &importer::HttpError) -> String {
    use importer::HttpError as H;
    match e {
        // The same refusal covers an internal address, which the plugin
        // is not told apart (see `sandbox`).
        H::HostNotAllowed(host) => format!(
            "the plugin may not reach {host}: not in its allowed_hosts, or an internal address"
        ),
        H::InvalidUrl(m) => format!("invalid URL: {m}"),
        H::Timeout => "the source did not answer in time".into(),
        H::ResponseTooLarge(cap) => {
            format!("the source's answer was larger than the {cap}-byte limit")
        }
        H::Connection(m) => format!("could not connect to the source: {m}"),
        H::InvalidRequest(m) => format!("the plugin made an invalid request: {m}"),
        H::Other(m) => m.clone(),
    }
}

/// An importer's error as the API shows it.
pub fn source_error(e: importer::ImportError) -> SourceError {
    use importer::ImportError as E;
    let (kind, message, retry_after) = match e {
        E::Config(c) => ("config", config_error(c).to_string(), None),
        E::Unauthorized(m) => ("unauthorized", m, None),
        E::RateLimited(s) => ("rate_limited", format!("retry after {s} s"), Some(s)),
        E::Http(h) => ("http", http_error_message(&h), None),
        E::BadResponse(m) => ("bad_response", m, None),
        E::Other(m) => ("other", m, None),
    };
    SourceError {
        kind,
        message,
        retry_after,
        logs: None,
    }
}

/// An IdP connector's error in words an admin reads.
pub fn connector_error_message(e: crate::plugins::bindings::idp::ConnectorError) -> String {
    use crate::plugins::bindings::idp::ConnectorError as E;
    match e {
        E::Config(c) => format!("the connector refused its settings: {}", config_error(c)),
        E::Rejected(m) | E::BadResponse(m) | E::Other(m) => m,
        E::Http(h) => http_error_message(&h),
    }
}
