//! The sign-in itself: routing an identifier, the authorization code flow
//! with PKCE against the upstream provider, and the callback that turns a
//! validated ID token into a Cohort session. Local passwords end in the
//! same place.
//!
//! A started sign-in is stored under its `state`: the PKCE verifier, the
//! nonce, where to go afterwards, and a hash of a random cookie set in the
//! browser that started it. The callback takes the record out in the same
//! transaction that reads it, so a `state` works once; it must come back
//! with that cookie, so a sign-in cannot be finished in another browser
//! (login CSRF); and it expires after ten minutes.
//!
//! Every outcome, success or each reason for failure, is an audit event,
//! with the client's address and user agent. Starting a sign-in is rate
//! limited per client address and per identifier (`throttle`); a refusal
//! for going too fast is not audited, since a flood of them would be a
//! flood of durable writes.
//!
//! A local password is answered without confirming it to anyone who may
//! not use it: an identifier routed to an IdP, a user for whom local sign-in
//! is off, and a user who is not active all get an answer that does not
//! depend on the password, after a hash that takes as long as a real check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cohort_storage::Store;
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::Idp;
use super::id_token::{self, Expect, KeyCache, TokenError};
use super::layout::{LINKS, PENDING};
use super::matching::{self, Outcome};
use super::routing::{self, Target};
use super::throttle::{self, Limited, SignInLimits};
use crate::audit::{self, Record};
use crate::auth::{Actor, Origin};
use crate::credentials::{Checked, Credentials, PasswordError};
use crate::directory::{Directory, SubjectKind, User, UserInput, UserState};
use crate::error::DomainError;
use crate::groups::layout::{MEMBERS, pair};
use crate::outbound::{MAX_IDP_RESPONSE_BYTES, Outbound};
use crate::sessions::{Method, Opened, Sessions, token_hash};

/// How long a started sign-in may take at the provider.
const PENDING_LIFETIME: i64 = 10 * 60;
/// Longest wait for the provider's token endpoint or keys.
const PROVIDER_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// Where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/sign-in/callback";
/// Where a sign-in ends when no (allowed) target was asked for.
pub const DEFAULT_RETURN: &str = "/sign-in/done";

/// A sign-in started at Cohort and not yet back from the provider.
#[derive(Serialize, Deserialize)]
struct Pending {
    idp_id: Uuid,
    nonce: String,
    verifier: String,
    /// Hash of the browser cookie the sign-in must come back with.
    browser: String,
    return_to: String,
    identifier: String,
    expires_at: DateTime<Utc>,
}

/// Why a sign-in was refused. `code` is stable (tests, audit); `message`
/// is shown to the user.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: &'static str,
    /// For the user's page; never reveals more than they may know.
    pub message: String,
    /// For the audit log and the server log: the detail an admin needs.
    pub detail: String,
    /// Seconds after which trying again can succeed (`Retry-After`), for
    /// refusals that are about going too fast.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal with its code, the user's message and the admin's detail.
    pub fn new(
        code: &'static str,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    fn rate_limited(limited: Limited) -> Refusal {
        let detail = match limited.scope {
            throttle::Scope::Address => "too many sign-ins started from this address",
            throttle::Scope::Identifier => "too many sign-ins started for this identifier",
        };
        Refusal {
            retry_after: Some(limited.retry_after),
            ..Refusal::new(
                "rate_limited",
                format!(
                    "Too many sign-in attempts. Wait {} and try again.",
                    wait_text(limited.retry_after)
                ),
                detail,
            )
        }
    }

    fn internal(e: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            "internal",
            "Sign-in failed because of a problem at Cohort. Try again, or ask your administrator.",
            e.to_string(),
        )
    }
}

