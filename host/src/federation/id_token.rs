//! ID token validation (OpenID Connect Core §3.1.3.7), done in full by the
//! host so that no connector can weaken it: the signature against the
//! provider's published keys with an algorithm the provider advertises
//! (never `none`), the issuer, the audience and authorized party, expiry and
//! issue time with a small clock skew, and the nonce of this sign-in.
//!
//! The provider's key set is cached per IdP and fetched again when a token
//! names a key id the cache does not hold, so a provider's key rotation
//! needs nothing from the admin. Such refetches are spaced out, so that a
//! stream of forged key ids cannot make Cohort hammer the provider.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde_json::Value;
use uuid::Uuid;

/// Accepted difference between Cohort's clock and the provider's.
pub const CLOCK_SKEW: i64 = 60;
/// How long a fetched key set is trusted.
const KEY_TTL: chrono::Duration = chrono::Duration::hours(1);
/// Least time between two fetches of a key set caused by an unknown key id.
const REFETCH_SPACING: chrono::Duration = chrono::Duration::seconds(1);

/// Why an ID token was refused. Each names the check, for the audit log.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    /// Not a compact JWS, or its header or claims are not JSON.
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("the ID token is unsigned (alg none), which is never accepted")]
    Unsigned,
    /// Signed with an algorithm the provider does not advertise.
    #[error("the ID token is signed with {0}, which the provider does not advertise")]
    Algorithm(String),
    /// No key in the provider's key set has the token's key id, even after
    /// fetching the set again.
    #[error("the ID token names key {0:?}, which the provider does not publish")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the ID token's signature does not verify")]
    Signature,
    /// `iss` is not the provider.
    #[error("the ID token was issued by {0:?}, not this provider")]
    Issuer(String),
    /// `aud` does not include Cohort's client id, or `azp` names another.
    #[error("the ID token is for another client ({0})")]
    Audience(String),
    /// `exp` has passed.
    #[error("the ID token expired at {0}")]
    Expired(DateTime<Utc>),
    /// `iat` is in the future.
    #[error("the ID token is issued in the future ({0})")]
    IssuedInFuture(DateTime<Utc>),
    /// A required claim is missing or has the wrong type.
    #[error("the ID token has no valid {0:?} claim")]
    Claim(&'static str),
    /// `nonce` is not the one Cohort sent.
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
    /// The key set could not be fetched or read.
    #[error("the provider's keys could not be read: {0}")]
    Keys(String),
}

impl TokenError {
    /// A stable code for the audit log and tests.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::Unsigned => "alg_none",
            TokenError::Algorithm(_) => "alg_not_advertised",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::Signature => "bad_signature",
            TokenError::Issuer(_) => "wrong_issuer",
            TokenError::Audience(_) => "wrong_audience",
            TokenError::Expired(_) => "expired",
            TokenError::IssuedInFuture(_) => "issued_in_future",
            TokenError::Claim(_) => "missing_claim",
            TokenError::Nonce => "nonce_mismatch",
            TokenError::Keys(_) => "keys_unavailable",
        }
    }
}

/// What a token must satisfy.
pub struct Expect<'a> {
    /// The issuer from discovery. May hold `{tenantid}` (Entra ID's
    /// multi-tenant endpoints), which then stands for the token's `tid`.
    pub issuer: &'a str,
    /// Other accepted spellings of the issuer.
    pub issuer_aliases: &'a [String],
    /// Cohort's client id at the provider.
    pub client_id: &'a str,
    /// Algorithms from discovery.
    pub algorithms: &'a [String],
    /// The nonce sent with this sign-in.
    pub nonce: &'a str,
    /// Now.
    pub now: DateTime<Utc>,
}

/// A cached key set and when it was fetched.
type Fetched = (Arc<JwkSet>, DateTime<Utc>);

/// Key sets by IdP, with when each was fetched (by the server's clock, so
/// that tests can age them).
#[derive(Default)]
pub struct KeyCache {
    sets: Mutex<HashMap<Uuid, Fetched>>,
}

impl KeyCache {
    /// The cached set for `idp`, if any.
    fn cached(&self, idp: &Uuid) -> Option<Fetched> {
        self.sets.lock().get(idp).cloned()
    }

    fn store(&self, idp: Uuid, set: Arc<JwkSet>, now: DateTime<Utc>) {
        self.sets.lock().insert(idp, (set, now));
    }

    /// Forgets an IdP's keys (its provider changed).
    pub fn forget(&self, idp: &Uuid) {
        self.sets.lock().remove(idp);
    }
}

