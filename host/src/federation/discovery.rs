//! Reading a provider's discovery document and key set (OpenID Connect
//! Discovery 1.0), with the one deviation real providers need: Entra ID's
//! multi-tenant endpoints (`organizations`, `common`, `consumers`) state a
//! templated issuer, `https://login.microsoftonline.com/{tenantid}/v2.0`,
//! which stands for every tenant's issuer. Every other provider must state
//! exactly the issuer it was asked about.

use jsonwebtoken::jwk::JwkSet;
use openidconnect::core::CoreProviderMetadata;

use crate::error::DomainError;
use crate::outbound::{MAX_IDP_RESPONSE_BYTES, Outbound, OutboundError};

/// Entra ID's multi-tenant path segments.
const MULTI_TENANT: [&str; 3] = ["organizations", "common", "consumers"];

/// Whether the document's `stated` issuer is acceptable for `requested`.
/// A templated issuer only when the connector lists it among its `aliases`
/// (it then checks tenants itself).
pub(crate) fn issuer_matches(requested: &str, stated: &str, aliases: &[String]) -> bool {
    if requested == stated {
        return true;
    }
    stated.contains("{tenantid}")
        && aliases.iter().any(|a| a == stated)
        && MULTI_TENANT
            .iter()
            .any(|t| stated.replace("{tenantid}", t) == requested)
}

/// Why discovery failed.
#[derive(Debug)]
pub(crate) enum DiscoveryError {
    /// The request was refused or got no answer; the log has the detail,
    /// the caller only the code (the transport's message would make the
    /// endpoint a port scanner).
    Outbound {
        /// `discovery document` or `key set`.
        what: &'static str,
        /// Why, as a stable code.
        error: OutboundError,
    },
    /// The provider answered, and the answer is unusable: a sentence for
    /// the admin, naming what was fetched.
    Invalid(String),
}

impl From<DiscoveryError> for DomainError {
    fn from(e: DiscoveryError) -> DomainError {
        match e {
            DiscoveryError::Outbound { what, error } => DomainError::Outbound {
                field: "instance".into(),
                what,
                error,
            },
            DiscoveryError::Invalid(message) => DomainError::invalid("instance", message),
        }
    }
}

/// Fetches the discovery document of `issuer` and its key set, through the
/// outbound policy: the issuer and the `jwks_uri` the document names are
/// both checked.
pub(crate) async fn fetch(
    outbound: &Outbound,
    http: &reqwest::Client,
    issuer: &str,
    aliases: &[String],
) -> Result<(CoreProviderMetadata, JwkSet), DiscoveryError> {
    // An issuer is scheme, host, port and path only (OpenID Connect
    // Discovery 1.0 §2). A query or fragment would let the issuer field
    // name any URL on the host, with the well-known suffix cut off.
    let plain = reqwest::Url::parse(issuer).is_ok_and(|u| {
        matches!(u.scheme(), "https" | "http")
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    });
    if !plain {
        return Err(DiscoveryError::Invalid(format!(
            "the issuer {issuer:?} must be an https URL without user information, query or fragment"
        )));
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let unreachable = |what| move |error| DiscoveryError::Outbound { what, error };
    let failed = |why: String| DiscoveryError::Invalid(format!("discovery at {url} failed: {why}"));
    let response = outbound
        .send(http.get(&url), "idp discovery")
        .await
        .map_err(unreachable("discovery document"))?;
    if !response.status().is_success() {
        return Err(failed(format!("it answered {}", response.status())));
    }
    let body = Outbound::body(response, MAX_IDP_RESPONSE_BYTES, "idp discovery")
        .await
        .map_err(unreachable("discovery document"))?;
    // serde's message quotes the offending value, which is whatever the
    // upstream sent: it goes to the log, the caller gets the position.
    let metadata: CoreProviderMetadata = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(url = %url, error = %e, "discovery document does not parse");
        failed(format!(
            "the document is not a valid OpenID Provider configuration (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let stated = metadata.issuer().as_str();
    if !issuer_matches(issuer, stated, aliases) {
        return Err(failed(format!(
            "the document states issuer {stated:?}, not {issuer:?}"
        )));
    }
    let jwks_uri = metadata.jwks_uri().to_string();
    let keys_failed = |why: String| {
        DiscoveryError::Invalid(format!(
            "the provider's keys at {jwks_uri} could not be read: {why}"
        ))
    };
    let response = outbound
        .send(http.get(&jwks_uri), "idp keys")
        .await
        .map_err(unreachable("key set"))?;
    if !response.status().is_success() {
        return Err(keys_failed(format!("it answered {}", response.status())));
    }
    let body = Outbound::body(response, MAX_IDP_RESPONSE_BYTES, "idp keys")
        .await
        .map_err(unreachable("key set"))?;
    let keys: JwkSet = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(url = %jwks_uri, error = %e, "key set does not parse");
        keys_failed(format!(
            "not a key set (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok((metadata, keys))
}

#[cfg(test)]
mod tests {
    use super::issuer_matches;

    #[test]
    fn only_entra_multi_tenant_endpoints_may_state_a_templated_issuer() {
        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let opted_in = vec![template.to_string()];
        for t in ["organizations", "common", "consumers"] {
            let requested = format!("https://login.microsoftonline.com/{t}/v2.0");
            assert!(issuer_matches(&requested, template, &opted_in), "{t}");
            // A connector that does not check tenants gets no template.
            assert!(!issuer_matches(&requested, template, &[]), "{t}");
        }
        // A tenant's own endpoint must state its own issuer.
        let tenant = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
        assert!(issuer_matches(tenant, tenant, &[]));
        assert!(!issuer_matches(tenant, template, &opted_in));
        // Elsewhere, exact matches only.
        let evil = "https://evil.example.com";
        assert!(!issuer_matches("https://idp.example.com", evil, &[]));
        let odd = "https://idp.example.com/{tenantid}/x";
        assert!(!issuer_matches(
            "https://idp.example.com/organizations",
            odd,
            &[odd.to_string()]
        ));
    }
}
