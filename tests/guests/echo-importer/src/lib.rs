//! A minimal importer used by the end-to-end tests, and the shortest
//! complete example of an importer: it GETs `url`, expects
//! `{"people": [{"id", "email", "department"}], "next": "<url>"|null}` and maps
//! each person to a user record.

use cohort_sdk::config::{Config, invalid};
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page};
use cohort_sdk::{ConfigError, ConfigField, ConfigKind, DirectoryRecord, PluginInfo};
use serde::Deserialize;

#[derive(Deserialize)]
struct Feed {
    people: Vec<Person>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Person {
    id: String,
    email: String,
    department: Option<String>,
}

/// The importer.
pub struct Echo;

impl Importer for Echo {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Echo importer".into(),
            description: "Reads people from a JSON URL.".into(),
            config: vec![
                ConfigField {
                    name: "url".into(),
                    label: "People URL".into(),
                    help: "Absolute URL returning {\"people\": [{\"id\", \"email\", \"department\"}], \"next\"}.".into(),
                    kind: ConfigKind::Url,
                    required: true,
                },
                ConfigField {
                    name: "token".into(),
                    label: "API token".into(),
                    help: "Sent as a bearer token.".into(),
                    kind: ConfigKind::Secret,
                    required: false,
                },
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        let url = config.require_text("url")?;
        if url.ends_with("/forbidden") {
            return Err(invalid("url", "this path is refused by the plugin"));
        }
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let url = match cursor {
            Some(c) => c,
            None => config.require_text("url")?.to_owned(),
        };
        let mut request = host::request(Method::Get, url.as_str());
        if let Some(token) = config.text("token") {
            request = request.bearer(token);
        }
        let (feed, _): (Feed, _) = request.fetch_json()?;
        host::info(
            "fetched page",
            &[("people", &feed.people.len().to_string())],
        );
        Ok(Page {
            records: feed
                .people
                .into_iter()
                .map(|p| {
                    DirectoryRecord::user(p.id)
                        .with("email", p.email)
                        .with_opt("department", p.department)
                })
                .collect(),
            problems: Vec::new(),
            next_cursor: feed.next,
        })
    }
}

cohort_sdk::export_importer!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::testing::FakeHost;
    use cohort_sdk::{ConfigEntry, ConfigValue};

    fn config(url: &str) -> Config {
        Config::new(vec![
            ConfigEntry {
                name: "url".into(),
                value: ConfigValue::Text(url.into()),
            },
            ConfigEntry {
                name: "token".into(),
                value: ConfigValue::Secret("s3cret".into()),
            },
        ])
    }

    #[test]
    fn maps_people_and_follows_next() {
        let fake = FakeHost::new()
            .respond(
                "https://hr.example/people",
                200,
                r#"{"people":[{"id":"7","email":"a@example.com","department":null}],"next":"https://hr.example/people?page=2"}"#,
            )
            .install();
        let page = Echo::fetch_page(&config("https://hr.example/people"), None).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].external_id, "7");
        assert!(page.records[0].get("department").is_none());
        assert_eq!(
            page.next_cursor.as_deref(),
            Some("https://hr.example/people?page=2")
        );
        let sent = fake.requests();
        assert!(
            sent[0]
                .headers
                .contains(&("authorization".into(), "Bearer s3cret".into()))
        );
        assert_eq!(fake.logs()[0].message, "fetched page");
    }

    #[test]
    fn rate_limit_becomes_a_typed_error() {
        let _fake = FakeHost::new()
            .respond_with(
                None,
                "https://hr.example/people",
                Ok(cohort_sdk::host::Response {
                    status: 429,
                    headers: vec![("retry-after".into(), "12".into())],
                    body: Vec::new(),
                }),
            )
            .install();
        let err = Echo::fetch_page(&config("https://hr.example/people"), None).unwrap_err();
        assert_eq!(err, ImportError::RateLimited(12));
    }
}