/// Reads the header's `alg` and `kid` without trusting anything yet.
fn header(token: &str) -> Result<(String, Option<String>), TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = B64
        .decode(h)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    let alg = v
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("header has no alg".into()))?;
    let kid = v.get("kid").and_then(Value::as_str).map(String::from);
    Ok((alg.to_string(), kid))
}

/// Validates `token` and returns its claims. `fetch` reads the provider's
/// key set; it is called when the cache has none for `idp` or lacks the
/// token's key id.
pub async fn validate<F, Fut>(
    token: &str,
    expect: &Expect<'_>,
    idp: Uuid,
    cache: &KeyCache,
    fetch: F,
) -> Result<Value, TokenError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<JwkSet, String>>,
{
    let (alg_name, kid) = header(token)?;
    if alg_name.eq_ignore_ascii_case("none") {
        return Err(TokenError::Unsigned);
    }
    if !expect.algorithms.iter().any(|a| a == &alg_name) {
        return Err(TokenError::Algorithm(alg_name));
    }
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| TokenError::Algorithm(alg_name.clone()))?;

    let find = |set: &JwkSet| -> Option<jsonwebtoken::jwk::Jwk> {
        match &kid {
            Some(k) => set.find(k).cloned(),
            // Without a key id, a set of one key is unambiguous.
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        }
    };
    // Keys are re-read after a while even when they all still match, so a
    // key the provider withdrew stops being trusted.
    // An age below zero means the clock was set back: the set's age is
    // unknown, so it is treated as expired and may be fetched again,
    // rather than trusted (or refused a refetch) for as long as the jump.
    let age = |at: &DateTime<Utc>| expect.now - *at;
    let cached = cache
        .cached(&idp)
        .filter(|(_, at)| age(at) >= chrono::Duration::zero() && age(at) < KEY_TTL);
    let mut jwk = cached.as_ref().and_then(|(set, _)| find(set));
    let may_fetch = cached
        .as_ref()
        .is_none_or(|(_, at)| age(at) >= REFETCH_SPACING);
    if jwk.is_none() && may_fetch {
        let set = Arc::new(fetch().await.map_err(TokenError::Keys)?);
        jwk = find(&set);
        cache.store(idp, set, expect.now);
    }
    let jwk = jwk.ok_or_else(|| TokenError::UnknownKey(kid.clone().unwrap_or_default()))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::Keys(e.to_string()))?;

    // The library checks the signature and algorithm; the claims are
    // checked below against Cohort's clock, with errors that say which.
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                TokenError::Algorithm(alg_name.clone())
            }
            _ => TokenError::Malformed(e.to_string()),
        })?
        .claims;
    check_claims(&claims, expect)?;
    Ok(claims)
}

fn check_claims(claims: &Value, expect: &Expect<'_>) -> Result<(), TokenError> {
    let text = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .ok_or(TokenError::Claim(name))
    };
    let time = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_i64)
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or(TokenError::Claim(name))
    };
    let iss = text("iss")?;
    let issuer_ok = iss == expect.issuer
        || expect
            .issuer_aliases
            .iter()
            .any(|a| a == iss && !a.contains("{tenantid}"))
        || templated_issuer(expect, claims).is_some_and(|t| t == iss);
    if !issuer_ok {
        return Err(TokenError::Issuer(iss.to_string()));
    }
    text("sub")?;
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(TokenError::Claim("aud")),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(TokenError::Audience(format!(
            "aud is {}",
            audiences.join(", ")
        )));
    }
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != expect.client_id => {
            return Err(TokenError::Audience(format!("azp is {azp}")));
        }
        None if audiences.len() > 1 => {
            return Err(TokenError::Audience(
                "several audiences and no azp".to_string(),
            ));
        }
        _ => {}
    }
    let skew = chrono::Duration::seconds(CLOCK_SKEW);
    let exp = time("exp")?;
    if exp + skew <= expect.now {
        return Err(TokenError::Expired(exp));
    }
    let iat = time("iat")?;
    if iat - skew > expect.now {
        return Err(TokenError::IssuedInFuture(iat));
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if constant_time_eq(n.as_bytes(), expect.nonce.as_bytes()) => Ok(()),
        _ => Err(TokenError::Nonce),
    }
}

/// Entra ID's multi-tenant discovery states the issuer as
/// `https://login.microsoftonline.com/{tenantid}/v2.0`; a token's issuer is
/// that with its own `tid`. Only a connector that lists the template among
/// its issuer aliases gets this, because a template accepts every tenant:
/// such a connector must check the tenant itself (the `azure` connector's
/// `allowed_tenants`).
fn templated_issuer(expect: &Expect<'_>, claims: &Value) -> Option<String> {
    let issuer = expect.issuer;
    if !issuer.contains("{tenantid}") || !expect.issuer_aliases.iter().any(|a| a == issuer) {
        return None;
    }
    let tid = claims.get("tid")?.as_str()?;
    let valid = !tid.is_empty() && tid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    valid.then(|| issuer.replace("{tenantid}", tid))
}

