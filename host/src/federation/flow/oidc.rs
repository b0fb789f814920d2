//! The authorization code flow with the upstream provider: the redirect
//! that starts it (PKCE, state and nonce), the callback that must come back
//! once, in the same browser, within ten minutes, the code exchange at the
//! token endpoint and the ID token's validation. Apart from admission
//! because everything here is about trusting the provider's answer, and
//! nothing about who in the directory it names.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Finished, SignIn, Started};
use crate::auth::Origin;
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::federation::Idp;
use crate::federation::id_token::{self, Expect, TokenError};
use crate::federation::layout::PENDING;
use crate::federation::refusal::{Reason, Refusal};
use crate::federation::routing::{self, Target};
use crate::outbound::{MAX_IDP_RESPONSE_BYTES, Outbound};
use crate::sessions::token_hash;

/// How long a started sign-in may take at the provider.
const PENDING_LIFETIME: i64 = 10 * 60;

/// A sign-in started at Cohort and not yet back from the provider.
#[derive(Serialize, Deserialize)]
pub(super) struct Pending {
    pub(super) idp_id: Uuid,
    pub(super) nonce: String,
    pub(super) verifier: String,
    /// Hash of the browser cookie the sign-in must come back with.
    pub(super) browser: String,
    pub(super) return_to: String,
    pub(super) identifier: String,
    pub(super) expires_at: DateTime<Utc>,
}

impl SignIn {
    /// The identifier step: routes `identifier`, and either starts the code
    /// flow (storing the pending sign-in bound to `browser`) or asks for
    /// the password.
    pub async fn start(
        &self,
        origin: &Origin,
        identifier: &str,
        return_to: &str,
        browser: &str,
    ) -> Result<Started, Refusal> {
        let identifier = identifier.trim();
        self.throttle(origin, Some(identifier))?;
        if identifier.is_empty() || identifier.chars().count() > 320 {
            return Err(Refusal::new(
                Reason::InvalidRequest,
                "Enter your username or email address.",
                "empty or overlong identifier",
            ));
        }
        let store = &self.inner.store;
        let routing = routing::load(store)?;
        let users = crate::directory::schema(store, SubjectKind::User)?;
        let route = routing::route(
            store,
            &users,
            &routing,
            identifier,
            self.inner.federation.now(),
        )?;
        let idp_id = match route.target {
            Target::Local => return Ok(Started::Password),
            Target::Idp { idp_id } => idp_id,
        };
        let idp = self.inner.federation.load(&idp_id)?;
        if !idp.enabled {
            let r = Refusal::new(
                Reason::IdpDisabled,
                format!(
                    "Signing in through {} is turned off at the moment. Ask your administrator.",
                    idp.name
                ),
                format!("IdP {:?} is disabled", idp.name),
            );
            self.audit_failure(origin, &r, Some(&idp), None, None, None)
                .await;
            return Err(r);
        }
        let endpoints = self
            .inner
            .federation
            .endpoints(&idp)
            .await
            .map_err(Refusal::internal)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random();
        let nonce = Nonce::new_random();
        let (client_id, _) = self.inner.federation.client_credentials(&idp)?;

        let url = authorization_url(
            &idp.discovered.authorization_endpoint,
            Authorize {
                client_id,
                redirect_uri: self.redirect_uri(),
                scopes: endpoints.scopes,
                state: state.secret(),
                nonce: nonce.secret(),
                challenge: challenge.as_str(),
                login_hint: identifier,
                extra: endpoints.authorize_params,
            },
        )
        .map_err(Refusal::internal)?;

        let pending = Pending {
            idp_id,
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            browser: token_hash(browser),
            return_to: return_to.to_string(),
            identifier: identifier.to_string(),
            expires_at: self.inner.federation.now() + Duration::seconds(PENDING_LIFETIME),
        };
        store
            .write(|txn| txn.put_json(PENDING, state.secret().as_bytes(), &pending))
            .map_err(DomainError::from)?
            .durable()
            .await
            .map_err(DomainError::from)?;
        Ok(Started::Redirect { url })
    }

    /// The provider's redirect back: `params` is the query string,
    /// `browser` the sign-in cookie (if the browser sent it).
    pub async fn callback(
        &self,
        origin: &Origin,
        params: &BTreeMap<String, String>,
        browser: Option<&str>,
    ) -> Result<Finished, Refusal> {
        // Finishing costs a durable write and a call to the provider.
        self.throttle(origin, None)?;
        let result = self.finish_code_flow(origin, params, browser).await;
        if let Err((r, idp, subject)) = &result {
            self.audit_failure(origin, r, idp.as_ref(), subject.as_deref(), None, None)
                .await;
        }
        result.map_err(|(r, _, _)| r)
    }

