//! HiBob: `POST /v1/people/search` with the fields to read, inactive
//! employees excluded (`showInactive: false`) and readable values
//! (`humanReadable: REPLACE`, so a department is its name, not an id), as
//! a service user (Basic: id and token). The search returns everyone in
//! one response. A `429` is handed to the host with its `Retry-After`.

use cohort_sdk::config::{Config, field};
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;
use serde_json::{Value, json};

/// The importer.
pub struct HiBob;

#[derive(Deserialize)]
struct People {
    employees: Vec<Value>,
}

/// HiBob field path → directory attribute.
const MAPPING: [(&str, &str); 8] = [
    ("email", "email"),
    ("firstName", "first_name"),
    ("surname", "last_name"),
    ("displayName", "display_name"),
    ("work.title", "job_title"),
    ("work.department", "department"),
    ("work.site", "location"),
    ("work.employeeIdInCompany", "employee_id"),
];

/// A field by path (`work.title`): strings and numbers as text.
fn text(e: &Value, path: &str) -> Option<String> {
    let v = path.split('.').try_fold(e, |v, k| v.get(k))?;
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

fn record(e: &Value) -> Result<DirectoryRecord, RecordProblem> {
    let Some(id) = text(e, "id") else {
        return Err(RecordProblem {
            external_id: None,
            message: "an employee has no id".into(),
        });
    };
    if text(e, "email").is_none() {
        return Err(RecordProblem {
            external_id: Some(id),
            message: "the employee has no email".into(),
        });
    }
    let mut r = DirectoryRecord::user(id);
    for (theirs, ours) in MAPPING {
        if let Some(v) = text(e, theirs) {
            r = r.with(ours, v);
        }
    }
    Ok(r)
}

impl Importer for HiBob {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "HiBob".into(),
            description: "Employees from HiBob, through People search.".into(),
            config: vec![
                field(
                    "service_user_id",
                    "Service user ID",
                    "A HiBob API service user with access to the fields read (Settings → Integrations → Service users).",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "token",
                    "Service user token",
                    "The service user's token. Stored encrypted.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "base_url",
                    "Base URL",
                    "Instead of https://api.hibob.com: a proxy. Rarely needed.",
                    ConfigKind::Url,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        config.require_text("service_user_id")?;
        config.require_text("token")?;
        Ok(())
    }

    fn fetch_page(config: &Config, _cursor: Option<String>) -> Result<Page, ImportError> {
        let base = config
            .text("base_url")
            .filter(|b| !b.is_empty())
            .unwrap_or("https://api.hibob.com")
            .trim_end_matches('/')
            .to_string();
        let mut fields = vec!["root.id".to_string()];
        fields.extend(MAPPING.iter().map(|(p, _)| {
            if p.contains('.') {
                p.to_string()
            } else {
                format!("root.{p}")
            }
        }));
        let (people, _): (People, _) =
            host::request(Method::Post, format!("{base}/v1/people/search"))
                .basic(
                    config.require_text("service_user_id")?,
                    config.require_text("token")?,
                )
                .json(
                    &json!({"fields": fields, "showInactive": false, "humanReadable": "REPLACE"}),
                )?
                .fetch_json()?;
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for e in &people.employees {
            match record(e) {
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

cohort_sdk::export_importer!(HiBob);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searched_employees_map() {
        let e = json!({"id": "3332883884017713238", "email": "mike@example.com", "firstName": "Mike",
            "surname": "Ross", "displayName": "Mike Ross",
            "work": {"title": "Associate", "department": "Legal", "site": "New York", "employeeIdInCompany": 1021}});
        let r = record(&e).unwrap();
        assert_eq!(r.external_id, "3332883884017713238");
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.contains(&"employee_id") && names.contains(&"location"),
            "{names:?}"
        );
        assert!(record(&json!({"id": "1", "firstName": "No"})).is_err());
    }
}