/// Compares secrets without leaking where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect<'a>(now: DateTime<Utc>, aliases: &'a [String]) -> Expect<'a> {
        Expect {
            issuer: "https://idp.example.com",
            issuer_aliases: aliases,
            client_id: "cohort",
            algorithms: &[],
            nonce: "n-1",
            now,
        }
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://idp.example.com", "sub": "s", "aud": "cohort",
               "exp": now + 300, "iat": now, "nonce": "n-1"})
    }

    /// A key set stamped later than now (the clock was set back) has no
    /// known age: it is fetched again instead of trusted, and a token whose
    /// key it lacks is not refused for the length of the jump.
    #[tokio::test]
    async fn a_key_set_from_the_future_is_fetched_again() {
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.c2ln",
            b64(json!({"alg": "RS256", "kid": "k1"})),
            b64(json!({}))
        );
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let algorithms = vec!["RS256".to_string()];
        let e = Expect {
            algorithms: &algorithms,
            ..expect(now, &[])
        };
        let idp = Uuid::now_v7();
        let cache = KeyCache::default();
        let empty = || JwkSet { keys: Vec::new() };
        cache.store(idp, Arc::new(empty()), now + chrono::Duration::hours(2));
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        let r = validate(&token, &e, idp, &cache, || {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(empty()) }
        })
        .await;
        assert_eq!(r, Err(TokenError::UnknownKey("k1".into())));
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn claims_are_checked_one_by_one() {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let t = now.timestamp();
        let e = expect(now, &[]);
        assert_eq!(check_claims(&claims(t), &e), Ok(()));
        let with = |k: &str, v: Value| {
            let mut c = claims(t);
            c[k] = v;
            check_claims(&c, &e).map_err(|e| e.code())
        };
        assert_eq!(with("iss", json!("https://evil")), Err("wrong_issuer"));
        assert_eq!(with("aud", json!("other")), Err("wrong_audience"));
        assert_eq!(
            with("aud", json!(["other", "cohort"])),
            Err("wrong_audience")
        );
        assert_eq!(with("azp", json!("other")), Err("wrong_audience"));
        assert_eq!(with("exp", json!(t - 61)), Err("expired"));
        // Within the skew: still accepted.
        assert_eq!(with("exp", json!(t - 30)), Ok(()));
        assert_eq!(with("iat", json!(t + 120)), Err("issued_in_future"));
        assert_eq!(with("nonce", json!("n-2")), Err("nonce_mismatch"));
        assert_eq!(with("sub", json!(5)), Err("missing_claim"));
        let mut c = claims(t);
        c["aud"] = json!(["other", "cohort"]);
        c["azp"] = json!("cohort");
        assert_eq!(check_claims(&c, &e), Ok(()));
    }

    #[test]
    fn aliases_and_tenant_templates_are_issuers_too() {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let t = now.timestamp();
        let aliases = vec!["idp.example.com".to_string()];
        let mut c = claims(t);
        c["iss"] = json!("idp.example.com");
        assert_eq!(check_claims(&c, &expect(now, &aliases)), Ok(()));

        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        c["tid"] = json!(tid);
        c["iss"] = json!(format!("https://login.microsoftonline.com/{tid}/v2.0"));
        // Without the connector's opt-in, a template accepts nothing.
        let mut e = expect(now, &[]);
        e.issuer = template;
        assert_eq!(
            check_claims(&c, &e).map_err(|e| e.code()),
            Err("wrong_issuer")
        );
        let opted_in = vec![template.to_string()];
        let mut e = expect(now, &opted_in);
        e.issuer = template;
        assert_eq!(check_claims(&c, &e), Ok(()));
        c["tid"] = json!("00000000-0000-0000-0000-000000000000");
        assert_eq!(
            check_claims(&c, &e).map_err(|e| e.code()),
            Err("wrong_issuer")
        );
    }

    #[test]
    fn headers_are_read_before_anything_is_trusted() {
        let enc = |v: Value| B64.encode(v.to_string());
        let none = format!("{}.{}.", enc(json!({"alg": "none"})), enc(json!({})));
        assert_eq!(header(&none).map(|h| h.0), Ok("none".to_string()));
        assert!(matches!(header("a.b"), Err(TokenError::Malformed(_))));
    }
}
