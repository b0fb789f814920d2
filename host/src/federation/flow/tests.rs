//! Unit tests of the sign-in flow's pure decisions: where a sign-in may
//! return, what the authorization request says, when a callback may finish
//! a pending sign-in, how the client authenticates at the token endpoint,
//! what a match admits, and what a refused password answers. The flows
//! around them (a provider, a store, a browser) are the binary-level
//! `federation` and `sign_in` tests'.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::admit::{Admission, admission, jit_input, refusal_for};
use super::oidc::{Authorize, Pending, authorization_url, check_pending, client_secret_post};
use super::password::password_error;
use super::{DEFAULT_RETURN, return_target};
use crate::credentials::PasswordError;
use crate::directory::UserState;
use crate::federation::matching::{Match, Outcome};
use crate::federation::refusal::Reason;
use crate::sessions::token_hash;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("a time")
        .with_timezone(&Utc)
}

fn refused(r: Result<String, crate::federation::Refusal>) -> Reason {
    match r {
        Ok(t) => panic!("expected a refusal, got {t:?}"),
        Err(r) => r.reason,
    }
}

#[test]
fn a_sign_in_returns_to_a_local_path_or_a_registered_url_only() {
    let allowed = vec!["https://app.example.com/after".to_string()];
    assert_eq!(
        return_target(&allowed, None).ok().as_deref(),
        Some(DEFAULT_RETURN)
    );
    assert_eq!(
        return_target(&allowed, Some("  ")).ok().as_deref(),
        Some(DEFAULT_RETURN)
    );
    assert_eq!(
        return_target(&allowed, Some(" /groups?x=1 "))
            .ok()
            .as_deref(),
        Some("/groups?x=1")
    );
    assert_eq!(
        return_target(&allowed, Some("https://app.example.com/after"))
            .ok()
            .as_deref(),
        Some("https://app.example.com/after")
    );
    for off_site in [
        "//evil.example",
        "/\\evil.example",
        "/a\\b",
        "/a\nb",
        "https://evil.example/after",
        "https://app.example.com/after/more",
        "groups",
    ] {
        assert_eq!(
            refused(return_target(&allowed, Some(off_site))),
            Reason::RedirectNotAllowed,
            "{off_site:?}"
        );
    }
}

