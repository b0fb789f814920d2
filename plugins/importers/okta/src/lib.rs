//! Okta users: `GET /api/v1/users` (Okta's Users API), 200 users a page,
//! following the `Link: <…>; rel="next"` header. A `429` is handed to the
//! host as rate-limited with its `Retry-After` (30 s when Okta sends none).
//! Users in `SUSPENDED` or `DEPROVISIONED` status are left out: the
//! directory follows them through the run's `missing` policy.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::encoding::url_component;
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;

/// The importer.
pub struct OktaUsers;

#[derive(Deserialize)]
struct User {
    id: String,
    status: String,
    #[serde(default)]
    profile: serde_json::Map<String, serde_json::Value>,
}

/// Okta profile attribute → directory attribute.
const MAPPING: [(&str, &str); 13] = [
    ("login", "username"),
    ("email", "email"),
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("displayName", "display_name"),
    ("department", "department"),
    ("title", "job_title"),
    ("employeeNumber", "employee_id"),
    ("costCenter", "cost_center"),
    ("organization", "company"),
    ("userType", "employee_type"),
    ("city", "location"),
    ("mobilePhone", "phone"),
];

fn base(config: &Config) -> Result<String, ConfigError> {
    if let Some(b) = config.text("base_url").filter(|b| !b.is_empty()) {
        return Ok(b.trim_end_matches('/').to_string());
    }
    let domain = config.require_text("domain")?.trim().trim_end_matches('/');
    let domain = domain
        .strip_prefix("https://")
        .unwrap_or(domain)
        .to_string();
    if domain.is_empty() || domain.contains('/') {
        return Err(invalid("domain", "a domain such as example.okta.com"));
    }
    Ok(format!("https://{domain}"))
}

/// One user as a record, or why it cannot be one.
fn record(u: &User) -> Result<Option<DirectoryRecord>, RecordProblem> {
    if matches!(u.status.as_str(), "SUSPENDED" | "DEPROVISIONED") {
        return Ok(None);
    }
    let text = |k: &str| {
        u.profile
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if text("email").is_none() {
        return Err(RecordProblem {
            external_id: Some(u.id.clone()),
            message: "the profile has no email".into(),
        });
    }
    let mut r = DirectoryRecord::user(u.id.clone());
    for (okta, ours) in MAPPING {
        if let Some(v) = text(okta) {
            r = r.with(ours, v.to_string());
        }
    }
    Ok(Some(r))
}

impl Importer for OktaUsers {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Okta users".into(),
            description: "Users from an Okta org, through the Users API.".into(),
            config: vec![
                field(
                    "domain",
                    "Okta domain",
                    "Your org's domain, e.g. example.okta.com.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "token",
                    "API token",
                    "An Okta API token (read-only admin is enough). Sent as SSWS; stored encrypted.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "search",
                    "Search expression",
                    "Optional Okta search, e.g. profile.department eq \"Engineering\".",
                    ConfigKind::Text,
                    false,
                ),
                field(
                    "base_url",
                    "Base URL",
                    "Instead of https://<domain>: a proxy in front of Okta. Rarely needed.",
                    ConfigKind::Url,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        base(config)?;
        config.require_text("token")?;
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let url = match cursor {
            Some(c) => c,
            None => {
                let mut url = format!("{}/api/v1/users?limit=200", base(config)?);
                if let Some(s) = config.text("search").filter(|s| !s.is_empty()) {
                    url.push_str("&search=");
                    url.push_str(&url_component(s));
                }
                url
            }
        };
        let token = config.require_text("token")?;
        let request = host::request(Method::Get, url.as_str())
            .header("authorization", format!("SSWS {token}"));
        let (users, response): (Vec<serde_json::Value>, _) =
            request.fetch_json().map_err(ImportError::from)?;
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for raw in users {
            let u: User = match serde_json::from_value(raw.clone()) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(RecordProblem {
                        external_id: raw.get("id").and_then(|v| v.as_str()).map(String::from),
                        message: format!("unreadable user: {e}"),
                    });
                    continue;
                }
            };
            match record(&u) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(p) => problems.push(p),
            }
        }
        Ok(Page {
            records,
            problems,
            next_cursor: response.next_link(),
        })
    }
}

cohort_sdk::export_importer!(OktaUsers);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_users_map_and_inactive_ones_are_left_out() {
        // From Okta's "List all users" response example.
        let u: User = serde_json::from_value(json!({
            "id": "00u1ero7vZFVEIYLWPBN", "status": "ACTIVE",
            "profile": {"firstName": "Isaac", "lastName": "Brock", "email": "isaac.brock@example.com",
                        "login": "isaac.brock@example.com", "mobilePhone": "555-415-1337",
                        "department": "Engineering", "employeeNumber": "42"}
        }))
        .unwrap();
        let r = record(&u).unwrap().unwrap();
        assert_eq!(r.external_id, "00u1ero7vZFVEIYLWPBN");
        let names: Vec<&str> = r.attributes.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.contains(&"employee_id") && names.contains(&"phone"),
            "{names:?}"
        );
        let gone: User = serde_json::from_value(
            json!({"id": "00u2", "status": "DEPROVISIONED", "profile": {"email": "x@example.com"}}),
        )
        .unwrap();
        assert!(record(&gone).unwrap().is_none());
        let broken: User = serde_json::from_value(
            json!({"id": "00u3", "status": "ACTIVE", "profile": {"login": "nomail"}}),
        )
        .unwrap();
        assert!(record(&broken).is_err());
    }

    #[test]
    fn the_domain_makes_the_base_url() {
        use cohort_sdk::{ConfigEntry, ConfigValue};
        let c = Config::new(vec![ConfigEntry {
            name: "domain".into(),
            value: ConfigValue::Text("https://example.okta.com/".into()),
        }]);
        assert_eq!(base(&c).unwrap(), "https://example.okta.com");
        let bad = Config::new(vec![ConfigEntry {
            name: "domain".into(),
            value: ConfigValue::Text("example.okta.com/evil".into()),
        }]);
        assert!(base(&bad).is_err());
    }

    /// The search goes into the query string percent-encoded: the fake host
    /// answers only the exact URL, so a space, quote or `&` left as it is
    /// would miss it (or cut the search short at the `&`).
    #[test]
    fn the_search_is_percent_encoded_into_the_url() {
        use cohort_sdk::testing::FakeHost;
        use cohort_sdk::{ConfigEntry, ConfigValue};
        let text = |name: &str, value: &str| ConfigEntry {
            name: name.into(),
            value: ConfigValue::Text(value.into()),
        };
        let c = Config::new(vec![
            text("domain", "example.okta.com"),
            text("token", "t"),
            text("search", r#"profile.department eq "R&D""#),
        ]);
        let url = "https://example.okta.com/api/v1/users?limit=200\
                   &search=profile.department%20eq%20%22R%26D%22";
        let host = FakeHost::new().respond(url, 200, "[]").install();
        let page = OktaUsers::fetch_page(&c, None).unwrap();
        assert!(page.records.is_empty() && page.problems.is_empty());
        assert_eq!(host.requests()[0].url, url);
    }
}
