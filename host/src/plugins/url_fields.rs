//! URL configuration fields carry credentials more often than admins think:
//! `https://svc:pass@host/...` or a signed link (`?sig=...`). Only `secret`
//! fields are sealed, so a URL field must not hold a user name or password
//! at all (the admin puts those in a secret field), and its query string and
//! fragment are hidden from every API view and audit diff, unless the
//! manifest declares the field's query harmless (`show_query = true`). The
//! stored value keeps them: the plugin needs the real URL.

use std::collections::BTreeMap;

use serde_json::Value;

use super::manifest::{ConfigKind, Manifest, World};
use crate::audit::Change;
use crate::error::DomainError;
use crate::outbound::redact_url as redact;

/// Refuses a URL with user information, naming the field.
pub(crate) fn check(field: &str, url: &reqwest::Url) -> Result<(), DomainError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::invalid(
            field,
            "must not contain a user name or password (user:pass@); put credentials in the plugin's secret field",
        ));
    }
    Ok(())
}

/// Refuses a URL an importer could not call: its host is not in the
/// manifest's `allowed_hosts`, so every run would fail at its first request.
/// Said at save time, naming the field and the host, rather than as a
/// failed preview. Identity-provider connectors do not call out themselves
/// (the host fetches the provider's documents), so their URLs are not held
/// to the list.
pub(crate) fn check_reachable(
    manifest: &Manifest,
    field: &str,
    url: &reqwest::Url,
) -> Result<(), DomainError> {
    if manifest.world != World::DirectoryImporter {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let default_port = if url.scheme() == "https" { 443 } else { 80 };
    let port = url.port().unwrap_or(default_port);
    if manifest.allows(&host, port, default_port) {
        return Ok(());
    }
    let target = if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    };
    Err(DomainError::invalid(
        field,
        format!(
            "{target} is not in plugin {}'s allowed_hosts ({}), so the plugin could not reach it; \
             use a host it allows, or install a copy of the plugin whose manifest allows {target}",
            manifest.name,
            if manifest.allowed_hosts.is_empty() {
                "none".to_string()
            } else {
                manifest.allowed_hosts.join(", ")
            }
        ),
    ))
}

/// Refuses a text value that is a URL with user information: a field not
/// declared `url` is shown as it is to every reader, so a credential pasted
/// into one would be on display. Other text is left alone.
pub(crate) fn check_text(field: &str, value: &str) -> Result<(), DomainError> {
    match reqwest::Url::parse(value.trim()) {
        Ok(u) if u.host().is_some() => check(field, &u),
        _ => Ok(()),
    }
}

/// Whether the value of `name` is shown redacted. Without the manifest (the
/// plugin was removed), any string that parses as a URL is.
fn hidden(manifest: Option<&Manifest>, name: &str, value: &Value) -> bool {
    match manifest.and_then(|m| m.config.iter().find(|f| f.name == name)) {
        Some(spec) => spec.kind == ConfigKind::Url && !spec.show_query,
        None => value
            .as_str()
            .is_some_and(|s| reqwest::Url::parse(s).is_ok()),
    }
}

fn redact_value(value: &Value) -> Option<Value> {
    value.as_str().and_then(redact).map(Value::String)
}

/// Hides what [`redact`] hides in an instance's config, for API views.
pub(crate) fn redact_config(manifest: Option<&Manifest>, config: &mut BTreeMap<String, Value>) {
    for (name, value) in config.iter_mut() {
        if hidden(manifest, name, value)
            && let Some(r) = redact_value(value)
        {
            *value = r;
        }
    }
}

/// The same for an audit diff over an instance (`config.<name>` keys). A
/// change only to the hidden part still shows as a change.
pub(crate) fn redact_changes(manifest: Option<&Manifest>, changes: &mut BTreeMap<String, Change>) {
    for (key, change) in changes.iter_mut() {
        let Some(name) = key.strip_prefix("config.") else {
            continue;
        };
        let sample = if change.after.is_null() {
            &change.before
        } else {
            &change.after
        };
        if !hidden(manifest, name, sample) {
            continue;
        }
        let before = redact_value(&change.before).unwrap_or_else(|| change.before.clone());
        let after = redact_value(&change.after).unwrap_or_else(|| change.after.clone());
        change.after = if before == after && !after.is_null() {
            Value::String(format!(
                "{} (hidden part changed)",
                after.as_str().unwrap_or_default()
            ))
        } else {
            after
        };
        change.before = before;
    }
}

/// When an admin sends back a redacted value they read, the stored value
/// stays: resaving a form must not overwrite the real URL with its redaction.
pub(crate) fn keep_stored(sent: &Value, stored: Option<&Value>) -> Option<Value> {
    let stored = stored?;
    let redacted = redact_value(stored)?;
    (sent == &redacted).then(|| stored.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_fragment_and_user_information_are_hidden() {
        assert_eq!(
            redact("https://svc:P4ssw0rd@files.example.com/people.csv?sig=SECRETSIG&v=1#t")
                .unwrap(),
            "https://[redacted]@files.example.com/people.csv?sig=[redacted]&v=[redacted]#[redacted]"
        );
        assert_eq!(
            redact("http://files.example.com:8080/a?flag").unwrap(),
            "http://files.example.com:8080/a?[redacted]"
        );
        assert_eq!(redact("https://files.example.com/people.csv"), None);
        assert_eq!(redact("not a url"), None);
    }

    #[test]
    fn user_information_is_refused() {
        for u in [
            "https://svc:pw@h.example/",
            "https://svc@h.example/",
            "https://:pw@h.example/",
        ] {
            let url = reqwest::Url::parse(u).unwrap();
            let err = check("config.url", &url).unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { ref field, .. } if field == "config.url"),
                "{u}"
            );
        }
        assert!(
            check(
                "config.url",
                &reqwest::Url::parse("https://h.example/?a=b").unwrap()
            )
            .is_ok()
        );
    }

    #[test]
    fn text_that_is_a_url_with_credentials_is_refused() {
        assert!(check_text("config.x", "https://svc:pw@h.example/").is_err());
        assert!(check_text("config.x", " https://svc@h.example ").is_err());
        for ok in [
            "plain text",
            "user@example.com",
            "https://h.example/?a=b",
            "a:b@c",
        ] {
            assert!(check_text("config.x", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_change_to_the_hidden_part_still_shows() {
        let mut changes = BTreeMap::from([(
            "config.url".to_string(),
            Change {
                before: Value::from("https://h.example/x?sig=ONE"),
                after: Value::from("https://h.example/x?sig=TWO"),
            },
        )]);
        redact_changes(None, &mut changes);
        let text = serde_json::to_string(&changes["config.url"].after).unwrap()
            + &serde_json::to_string(&changes["config.url"].before).unwrap();
        assert!(!text.contains("ONE") && !text.contains("TWO"), "{text}");
        assert!(text.contains("hidden part changed"), "{text}");
    }
}
