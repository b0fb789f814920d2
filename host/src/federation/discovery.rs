//! Reading a provider's discovery document and key set (OpenID Connect
//! Discovery 1.0), with the one deviation real providers need: Entra ID's
//! multi-tenant endpoints (`organizations`, `common`, `consumers`) state a
//! templated issuer, `https://login.microsoftonline.com/{tenantid}/v2.0`,
//! which stands for every tenant's issuer. Every other provider must state
//! exactly the issuer it was asked about.

use jsonwebtoken::jwk::JwkSet;
use openidconnect::core::CoreProviderMetadata;

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

/// Fetches the discovery document of `issuer` and its key set. Errors are
/// sentences for the admin, naming what was fetched.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    issuer: &str,
    aliases: &[String],
) -> Result<(CoreProviderMetadata, JwkSet), String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let failed = |why: String| format!("discovery at {url} failed: {why}");
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!("it answered {}", response.status())));
    }
    let body = response.bytes().await.map_err(|e| failed(describe(&e)))?;
    let metadata: CoreProviderMetadata = serde_json::from_slice(&body)
        .map_err(|e| failed(format!("the document is not valid: {e}")))?;
    let stated = metadata.issuer().as_str();
    if !issuer_matches(issuer, stated, aliases) {
        return Err(failed(format!(
            "the document states issuer {stated:?}, not {issuer:?}"
        )));
    }
    let jwks_uri = metadata.jwks_uri().to_string();
    let keys_failed =
        |why: String| format!("the provider's keys at {jwks_uri} could not be read: {why}");
    let response = http
        .get(&jwks_uri)
        .send()
        .await
        .map_err(|e| keys_failed(describe(&e)))?;
    if !response.status().is_success() {
        return Err(keys_failed(format!("it answered {}", response.status())));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| keys_failed(describe(&e)))?;
    let keys: JwkSet =
        serde_json::from_slice(&body).map_err(|e| keys_failed(format!("not a key set: {e}")))?;
    Ok((metadata, keys))
}

/// An error with its causes, which carry the useful part ("connection
/// refused").
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
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
