//! The user-facing sign-in pages: plain HTML forms that work without
//! JavaScript. Each handler reads the form or query, calls the sign-in
//! service, and renders its answer; the protocol and every decision live in
//! `federation::flow`.
//!
//! Forms carry a CSRF token that must equal a cookie set with the page
//! (double submit; the cookie is SameSite=Lax, so another site's form
//! cannot send it). The cookie that binds a started sign-in to this browser
//! is separate.
//!
//! When the public URL is https, every cookie is a `__Host-` cookie
//! (`Secure`, `Path=/`, no `Domain`): the browser then refuses it from a
//! sibling subdomain or a plain-http page of the same host, so nobody can
//! plant a session or CSRF cookie from there. Only that name is read.
//! Browsers refuse `__Host-` cookies without `Secure`, so under http the
//! plain names stay, and the sign-in cookie is only sent to `/sign-in`.
//!
//! Refusals are pages; a client that asks for JSON (`Accept:
//! application/json`) gets the API's error body instead. Going too fast is
//! `429` with `Retry-After` either way.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::auth::Origin;
use crate::federation::{Reason, Refusal, Started};
use crate::sessions::{Opened, random_token};

/// The session cookie (`__Host-cohort_session` under https).
pub const SESSION_COOKIE: &str = "cohort_session";
/// Binds a started sign-in to the browser that started it.
const BROWSER_COOKIE: &str = "cohort_sign_in";
/// Double-submit CSRF cookie for the forms.
const CSRF_COOKIE: &str = "cohort_csrf";
/// The prefix that makes a browser hold a cookie to `Secure`, `Path=/` and
/// no `Domain`.
const HOST_PREFIX: &str = "__Host-";

/// Whether cookies are `Secure` `__Host-` cookies: when browsers reach
/// Cohort over https.
fn secure_cookies(s: &AppState) -> bool {
    s.sign_in.public_url().starts_with("https://")
}

/// The name Cohort gives the cookie `base` (one of the names above).
pub fn cookie_name(s: &AppState, base: &str) -> String {
    if secure_cookies(s) {
        format!("{HOST_PREFIX}{base}")
    } else {
        base.to_string()
    }
}

/// The value of the cookie `base` under the name Cohort sets it with; a
/// cookie of the plain name is ignored under https, since anyone who can
/// set cookies for the domain could have planted it.
pub fn read_cookie<'a>(s: &AppState, headers: &'a HeaderMap, base: &str) -> Option<&'a str> {
    cookie(headers, &cookie_name(s, base))
}

