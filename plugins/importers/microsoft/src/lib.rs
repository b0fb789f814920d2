//! Microsoft Graph users (and, when asked, devices): an app-only token (OAuth 2.0 client credentials
//! at `login.microsoftonline.com/{tenant}/oauth2/v2.0/token`, scope
//! `https://graph.microsoft.com/.default`), then `GET /v1.0/users` with
//! `$select` and `$top=999`, following `@odata.nextLink`. Accounts with
//! `accountEnabled: false` are left out. With `devices` on, the devices
//! follow (`GET /v1.0/devices` with their registered owners, which bind
//! them to their users). Graph's `429` carries `Retry-After`, handed to
//! the host.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::encoding::url_component;
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;
use serde_json::Value;

/// The importer.
pub struct Graph;

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

/// A device page's cursor starts with this; a user page's is Graph's
/// `@odata.nextLink` itself.
const DEVICES: &str = "devices:";

#[derive(Deserialize)]
struct Users {
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
}

/// Graph user property → directory attribute.
const MAPPING: [(&str, &str); 11] = [
    ("userPrincipalName", "username"),
    ("mail", "email"),
    ("givenName", "first_name"),
    ("surname", "last_name"),
    ("displayName", "display_name"),
    ("jobTitle", "job_title"),
    ("department", "department"),
    ("officeLocation", "location"),
    ("employeeId", "employee_id"),
    ("companyName", "company"),
    ("employeeType", "employee_type"),
];

const SELECT: &str = "id,accountEnabled,userPrincipalName,mail,givenName,surname,displayName,jobTitle,department,officeLocation,employeeId,companyName,employeeType,mobilePhone";

fn url(config: &Config, name: &str, default: &str) -> String {
    config
        .text(name)
        .filter(|u| !u.is_empty())
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_string()
}

/// Graph's `operatingSystem` as Cohort's OS family.
fn os_family(os: &str) -> Option<&'static str> {
    let os = os.to_ascii_lowercase();
    if os.starts_with("windows") {
        Some("windows")
    } else if os.starts_with("mac") {
        Some("macos")
    } else if matches!(os.as_str(), "ios" | "ipados" | "iphone" | "ipad") {
        Some("ios")
    } else if os.starts_with("android") {
        Some("android")
    } else if os.starts_with("linux") || os == "ubuntu" {
        Some("linux")
    } else {
        None
    }
}

/// One device as a record (none when disabled), or why it cannot be one.
fn device_record(d: &Value) -> Result<Option<DirectoryRecord>, RecordProblem> {
    let text = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let Some(id) = text("id") else {
        return Err(RecordProblem {
            external_id: None,
            message: "a device has no id".into(),
        });
    };
    if d.get("accountEnabled") == Some(&Value::Bool(false)) {
        return Ok(None);
    }
    let problem = |m: String| RecordProblem {
        external_id: Some(id.to_string()),
        message: m,
    };
    let name = text("displayName").ok_or_else(|| problem("the device has no name".into()))?;
    let os = text("operatingSystem").unwrap_or_default();
    let family = os_family(os)
        .ok_or_else(|| problem(format!("operating system {os:?} is not one Cohort tracks")))?;
    let mut r = DirectoryRecord::device(id)
        .with("hostname", name.replace(' ', "-"))
        .with("display_name", name.to_string())
        .with("os_family", family.to_string());
    if let Some(v) = text("operatingSystemVersion") {
        r = r.with("os_version", v.to_string());
    }
    if let Some(m) = d.get("isManaged").and_then(Value::as_bool) {
        r = r.with("mdm_enrolled", m);
    }
    let owner = d
        .get("registeredOwners")
        .and_then(Value::as_array)
        .and_then(|o| o.first())
        .and_then(|o| {
            o.get("mail")
                .and_then(Value::as_str)
                .or_else(|| o.get("userPrincipalName").and_then(Value::as_str))
        });
    if let Some(o) = owner {
        r = r.with("owner", o.to_string());
    }
    Ok(Some(r))
}

