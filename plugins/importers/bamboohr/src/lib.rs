//! BambooHR: the employee directory, `GET
//! /api/gateway.php/{company}/v1/employees/directory`, with the API key as
//! the Basic user (password `x`), as BambooHR documents. The directory
//! returns everyone in one response, so there is one page. A `403` means
//! the company has the directory turned off for API keys, which is said so.
//! A `429` / `503` is handed to the host with its `Retry-After`.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::host::{self, FetchError, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;
use serde_json::Value;

/// The importer.
pub struct BambooHr;

#[derive(Deserialize)]
struct Directory {
    employees: Vec<Value>,
}

/// BambooHR directory field → directory attribute.
const MAPPING: [(&str, &str); 8] = [
    ("workEmail", "email"),
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("displayName", "display_name"),
    ("jobTitle", "job_title"),
    ("department", "department"),
    ("location", "location"),
    ("workPhone", "phone"),
];

fn company(config: &Config) -> Result<String, ConfigError> {
    let c = config.require_text("company")?.trim().to_lowercase();
    let c = c.strip_suffix(".bamboohr.com").unwrap_or(&c).to_string();
    if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
        return Err(invalid("company", "the account's subdomain, such as acme"));
    }
    Ok(c)
}

/// One employee as a record, or why it cannot be one.
fn record(raw: &Value) -> Result<DirectoryRecord, RecordProblem> {
    let text = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let id = raw.get("id").and_then(|v| {
        v.as_str()
            .map(String::from)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
    });
    let Some(id) = id else {
        return Err(RecordProblem {
            external_id: None,
            message: "an employee has no id".into(),
        });
    };
    if text("workEmail").is_none() {
        return Err(RecordProblem {
            external_id: Some(id),
            message: "the employee has no work email".into(),
        });
    }
    let mut r = DirectoryRecord::user(id.clone()).with("employee_id", id);
    for (theirs, ours) in MAPPING {
        if let Some(v) = text(theirs) {
            r = r.with(ours, v.to_string());
        }
    }
    if let Some(p) = text("preferredName") {
        r = r.with(
            "display_name",
            format!("{p} {}", text("lastName").unwrap_or_default())
                .trim()
                .to_string(),
        );
    }
    Ok(r)
}

impl Importer for BambooHr {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "BambooHR".into(),
            description: "Employees from BambooHR's employee directory.".into(),
            config: vec![
                field(
                    "company",
                    "Company domain",
                    "The subdomain of your BambooHR account: acme for acme.bamboohr.com.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "api_key",
                    "API key",
                    "A BambooHR API key (an account with access to the directory). Stored encrypted.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "base_url",
                    "Base URL",
                    "Instead of https://api.bamboohr.com: a proxy. Rarely needed.",
                    ConfigKind::Url,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        company(config)?;
        config.require_text("api_key")?;
        Ok(())
    }

    fn fetch_page(config: &Config, _cursor: Option<String>) -> Result<Page, ImportError> {
        let base = config
            .text("base_url")
            .filter(|b| !b.is_empty())
            .unwrap_or("https://api.bamboohr.com")
            .trim_end_matches('/')
            .to_string();
        let url = format!(
            "{base}/api/gateway.php/{}/v1/employees/directory",
            company(config)?
        );
        let result = host::request(Method::Get, url)
            .basic(config.require_text("api_key")?, "x")
            .fetch_json::<Directory>();
        let (directory, _) = match result {
            Err(FetchError::Unauthorized(403)) => {
                return Err(ImportError::Unauthorized(
                    "BambooHR refused the directory (403): the company may have the employee directory turned off for API access".into(),
                ));
            }
            other => other?,
        };
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for raw in &directory.employees {
            match record(raw) {
                Ok(r) => records.push(r),
                Err(p) => problems.push(p),
            }
        }
        Ok(Page {
            records,
            problems,
            next_cursor: None,
        })
    }
}

cohort_sdk::export_importer!(BambooHr);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_directory_entries_map() {
        // From BambooHR's "Get employee directory" example.
        let e = json!({"id": "123", "displayName": "John Doe", "firstName": "John", "lastName": "Doe",
            "preferredName": null, "gender": "Male", "jobTitle": "Customer Service Representative",
            "workPhone": "555-555-5555", "mobilePhone": "555-555-5555", "workEmail": "jdoe@example.com",
            "department": "Customer Service", "location": "Lindon, Utah", "division": null,
            "linkedIn": null, "workPhoneExtension": null, "photoUploaded": true,
            "photoUrl": "https://resources.bamboohr.com/employees/photos/initials.php?initials=JD",
            "canUploadPhoto": 1});
        let r = record(&e).unwrap();
        assert_eq!(r.external_id, "123");
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.contains(&"job_title") && names.contains(&"location"),
            "{names:?}"
        );
        assert!(record(&json!({"id": "124", "workEmail": null})).is_err());
        assert!(record(&json!({"workEmail": "x@example.com"})).is_err());
    }
}
