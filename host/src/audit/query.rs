//! Reading the audit log: filtered, paginated queries and full exports. A
//! query walks the narrowest index its filters allow (one resource's history,
//! one actor's events, a time range) and checks the remaining filters per
//! event.

use std::io::Write;

use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, StorageError, Store};

use super::{AuditEvent, BY_ACTOR, BY_RESOURCE, BY_TIME, EVENTS, time_key};
use crate::auth::Read;
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest, Visit};

/// Which events a query returns. All set filters must match.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time.
    pub to: Option<DateTime<Utc>>,
    /// Events by this actor.
    pub actor: Option<String>,
    /// Events with this action (`user.create`).
    pub action: Option<String>,
    /// Events on this kind of resource.
    pub resource_type: Option<String>,
    /// Events on this resource (needs `resource_type`).
    pub resource_id: Option<String>,
    /// Oldest first instead of the default newest first.
    pub oldest_first: bool,
}

/// Export encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON event per line.
    JsonLines,
    /// RFC 4180 CSV with a header row; `changes` is a JSON column. Cells
    /// that a spreadsheet would run as formulas are neutralised
    /// ([`crate::csv`]). Columns added later go at the end, so scripts that
    /// read by position keep working.
    Csv,
}

/// Read access to the audit log.
#[derive(Clone)]
pub struct AuditLog {
    store: Store,
}

struct Plan {
    ks: Keyspace,
    prefix: Vec<u8>,
    /// Resume point when the query has none: bounds a time range.
    start_after: Option<Vec<u8>>,
    tag: String,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEvent) -> bool {
        self.from.is_none_or(|t| e.time >= t)
            && self.to.is_none_or(|t| e.time < t)
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self.action.as_ref().is_none_or(|a| &e.action == a)
            && self
                .resource_type
                .as_ref()
                .is_none_or(|r| &e.resource_type == r)
            && self
                .resource_id
                .as_ref()
                .is_none_or(|r| &e.resource_id == r)
    }

    /// True once a walk in time order has passed the filter's far end.
    fn past_end(&self, e: &AuditEvent) -> bool {
        if self.oldest_first {
            self.to.is_some_and(|t| e.time >= t)
        } else {
            self.from.is_some_and(|t| e.time < t)
        }
    }

    fn plan(&self) -> Result<Plan, DomainError> {
        let order = if self.oldest_first { "asc" } else { "desc" };
        if let Some(id) = &self.resource_id {
            let Some(rt) = &self.resource_type else {
                return Err(DomainError::bad_query(
                    "resource_id",
                    "needs resource_type as well",
                ));
            };
            return Ok(Plan {
                ks: BY_RESOURCE,
                prefix: [rt.as_bytes(), &[0], id.as_bytes(), &[0]].concat(),
                start_after: None,
                tag: format!("audit:resource:{order}"),
            });
        }
        if let Some(actor) = &self.actor {
            return Ok(Plan {
                ks: BY_ACTOR,
                prefix: [actor.as_bytes(), &[0]].concat(),
                start_after: None,
                tag: format!("audit:actor:{order}"),
            });
        }
        let start = if self.oldest_first {
            self.from
        } else {
            self.to
        };
        if self.from.is_some() || self.to.is_some() {
            let start_after = start.map(|t| {
                let micros = time_key(t);
                if self.oldest_first {
                    // Strictly after (t - 1µs, every seq): the first event at t.
                    let before = u64::from_be_bytes(micros).saturating_sub(1);
                    [&before.to_be_bytes()[..], &[0xFF; 8]].concat()
                } else {
                    // Strictly before (t, seq 0): the last event before t.
                    [&micros[..], &[0; 8]].concat()
                }
            });
            return Ok(Plan {
                ks: BY_TIME,
                prefix: Vec::new(),
                start_after,
                tag: format!("audit:time:{order}"),
            });
        }
        Ok(Plan {
            ks: EVENTS,
            prefix: Vec::new(),
            start_after: None,
            tag: format!("audit:all:{order}"),
        })
    }
}

