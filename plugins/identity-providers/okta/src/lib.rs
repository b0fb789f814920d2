//! Okta.
//!
//! Okta's quirk is its two kinds of authorization servers. Each has its own
//! issuer and keys:
//! - the org authorization server: `https://<domain>`;
//! - a custom one: `https://<domain>/oauth2/<id>`, where `default` is the
//!   one every org has.
//!
//! A token from one is not valid for the other, so the connector derives
//! the issuer from the admin's choice instead of asking for a URL. Okta
//! sends `email_verified`, and an unverified email is not mapped.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::idp::{
    ConnectorError, IdpConnector, MappedIdentity, ProviderEndpoints, claim_attribute,
    standard_attributes, string_claim,
};
use cohort_sdk::{ConfigError, ConfigKind, PluginInfo};
use serde_json::Value;

/// The connector.
pub struct Okta;

fn domain(config: &Config) -> Result<String, ConfigError> {
    let d = config.require_text("domain")?.trim().to_lowercase();
    let d = d
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    if d.is_empty() || !d.contains('.') || d.contains('/') {
        return Err(invalid("domain", "an Okta domain such as example.okta.com"));
    }
    Ok(d)
}

fn server(config: &Config) -> Option<String> {
    config
        .text("authorization_server")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl IdpConnector for Okta {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Okta".into(),
            description: "Okta, through the org authorization server or a custom one.".into(),
            config: vec![
                field(
                    "domain",
                    "Okta domain",
                    "Your Okta domain, such as example.okta.com.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "authorization_server",
                    "Authorization server",
                    "Empty for the org authorization server; default or a server id for a custom one.",
                    ConfigKind::Text,
                    false,
                ),
                field(
                    "client_id",
                    "Client ID",
                    "The OIDC app's client id.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_secret",
                    "Client secret",
                    "The app's secret. Stored encrypted; never shown again.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "groups_claim",
                    "Groups claim",
                    "A claim with the user's Okta groups, mapped to the groups attribute when set (and requested with the groups scope).",
                    ConfigKind::Text,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        domain(config)?;
        if let Some(s) = server(config)
            && !s.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(invalid(
                "authorization_server",
                "default, or an authorization server id (letters and digits)",
            ));
        }
        config.require_text("client_id")?;
        Ok(())
    }

    fn endpoints(config: &Config) -> Result<ProviderEndpoints, ConnectorError> {
        let d = domain(config)?;
        let issuer = match server(config) {
            Some(s) => format!("https://{d}/oauth2/{s}"),
            None => format!("https://{d}"),
        };
        let mut scopes = vec!["email".to_string(), "profile".to_string()];
        if config.text("groups_claim").is_some_and(|g| !g.is_empty()) {
            scopes.push("groups".into());
        }
        Ok(ProviderEndpoints {
            issuer,
            issuer_aliases: Vec::new(),
            scopes,
            authorize_params: Vec::new(),
        })
    }

    fn map_claims(config: &Config, claims: &Value) -> Result<MappedIdentity, ConnectorError> {
        let subject = string_claim(claims, "sub")?;
        let verified = claims.get("email_verified") != Some(&Value::Bool(false));
        let mut attributes = standard_attributes(claims, verified);
        if let Some(claim) = config.text("groups_claim").filter(|g| !g.is_empty())
            && let Some(a) = claims.get(claim).and_then(|v| claim_attribute("groups", v))
        {
            attributes.push(a);
        }
        Ok(MappedIdentity {
            subject: subject.to_string(),
            attributes,
        })
    }
}

cohort_sdk::export_idp_connector!(Okta);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{ConfigEntry, ConfigValue as C, Value as V};
    use serde_json::json;

    fn config(server: Option<&str>, groups: Option<&str>) -> Config {
        let mut e = vec![
            ConfigEntry {
                name: "domain".into(),
                value: C::Text("https://Example.okta.com/".into()),
            },
            ConfigEntry {
                name: "client_id".into(),
                value: C::Text("0oa1b2c3d4".into()),
            },
        ];
        if let Some(s) = server {
            e.push(ConfigEntry {
                name: "authorization_server".into(),
                value: C::Text(s.into()),
            });
        }
        if let Some(g) = groups {
            e.push(ConfigEntry {
                name: "groups_claim".into(),
                value: C::Text(g.into()),
            });
        }
        Config::new(e)
    }

    /// The claims of an Okta ID token from a custom authorization server.
    fn claims() -> Value {
        json!({
            "sub": "00uid4BxXw6I6TV4m0g3",
            "name": "John Doe",
            "email": "john.doe@example.com",
            "ver": 1,
            "iss": "https://example.okta.com/oauth2/default",
            "aud": "0oa1b2c3d4",
            "iat": 1_700_000_000,
            "exp": 1_700_003_600,
            "jti": "ID.4eAWJOCMB3SX8XewDfVR",
            "amr": ["pwd"],
            "idp": "00oid4BxXw6I6TV4m0g3",
            "nonce": "n-0S6_WzA2Mj",
            "preferred_username": "john.doe@example.com",
            "auth_time": 1_700_000_000,
            "email_verified": true,
            "groups": ["Everyone", "Engineering"]
        })
    }

    #[test]
    fn org_and_custom_authorization_servers_have_their_own_issuers() {
        let org = config(None, None);
        Okta::validate_config(&org).unwrap();
        assert_eq!(
            Okta::endpoints(&org).unwrap().issuer,
            "https://example.okta.com"
        );
        let custom = config(Some("default"), None);
        assert_eq!(
            Okta::endpoints(&custom).unwrap().issuer,
            "https://example.okta.com/oauth2/default"
        );
        assert!(Okta::validate_config(&config(Some("../x"), None)).is_err());
    }

    #[test]
    fn groups_are_mapped_when_configured_and_unverified_emails_are_not() {
        let c = config(Some("default"), Some("groups"));
        assert!(
            Okta::endpoints(&c)
                .unwrap()
                .scopes
                .contains(&"groups".to_string())
        );
        let m = Okta::map_claims(&c, &claims()).unwrap();
        assert_eq!(m.subject, "00uid4BxXw6I6TV4m0g3");
        assert!(m.attributes.iter().any(|a| a.name == "groups"
            && a.value == V::TextList(vec!["Everyone".into(), "Engineering".into()])));
        let mut unverified = claims();
        unverified["email_verified"] = json!(false);
        let m = Okta::map_claims(&config(None, None), &unverified).unwrap();
        assert!(!m.attributes.iter().any(|a| a.name == "email"));
    }
}