/// "a second", "12 seconds", "3 minutes": how long to wait, for people.
fn wait_text(seconds: u64) -> String {
    match seconds {
        0 | 1 => "a second".into(),
        2..=119 => format!("{seconds} seconds"),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Self {
        Refusal::internal(e)
    }
}

/// What to do after the identifier step.
pub enum Started {
    /// Send the browser to the provider.
    Redirect {
        /// The authorization URL.
        url: String,
    },
    /// Ask for the local password.
    Password,
}

/// A finished sign-in.
pub struct Finished {
    /// The session, with its cookie value.
    pub opened: Opened,
    /// Where to send the browser.
    pub return_to: String,
    /// Who signed in.
    pub user: User,
}

/// Why the admitting transaction was abandoned.
enum Abort {
    Refused(Refusal),
    Domain(DomainError),
}

impl From<DomainError> for Abort {
    fn from(e: DomainError) -> Self {
        Abort::Domain(e)
    }
}

impl From<cohort_storage::StorageError> for Abort {
    fn from(e: cohort_storage::StorageError) -> Self {
        Abort::Domain(e.into())
    }
}

/// Settings the deployment gives sign-in.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Cohort's URL as browsers reach it, without a trailing slash.
    pub public_url: String,
    /// Absolute URLs a sign-in may return to, besides Cohort's own pages.
    pub allowed_redirects: Vec<String>,
    /// How fast sign-ins may be started.
    pub rate_limit: throttle::Policy,
}

/// The sign-in service.
#[derive(Clone)]
pub struct SignIn {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    federation: super::Federation,
    directory: Directory,
    sessions: Sessions,
    credentials: Credentials,
    settings: Settings,
    keys: KeyCache,
    http: reqwest::Client,
    limits: SignInLimits,
}

fn actor(origin: &Origin) -> Actor {
    Actor::named("sign-in", origin.clone())
}

impl SignIn {
    /// The service.
    pub fn new(
        store: Store,
        federation: super::Federation,
        directory: Directory,
        sessions: Sessions,
        credentials: Credentials,
        settings: Settings,
    ) -> Result<SignIn, DomainError> {
        let http = federation
            .outbound()
            .client(PROVIDER_TIMEOUT)
            .map_err(|e| DomainError::Internal(format!("the outbound HTTP client: {e}")))?;
        Ok(SignIn {
            inner: Arc::new(Inner {
                store,
                federation,
                directory,
                sessions,
                credentials,
                keys: KeyCache::default(),
                http,
                limits: SignInLimits::new(&settings.rate_limit),
                settings,
            }),
        })
    }

    /// The sessions this service opens.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Cohort's public URL.
    pub fn public_url(&self) -> &str {
        &self.inner.settings.public_url
    }