fn authorize(extra: &[(&str, &str)], scopes: &[&str]) -> Authorize<'static> {
    Authorize {
        client_id: "cohort app".into(),
        redirect_uri: "https://cohort.example/sign-in/callback".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        state: "the-state",
        nonce: "the-nonce",
        challenge: "the-challenge",
        login_hint: "ada@example.com",
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The query of `url` after `base`, decoded.
fn query(url: &str, base: &str) -> Vec<(String, String)> {
    let q = url
        .strip_prefix(base)
        .unwrap_or_else(|| panic!("{url} does not start with {base}"));
    serde_urlencoded::from_str(q).expect("a query")
}

#[test]
fn the_authorization_url_carries_the_flow_and_keeps_its_security_parameters() {
    let url = authorization_url(
        "https://idp.example/authorize",
        authorize(
            &[
                ("state", "forged"),
                ("hd", "example.com"),
                ("prompt", "login"),
            ],
            &["email", "openid", "profile", "email"],
        ),
    )
    .expect("a url");
    let q = query(&url, "https://idp.example/authorize?");
    let get = |k: &str| -> Vec<&str> {
        q.iter()
            .filter(|(p, _)| p == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("response_type"), ["code"]);
    assert_eq!(get("client_id"), ["cohort app"]);
    assert_eq!(
        get("redirect_uri"),
        ["https://cohort.example/sign-in/callback"]
    );
    assert_eq!(get("scope"), ["openid email profile"]);
    assert_eq!(get("state"), ["the-state"], "a connector cannot replace it");
    assert_eq!(get("nonce"), ["the-nonce"]);
    assert_eq!(get("code_challenge"), ["the-challenge"]);
    assert_eq!(get("code_challenge_method"), ["S256"]);
    assert_eq!(get("login_hint"), ["ada@example.com"]);
    assert_eq!(get("hd"), ["example.com"]);
    assert_eq!(get("prompt"), ["login"]);
}

#[test]
fn an_endpoint_with_a_query_keeps_it() {
    let url = authorization_url(
        "https://login.example/oauth2/authorize?p=B2C_1_signin",
        authorize(&[], &[]),
    )
    .expect("a url");
    let q = query(
        &url,
        "https://login.example/oauth2/authorize?p=B2C_1_signin&",
    );
    assert!(q.contains(&("scope".to_string(), "openid".to_string())));
}

fn pending(browser_cookie: &str, expires_at: DateTime<Utc>) -> Pending {
    Pending {
        idp_id: Uuid::now_v7(),
        nonce: "n".into(),
        verifier: "v".into(),
        browser: token_hash(browser_cookie),
        return_to: "/".into(),
        identifier: "ada@example.com".into(),
        expires_at,
    }
}

#[test]
fn a_callback_finishes_only_in_the_browser_that_started_and_in_time() {
    let p = pending("cookie-1", now() + Duration::minutes(5));
    assert!(check_pending(&p, Some("cookie-1"), now()).is_ok());
    for browser in [None, Some("cookie-2"), Some("")] {
        let r = check_pending(&p, browser, now()).expect_err("another browser");
        assert_eq!(r.reason, Reason::StateMismatch, "{browser:?}");
    }
    let at_expiry =
        check_pending(&p, Some("cookie-1"), now() + Duration::minutes(5)).expect_err("expired");
    assert_eq!(at_expiry.reason, Reason::StateExpired);
    // Another browser hears about the browser, not about the time.
    let both =
        check_pending(&p, Some("cookie-2"), now() + Duration::hours(1)).expect_err("both wrong");
    assert_eq!(both.reason, Reason::StateMismatch);
}

#[test]
fn the_client_secret_goes_in_the_form_only_when_basic_is_not_offered() {
    let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(!client_secret_post(&m(&[])), "unlisted: Basic");
    assert!(client_secret_post(&m(&["client_secret_post"])));
    assert!(client_secret_post(&m(&[
        "private_key_jwt",
        "client_secret_post"
    ])));
    assert!(!client_secret_post(&m(&[
        "client_secret_post",
        "client_secret_basic"
    ])));
    assert!(!client_secret_post(&m(&["client_secret_basic"])));
    assert!(!client_secret_post(&m(&["private_key_jwt"])));
}

fn found(outcome: Outcome, user_id: Option<Uuid>) -> Match {
    Match {
        outcome,
        user_id,
        detail: "the detail".into(),
    }
}

#[test]
fn admission_follows_the_match() {
    let id = Uuid::now_v7();
    assert_eq!(
        admission(&found(Outcome::Linked, Some(id))),
        Admission::Existing {
            user_id: id,
            link: false
        }
    );
    assert_eq!(
        admission(&found(Outcome::Matched, Some(id))),
        Admission::Existing {
            user_id: id,
            link: true
        }
    );
    assert_eq!(
        admission(&found(Outcome::WouldCreate, None)),
        Admission::Create
    );
    for refused in [
        found(Outcome::NoMatch, None),
        found(Outcome::Ambiguous, None),
        found(Outcome::MissingAttribute, None),
        found(Outcome::InvalidIdentity, None),
        found(Outcome::Refused, Some(id)),
        found(Outcome::Linked, None),
        found(Outcome::Matched, None),
    ] {
        assert_eq!(admission(&refused), Admission::Refuse, "{refused:?}");
    }
}

#[test]
fn a_refused_match_gets_its_own_reason_and_keeps_the_detail() {
    let cases = [
        (Outcome::NoMatch, Reason::NoMatch),
        (Outcome::Ambiguous, Reason::Ambiguous),
        (Outcome::MissingAttribute, Reason::MissingAttribute),
        (Outcome::InvalidIdentity, Reason::InvalidIdentity),
        (Outcome::Refused, Reason::UserNotActive),
        (Outcome::Linked, Reason::Internal),
    ];
    for (outcome, reason) in cases {
        let r = refusal_for(&found(outcome.clone(), None), "Okta");
        assert_eq!(r.reason, reason, "{outcome:?}");
        assert_eq!(r.detail, "the detail");
    }
    let r = refusal_for(&found(Outcome::NoMatch, None), "Okta");
    assert!(r.message.starts_with("Okta signed you in"), "{}", r.message);
}

#[test]
fn a_just_in_time_user_is_active_and_named_by_email_unless_mapped() {
    let attrs = |v: Value| -> BTreeMap<String, Value> { serde_json::from_value(v).expect("attrs") };
    let by_email = jit_input(&attrs(json!({
        "email": "ada@example.com",
        "first_name": "Ada",
        "department": 7,
        "location": "London",
    })));
    assert_eq!(by_email.username, "ada@example.com");
    assert_eq!(by_email.email, "ada@example.com");
    assert_eq!(by_email.state, Some(UserState::Active));
    assert_eq!(by_email.first_name.as_deref(), Some("Ada"));
    assert_eq!(by_email.department, None, "not a string");
    assert_eq!(by_email.location, None, "not a field JIT sets");

    let named = jit_input(&attrs(
        json!({"email": "ada@example.com", "username": "ada"}),
    ));
    assert_eq!(named.username, "ada");
}

#[test]
fn a_lockout_answers_with_the_seconds_left_and_at_least_one() {
    let r = password_error(
        PasswordError::LockedOut {
            until: Some(now() + Duration::seconds(90)),
        },
        now(),
    );
    assert_eq!((r.reason, r.retry_after), (Reason::LockedOut, Some(90)));
    let ending = password_error(
        PasswordError::LockedOut {
            until: Some(now() - Duration::seconds(3)),
        },
        now(),
    );
    assert_eq!(ending.retry_after, Some(1));
    let unknown = password_error(PasswordError::LockedOut { until: None }, now());
    assert_eq!(
        (unknown.reason, unknown.retry_after),
        (Reason::LockedOut, None)
    );
}