    async fn finish_code_flow(
        &self,
        origin: &Origin,
        params: &BTreeMap<String, String>,
        browser: Option<&str>,
    ) -> Result<Finished, (Refusal, Option<Idp>, Option<String>)> {
        let bare = |r: Refusal| (r, None, None);
        let state = params.get("state").ok_or_else(|| {
            bare(Refusal::new(
                Reason::InvalidRequest,
                "This sign-in link is incomplete. Start again.",
                "callback without state",
            ))
        })?;
        let now = self.inner.federation.now();
        // Taken out as it is read: a state works once, whatever follows.
        let pending: Option<Pending> = self
            .inner
            .store
            .write(|txn| {
                let p = txn.get_json::<Pending>(PENDING, state.as_bytes())?;
                if p.is_some() {
                    txn.delete(PENDING, state.as_bytes());
                }
                Ok::<_, DomainError>(p)
            })
            .map_err(|e| bare(e.into()))?
            .durable()
            .await
            .map_err(|e| bare(DomainError::from(e).into()))?;
        let pending = pending.ok_or_else(|| {
            bare(Refusal::new(
                Reason::UnknownState,
                "This sign-in has already been used or has expired. Start again.",
                "state unknown or already used",
            ))
        })?;
        check_pending(&pending, browser, now).map_err(bare)?;
        let idp = self
            .inner
            .federation
            .load(&pending.idp_id)
            .map_err(|e| bare(e.into()))?;
        let with_idp = |r: Refusal| (r, Some(idp.clone()), None);
        if !idp.enabled {
            return Err(with_idp(Refusal::new(
                Reason::IdpDisabled,
                format!(
                    "Signing in through {} is turned off at the moment. Ask your administrator.",
                    idp.name
                ),
                "IdP disabled while the sign-in was at the provider",
            )));
        }
        if let Some(error) = params.get("error") {
            let description = params.get("error_description").cloned().unwrap_or_default();
            return Err(with_idp(Refusal::new(
                Reason::ProviderError,
                format!("{} did not sign you in ({error}).", idp.name),
                format!("{error}: {description}"),
            )));
        }
        let code = params.get("code").ok_or_else(|| {
            with_idp(Refusal::new(
                Reason::InvalidRequest,
                "This sign-in link is incomplete. Start again.",
                "callback without code",
            ))
        })?;
        let (client_id, client_secret) = self
            .inner
            .federation
            .client_credentials(&idp)
            .map_err(|e| with_idp(e.into()))?;
        let id_token = self
            .exchange(&idp, code, &pending.verifier, &client_id, &client_secret)
            .await
            .map_err(with_idp)?;
        let endpoints = self
            .inner
            .federation
            .endpoints(&idp)
            .await
            .map_err(|e| with_idp(Refusal::internal(e)))?;
        let claims = self
            .validate(
                &idp,
                &id_token,
                &client_id,
                &pending.nonce,
                &endpoints.issuer_aliases,
            )
            .await
            .map_err(|e| {
                with_idp(Refusal::new(
                    Reason::InvalidIdToken,
                    format!(
                        "{} sent a sign-in Cohort cannot accept. Ask your administrator.",
                        idp.name
                    ),
                    format!("{}: {e}", e.code()),
                ))
            })?;
        let subject = claims.get("sub").and_then(Value::as_str).map(String::from);
        let mapped = self
            .inner
            .federation
            .map_claims(&idp, &claims)
            .await
            .map_err(|e| {
                (
                    Refusal::new(
                        Reason::ConnectorRejected,
                        format!(
                            "{} signed you in, but this account may not use Cohort.",
                            idp.name
                        ),
                        e.to_string(),
                    ),
                    Some(idp.clone()),
                    subject.clone(),
                )
            })?;
        self.admit(origin, &idp, mapped, pending.return_to)
            .await
            .map_err(|r| (r, Some(idp.clone()), subject))
    }