    fn redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.inner.settings.public_url)
    }

    /// Where a sign-in may return: a path on Cohort itself, or exactly one
    /// of the registered URLs. Anything else is refused rather than
    /// replaced, so a wrong link is noticed.
    pub fn check_return_to(&self, target: Option<&str>) -> Result<String, Refusal> {
        let Some(t) = target.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(DEFAULT_RETURN.into());
        };
        let local = t.starts_with('/')
            && !t.starts_with("//")
            && !t.starts_with("/\\")
            && !t.chars().any(|c| c.is_control() || c == '\\');
        if local || self.inner.settings.allowed_redirects.iter().any(|a| a == t) {
            return Ok(t.to_string());
        }
        Err(Refusal::new(
            "redirect_not_allowed",
            "This sign-in link asks to continue to an address Cohort does not know. Ask your administrator to register it.",
            format!("return_to {t:?} is not registered"),
        ))
    }

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
                "invalid_request",
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
                "idp_disabled",
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

        let mut scopes = vec!["openid".to_string()];
        for s in endpoints.scopes {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let mut params: Vec<(String, String)> = vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), client_id),
            ("redirect_uri".into(), self.redirect_uri()),
            ("scope".into(), scopes.join(" ")),
            ("state".into(), state.secret().clone()),
            ("nonce".into(), nonce.secret().clone()),
            ("code_challenge".into(), challenge.as_str().to_string()),
            ("code_challenge_method".into(), "S256".into()),
            ("login_hint".into(), identifier.to_string()),
        ];
        for (k, v) in endpoints.authorize_params {
            if !params.iter().any(|(p, _)| *p == k) {
                params.push((k, v));
            }
        }
        let query = serde_urlencoded::to_string(&params).map_err(Refusal::internal)?;
        let endpoint = &idp.discovered.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let url = format!("{endpoint}{sep}{query}");

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
                "invalid_request",
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
                "unknown_state",
                "This sign-in has already been used or has expired. Start again.",
                "state unknown or already used",
            ))
        })?;
        let same_browser = browser.is_some_and(|b| {
            id_token::constant_time_eq(token_hash(b).as_bytes(), pending.browser.as_bytes())
        });
        if !same_browser {
            return Err(bare(Refusal::new(
                "state_mismatch",
                "This sign-in was started in another browser or window. Start again here.",
                "the sign-in cookie does not match the state",
            )));
        }
        if pending.expires_at <= now {
            return Err(bare(Refusal::new(
                "state_expired",
                "This sign-in took too long. Start again.",
                "the pending sign-in expired",
            )));
        }
        let idp = self
            .inner
            .federation
            .load(&pending.idp_id)
            .map_err(|e| bare(e.into()))?;
        let with_idp = |r: Refusal| (r, Some(idp.clone()), None);
        if !idp.enabled {
            return Err(with_idp(Refusal::new(
                "idp_disabled",
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
                "provider_error",
                format!("{} did not sign you in ({error}).", idp.name),
                format!("{error}: {description}"),
            )));
        }
        let code = params.get("code").ok_or_else(|| {
            with_idp(Refusal::new(
                "invalid_request",
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
                    "invalid_id_token",
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
                        "connector_rejected",
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
                "token_exchange_failed",
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
        let post = !methods.is_empty()
            && !methods.iter().any(|m| m == "client_secret_basic")
            && methods.iter().any(|m| m == "client_secret_post");
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

    /// Matches the identity to a user and opens the session, creating the
    /// link (and, with JIT, the user) in the same transaction.
    async fn admit(
        &self,
        origin: &Origin,
        idp: &Idp,
        mapped: super::idps::Identity,
        return_to: String,
    ) -> Result<Finished, Refusal> {
        let issuer = idp.discovered.issuer.clone();
        let attribute = idp.matching.attribute.clone();
        let value = match mapped.attributes.get(&attribute) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let actor = actor(origin);
        let now = self.inner.federation.now();
        let inner = &self.inner;
        let schema = crate::directory::schema(&inner.store, SubjectKind::User)?;
        let routes = routing::load(&inner.store)?;
        let committed = inner.store.write(|txn| {
            let m = matching::match_identity(
                &*txn,
                &issuer,
                &mapped.subject,
                &attribute,
                value.as_deref(),
                idp.jit,
            )?;
            // The identity may only sign in the user routing sends to this
            // IdP: otherwise any IdP in use (a partner's, say) could assert
            // the email of a user who signs in elsewhere.
            let routed_here = |txn: &cohort_storage::WriteTxn<'_>, email: &str| {
                let r = routing::route(txn, &schema, &routes, email, now)?;
                Ok::<_, DomainError>(matches!(r.target, Target::Idp { idp_id } if idp_id == idp.id))
            };
            let wrong_idp = || {
                Abort::Refused(Refusal::new(
                    "wrong_idp",
                    format!(
                        "Your account does not sign in through {}. Start again with your own username or email.",
                        idp.name
                    ),
                    "routing sends the matched user to another way of signing in",
                ))
            };
            let user = match m.outcome {
                Outcome::Linked | Outcome::Matched => {
                    let id = m.user_id.expect("matched users have an id");
                    let user = crate::directory::load_user(txn, &id)?;
                    if !routed_here(txn, &user.email)? {
                        return Err(wrong_idp());
                    }
                    if m.outcome == Outcome::Matched {
                        link(txn, &actor, now, idp, &mapped.subject, &user)?;
                    }
                    user
                }
                Outcome::WouldCreate => {
                    let input = jit_input(&mapped.attributes);
                    if !routed_here(txn, &input.email)? {
                        return Err(wrong_idp());
                    }
                    // An error aborts the transaction, so a half-created
                    // user is never left behind.
                    let user = inner
                        .directory
                        .create_user_in(txn, &actor, input, now)
                        .map_err(|e| {
                            Abort::Refused(Refusal::new(
                                "jit_failed",
                                "Your account could not be created in Cohort. Ask your administrator.",
                                format!("just-in-time creation failed: {e}"),
                            ))
                        })?;
                    link(txn, &actor, now, idp, &mapped.subject, &user)?;
                    user
                }
                _ => return Err(Abort::Refused(refusal_for(&m, idp))),
            };
            let opened = inner.sessions.open_in(
                txn,
                &actor,
                &user,
                Method::Idp {
                    idp_id: idp.id,
                    idp_name: idp.name.clone(),
                },
            )?;
            record_sign_in(
                txn,
                &actor,
                now,
                "sign_in.success",
                &user.id.to_string(),
                &[
                    ("idp", Value::from(idp.name.clone())),
                    ("subject", Value::from(mapped.subject.clone())),
                    (
                        "match",
                        serde_json::to_value(&m.outcome).unwrap_or_default(),
                    ),
                    ("session_id", Value::from(opened.session.id.to_string())),
                ],
            )?;
            Ok((opened, user))
        });
        let (opened, user) = match committed {
            Ok(c) => c.durable().await.map_err(DomainError::from)?,
            Err(Abort::Refused(r)) => return Err(r),
            Err(Abort::Domain(e)) => return Err(e.into()),
        };
        Ok(Finished {
            opened,
            return_to,
            user,
        })
    }

    /// The password step for an identifier that routing sends to local
    /// sign-in.
    pub async fn password(
        &self,
        origin: &Origin,
        identifier: &str,
        password: &str,
        return_to: String,
    ) -> Result<Finished, Refusal> {
        self.throttle(origin, Some(identifier))?;
        let (user, checked) = match self.check_password(identifier, password).await {
            Ok(found) => found,
            Err(failed) => {
                self.audit_failure(
                    origin,
                    &failed.refusal,
                    None,
                    None,
                    failed.user_id,
                    failed.checked.as_ref(),
                )
                .await;
                return Err(failed.refusal);
            }
        };
        let actor = actor(origin);
        let now = self.inner.federation.now();
        let inner = &self.inner;
        let opened = inner
            .store
            .write(|txn| {
                let opened = inner
                    .sessions
                    .open_in(txn, &actor, &user, Method::Password)?;
                checked.record_in(txn, now)?;
                record_sign_in(
                    txn,
                    &actor,
                    now,
                    "sign_in.success",
                    &user.id.to_string(),
                    &[
                        ("method", Value::from("password")),
                        ("session_id", Value::from(opened.session.id.to_string())),
                    ],
                )?;
                Ok::<_, DomainError>(opened)
            })?
            .durable()
            .await
            .map_err(DomainError::from)?;
        drop(checked);
        Ok(Finished {
            opened,
            return_to,
            user,
        })
    }

    /// Takes one sign-in start from the client's address and, when there is
    /// one, the identifier; refuses with `rate_limited` when either is
    /// spent.
    fn throttle(&self, origin: &Origin, identifier: Option<&str>) -> Result<(), Refusal> {
        let now = self.inner.federation.now();
        // The identifier's limit is the account's: a user's username and
        // email address would otherwise each have an allowance of their
        // own. What names no user counts under its identity key (the
        // limiter keys it as `directory::identity` does).
        let account = identifier.and_then(|i| {
            routing::find_user(&self.inner.store, i.trim())
                .ok()
                .flatten()
                .map(|u| format!("\u{0}user {}", u.id))
        });
        let identifier = account.as_deref().or(identifier);
        self.inner
            .limits
            .check(now, origin.client_address, identifier)
            .map_err(|limited| {
                tracing::debug!(
                    request_id = %origin.request_id,
                    client = ?origin.client_address,
                    scope = ?limited.scope,
                    retry_after = limited.retry_after,
                    "sign-in rate limited"
                );
                Refusal::rate_limited(limited)
            })
    }

    /// Decides a password attempt. Whoever may not sign in with a password
    /// (routed to an IdP, local sign-in off for them) is told so whatever
    /// the password, after a decoy hash; anyone else's password is checked,
    /// and only an active user's can be right, so a suspended or staged
    /// user hears "wrong password" as a stranger would.
    async fn check_password(
        &self,
        identifier: &str,
        password: &str,
    ) -> Result<(User, Checked), FailedPassword> {
        let store = &self.inner.store;
        let failed = |refusal: Refusal, user_id: Option<Uuid>| FailedPassword {
            refusal,
            user_id,
            checked: None,
        };
        let routing = routing::load(store).map_err(|e| failed(e.into(), None))?;
        let users = crate::directory::schema(store, SubjectKind::User)
            .map_err(|e| failed(e.into(), None))?;
        let now = self.inner.federation.now();
        let route = routing::route(store, &users, &routing, identifier, now)
            .map_err(|e| failed(e.into(), None))?;
        let user = routing::find_user(store, identifier).map_err(|e| failed(e.into(), None))?;
        let user_id = user.as_ref().map(|u| u.id);
        let credentials = &self.inner.credentials;
        // Takes the time a real check takes; the answer is already decided.
        let decoy = || async {
            credentials
                .check(None, password)
                .await
                .map(drop)
                .map_err(|e| failed(password_error(e, now), user_id))
        };
        if let Target::Idp { .. } = route.target {
            decoy().await?;
            return Err(failed(
                Refusal::new(
                    "not_local",
                    "Your account signs in through your organization's identity provider. Start again.",
                    "routing sends this identifier to an identity provider",
                ),
                user_id,
            ));
        }
        if let Some(u) = &user {
            for g in &routing.local_sign_in_disabled_for {
                if store
                    .get(MEMBERS, &pair(g, &u.id))
                    .map_err(|e| failed(DomainError::from(e).into(), user_id))?
                    .is_some()
                {
                    decoy().await?;
                    return Err(failed(
                        Refusal::new(
                            "local_disabled",
                            "Signing in with a password is turned off for your account. Ask your administrator.",
                            format!("member of group {g}, for which local sign-in is off"),
                        ),
                        user_id,
                    ));
                }
            }
        }
        let checked = credentials
            .check(user.as_ref(), password)
            .await
            .map_err(|e| failed(password_error(e, now), user_id))?;
        match user {
            Some(u) if checked.ok => Ok((u, checked)),
            user => {
                let detail = match &user {
                    None => "no such user".to_string(),
                    Some(u) if u.state != UserState::Active => format!(
                        "user is {}; answered as a wrong password, so that the password is not confirmed",
                        u.state.as_str()
                    ),
                    Some(_) => "wrong password, or no password set".to_string(),
                };
                Err(FailedPassword {
                    refusal: Refusal::new(
                        "wrong_password",
                        "The username or password is not correct.",
                        detail,
                    ),
                    user_id,
                    checked: Some(checked),
                })
            }
        }
    }

    /// Records a refused sign-in, with the outcome of a password check when
    /// there was one (so the lockout count and the event commit together).
    /// Failing to write it is logged, not shown: the user's answer is the
    /// refusal either way.
    async fn audit_failure(
        &self,
        origin: &Origin,
        r: &Refusal,
        idp: Option<&Idp>,
        subject: Option<&str>,
        user_id: Option<Uuid>,
        checked: Option<&Checked>,
    ) {
        tracing::info!(request_id = %origin.request_id, client = ?origin.client_address, reason = r.code, detail = %r.detail, "sign-in refused");
        let actor = actor(origin);
        let now = self.inner.federation.now();
        let mut fields = vec![
            ("reason", Value::from(r.code)),
            ("detail", Value::from(r.detail.clone())),
        ];
        if let Some(i) = idp {
            fields.push(("idp", Value::from(i.name.clone())));
        }
        if let Some(s) = subject {
            fields.push(("subject", Value::from(s)));
        }
        let resource = user_id.map_or_else(|| "-".to_string(), |u| u.to_string());
        let written = self.inner.store.write(|txn| {
            if let Some(c) = checked {
                c.record_in(txn, now)?;
            }
            record_sign_in(txn, &actor, now, "sign_in.failure", &resource, &fields)?;
            Ok::<_, DomainError>(())
        });
        let result = match written {
            Ok(c) => c.durable().await.map_err(DomainError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "could not audit a refused sign-in");
        }
    }

    /// Deletes started sign-ins that never came back.
    pub async fn sweep(&self) -> Result<usize, DomainError> {
        let now = self.inner.federation.now();
        let expired: Vec<Vec<u8>> = self
            .inner
            .store
            .scan(PENDING, b"", None, false)
            .filter_map(Result::ok)
            .filter(|(_, v)| {
                cohort_storage::decode_json::<Pending>(PENDING, v)
                    .map_or(true, |p| p.expires_at <= now)
            })
            .map(|(k, _)| k)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        self.inner
            .store
            .write(|txn| {
                for k in &expired {
                    txn.delete(PENDING, k);
                }
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(expired.len())
    }
}

/// A password attempt that did not sign in: the answer, the user it was
/// about, and the check whose outcome goes into the lockout count.
struct FailedPassword {
    refusal: Refusal,
    user_id: Option<Uuid>,
    checked: Option<Checked>,
}

/// The refusal for a password that could not be checked at all.
fn password_error(e: PasswordError, now: DateTime<Utc>) -> Refusal {
    match e {
        PasswordError::LockedOut { until } => {
            let mut r = Refusal::new(
                "locked_out",
                "Too many failed attempts. Wait a few minutes and try again.",
                "too many recent failures",
            );
            r.retry_after = until.map(|t| (t - now).num_seconds().max(1) as u64);
            r
        }
        PasswordError::Domain(e) => e.into(),
    }
}

fn record_sign_in(
    txn: &mut cohort_storage::WriteTxn<'_>,
    actor: &Actor,
    now: DateTime<Utc>,
    action: &str,
    resource_id: &str,
    fields: &[(&str, Value)],
) -> Result<(), DomainError> {
    let changes: Vec<(&str, Value, Value)> = fields
        .iter()
        .map(|(k, v)| (*k, Value::Null, v.clone()))
        .collect();
    audit::record(
        txn,
        now,
        actor,
        Record {
            action,
            resource_type: "sign_in",
            resource_id: resource_id.to_string(),
            changes: audit::changes(&changes),
        },
    )?;
    Ok(())
}

/// Stores the link from the upstream identity to `user`.
fn link(
    txn: &mut cohort_storage::WriteTxn<'_>,
    actor: &Actor,
    now: DateTime<Utc>,
    idp: &Idp,
    subject: &str,
    user: &User,
) -> Result<(), DomainError> {
    txn.put(
        LINKS,
        &matching::link_key(&idp.discovered.issuer, subject),
        user.id.as_bytes().to_vec(),
    );
    audit::record(
        txn,
        now,
        actor,
        Record {
            action: "idp_link.create",
            resource_type: "user",
            resource_id: user.id.to_string(),
            changes: audit::changes(&[
                ("idp", Value::Null, Value::from(idp.name.clone())),
                (
                    "issuer",
                    Value::Null,
                    Value::from(idp.discovered.issuer.clone()),
                ),
                ("subject", Value::Null, Value::from(subject)),
            ]),
        },
    )?;
    Ok(())
}

/// The refusal a failed match gets.
fn refusal_for(m: &matching::Match, idp: &Idp) -> Refusal {
    let (code, message) = match m.outcome {
        Outcome::NoMatch | Outcome::WouldCreate => (
            "no_match",
            format!(
                "{} signed you in, but there is no matching account in Cohort. Ask your administrator to create it.",
                idp.name
            ),
        ),
        Outcome::Ambiguous => (
            "ambiguous",
            "More than one account in Cohort matches you, so none was chosen. Ask your administrator."
                .to_string(),
        ),
        Outcome::MissingAttribute => (
            "missing_attribute",
            format!(
                "{} did not say who you are in a way Cohort can match. Ask your administrator.",
                idp.name
            ),
        ),
        Outcome::InvalidIdentity => (
            "invalid_identity",
            format!(
                "{} gave an account name Cohort does not accept (it contains invisible characters or mixes alphabets). Ask your administrator.",
                idp.name
            ),
        ),
        Outcome::Refused => (
            "user_not_active",
            "Your account is not active (it is staged or suspended). Ask your administrator."
                .to_string(),
        ),
        Outcome::Linked | Outcome::Matched => ("internal", "Sign-in failed.".to_string()),
    };
    Refusal::new(code, message, m.detail.clone())
}

/// A new user from the mapped attributes: the standard fields the connector
/// gave, active, with the email's local part as username when none was
/// mapped.
fn jit_input(attributes: &BTreeMap<String, Value>) -> UserInput {
    let text = |k: &str| attributes.get(k).and_then(Value::as_str).map(String::from);
    let email = text("email").unwrap_or_default();
    UserInput {
        username: text("username").unwrap_or_else(|| email.clone()),
        email,
        state: Some(UserState::Active),
        first_name: text("first_name"),
        last_name: text("last_name"),
        display_name: text("display_name"),
        department: text("department"),
        job_title: text("job_title"),
        employee_id: text("employee_id"),
        ..UserInput::default()
    }
}
