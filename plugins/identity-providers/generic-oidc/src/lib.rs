//! Cohort's connector for any standard OpenID Connect provider.
//!
//! The host does the protocol: discovery, the authorization code flow with
//! PKCE, and full ID token validation. A connector only says where the
//! provider is and turns validated claims into directory attributes, so
//! this one is short. It is also the base the provider-specific connectors
//! follow.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::idp::{
    ConnectorError, IdpConnector, MappedIdentity, ProviderEndpoints, claim_attribute,
    standard_attributes, string_claim,
};
use cohort_sdk::{ConfigError, ConfigKind, PluginInfo};
use serde_json::Value;

/// The connector.
pub struct GenericOidc;

/// `attribute=claim` pairs from the configuration.
pub fn extra_mappings(config: &Config) -> Result<Vec<(String, String)>, ConfigError> {
    config
        .list("claim_mappings")
        .iter()
        .map(|pair| {
            let (attribute, claim) = pair.split_once('=').ok_or_else(|| {
                invalid("claim_mappings", format!("{pair:?} is not attribute=claim"))
            })?;
            let (attribute, claim) = (attribute.trim(), claim.trim());
            if attribute.is_empty() || claim.is_empty() {
                return Err(invalid(
                    "claim_mappings",
                    format!("{pair:?} needs both an attribute and a claim"),
                ));
            }
            Ok((attribute.to_string(), claim.to_string()))
        })
        .collect()
}

impl IdpConnector for GenericOidc {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "OpenID Connect".into(),
            description: "Any standard OpenID Connect provider.".into(),
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
                    "scopes",
                    "Scopes",
                    "Requested besides openid. Default: email, profile.",
                    ConfigKind::TextList,
                    false,
                ),
                field(
                    "claim_mappings",
                    "Claim mappings",
                    "Extra attribute=claim pairs, e.g. department=dept. email, first_name, last_name and display_name are mapped already.",
                    ConfigKind::TextList,
                    false,
                ),
                field(
                    "require_verified_email",
                    "Require a verified email",
                    "Ignore the email claim when email_verified is false (default true). A provider that omits email_verified is trusted.",
                    ConfigKind::Boolean,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        config.require_text("issuer")?;
        config.require_text("client_id")?;
        extra_mappings(config)?;
        Ok(())
    }

    fn endpoints(config: &Config) -> Result<ProviderEndpoints, ConnectorError> {
        let scopes = match config.list("scopes") {
            [] => vec!["email".to_string(), "profile".to_string()],
            s => s.to_vec(),
        };
        Ok(ProviderEndpoints {
            issuer: config.require_text("issuer")?.to_string(),
            issuer_aliases: Vec::new(),
            scopes,
            authorize_params: Vec::new(),
        })
    }

    fn map_claims(config: &Config, claims: &Value) -> Result<MappedIdentity, ConnectorError> {
        let subject = string_claim(claims, "sub")?;
        let unverified = claims.get("email_verified") == Some(&Value::Bool(false));
        let skip_email = unverified && config.flag("require_verified_email", true);
        let mut attributes = standard_attributes(claims, !skip_email);
        for (attr, claim) in extra_mappings(config)? {
            if let Some(a) = claims.get(&claim).and_then(|v| claim_attribute(&attr, v)) {
                attributes.retain(|x| x.name != attr);
                attributes.push(a);
            }
        }
        Ok(MappedIdentity {
            subject: subject.to_string(),
            attributes,
        })
    }
}

cohort_sdk::export_idp_connector!(GenericOidc);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{ConfigEntry, ConfigValue as C, Value as V};
    use serde_json::json;

    fn config(entries: &[(&str, C)]) -> Config {
        Config::new(
            entries
                .iter()
                .map(|(n, v)| ConfigEntry {
                    name: n.to_string(),
                    value: v.clone(),
                })
                .collect(),
        )
    }

    fn text(s: &str) -> C {
        C::Text(s.into())
    }

    fn get<'a>(m: &'a MappedIdentity, name: &str) -> Option<&'a V> {
        m.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    #[test]
    fn maps_standard_and_extra_claims() {
        let c = config(&[
            ("issuer", text("https://idp.example.com")),
            ("client_id", text("cohort")),
            (
                "claim_mappings",
                C::TextList(vec!["department=dept".into(), "groups=groups".into()]),
            ),
        ]);
        GenericOidc::validate_config(&c).unwrap();
        let m = GenericOidc::map_claims(
            &c,
            &json!({"sub": "abc", "email": "ada@example.com", "email_verified": true,
                    "given_name": "Ada", "family_name": "Lovelace", "dept": "Engineering",
                    "groups": ["a", "b"]}),
        )
        .unwrap();
        assert_eq!(m.subject, "abc");
        assert_eq!(get(&m, "email"), Some(&V::Text("ada@example.com".into())));
        assert_eq!(get(&m, "first_name"), Some(&V::Text("Ada".into())));
        assert_eq!(get(&m, "department"), Some(&V::Text("Engineering".into())));
        assert_eq!(
            get(&m, "groups"),
            Some(&V::TextList(vec!["a".into(), "b".into()]))
        );
        let e = GenericOidc::endpoints(&c).unwrap();
        assert_eq!(e.scopes, ["email", "profile"]);
    }

    #[test]
    fn unverified_email_is_not_mapped_unless_allowed() {
        let claims = json!({"sub": "abc", "email": "ada@example.com", "email_verified": false});
        let strict = config(&[("issuer", text("https://i")), ("client_id", text("c"))]);
        assert_eq!(
            get(&GenericOidc::map_claims(&strict, &claims).unwrap(), "email"),
            None
        );
        let lax = config(&[
            ("issuer", text("https://i")),
            ("client_id", text("c")),
            ("require_verified_email", C::Boolean(false)),
        ]);
        assert!(get(&GenericOidc::map_claims(&lax, &claims).unwrap(), "email").is_some());
    }

    #[test]
    fn bad_settings_and_claims_are_refused() {
        let c = config(&[
            ("issuer", text("https://i")),
            ("client_id", text("c")),
            ("claim_mappings", C::TextList(vec!["department".into()])),
        ]);
        assert!(GenericOidc::validate_config(&c).is_err());
        let ok = config(&[("issuer", text("https://i")), ("client_id", text("c"))]);
        assert!(GenericOidc::map_claims(&ok, &json!({"email": "x@y"})).is_err());
    }
}
