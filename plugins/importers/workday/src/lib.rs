//! Workday Report-as-a-Service: a custom report published as a web
//! service, read as JSON (`?format=json`) with an integration system user
//! (Basic). The body is `{"Report_Entry": [{…fields the report defines…}]}`;
//! the fields are the report's own, so they are mapped by name, with
//! defaults for common column aliases. RaaS returns the whole report in one
//! response. A worker whose `Active_Status` (when the report has it) is
//! `0` or `false` is left out.

use std::collections::BTreeMap;

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;
use serde_json::Value;

/// The importer.
pub struct Workday;

#[derive(Deserialize)]
struct Report {
    #[serde(rename = "Report_Entry", default)]
    entries: Vec<Value>,
}

const DEFAULTS: [(&str, &str); 10] = [
    ("employee_id", "Employee_ID"),
    ("email", "Email_Address"),
    ("first_name", "First_Name"),
    ("last_name", "Last_Name"),
    ("job_title", "Business_Title"),
    ("department", "Department"),
    ("location", "Location"),
    ("company", "Company"),
    ("cost_center", "Cost_Center"),
    ("employee_type", "Worker_Type"),
];

/// Attribute → report field.
fn mappings(config: &Config) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut m: BTreeMap<String, String> = DEFAULTS
        .iter()
        .map(|(a, f)| (a.to_string(), f.to_string()))
        .collect();
    for pair in config.list("mappings") {
        let Some((a, f)) = pair.split_once('=') else {
            return Err(invalid(
                "mappings",
                format!("{pair:?} is not attribute=Report_Field"),
            ));
        };
        m.insert(a.trim().to_string(), f.trim().to_string());
    }
    Ok(m)
}

/// A field's text: strings and numbers; a list (multi-instance field)
/// gives its first value.
fn text(entry: &Value, name: &str) -> Option<String> {
    let v = entry.get(name)?;
    let v = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

fn record(
    entry: &Value,
    map: &BTreeMap<String, String>,
    id_field: &str,
) -> Result<Option<DirectoryRecord>, RecordProblem> {
    let id = text(entry, id_field);
    if matches!(text(entry, "Active_Status").as_deref(), Some("0" | "false")) {
        return Ok(None);
    }
    let Some(id) = id else {
        return Err(RecordProblem {
            external_id: None,
            message: format!("a worker has no {id_field}"),
        });
    };
    let email_field = map.get("email").map_or("Email_Address", String::as_str);
    if text(entry, email_field).is_none() {
        return Err(RecordProblem {
            external_id: Some(id),
            message: format!("the worker has no {email_field}"),
        });
    }
    let mut r = DirectoryRecord::user(id);
    for (attribute, report_field) in map {
        if let Some(v) = text(entry, report_field) {
            r = r.with(attribute.clone(), v);
        }
    }
    Ok(Some(r))
}

impl Importer for Workday {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Workday".into(),
            description:
                "Workers from a Workday custom report published as a web service (RaaS, JSON)."
                    .into(),
            config: vec![
                field(
                    "report_url",
                    "Report URL",
                    "The report's RaaS URL, e.g. https://wd2-impl-services1.workday.com/ccx/service/customreport2/<tenant>/<owner>/<report>?format=json.",
                    ConfigKind::Url,
                    true,
                ),
                field(
                    "username",
                    "Integration user",
                    "The integration system user (ISU), e.g. ISU_Cohort@<tenant>.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "password",
                    "Password",
                    "The ISU's password. Stored encrypted.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "mappings",
                    "Field mappings",
                    "attribute=Report_Field pairs, replacing the defaults for those attributes. Defaults: employee_id=Employee_ID, email=Email_Address, first_name=First_Name, last_name=Last_Name, job_title=Business_Title, department=Department, location=Location, company=Company, cost_center=Cost_Center, employee_type=Worker_Type.",
                    ConfigKind::TextList,
                    false,
                ),
                field(
                    "id_field",
                    "Id field",
                    "The report field that identifies a worker. Default Employee_ID.",
                    ConfigKind::Text,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        mappings(config)?;
        let url = config.require_text("report_url")?;
        if !url.contains("format=json") {
            return Err(invalid(
                "report_url",
                "add format=json to the report URL: Cohort reads the JSON form",
            ));
        }
        config.require_text("username")?;
        config.require_text("password")?;
        Ok(())
    }

    fn fetch_page(config: &Config, _cursor: Option<String>) -> Result<Page, ImportError> {
        let map = mappings(config)?;
        let id_field = config
            .text("id_field")
            .filter(|f| !f.is_empty())
            .unwrap_or("Employee_ID")
            .to_string();
        let (report, _): (Report, _) =
            host::request(Method::Get, config.require_text("report_url")?)
                .basic(
                    config.require_text("username")?,
                    config.require_text("password")?,
                )
                .fetch_json()?;
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for entry in &report.entries {
            match record(entry, &map, &id_field) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
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

cohort_sdk::export_importer!(Workday);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{ConfigEntry, ConfigValue};
    use serde_json::json;

    #[test]
    fn report_entries_map_by_field_name() {
        let config = Config::new(vec![ConfigEntry {
            name: "mappings".into(),
            value: ConfigValue::TextList(vec![
                "email=Email_-_Work".into(),
                "badge=Badge_ID".into(),
            ]),
        }]);
        let map = mappings(&config).unwrap();
        let entry = json!({"Employee_ID": "21001", "Email_-_Work": "logan@example.com",
            "First_Name": "Logan", "Last_Name": "McNeil", "Business_Title": "Chief Executive Officer",
            "Department": "Executive Management", "Location": ["San Francisco"], "Badge_ID": 77});
        let r = record(&entry, &map, "Employee_ID").unwrap().unwrap();
        assert_eq!(r.external_id, "21001");
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.contains(&"badge") && names.contains(&"location"),
            "{names:?}"
        );
        assert!(
            record(
                &json!({"Employee_ID": "2", "Active_Status": "0"}),
                &map,
                "Employee_ID"
            )
            .unwrap()
            .is_none()
        );
        assert!(record(&json!({"Employee_ID": "3"}), &map, "Employee_ID").is_err());
        let bad = Config::new(vec![ConfigEntry {
            name: "mappings".into(),
            value: ConfigValue::TextList(vec!["nope".into()]),
        }]);
        assert!(mappings(&bad).is_err());
    }
}