/// A cookie's value from the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for the cookie `base`. `max_age` 0 deletes it.
/// `path` applies under http; a `__Host-` cookie must have `Path=/`.
pub fn set_cookie(s: &AppState, base: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let name = cookie_name(s, base);
    let (path, secure) = if secure_cookies(s) {
        ("/", "; Secure")
    } else {
        (path, "")
    };
    let text =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page in Cohort's sign-in style. `reason` is machine-readable for
/// scripts and tests (`<meta name="cohort-reason">`).
fn page(status: StatusCode, title: &str, reason: Option<&str>, body: &str) -> Response {
    let meta = reason
        .map(|r| format!(r#"<meta name="cohort-reason" content="{}">"#, escape(r)))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
{meta}<title>{title} · Cohort</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{background:#fff;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px #0002;width:22rem}}
h1{{font-size:1.3rem;margin-top:0}} label{{display:block;margin:.8rem 0 .3rem}}
input[type=text],input[type=password],input[type=email]{{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}}
button{{margin-top:1rem;padding:.55rem 1rem;font-size:1rem;width:100%}} .error{{color:#a00}}
</style></head>
<body><main><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = escape(title),
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        r#"<input type="hidden" name="{}" value="{}">"#,
        escape(name),
        escape(value)
    )
}

/// Whether the client asked for JSON rather than a page.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") && !v.contains("text/html"))
}

/// The answer to a refused sign-in: its page (or the JSON error body), with
/// `Retry-After` when trying again later can help.
fn refused(headers: &HeaderMap, r: &Refusal) -> Response {
    let mut resp = if wants_json(headers) {
        ApiError::from(r).into_response()
    } else {
        refusal_page(r)
    };
    if let Some(seconds) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    resp
}

/// A refusal as the JSON error body, for clients that ask for JSON.
impl From<&Refusal> for ApiError {
    fn from(r: &Refusal) -> Self {
        ApiError::new(r.reason.status(), r.reason.code(), r.message.clone())
    }
}

/// The page for a refused sign-in.
fn refusal_page(r: &Refusal) -> Response {
    page(
        r.reason.status(),
        r.reason.title(),
        Some(r.reason.code()),
        &format!(
            r#"<p class="error">{}</p><p><a href="/sign-in">Start again</a></p>"#,
            escape(&r.message)
        ),
    )
}

fn identifier_form(csrf: &str, return_to: &str, error: Option<&str>) -> String {
    format!(
        r#"{error}<form method="post" action="/sign-in">
{csrf}{ret}
<label for="identifier">Username or email</label>
<input type="text" id="identifier" name="identifier" autocomplete="username" autofocus required>
<button type="submit">Continue</button>
</form>"#,
        error = error
            .map(|e| format!(r#"<p class="error">{}</p>"#, escape(e)))
            .unwrap_or_default(),
        csrf = hidden("csrf", csrf),
        ret = hidden("return_to", return_to),
    )
}

fn password_form(csrf: &str, identifier: &str, return_to: &str, error: Option<&str>) -> String {
    format!(
        r#"{error}<form method="post" action="/sign-in/password">
{csrf}{ret}{ident}
<p>Signing in as <strong>{shown}</strong> (<a href="/sign-in">not you?</a>)</p>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button>
</form>"#,
        error = error
            .map(|e| format!(r#"<p class="error">{}</p>"#, escape(e)))
            .unwrap_or_default(),
        csrf = hidden("csrf", csrf),
        ret = hidden("return_to", return_to),
        ident = hidden("identifier", identifier),
        shown = escape(identifier),
    )
}

/// The CSRF token for a form: the browser's cookie, or a new one (set on
/// the response by [`with_csrf`]).
fn csrf_for(s: &AppState, headers: &HeaderMap) -> (String, bool) {
    match read_cookie(s, headers, CSRF_COOKIE) {
        Some(c) => (c.to_string(), false),
        None => (random_token(), true),
    }
}

fn with_csrf(s: &AppState, mut resp: Response, token: &str, new: bool) -> Response {
    if new {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(s, CSRF_COOKIE, token, "/", 3600),
        );
    }
    resp
}

fn csrf_ok(s: &AppState, headers: &HeaderMap, submitted: &str) -> bool {
    read_cookie(s, headers, CSRF_COOKIE).is_some_and(|c| {
        crate::federation::id_token::constant_time_eq(c.as_bytes(), submitted.as_bytes())
    })
}

fn csrf_reason() -> Refusal {
    Refusal::new(Reason::Csrf, "This form has expired. Start again.", "")
}

fn csrf_refusal(headers: &HeaderMap) -> Response {
    refused(headers, &csrf_reason())
}

/// The checks every sign-in form passes first: its CSRF token, and where
/// it may return to.
fn checked_form(
    s: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    return_to: &str,
) -> Result<String, Refusal> {
    if !csrf_ok(s, headers, csrf) {
        return Err(csrf_reason());
    }
    s.sign_in.check_return_to(Some(return_to))
}

/// `GET /sign-in`: the identifier form.
pub async fn form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let return_to = match s
        .sign_in
        .check_return_to(q.get("return_to").map(String::as_str))
    {
        Ok(r) => r,
        Err(r) => return refused(&headers, &r),
    };
    let (csrf, new) = csrf_for(&s, &headers);
    let notice = q
        .contains_key("signed_out")
        .then_some("You have signed out.");
    let body = identifier_form(&csrf, &return_to, None);
    let body = match notice {
        Some(n) => format!("<p>{n}</p>{body}"),
        None => body,
    };
    with_csrf(&s, page(StatusCode::OK, "Sign in", None, &body), &csrf, new)
}

/// The identifier form's fields.
#[derive(Deserialize)]
pub struct IdentifierForm {
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    return_to: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-in`: routes the identifier; off to the provider, or on to
/// the password.
pub async fn submit(
    State(s): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Form(f): Form<IdentifierForm>,
) -> Response {
    let return_to = match checked_form(&s, &headers, &f.csrf, &f.return_to) {
        Ok(r) => r,
        Err(r) => return refused(&headers, &r),
    };
    let browser = random_token();
    match s
        .sign_in
        .start(&origin, &f.identifier, &return_to, &browser)
        .await
    {
        Ok(Started::Redirect { url }) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&s, BROWSER_COOKIE, &browser, "/sign-in", 600),
            );
            resp
        }
        Ok(Started::Password) => page(
            StatusCode::OK,
            "Sign in",
            None,
            &password_form(&f.csrf, f.identifier.trim(), &return_to, None),
        ),
        Err(r) if r.reason == Reason::InvalidRequest && !wants_json(&headers) => page(
            StatusCode::BAD_REQUEST,
            "Sign in",
            Some(r.reason.code()),
            &identifier_form(&f.csrf, &return_to, Some(&r.message)),
        ),
        Err(r) => refused(&headers, &r),
    }
}

/// The password form's fields.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    return_to: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-in/password`.
pub async fn password(
    State(s): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let return_to = match checked_form(&s, &headers, &f.csrf, &f.return_to) {
        Ok(r) => r,
        Err(r) => return refused(&headers, &r),
    };
    match s
        .sign_in
        .password(&origin, &f.identifier, &f.password, return_to.clone())
        .await
    {
        Ok(done) => signed_in(&s, &done.opened, &done.return_to),
        Err(r) if r.reason == Reason::WrongPassword && !wants_json(&headers) => page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            Some(r.reason.code()),
            &password_form(&f.csrf, &f.identifier, &return_to, Some(&r.message)),
        ),
        Err(r) => refused(&headers, &r),
    }
}

/// The response that completes a sign-in: the session cookie, and on to
/// the target.
fn signed_in(s: &AppState, opened: &Opened, return_to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(return_to) {
        h.insert(header::LOCATION, v);
    }
    let max_age = (opened.session.expires_at - opened.session.created_at).num_seconds();
    h.append(
        header::SET_COOKIE,
        set_cookie(s, SESSION_COOKIE, &opened.cookie, "/", max_age),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(s, BROWSER_COOKIE, "", "/sign-in", 0),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /sign-in/callback`: the provider sends the browser back here.
pub async fn callback(
    State(s): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    match s
        .sign_in
        .callback(&origin, &q, read_cookie(&s, &headers, BROWSER_COOKIE))
        .await
    {
        Ok(done) => signed_in(&s, &done.opened, &done.return_to),
        Err(r) => refused(&headers, &r),
    }
}

/// `GET /sign-in/done`: where a sign-in lands without a target.
pub async fn done(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let session = read_cookie(&s, &headers, SESSION_COOKIE)
        .and_then(|c| s.sign_in.sessions().from_cookie(c).ok());
    match session {
        Some(signed_in) => {
            let (csrf, new) = csrf_for(&s, &headers);
            let body = format!(
                r#"<p>You are signed in as <strong>{}</strong>.</p>
<form method="post" action="/sign-out">{}<button type="submit">Sign out</button></form>"#,
                escape(&signed_in.user.username),
                hidden("csrf", &csrf)
            );
            with_csrf(
                &s,
                page(StatusCode::OK, "Signed in", None, &body),
                &csrf,
                new,
            )
        }
        None => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/sign-in"));
            resp
        }
    }
}

/// The sign-out form's fields.
#[derive(Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-out`: ends the browser's session.
pub async fn sign_out(
    State(s): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Form(f): Form<SignOutForm>,
) -> Response {
    if !csrf_ok(&s, &headers, &f.csrf) {
        return csrf_refusal(&headers);
    }
    if let Some(signed_in) = read_cookie(&s, &headers, SESSION_COOKIE)
        .and_then(|c| s.sign_in.sessions().from_cookie(c).ok())
    {
        let actor = crate::auth::Actor::named(format!("user:{}", signed_in.user.username), origin);
        if let Err(e) = s.sign_in.sessions().end(&actor, &signed_in.session).await {
            tracing::error!(error = %e, "could not end a session");
            return refused(
                &headers,
                &Refusal::new(Reason::Internal, "Signing out failed. Try again.", ""),
            );
        }
    }
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_static("/sign-in?signed_out=1"),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&s, SESSION_COOKIE, "", "/", 0),
    );
    resp
}

/// `GET /activate?token=…`: the form to set a password.
pub async fn activate_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let token = q.get("token").cloned().unwrap_or_default();
    let user = s.credentials.activation_user(&token).ok().flatten();
    let Some(user) = user else {
        return refused(&headers, &activation_invalid());
    };
    if user.state == crate::directory::UserState::Suspended {
        return refused(&headers, &suspended());
    }
    let (csrf, new) = csrf_for(&s, &headers);
    let body = format!(
        r#"<form method="post" action="/activate">{}{}
<p>Choose a password for <strong>{}</strong>. At least {} characters.</p>
<label for="password">New password</label>
<input type="password" id="password" name="password" autocomplete="new-password" minlength="{}" required autofocus>
<button type="submit">Set password</button></form>"#,
        hidden("csrf", &csrf),
        hidden("token", &token),
        escape(&user.username),
        crate::credentials::MIN_LENGTH,
        crate::credentials::MIN_LENGTH,
    );
    with_csrf(
        &s,
        page(StatusCode::OK, "Set your password", None, &body),
        &csrf,
        new,
    )
}

/// The activation form's fields.
#[derive(Deserialize)]
pub struct ActivateForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn activation_invalid() -> Refusal {
    Refusal::new(
        Reason::ActivationInvalid,
        "This activation link has expired or was already used. Ask your administrator for a new one.",
        "",
    )
}

/// A suspended user's link: the holder of the link may know that much.
fn suspended() -> Refusal {
    Refusal::new(
        Reason::UserNotActive,
        "Your account is suspended, so its password cannot be set. Ask your administrator.",
        "",
    )
}

/// `POST /activate`.
pub async fn activate(
    State(s): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Form(f): Form<ActivateForm>,
) -> Response {
    if !csrf_ok(&s, &headers, &f.csrf) {
        return csrf_refusal(&headers);
    }
    match s.credentials.activate(&origin, &f.token, f.password).await {
        Ok(_) => page(
            StatusCode::OK,
            "Password set",
            None,
            r#"<p>Your password is set.</p><p><a href="/sign-in">Sign in</a></p>"#,
        ),
        Err(crate::error::DomainError::Invalid { field, message }) if field == "password" => {
            refused(
                &headers,
                &Refusal::new(Reason::WeakPassword, format!("The {field} {message}."), ""),
            )
        }
        Err(crate::error::DomainError::Invalid { .. }) => refused(&headers, &activation_invalid()),
        Err(crate::error::DomainError::Conflict {
            code: "user_not_active",
            ..
        }) => refused(&headers, &suspended()),
        Err(e) => {
            tracing::error!(error = %e, "activation failed");
            refused(
                &headers,
                &Refusal::new(
                    Reason::Internal,
                    "Setting the password failed. Try again.",
                    "",
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_in_json_is_the_standard_error_without_the_admins_detail() {
        let r = Refusal::new(
            Reason::WrongPassword,
            "The username or password is not correct.",
            "no such user",
        );
        let e = ApiError::from(&r);
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.code(), "wrong_password");
        assert_eq!(e.message(), "The username or password is not correct.");
        assert_eq!(e.field(), None);
    }
}
