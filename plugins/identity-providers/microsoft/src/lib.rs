//! Microsoft Entra ID (formerly Azure AD).
//!
//! Entra's quirks:
//! - The issuer is tenant-specific: `https://login.microsoftonline.com/<tenant
//!   id>/v2.0`.
//! - A multi-tenant app (`organizations` / `common`) receives tokens from
//!   any tenant, so the `tid` claim must be checked against the tenants the
//!   admin allows. Accepting any tenant would let any Microsoft customer in.
//! - The stable user id is `oid`, which is unique within a tenant. `sub` is
//!   pairwise per app. Across tenants the subject is `<tid>/<oid>`.
//! - `email` is optional and not verified by Entra. `preferred_username` is
//!   the sign-in name (usually the UPN). Both are mapped: the email as
//!   `email`, the sign-in name as `username`. An IdP that matches on email
//!   should only be used with tenants that control their users' emails.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::idp::{
    ConnectorError, IdpConnector, MappedIdentity, ProviderEndpoints, claim_attribute,
    standard_attributes, string_claim,
};
use cohort_sdk::{ConfigError, ConfigKind, PluginInfo};
use serde_json::Value;

/// The connector.
pub struct Azure;

const MULTI: [&str; 2] = ["organizations", "common"];

fn is_tenant_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn tenant(config: &Config) -> Result<String, ConfigError> {
    Ok(config.require_text("tenant")?.trim().to_lowercase())
}

fn allowed(config: &Config) -> Vec<String> {
    config
        .list("allowed_tenants")
        .iter()
        .map(|t| t.trim().to_lowercase())
        .collect()
}

impl IdpConnector for Azure {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "Microsoft Entra ID".into(),
            description: "Microsoft Entra ID (Azure AD), single-tenant or multi-tenant with a list of allowed tenants.".into(),
            config: vec![
                field(
                    "tenant",
                    "Tenant",
                    "The directory (tenant) id, or organizations / common for a multi-tenant app.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_id",
                    "Application (client) ID",
                    "The app registration's client id.",
                    ConfigKind::Text,
                    true,
                ),
                field(
                    "client_secret",
                    "Client secret",
                    "The app registration's secret. Stored encrypted; never shown again.",
                    ConfigKind::Secret,
                    true,
                ),
                field(
                    "allowed_tenants",
                    "Allowed tenants",
                    "For organizations / common: the tenant ids whose users may sign in. Required then.",
                    ConfigKind::TextList,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        let t = tenant(config)?;
        let multi = MULTI.contains(&t.as_str());
        if !multi && !is_tenant_id(&t) {
            return Err(invalid(
                "tenant",
                "a tenant id (a GUID), or organizations / common for a multi-tenant app",
            ));
        }
        let allowed = allowed(config);
        if multi && allowed.is_empty() {
            return Err(invalid(
                "allowed_tenants",
                "a multi-tenant app needs the tenant ids allowed to sign in; any Microsoft customer could otherwise",
            ));
        }
        if let Some(bad) = allowed.iter().find(|a| !is_tenant_id(a)) {
            return Err(invalid(
                "allowed_tenants",
                format!("{bad:?} is not a tenant id"),
            ));
        }
        if !is_tenant_id(config.require_text("client_id")?.trim()) {
            return Err(invalid("client_id", "an application id is a GUID"));
        }
        Ok(())
    }

    fn endpoints(config: &Config) -> Result<ProviderEndpoints, ConnectorError> {
        let t = tenant(config)?;
        // Multi-tenant endpoints state a templated issuer; listing it tells
        // the host this connector checks the tenant (`allowed_tenants`).
        let issuer_aliases = if MULTI.contains(&t.as_str()) {
            vec!["https://login.microsoftonline.com/{tenantid}/v2.0".to_string()]
        } else {
            Vec::new()
        };
        Ok(ProviderEndpoints {
            issuer: format!("https://login.microsoftonline.com/{t}/v2.0"),
            issuer_aliases,
            scopes: vec!["email".into(), "profile".into()],
            authorize_params: Vec::new(),
        })
    }

    fn map_claims(config: &Config, claims: &Value) -> Result<MappedIdentity, ConnectorError> {
        let tid = string_claim(claims, "tid")?.to_lowercase();
        let oid = string_claim(claims, "oid")?;
        let t = tenant(config)?;
        let multi = MULTI.contains(&t.as_str());
        let ok = if multi {
            allowed(config).contains(&tid)
        } else {
            tid == t
        };
        if !ok {
            return Err(ConnectorError::Rejected(format!(
                "the user belongs to tenant {tid}, which this IdP does not allow"
            )));
        }
        let mut attributes = standard_attributes(claims, true);
        if let Some(a) = claims
            .get("preferred_username")
            .and_then(|v| claim_attribute("username", v))
        {
            attributes.push(a);
        }
        Ok(MappedIdentity {
            subject: if multi {
                format!("{tid}/{oid}")
            } else {
                oid.to_string()
            },
            attributes,
        })
    }
}

cohort_sdk::export_idp_connector!(Azure);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{ConfigEntry, ConfigValue as C};
    use serde_json::json;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