    /// Exchanges the code (with the PKCE verifier) for the ID token.
    async fn exchange(
        &self,
        idp: &Idp,
        code: &str,
        verifier: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<String, Refusal> {
        let failed = |detail: String| {
            Refusal::new(
                Reason::TokenExchangeFailed,
                format!("{} did not complete the sign-in. Start again.", idp.name),
                detail,
            )
        };
        let endpoint = idp
            .discovered
            .token_endpoint
            .as_deref()
            .ok_or_else(|| failed("the provider has no token endpoint".into()))?;
        let redirect_uri = self.redirect_uri();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let methods = &idp.discovered.token_auth_methods;
        let post = client_secret_post(methods);
        let mut request = self.inner.http.post(endpoint);
        if post {
            form.push(("client_id", client_id));
            form.push(("client_secret", client_secret));
        } else {
            // RFC 6749 §2.3.1: both parts are form-encoded before Basic.
            let enc = |s: &str| {
                serde_urlencoded::to_string([("", s)])
                    .map(|e| e[1..].to_string())
                    .unwrap_or_default()
            };
            request = request.basic_auth(enc(client_id), Some(enc(client_secret)));
        }
        let body = serde_urlencoded::to_string(&form).map_err(|e| failed(e.to_string()))?;
        let request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        // The audit log gets the code; the transport's detail is logged.
        let response = self
            .inner
            .federation
            .outbound()
            .send(request, "idp token")
            .await
            .map_err(|e| failed(format!("token endpoint: {}", e.code())))?;
        let status = response.status();
        let body = Outbound::body(response, MAX_IDP_RESPONSE_BYTES, "idp token")
            .await
            .map_err(|e| failed(format!("token endpoint: {}", e.code())))?;
        // Only the position: serde's message would quote the upstream's
        // bytes into the audit log.
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            failed(format!(
                "token endpoint answered {status} with no JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if !status.is_success() {
            let error = json.get("error").and_then(Value::as_str).unwrap_or("?");
            let description = json
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(failed(format!(
                "token endpoint refused the code ({status}): {error} {description}"
            )));
        }
        json.get("id_token")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| failed("the token response has no id_token".into()))
    }

    async fn validate(
        &self,
        idp: &Idp,
        token: &str,
        client_id: &str,
        nonce: &str,
        aliases: &[String],
    ) -> Result<Value, TokenError> {
        let expect = Expect {
            issuer: &idp.discovered.issuer,
            issuer_aliases: aliases,
            client_id,
            algorithms: &idp.discovered.signing_algorithms,
            nonce,
            now: self.inner.federation.now(),
        };
        let http = self.inner.http.clone();
        let outbound = Arc::clone(self.inner.federation.outbound());
        let uri = idp.discovered.jwks_uri.clone();
        id_token::validate(token, &expect, idp.id, &self.inner.keys, || {
            let (http, uri, outbound) = (http.clone(), uri.clone(), Arc::clone(&outbound));
            async move {
                let response = outbound
                    .send(http.get(&uri), "idp keys")
                    .await
                    .map_err(|e| format!("{uri}: {}", e.code()))?;
                if !response.status().is_success() {
                    return Err(format!("{uri} answered {}", response.status()));
                }
                let body = Outbound::body(response, MAX_IDP_RESPONSE_BYTES, "idp keys")
                    .await
                    .map_err(|e| format!("{uri}: {}", e.code()))?;
                serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&body).map_err(|e| {
                    format!(
                        "{uri}: not a key set (line {}, column {})",
                        e.line(),
                        e.column()
                    )
                })
            }
        })
        .await
    }
}

/// What the authorization request carries besides the endpoint.
pub(super) struct Authorize<'a> {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    /// The connector's scopes; `openid` comes first whatever they are.
    pub(super) scopes: Vec<String>,
    pub(super) state: &'a str,
    pub(super) nonce: &'a str,
    pub(super) challenge: &'a str,
    pub(super) login_hint: &'a str,
    /// The connector's extra parameters (`hd` for Google, say). They may
    /// add to the request but not replace what the flow's security rests
    /// on (state, nonce, the PKCE challenge, the redirect).
    pub(super) extra: Vec<(String, String)>,
}

/// The URL the browser is sent to. The endpoint may carry a query of its
/// own, which is kept.
pub(super) fn authorization_url(
    endpoint: &str,
    a: Authorize<'_>,
) -> Result<String, serde_urlencoded::ser::Error> {
    let mut scopes = vec!["openid".to_string()];
    for s in a.scopes {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let mut params: Vec<(String, String)> = vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), a.client_id),
        ("redirect_uri".into(), a.redirect_uri),
        ("scope".into(), scopes.join(" ")),
        ("state".into(), a.state.to_string()),
        ("nonce".into(), a.nonce.to_string()),
        ("code_challenge".into(), a.challenge.to_string()),
        ("code_challenge_method".into(), "S256".into()),
        ("login_hint".into(), a.login_hint.to_string()),
    ];
    for (k, v) in a.extra {
        if !params.iter().any(|(p, _)| *p == k) {
            params.push((k, v));
        }
    }
    let query = serde_urlencoded::to_string(&params)?;
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!("{endpoint}{sep}{query}"))
}

/// Whether the callback may finish this pending sign-in: it must come back
/// with the cookie of the browser that started it (else anyone could be
/// signed in to an attacker's account: login CSRF), and in time.
pub(super) fn check_pending(
    pending: &Pending,
    browser: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let same_browser = browser.is_some_and(|b| {
        id_token::constant_time_eq(token_hash(b).as_bytes(), pending.browser.as_bytes())
    });
    if !same_browser {
        return Err(Refusal::new(
            Reason::StateMismatch,
            "This sign-in was started in another browser or window. Start again here.",
            "the sign-in cookie does not match the state",
        ));
    }
    if pending.expires_at <= now {
        return Err(Refusal::new(
            Reason::StateExpired,
            "This sign-in took too long. Start again.",
            "the pending sign-in expired",
        ));
    }
    Ok(())
}

/// Whether the client authenticates at the token endpoint in the form
/// body. Basic is the default (RFC 6749 §2.3.1 makes it the one servers
/// must support); the form only when the provider lists it and not Basic.
pub(super) fn client_secret_post(methods: &[String]) -> bool {
    !methods.is_empty()
        && !methods.iter().any(|m| m == "client_secret_basic")
        && methods.iter().any(|m| m == "client_secret_post")
}
