//! An identity-provider connector to adapt. Cohort does the OpenID Connect
//! protocol itself (discovery, the authorization code flow with PKCE, and
//! the ID token's validation); a connector says where the provider is and
//! turns the validated claims into directory attributes. This one maps the
//! standard claims (the email only when the provider says it verified it),
//! and a department from a claim the admin names.
//!
//! Change `endpoints` for a provider with a fixed issuer or extra authorize
//! parameters, and `map_claims` for the claims your provider sends.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::idp::{
    ConnectorError, IdpConnector, MappedIdentity, ProviderEndpoints, claim_attribute,
    standard_attributes, string_claim,
};
use cohort_sdk::{ConfigError, ConfigKind, PluginInfo};
use serde_json::Value;

/// The connector.
pub struct MyIdp;

impl IdpConnector for MyIdp {
    // Must match plugin.toml's [[config]] entries: same fields, same order,
    // same name, kind and required.
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Example ID".into(),
            description: "Sign-in through Example ID, an OpenID Connect provider.".into(),
            config: vec![
                field(
                    "issuer",
                    "Issuer URL",
                    "The provider's issuer; Cohort reads <issuer>/.well-known/openid-configuration.",
                    ConfigKind::Url,
                    true,
                ),
                field(
                    "client_id",
                    "Client ID",
                    "The client registered for Cohort at the provider.",
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
                    "department_claim",
                    "Department claim",
                    "The claim that carries the department; default: department.",
                    ConfigKind::Text,
                    false,
                ),
            ],
        }
    }

    // The host has checked kinds and required fields; check what only this
    // connector knows.
    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        if let Some(claim) = config.text("department_claim")
            && (claim.is_empty() || claim.contains(char::is_whitespace))
        {
            return Err(invalid(
                "department_claim",
                "name one claim, without spaces",
            ));
        }
        Ok(())
    }

    fn endpoints(config: &Config) -> Result<ProviderEndpoints, ConnectorError> {
        Ok(ProviderEndpoints {
            issuer: config.require_text("issuer")?.to_string(),
            issuer_aliases: Vec::new(),
            scopes: vec!["email".into(), "profile".into()],
            authorize_params: Vec::new(),
        })
    }

    fn map_claims(config: &Config, claims: &Value) -> Result<MappedIdentity, ConnectorError> {
        let subject = string_claim(claims, "sub")?;
        // Only an email the provider says it verified may be matched
        // against the directory: with a provider that lets people set their
        // own address and says nothing, anyone could claim anyone's
        // account. A missing claim, or "true" as a string, is not a yes.
        let verified = claims.get("email_verified") == Some(&Value::Bool(true));
        let mut attributes = standard_attributes(claims, verified);
        let claim = config.text("department_claim").unwrap_or("department");
        if let Some(department) = claims
            .get(claim)
            .and_then(|v| claim_attribute("department", v))
        {
            attributes.push(department);
        }
        Ok(MappedIdentity {
            subject: subject.to_string(),
            attributes,
        })
    }
}

cohort_sdk::export_idp_connector!(MyIdp);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{ConfigEntry, ConfigValue};
    use serde_json::json;

    fn config(department_claim: Option<&str>) -> Config {
        let mut entries = vec![ConfigEntry {
            name: "issuer".into(),
            value: ConfigValue::Text("https://id.example.com".into()),
        }];
        if let Some(claim) = department_claim {
            entries.push(ConfigEntry {
                name: "department_claim".into(),
                value: ConfigValue::Text(claim.into()),
            });
        }
        Config::new(entries)
    }

    fn attribute<'a>(identity: &'a MappedIdentity, name: &str) -> Option<&'a cohort_sdk::Value> {
        identity
            .attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    #[test]
    fn maps_standard_claims_and_the_department() {
        let claims = json!({"sub": "u-7", "email": "ada@example.com", "email_verified": true,
                            "given_name": "Ada", "dept": "R&D"});
        let identity = MyIdp::map_claims(&config(Some("dept")), &claims).unwrap();
        assert_eq!(identity.subject, "u-7");
        assert_eq!(
            attribute(&identity, "email"),
            Some(&cohort_sdk::Value::Text("ada@example.com".into()))
        );
        assert_eq!(
            attribute(&identity, "department"),
            Some(&cohort_sdk::Value::Text("R&D".into()))
        );
    }

    #[test]
    fn an_email_not_verified_in_so_many_words_is_left_out() {
        for verified in [json!(false), json!("true"), json!(null)] {
            let claims =
                json!({"sub": "u-7", "email": "ada@example.com", "email_verified": verified});
            let identity = MyIdp::map_claims(&config(None), &claims).unwrap();
            assert_eq!(attribute(&identity, "email"), None, "{verified}");
        }
        let claims = json!({"sub": "u-7", "email": "ada@example.com"});
        let identity = MyIdp::map_claims(&config(None), &claims).unwrap();
        assert_eq!(
            attribute(&identity, "email"),
            None,
            "no email_verified claim"
        );
    }

    #[test]
    fn no_subject_is_an_error() {
        let err = MyIdp::map_claims(&config(None), &json!({"email": "a@example.com"})).unwrap_err();
        assert!(matches!(err, ConnectorError::BadResponse(_)), "{err:?}");
    }

    #[test]
    fn a_claim_name_with_spaces_is_refused() {
        let err = MyIdp::validate_config(&config(Some("my dept"))).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(ref p) if p.field == "department_claim"));
    }
}
