//! Personio: `GET /v1/company/employees` with `offset` and `limit` (at most
//! 100, which Personio enforces), after `POST /v1/auth` with the API
//! credentials for a bearer token. Each attribute comes as
//! `{"label", "value"}`; department and office values are objects with a
//! `name`. Employees whose `status` is `inactive` are left out. A `429` is
//! handed to the host with its `Retry-After`.

use cohort_sdk::config::{Config, field};
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;
use serde_json::Value;

/// Employees per page.
const LIMIT: usize = 100;

/// The importer.
pub struct Personio;

#[derive(Deserialize)]
struct Auth {
    data: AuthData,
}

#[derive(Deserialize)]
struct AuthData {
    token: String,
}

#[derive(Deserialize)]
struct Employees {
    data: Vec<Value>,
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    current_page: usize,
    total_pages: usize,
}

/// Personio attribute → directory attribute.
const MAPPING: [(&str, &str); 7] = [
    ("email", "email"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("preferred_name", "display_name"),
    ("position", "job_title"),
    ("employment_type", "employee_type"),
    ("department", "department"),
];

fn base(config: &Config) -> String {
    config
        .text("base_url")
        .filter(|b| !b.is_empty())
        .unwrap_or("https://api.personio.de")
        .trim_end_matches('/')
        .to_string()
}

/// An attribute's value as text: plain values, numbers, or the `name` of
/// an object value (department, office).
fn value(attrs: &Value, name: &str) -> Option<String> {
    let v = attrs.get(name)?.get("value")?;
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) => v
            .get("attributes")?
            .get("name")?
            .as_str()?
            .trim()
            .to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// One employee as a record (none when inactive), or why it cannot be one.
fn record(raw: &Value) -> Result<Option<DirectoryRecord>, RecordProblem> {
    let attrs = raw.get("attributes").unwrap_or(&Value::Null);
    let id = value(attrs, "id");
    let problem = |m: &str| RecordProblem {
        external_id: id.clone(),
        message: m.to_string(),
    };
    let Some(external) = id.clone() else {
        return Err(problem("the employee has no id"));
    };
    if value(attrs, "status").as_deref() == Some("inactive") {
        return Ok(None);
    }
    if value(attrs, "email").is_none() {
        return Err(problem("the employee has no email"));
    }
    let mut r = DirectoryRecord::user(external.clone()).with("employee_id", external);
    for (theirs, ours) in MAPPING {
        if let Some(v) = value(attrs, theirs) {
            r = r.with(ours, v);
        }
    }
    if let Some(office) = value(attrs, "office") {
        r = r.with("location", office);
    }
    Ok(Some(r))
}

impl Importer for Personio {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Personio".into(),
            description: "Employees from Personio, through the v1 Employees API.".into(),
            config: vec![
                field(
                    "client_id",
                    "Client ID",
                    "The API credentials' client id (Settings → Integrations → API credentials).",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_secret",
                    "Client secret",
                    "The API credentials' secret. Stored encrypted; never shown again.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "base_url",
                    "Base URL",
                    "Instead of https://api.personio.de: a proxy in front of Personio. Rarely needed.",
                    ConfigKind::Url,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        config.require_text("client_id")?;
        config.require_text("client_secret")?;
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let offset: usize = match cursor {
            Some(c) => c
                .parse()
                .map_err(|_| ImportError::Other(format!("bad cursor {c:?}")))?,
            None => 0,
        };
        let base = base(config);
        let (auth, _): (Auth, _) = host::request(Method::Post, format!("{base}/v1/auth"))
            .json(&serde_json::json!({
                "client_id": config.require_text("client_id")?,
                "client_secret": config.require_text("client_secret")?,
            }))?
            .fetch_json()?;
        let url = format!("{base}/v1/company/employees?offset={offset}&limit={LIMIT}");
        let (page, _): (Employees, _) = host::request(Method::Get, url)
            .bearer(&auth.data.token)
            .fetch_json()?;
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for raw in &page.data {
            match record(raw) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(p) => problems.push(p),
            }
        }
        let more =
            page.metadata.current_page + 1 < page.metadata.total_pages && !page.data.is_empty();
        Ok(Page {
            records,
            problems,
            next_cursor: more.then(|| (offset + LIMIT).to_string()),
        })
    }
}

cohort_sdk::export_importer!(Personio);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An employee shaped as in Personio's v1 "List Employees" example.
    pub fn employee(id: u64, email: Option<&str>, status: &str) -> Value {
        let mut attrs = json!({
            "id": {"label": "ID", "value": id, "type": "integer", "universal_id": "id"},
            "first_name": {"label": "First name", "value": "Andrea", "type": "standard", "universal_id": "first_name"},
            "last_name": {"label": "Last name", "value": "Smith", "type": "standard", "universal_id": "last_name"},
            "status": {"label": "Status", "value": status, "type": "status", "universal_id": "status"},
            "position": {"label": "Position", "value": "Backend Developer", "type": "standard", "universal_id": "position"},
            "department": {"label": "Department", "value": {"type": "Department", "attributes": {"id": 7, "name": "IT"}}, "type": "standard", "universal_id": "department"},
            "office": {"label": "Office", "value": {"type": "Office", "attributes": {"id": 1, "name": "Munich"}}, "type": "standard", "universal_id": "office"},
        });
        if let Some(e) = email {
            attrs["email"] =
                json!({"label": "Email", "value": e, "type": "standard", "universal_id": "email"});
        }
        json!({"type": "Employee", "attributes": attrs})
    }

    #[test]
    fn documented_employees_map() {
        let r = record(&employee(12, Some("andrea@example.com"), "active"))
            .unwrap()
            .unwrap();
        assert_eq!(r.external_id, "12");
        let get = |n: &str| {
            r.attributes
                .iter()
                .find(|a| a.name == n)
                .map(|a| format!("{:?}", a.value))
        };
        assert!(get("department").unwrap().contains("IT"));
        assert!(get("location").unwrap().contains("Munich"));
        assert!(get("employee_id").unwrap().contains("12"));
        assert!(
            record(&employee(13, Some("x@example.com"), "inactive"))
                .unwrap()
                .is_none()
        );
        assert!(record(&employee(14, None, "active")).is_err());
    }
}
