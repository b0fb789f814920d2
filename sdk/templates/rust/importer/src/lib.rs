//! A directory importer to copy and adapt. It reads people from
//! `{base_url}/people` with a bearer token, follows the `next` link that each
//! page carries, and maps each person to a Cohort user.
//!
//! The source is expected to answer:
//!
//! ```json
//! {"people": [{"id": "7", "email": "ada@example.com", "first_name": "Ada",
//!              "last_name": "Lovelace", "department": "R&D", "title": "Engineer"}],
//!  "next": "https://hr.example.com/api/people?page=2"}
//! ```
//!
//! with `next` null or absent on the last page. Change `Person` and the mapping
//! in `fetch_page` to fit your source.

use cohort_sdk::config::{Config, invalid};
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigField, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;

/// One page of the source's people API.
#[derive(Deserialize)]
struct PeoplePage {
    people: Vec<Person>,
    /// Absolute URL of the next page; none on the last page.
    #[serde(default)]
    next: Option<String>,
}

/// One person as the source describes them. Fields the source may leave out
/// or send as `null` are `Option`s.
#[derive(Deserialize)]
struct Person {
    id: String,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    department: Option<String>,
    title: Option<String>,
}

/// The importer.
pub struct MyImporter;

impl Importer for MyImporter {
    // Must match plugin.toml's [[config]] entries: same fields, same order,
    // same name, kind and required.
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "My importer".into(),
            description: "Imports people from the Example HR API.".into(),
            config: vec![
                ConfigField {
                    name: "base_url".into(),
                    label: "API base URL".into(),
                    help: "For example https://hr.example.com/api; people are read from \
                           <base URL>/people."
                        .into(),
                    kind: ConfigKind::Url,
                    required: true,
                },
                ConfigField {
                    name: "api_token".into(),
                    label: "API token".into(),
                    help: "Sent as a bearer token.".into(),
                    kind: ConfigKind::Secret,
                    required: true,
                },
            ],
        }
    }

    // The host has already checked that base_url is an absolute http(s) URL
    // and that both fields are present; check what only this plugin knows.
    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        let base_url = config.require_text("base_url")?;
        if base_url.contains('?') || base_url.contains('#') {
            return Err(invalid(
                "base_url",
                "give the API's base URL, without a query or fragment",
            ));
        }
        config.require_text("api_token")?;
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let base_url = config.require_text("base_url")?.trim_end_matches('/');
        let token = config.require_text("api_token")?;
        let url = match cursor {
            None => format!("{base_url}/people"),
            // The token goes with every request, so only follow links that
            // stay under the configured API.
            Some(next) if next.starts_with(&format!("{base_url}/")) => next,
            Some(next) => {
                return Err(ImportError::BadResponse(format!(
                    "the next-page link {next} is not under {base_url}"
                )));
            }
        };
        let (page, _): (PeoplePage, _) =
            host::request(Method::Get, url).bearer(token).fetch_json()?;

        let mut records = Vec::with_capacity(page.people.len());
        let mut problems = Vec::new();
        for person in page.people {
            // A record the importer cannot map is reported, not fatal.
            let Some(email) = person.email.filter(|e| e.contains('@')) else {
                problems.push(RecordProblem {
                    external_id: Some(person.id),
                    message: "no valid email address".into(),
                });
                continue;
            };
            records.push(
                DirectoryRecord::user(person.id)
                    .with("email", email)
                    .with_opt("first_name", person.first_name)
                    .with_opt("last_name", person.last_name)
                    .with_opt("department", person.department)
                    .with_opt("job_title", person.title),
            );
        }
        let mapped = records.len().to_string();
        let skipped = problems.len().to_string();
        host::info(
            "fetched page",
            &[("records", mapped.as_str()), ("problems", skipped.as_str())],
        );
        Ok(Page {
            records,
            problems,
            next_cursor: page.next,
        })
    }
}

cohort_sdk::export_importer!(MyImporter);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::testing::FakeHost;
    use cohort_sdk::{ConfigEntry, ConfigValue, Value};

    fn config() -> Config {
        Config::new(vec![
            ConfigEntry {
                name: "base_url".into(),
                value: ConfigValue::Text("https://hr.example.com/api/".into()),
            },
            ConfigEntry {
                name: "api_token".into(),
                value: ConfigValue::Secret("s3cret".into()),
            },
        ])
    }

    #[test]
    fn maps_people_and_follows_next() {
        let fake = FakeHost::new()
            .respond(
                "https://hr.example.com/api/people",
                200,
                r#"{"people":[{"id":"7","email":"ada@example.com","first_name":"Ada","department":null},
                              {"id":"8","email":null}],
                    "next":"https://hr.example.com/api/people?page=2"}"#,
            )
            .respond(
                "https://hr.example.com/api/people?page=2",
                200,
                r#"{"people":[{"id":"9","email":"bob@example.com","title":"Engineer"}]}"#,
            )
            .install();

        let first = MyImporter::fetch_page(&config(), None).unwrap();
        assert_eq!(first.records.len(), 1);
        assert_eq!(first.records[0].external_id, "7");
        assert_eq!(
            first.records[0].get("first_name"),
            Some(&Value::Text("Ada".into()))
        );
        assert!(first.records[0].get("department").is_none());
        assert_eq!(first.problems.len(), 1);
        assert_eq!(first.problems[0].external_id.as_deref(), Some("8"));

        let second = MyImporter::fetch_page(&config(), first.next_cursor).unwrap();
        assert_eq!(second.records[0].external_id, "9");
        assert_eq!(
            second.records[0].get("job_title"),
            Some(&Value::Text("Engineer".into()))
        );
        assert_eq!(second.next_cursor, None);

        let sent = fake.requests();
        assert_eq!(sent.len(), 2);
        assert!(
            sent[0]
                .headers
                .contains(&("authorization".into(), "Bearer s3cret".into()))
        );
    }

    #[test]
    fn a_refused_token_is_unauthorized() {
        let _fake = FakeHost::new()
            .respond(
                "https://hr.example.com/api/people",
                401,
                r#"{"error":"bad token"}"#,
            )
            .install();
        let err = MyImporter::fetch_page(&config(), None).unwrap_err();
        assert!(matches!(err, ImportError::Unauthorized(_)), "{err:?}");
    }
}