    fn config(tenant: &str, allowed: &[&str]) -> Config {
        Config::new(vec![
            ConfigEntry {
                name: "tenant".into(),
                value: C::Text(tenant.into()),
            },
            ConfigEntry {
                name: "client_id".into(),
                value: C::Text("6731de76-14a6-49ae-97bc-6eba6914391e".into()),
            },
            ConfigEntry {
                name: "allowed_tenants".into(),
                value: C::TextList(allowed.iter().map(|s| s.to_string()).collect()),
            },
        ])
    }

    /// The claims of an Entra ID v2.0 ID token, as Microsoft documents them.
    fn claims(tid: &str) -> Value {
        json!({
            "aud": "6731de76-14a6-49ae-97bc-6eba6914391e",
            "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
            "iat": 1_700_000_000, "nbf": 1_700_000_000, "exp": 1_700_003_600,
            "name": "Abe Lincoln",
            "oid": "00000000-0000-0000-66f3-3332eca7ea81",
            "preferred_username": "AbeLi@microsoft.com",
            "email": "abe@example.com",
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "tid": tid,
            "ver": "2.0"
        })
    }

    #[test]
    fn single_tenant_issuer_and_tid_check() {
        let c = config(TENANT, &[]);
        Azure::validate_config(&c).unwrap();
        assert_eq!(
            Azure::endpoints(&c).unwrap().issuer,
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
        );
        let m = Azure::map_claims(&c, &claims(TENANT)).unwrap();
        assert_eq!(m.subject, "00000000-0000-0000-66f3-3332eca7ea81");
        assert!(m.attributes.iter().any(|a| a.name == "username"));
        assert!(matches!(
            Azure::map_claims(&c, &claims(OTHER)),
            Err(ConnectorError::Rejected(_))
        ));
    }

    #[test]
    fn multi_tenant_needs_and_enforces_allowed_tenants() {
        assert!(Azure::validate_config(&config("organizations", &[])).is_err());
        let c = config("organizations", &[OTHER]);
        Azure::validate_config(&c).unwrap();
        let m = Azure::map_claims(&c, &claims(OTHER)).unwrap();
        assert_eq!(
            m.subject,
            format!("{OTHER}/00000000-0000-0000-66f3-3332eca7ea81")
        );
        assert!(Azure::map_claims(&c, &claims(TENANT)).is_err());
        assert!(Azure::validate_config(&config("contoso", &[])).is_err());
        // The templated issuer is claimed only for multi-tenant apps,
        // which check the tenant above.
        let e = Azure::endpoints(&c).unwrap();
        assert_eq!(
            e.issuer_aliases,
            ["https://login.microsoftonline.com/{tenantid}/v2.0"]
        );
        let single = Azure::endpoints(&config(TENANT, &[])).unwrap();
        assert!(single.issuer_aliases.is_empty());
    }
}