/// One user as a record (none when disabled), or why it cannot be one.
fn record(u: &Value) -> Result<Option<DirectoryRecord>, RecordProblem> {
    let text = |k: &str| {
        u.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let Some(id) = text("id") else {
        return Err(RecordProblem {
            external_id: None,
            message: "a user has no id".into(),
        });
    };
    if u.get("accountEnabled") == Some(&Value::Bool(false)) {
        return Ok(None);
    }
    if text("mail").is_none() {
        return Err(RecordProblem {
            external_id: Some(id.to_string()),
            message: "the user has no mail".into(),
        });
    }
    let mut r = DirectoryRecord::user(id);
    for (theirs, ours) in MAPPING {
        if let Some(v) = text(theirs) {
            r = r.with(ours, v.to_string());
        }
    }
    if let Some(p) = text("mobilePhone") {
        r = r.with("phone", p.to_string());
    }
    Ok(Some(r))
}

impl Importer for Graph {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Microsoft Graph".into(),
            description: "Users from Microsoft Entra ID through Microsoft Graph.".into(),
            config: vec![
                field(
                    "tenant",
                    "Tenant",
                    "The directory (tenant) id.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_id",
                    "Application (client) ID",
                    "An app registration with the User.Read.All application permission (admin-consented).",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_secret",
                    "Client secret",
                    "The app registration's secret. Stored encrypted.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "filter",
                    "Filter",
                    "Optional OData $filter, e.g. userType eq 'Member'.",
                    ConfigKind::Text,
                    false,
                ),
                field(
                    "devices",
                    "Devices",
                    "Also read devices, bound to their registered owners (needs the Device.Read.All application permission).",
                    ConfigKind::Boolean,
                    false,
                ),
                field(
                    "login_url",
                    "Login URL",
                    "Instead of https://login.microsoftonline.com (national clouds, or a proxy).",
                    ConfigKind::Url,
                    false,
                ),
                field(
                    "graph_url",
                    "Graph URL",
                    "Instead of https://graph.microsoft.com (national clouds, or a proxy).",
                    ConfigKind::Url,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        let t = config.require_text("tenant")?.trim();
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid("tenant", "a tenant id (a GUID) or domain"));
        }
        config.require_text("client_id")?;
        config.require_text("client_secret")?;
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let login = url(config, "login_url", "https://login.microsoftonline.com");
        let graph = url(config, "graph_url", "https://graph.microsoft.com");
        let token_url = format!(
            "{login}/{}/oauth2/v2.0/token",
            config.require_text("tenant")?.trim()
        );
        let token_request = host::request(Method::Post, token_url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.require_text("client_id")?),
            ("client_secret", config.require_text("client_secret")?),
            ("scope", "https://graph.microsoft.com/.default"),
        ]);
        let (token, _): (Token, _) = token_request.fetch_json()?;
        if let Some(rest) = cursor.as_deref().and_then(|c| c.strip_prefix(DEVICES)) {
            let url = if rest.is_empty() {
                format!(
                    "{graph}/v1.0/devices?$select=id,displayName,operatingSystem,operatingSystemVersion,isManaged,accountEnabled&$expand=registeredOwners&$top=999"
                )
            } else {
                rest.to_string()
            };
            let (devices, _): (Users, _) = host::request(Method::Get, url)
                .bearer(&token.access_token)
                .fetch_json()?;
            let mut records = Vec::new();
            let mut problems = Vec::new();
            for d in &devices.value {
                match device_record(d) {
                    Ok(Some(r)) => records.push(r),
                    Ok(None) => {}
                    Err(p) => problems.push(p),
                }
            }
            return Ok(Page {
                records,
                problems,
                next_cursor: devices.next.map(|n| format!("{DEVICES}{n}")),
            });
        }
        let page_url = match cursor {
            Some(c) => c,
            None => {
                let mut u = format!("{graph}/v1.0/users?$select={SELECT}&$top=999");
                if let Some(f) = config.text("filter").filter(|f| !f.is_empty()) {
                    u.push_str("&$filter=");
                    u.push_str(&url_component(f));
                }
                u
            }
        };
        let (users, _): (Users, _) = host::request(Method::Get, page_url)
            .bearer(&token.access_token)
            .fetch_json()?;
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for u in &users.value {
            match record(u) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(p) => problems.push(p),
            }
        }
        // Users first, then (when asked) devices, so owners exist to bind.
        let next = match users.next {
            Some(n) => Some(n),
            None if config.flag("devices", false) => Some(DEVICES.to_string()),
            None => None,
        };
        Ok(Page {
            records,
            problems,
            next_cursor: next,
        })
    }
}

cohort_sdk::export_importer!(Graph);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_users_map() {
        // From Graph's "List users" response example, with $select.
        let u = json!({"id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd", "accountEnabled": true,
            "displayName": "Adele Vance", "givenName": "Adele", "surname": "Vance",
            "jobTitle": "Retail Manager", "mail": "AdeleV@contoso.com", "mobilePhone": "+1 425 555 0109",
            "officeLocation": "18/2111", "userPrincipalName": "AdeleV@contoso.com", "department": "Retail"});
        let r = record(&u).unwrap().unwrap();
        assert_eq!(r.external_id, "87d349ed-44d7-43e1-9a83-5f2406dee5bd");
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.contains(&"location") && names.contains(&"phone") && names.contains(&"username"),
            "{names:?}"
        );
        assert!(
            record(&json!({"id": "x", "accountEnabled": false, "mail": "x@contoso.com"}))
                .unwrap()
                .is_none()
        );
        assert!(record(&json!({"id": "y", "accountEnabled": true, "mail": null})).is_err());
    }
}
