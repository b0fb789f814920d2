//! Google sign-in.
//!
//! Google's quirks:
//! - ID tokens carry `iss` as either `https://accounts.google.com` or
//!   `accounts.google.com`; both are the same issuer.
//! - A Google Workspace domain is restricted by the `hd` claim. The `hd`
//!   authorization parameter only pre-selects the account chooser, so the
//!   claim must be checked: a personal account (no `hd`) or another
//!   domain's account is rejected.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::idp::{
    ConnectorError, IdpConnector, MappedIdentity, ProviderEndpoints, standard_attributes,
    string_claim,
};
use cohort_sdk::{ConfigError, ConfigKind, PluginInfo};
use serde_json::Value;

/// The connector.
pub struct Google;

/// Google's issuer.
pub const ISSUER: &str = "https://accounts.google.com";

fn hosted_domain(config: &Config) -> Option<String> {
    config
        .text("hosted_domain")
        .map(|d| d.trim().to_lowercase())
        .filter(|d| !d.is_empty())
}

impl IdpConnector for Google {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Google".into(),
            description: "Google sign-in, optionally limited to one Google Workspace domain."
                .into(),
            config: vec![
                field(
                    "client_id",
                    "Client ID",
                    "The OAuth client created for Cohort in Google Cloud.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_secret",
                    "Client secret",
                    "The client's secret. Stored encrypted; never shown again.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "hosted_domain",
                    "Workspace domain",
                    "Only accounts of this Google Workspace domain (the hd claim) may sign in. Empty: any Google account.",
                    ConfigKind::Text,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        let id = config.require_text("client_id")?;
        if !id.ends_with(".apps.googleusercontent.com") {
            return Err(invalid(
                "client_id",
                "a Google client id ends with .apps.googleusercontent.com",
            ));
        }
        if let Some(d) = hosted_domain(config)
            && (!d.contains('.') || d.contains('@') || d.contains('/'))
        {
            return Err(invalid("hosted_domain", "a domain such as example.com"));
        }
        Ok(())
    }

    fn endpoints(config: &Config) -> Result<ProviderEndpoints, ConnectorError> {
        Ok(ProviderEndpoints {
            issuer: ISSUER.into(),
            issuer_aliases: vec!["accounts.google.com".into()],
            scopes: vec!["email".into(), "profile".into()],
            authorize_params: hosted_domain(config)
                .map(|d| vec![("hd".to_string(), d)])
                .unwrap_or_default(),
        })
    }

    fn map_claims(config: &Config, claims: &Value) -> Result<MappedIdentity, ConnectorError> {
        let subject = string_claim(claims, "sub")?;
        if let Some(domain) = hosted_domain(config) {
            match claims.get("hd").and_then(Value::as_str) {
                Some(hd) if hd.eq_ignore_ascii_case(&domain) => {}
                Some(hd) => {
                    return Err(ConnectorError::Rejected(format!(
                        "the account belongs to the Workspace domain {hd}, not {domain}"
                    )));
                }
                None => {
                    return Err(ConnectorError::Rejected(format!(
                        "a personal Google account signed in; only {domain} accounts may"
                    )));
                }
            }
        }
        let verified = claims.get("email_verified") == Some(&Value::Bool(true));
        Ok(MappedIdentity {
            subject: subject.to_string(),
            attributes: standard_attributes(claims, verified),
        })
    }
}

cohort_sdk::export_idp_connector!(Google);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{ConfigEntry, ConfigValue as C, Value as V};
    use serde_json::json;

    fn config(hd: Option<&str>) -> Config {
        let mut entries = vec![ConfigEntry {
            name: "client_id".into(),
            value: C::Text("123-abc.apps.googleusercontent.com".into()),
        }];
        if let Some(d) = hd {
            entries.push(ConfigEntry {
                name: "hosted_domain".into(),
                value: C::Text(d.into()),
            });
        }
        Config::new(entries)
    }

    /// The claims of a Google Workspace ID token, as Google sends them.
    fn workspace_claims() -> Value {
        json!({
            "iss": "https://accounts.google.com",
            "azp": "123-abc.apps.googleusercontent.com",
            "aud": "123-abc.apps.googleusercontent.com",
            "sub": "110169484474386276334",
            "hd": "example.com",
            "email": "ada@example.com",
            "email_verified": true,
            "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
            "name": "Ada Lovelace",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "locale": "en",
            "iat": 1_700_000_000,
            "exp": 1_700_003_600
        })
    }

    #[test]
    fn both_issuer_spellings_and_the_hd_parameter() {
        let e = Google::endpoints(&config(Some("Example.com"))).unwrap();
        assert_eq!(e.issuer, "https://accounts.google.com");
        assert_eq!(e.issuer_aliases, ["accounts.google.com"]);
        assert_eq!(
            e.authorize_params,
            [("hd".to_string(), "example.com".to_string())]
        );
        assert!(
            Google::endpoints(&config(None))
                .unwrap()
                .authorize_params
                .is_empty()
        );
    }

    #[test]
    fn the_hosted_domain_is_enforced_on_the_claim() {
        let m = Google::map_claims(&config(Some("example.com")), &workspace_claims()).unwrap();
        assert_eq!(m.subject, "110169484474386276334");
        assert!(
            m.attributes
                .iter()
                .any(|a| a.name == "email" && a.value == V::Text("ada@example.com".into()))
        );
        let mut other = workspace_claims();
        other["hd"] = json!("evil.example");
        assert!(matches!(
            Google::map_claims(&config(Some("example.com")), &other),
            Err(ConnectorError::Rejected(_))
        ));
        let mut personal = workspace_claims();
        personal.as_object_mut().unwrap().remove("hd");
        assert!(matches!(
            Google::map_claims(&config(Some("example.com")), &personal),
            Err(ConnectorError::Rejected(_))
        ));
        // Without a domain restriction, a personal account is fine.
        assert!(Google::map_claims(&config(None), &personal).is_ok());
    }

    #[test]
    fn unverified_emails_are_not_mapped_and_client_ids_are_checked() {
        let mut c = workspace_claims();
        c["email_verified"] = json!(false);
        let m = Google::map_claims(&config(None), &c).unwrap();
        assert!(!m.attributes.iter().any(|a| a.name == "email"));
        let bad = Config::new(vec![ConfigEntry {
            name: "client_id".into(),
            value: C::Text("not-a-google-client".into()),
        }]);
        assert!(Google::validate_config(&bad).is_err());
    }
}