impl AuditFilter {
    /// Checks that the filters can be combined, so a streamed export can
    /// refuse them before it has sent its status line.
    pub fn check(&self) -> Result<(), DomainError> {
        self.plan().map(|_| ())
    }
}

impl AuditLog {
    /// An audit log reader over `store`.
    pub fn new(store: Store) -> Self {
        AuditLog { store }
    }

    fn event_for(&self, ks: Keyspace, key: &[u8], value: &[u8]) -> Result<AuditEvent, DomainError> {
        if ks == EVENTS {
            return Ok(cohort_storage::decode_json(EVENTS, value)?);
        }
        let seq = key
            .get(key.len().saturating_sub(8)..)
            .filter(|s| s.len() == 8)
            .ok_or_else(|| StorageError::Corrupt {
                keyspace: ks.name().into(),
                detail: "index key too short".into(),
            })?;
        self.store.get_json(EVENTS, seq)?.ok_or_else(|| {
            StorageError::Corrupt {
                keyspace: ks.name().into(),
                detail: "index points at a missing event".into(),
            }
            .into()
        })
    }

    /// One page of matching events.
    pub fn query(
        &self,
        _: &Read,
        filter: &AuditFilter,
        req: &PageRequest,
    ) -> Result<Page<AuditEvent>, DomainError> {
        let plan = filter.plan()?;
        let resume = req.resume_key(&plan.tag)?.or(plan.start_after.clone());
        let entries = self.store.scan(
            plan.ks,
            &plan.prefix,
            resume.as_deref(),
            !filter.oldest_first,
        );
        page::collect(&plan.tag, req.limit, entries, |k, v| {
            let e = self.event_for(plan.ks, k, v)?;
            if filter.past_end(&e) {
                return Ok(Visit::Stop);
            }
            Ok(filter.matches(&e).then_some(e).into())
        })
    }

    /// Writes every matching event to `out`. Returns how many were written.
    pub fn export(
        &self,
        _: &Read,
        filter: &AuditFilter,
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> Result<u64, DomainError> {
        let plan = filter.plan()?;
        let write_err = |e: std::io::Error| DomainError::Storage(StorageError::Io(e));
        if format == ExportFormat::Csv {
            let header = crate::csv::row([
                "id",
                "time",
                "actor",
                "actor_key_id",
                "action",
                "resource_type",
                "resource_id",
                "request_id",
                "changes",
                "client_address",
                "user_agent",
            ]);
            out.write_all(header.as_bytes()).map_err(write_err)?;
        }
        let mut n = 0;
        for entry in self.store.scan(
            plan.ks,
            &plan.prefix,
            plan.start_after.as_deref(),
            !filter.oldest_first,
        ) {
            let (k, v) = entry?;
            let e = self.event_for(plan.ks, &k, &v)?;
            if filter.past_end(&e) {
                break;
            }
            if !filter.matches(&e) {
                continue;
            }
            match format {
                ExportFormat::JsonLines => {
                    serde_json::to_writer(&mut *out, &e).map_err(|e| write_err(e.into()))?;
                    out.write_all(b"\n").map_err(write_err)?;
                }
                ExportFormat::Csv => {
                    let changes = serde_json::to_string(&e.changes).expect("changes serialize");
                    let row = [
                        e.id.to_string(),
                        e.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        e.actor,
                        e.actor_key_id.unwrap_or_default(),
                        e.action,
                        e.resource_type,
                        e.resource_id,
                        e.request_id,
                        changes,
                        e.client_address.unwrap_or_default(),
                        e.user_agent.unwrap_or_default(),
                    ];
                    out.write_all(crate::csv::row(row.iter().map(String::as_str)).as_bytes())
                        .map_err(write_err)?;
                }
            }
            n += 1;
        }
        Ok(n)
    }
}
