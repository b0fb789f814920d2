//! Local sign-in: passwords set by admins or activation links, what a right
//! password must not confirm, cookies, rate limits and the lockout.

use super::*;

async fn password_sign_in(b: &Browser, cohort: &str, identifier: &str, password: &str) -> Page {
    let form = b.start_sign_in(cohort, identifier, "/sign-in/done").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = form.input("csrf").unwrap();
    b.post(
        &format!("{cohort}/sign-in/password"),
        &[
            ("identifier", identifier),
            ("password", password),
            ("csrf", &csrf),
            ("return_to", "/sign-in/done"),
        ],
    )
    .await
}

#[tokio::test]
async fn local_passwords_set_by_admin_or_activation_link_and_turned_off_per_group() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let pat = api.user("pat", json!({"department": "Sales"})).await;

    // Too short is a 422 naming the field.
    let r = api
        .put_json(
            &format!("/api/v1/users/{pat}/password"),
            json!({"password": "short"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.field(), "password");
    api.put_json(
        &format!("/api/v1/users/{pat}/password"),
        json!({"password": "correct horse battery"}),
    )
    .await
    .expect(204);
    let set = audit(&api, "user.password_set").await;
    assert_eq!(set.len(), 1);
    assert!(
        !set[0].to_string().contains("argon2"),
        "the hash is not audited"
    );

    let b = Browser::new();
    let wrong = password_sign_in(&b, &server.base, "pat", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.reason().as_deref(), Some("wrong_password"));
    // An unknown user gets the same answer.
    let unknown = password_sign_in(&b, &server.base, "nobody", "not the password").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.reason().as_deref(), Some("wrong_password"));
    let ok = password_sign_in(&b, &server.base, "pat@example.com", "correct horse battery").await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(b.cookie(&server.base, "cohort_session").is_some());

    // Forms without the CSRF cookie's value are refused.
    let forged = Browser::new()
        .post(
            &format!("{}/sign-in/password", server.base),
            &[
                ("identifier", "pat"),
                ("password", "correct horse battery"),
                ("csrf", "guess"),
            ],
        )
        .await;
    assert_eq!(forged.reason().as_deref(), Some("csrf"));

    // An activation link lets the user choose a password, once.
    let link = api
        .post(&format!("/api/v1/users/{pat}/activation-link"), json!({}))
        .await
        .expect(201)
        .body;
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/activate?token=", server.base)));
    let b = Browser::new();
    let form = b.get(url).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let token = form.input("token").unwrap();
    let csrf = form.input("csrf").unwrap();
    let set = b
        .post(
            &format!("{}/activate", server.base),
            &[
                ("token", &token),
                ("password", "a brand new passphrase"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let again = b.get(url).await;
    assert_eq!(again.reason().as_deref(), Some("activation_invalid"));
    let old = password_sign_in(
        &Browser::new(),
        &server.base,
        "pat",
        "correct horse battery",
    )
    .await;
    assert_eq!(old.status, 401);
    let new = password_sign_in(
        &Browser::new(),
        &server.base,
        "pat",
        "a brand new passphrase",
    )
    .await;
    assert_eq!(new.status, 303, "{}", new.body);

    // Local sign-in turned off for a group.
    let sales = api
        .dynamic_group(
            "Sales",
            "user",
            json!({"conditions": [cohort_tests::eq("department", json!(["Sales"]))]}),
        )
        .await;
    let r = api
        .put_json(
            "/api/v1/sign-in/routing",
            json!({"rules": [], "default": {"type": "local"},
                   "local_sign_in_disabled_for": [sales]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let off = password_sign_in(
        &Browser::new(),
        &server.base,
        "pat",
        "a brand new passphrase",
    )
    .await;
    assert_eq!(off.status, 403, "{}", off.body);
    assert_eq!(off.reason().as_deref(), Some("local_disabled"));
    // The group cannot be deleted while routing uses it.
    let r = api.delete(&format!("/api/v1/groups/{sales}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "group_in_use");
}

/// A client that shows each answer as it is (no redirects followed, no
/// cookie jar), for looking at headers.
fn raw_client() -> reqwest::Client {
    cohort_tests::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A form body.
fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `Set-Cookie` headers of a response.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The password step posted directly (with a CSRF cookie and field of our
/// own), with extra headers; answers the status, the headers and the body,
/// and how long the server took.
async fn post_password(
    base: &str,
    identifier: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String, Duration) {
    let mut req = raw_client()
        .post(format!("{base}/sign-in/password"))
        .header("cookie", "cohort_csrf=test-form-token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("identifier", identifier),
            ("password", password),
            ("csrf", "test-form-token"),
        ]));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let t = Instant::now();
    let r = req.send().await.unwrap();
    let took = t.elapsed();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.unwrap(), took)
}

fn reason(body: &str) -> Option<String> {
    Page {
        url: String::new(),
        status: 0,
        location: None,
        body: body.to_string(),
    }
    .reason()
}

#[tokio::test]
async fn a_right_password_is_not_confirmed_to_suspended_or_non_local_users() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let op = provider_for(&server, json!({}));
    let password = "correct horse battery";
    let mut users = Vec::new();
    for name in ["sue", "ida", "lee", "act1", "act2", "act3"] {
        let email = if name == "ida" {
            "ida@corp.example".to_string()
        } else {
            format!("{name}@example.com")
        };
        let id = api.user(name, json!({"email": email})).await;
        api.put_json(
            &format!("/api/v1/users/{id}/password"),
            json!({"password": password}),
        )
        .await
        .expect(204);
        users.push(id);
    }
    let (sue, lee) = (&users[0], &users[2]);
    api.post(
        &format!("/api/v1/users/{sue}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);
    // Ida's domain signs in through the IdP; Lee's group may not use passwords.
    let sso = idp(&api, "Corp SSO", &op.issuer, json!({})).await;
    let no_passwords = api
        .post(
            "/api/v1/groups",
            json!({"name": "SSO only", "subject": "user"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(
        &format!("/api/v1/groups/{no_passwords}/members"),
        json!({"subject_id": lee}),
    )
    .await
    .expect(200);
    api.put_json(
        "/api/v1/sign-in/routing",
        json!({"rules": [{"name": "Corp", "condition": {"email_domain": ["corp.example"]},
                           "target": {"type": "idp", "idp_id": sso}}],
               "default": {"type": "local"},
               "local_sign_in_disabled_for": [no_passwords]}),
    )
    .await
    .expect(200);

    // What a real check costs: an active user's wrong password. Each
    // reference user takes four, short of the lockout.
    let mut references = 0usize;
    let mut real_check = || {
        let who = ["act1", "act2", "act3"][references / 4];
        references += 1;
        let base = server.base.clone();
        async move {
            let (status, _, body, took) = post_password(&base, who, "not the password", &[]).await;
            assert_eq!(status, 401, "{who}: {body}");
            took
        }
    };

    for (who, expected_status, expected_reason) in [
        ("sue", 401, "wrong_password"),
        ("ida@corp.example", 403, "not_local"),
        ("lee", 403, "local_disabled"),
    ] {
        // The quickest of a few of each, taken in turn, so that other work on
        // the machine slows them alike.
        let (mut real, mut right, mut wrong) = (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..2 {
            real = real.min(real_check().await);
            let (right_status, _, right_body, right_took) =
                post_password(&server.base, who, password, &[]).await;
            real = real.min(real_check().await);
            let (wrong_status, _, wrong_body, wrong_took) =
                post_password(&server.base, who, "not the password", &[]).await;
            assert_eq!(right_status, expected_status, "{who}: {right_body}");
            assert_eq!(wrong_status, right_status, "{who}");
            assert_eq!(
                reason(&right_body).as_deref(),
                Some(expected_reason),
                "{who}"
            );
            assert_eq!(right_body, wrong_body, "{who}: the pages differ");
            right = right.min(right_took);
            wrong = wrong.min(wrong_took);
        }
        // A hash was checked either way: no answer comes back in a fraction
        // of the time a real check takes (without one, it would take a
        // tenth of it).
        for took in [right, wrong] {
            assert!(
                took * 2 > real,
                "{who} answered in {took:?}, a real check takes {real:?}"
            );
        }
    }
    // The suspended user's page is the stranger's.
    let (_, _, stranger, _) = post_password(&server.base, "nobody", password, &[]).await;
    let (_, _, suspended, _) = post_password(&server.base, "sue", password, &[]).await;
    assert_eq!(
        stranger.replace("nobody", "X"),
        suspended.replace("sue", "X")
    );
    // The admin sees the real reason.
    let failures = audit(&api, "sign_in.failure").await;
    let sue_failure = failures
        .iter()
        .find(|f| f["resource_id"] == sue.as_str())
        .unwrap();
    let detail = sue_failure["changes"]["detail"]["after"].as_str().unwrap();
    assert!(detail.contains("suspended"), "{detail}");
    assert!(
        audit(&api, "session.open").await.is_empty(),
        "nobody signed in"
    );
}

#[tokio::test]
async fn cookies_are_host_prefixed_and_secure_when_cohort_is_served_over_https() {
    let server = Server::start_with(&[("COHORT_PUBLIC_URL", "https://cohort.example")]);
    let api = server.admin();
    let ann = api.user("ann", json!({})).await;
    api.put_json(
        &format!("/api/v1/users/{ann}/password"),
        json!({"password": "correct horse battery"}),
    )
    .await
    .expect(204);

    let form = raw_client()
        .get(format!("{}/sign-in", server.base))
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(&form);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let csrf_cookie = &cookies[0];
    assert!(
        csrf_cookie.starts_with("__Host-cohort_csrf="),
        "{csrf_cookie}"
    );
    for attribute in ["; Path=/;", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
        assert!(
            csrf_cookie.contains(attribute),
            "{attribute} missing: {csrf_cookie}"
        );
    }
    assert!(
        !csrf_cookie.to_ascii_lowercase().contains("domain="),
        "{csrf_cookie}"
    );
    let token = csrf_cookie["__Host-cohort_csrf=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // The plain name is not read: a cookie planted under it is no CSRF token.
    let sign_in = |cookie_name: &'static str, token: String| {
        raw_client()
            .post(format!("{}/sign-in/password", server.base))
            .header("cookie", format!("{cookie_name}={token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("identifier", "ann"),
                ("password", "correct horse battery"),
                ("csrf", token.as_str()),
            ]))
            .send()
    };
    let planted = sign_in("cohort_csrf", token.clone()).await.unwrap();
    assert_eq!(
        reason(&planted.text().await.unwrap()).as_deref(),
        Some("csrf")
    );

    let done = sign_in("__Host-cohort_csrf", token).await.unwrap();
    assert_eq!(done.status(), 303);
    let session = set_cookies(&done)
        .into_iter()
        .find(|c| c.starts_with("__Host-cohort_session="))
        .expect("a __Host- session cookie");
    assert!(
        session.contains("; Path=/;") && session.contains("; Secure"),
        "{session}"
    );
    let value = session["__Host-cohort_session=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me = |cookie: String| {
        raw_client()
            .get(format!("{}/api/v1/me", server.base))
            .header("cookie", cookie)
            .send()
    };
    let r = me(format!("__Host-cohort_session={value}")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = me(format!("cohort_session={value}")).await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "the plain name is not the session cookie under https"
    );

    // Under http, the plain names, without Secure.
    let plain = Server::start();
    let form = raw_client()
        .get(format!("{}/sign-in", plain.base))
        .send()
        .await
        .unwrap();
    let cookie = &set_cookies(&form)[0];
    assert!(cookie.starts_with("cohort_csrf="), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn starting_sign_ins_is_rate_limited_per_address_and_per_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cohort.toml");
    std::fs::write(
        &config,
        "[sign_in.rate_limit]\nper_address_per_minute = 4\nper_identifier_per_minute = 3\n",
    )
    .unwrap();
    // Loopback is the trusted proxy, so each request can name its client.
    let server = Server::start_with(&[
        ("COHORT_CONFIG", config.to_str().unwrap()),
        ("COHORT_TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let api = server.admin();
    let ada = api.user("ada", json!({})).await;
    api.put_json(
        &format!("/api/v1/users/{ada}/password"),
        json!({"password": "correct horse battery"}),
    )
    .await
    .expect(204);
    let start = |identifier: &str, client: &str, accept: &str| {
        raw_client()
            .post(format!("{}/sign-in", server.base))
            .header("cookie", "cohort_csrf=t")
            .header("x-forwarded-for", client)
            .header("accept", accept)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("identifier={}&csrf=t", urlencode(identifier)))
            .send()
    };
    let html = "text/html";

    // One identifier from many addresses: three, then no more.
    for n in 1..=3 {
        let r = start("Ada", &format!("192.0.2.{n}"), html).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = start("ada", "192.0.2.4", html).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After: {retry}");
    let page = r.text().await.unwrap();
    assert_eq!(reason(&page).as_deref(), Some("rate_limited"));
    assert!(page.contains("Too many sign-in attempts"), "{page}");
    // A client that asks for JSON gets the API's error body.
    let r = start("ada", "192.0.2.5", "application/json").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // The password form counts against the identifier too, before any hash.
    let (status, headers, body, _) = post_password(
        &server.base,
        "ada",
        "correct horse battery",
        &[("x-forwarded-for", "192.0.2.6")],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    // The limit is the account's, whichever of its names is typed: the
    // email of the same user does not open a second allowance.
    let r = start(" ADA@example.com", "192.0.2.7", html).await.unwrap();
    assert_eq!(r.status(), 429);
    // Other identifiers from those addresses are fine.
    let r = start("grace", "192.0.2.1", html).await.unwrap();
    assert_eq!(r.status(), 200);

    // One address with many identifiers: four, then no more.
    for n in 1..=4 {
        let r = start(&format!("user{n}"), "203.0.113.7", html)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = start("user5", "203.0.113.7", html).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        reason(&r.text().await.unwrap()).as_deref(),
        Some("rate_limited")
    );
    // The address next door is another client.
    let r = start("user5", "203.0.113.8", html).await.unwrap();
    assert_eq!(r.status(), 200);
    // The callback is limited by address as well.
    let r = raw_client()
        .get(format!("{}/sign-in/callback?state=x&code=y", server.base))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);

    // Refusals for going too fast are not audited (a flood would be a flood
    // of writes); the others are.
    let failures = audit(&api, "sign_in.failure").await;
    assert!(
        failures
            .iter()
            .all(|f| f["changes"]["reason"]["after"] != "rate_limited"),
        "{failures:?}"
    );
}

/// Opens an activation link and sets `password` with its form.
async fn activate(base: &str, url: &str, password: &str) -> Page {
    let b = Browser::new();
    let form = b.get(url).await;
    assert_eq!(form.status, 200, "{}", form.body);
    b.post(
        &format!("{base}/activate"),
        &[
            ("token", &form.input("token").unwrap()),
            ("password", password),
            ("csrf", &form.input("csrf").unwrap()),
        ],
    )
    .await
}

#[tokio::test]
async fn activation_checks_the_users_state_and_ends_the_users_other_links() {
    let server = Server::start();
    let api = server.admin();
    let val = api.user("val", json!({})).await;
    let link = || async {
        let url = api
            .post(&format!("/api/v1/users/{val}/activation-link"), json!({}))
            .await
            .expect(201)
            .body["url"]
            .as_str()
            .unwrap()
            .to_string();
        url.replace("http://127.0.0.1", "")
            .split_once("/activate")
            .map(|(_, rest)| format!("{}/activate{rest}", server.base))
            .unwrap()
    };
    let first = link().await;
    let second = link().await;
    // A suspended user's link shows no form and sets nothing, even when
    // posted to directly.
    let b = Browser::new();
    let form = b.get(&first).await;
    assert_eq!(form.status, 200);
    let (token, csrf) = (form.input("token").unwrap(), form.input("csrf").unwrap());
    api.post(
        &format!("/api/v1/users/{val}/state"),
        json!({"state": "suspended"}),
    )
    .await
    .expect(200);
    let page = b.get(&first).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(page.reason().as_deref(), Some("user_not_active"));
    let posted = b
        .post(
            &format!("{}/activate", server.base),
            &[
                ("token", token.as_str()),
                ("password", "set while suspended"),
                ("csrf", csrf.as_str()),
            ],
        )
        .await;
    assert_eq!(posted.status, 403, "{}", posted.body);
    assert_eq!(posted.reason().as_deref(), Some("user_not_active"));
    assert!(audit(&api, "user.password_set").await.is_empty());

    // Reinstated, the link works, and ends the other one.
    api.post(
        &format!("/api/v1/users/{val}/state"),
        json!({"state": "active"}),
    )
    .await
    .expect(200);
    let done = activate(&server.base, &first, "a brand new passphrase").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let other = Browser::new().get(&second).await;
    assert_eq!(other.reason().as_deref(), Some("activation_invalid"));
    let set = audit(&api, "user.password_set").await;
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0]["actor"], "user:val");
    assert_eq!(set[0]["client_address"], "127.0.0.1", "{}", set[0]);
    assert!(
        !set[0]["request_id"].as_str().unwrap().is_empty(),
        "{}",
        set[0]
    );
    let ok = password_sign_in(
        &Browser::new(),
        &server.base,
        "val",
        "a brand new passphrase",
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
}

#[tokio::test]
async fn the_password_lockout_outlasts_a_restart() {
    let mut server = Server::start();
    let api = server.admin();
    let lou = api.user("lou", json!({})).await;
    api.put_json(
        &format!("/api/v1/users/{lou}/password"),
        json!({"password": "correct horse battery"}),
    )
    .await
    .expect(204);
    for _ in 0..5 {
        let (status, _, _, _) = post_password(&server.base, "lou", "wrong wrong wrong", &[]).await;
        assert_eq!(status, 401);
    }
    let (status, headers, body, _) =
        post_password(&server.base, "lou", "correct horse battery", &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(reason(&body).as_deref(), Some("locked_out"));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After: {retry}");

    // Killed and started again: still locked, and no fresh guesses.
    server.restart_after_kill();
    let (status, _, body, _) =
        post_password(&server.base, "lou", "correct horse battery", &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(reason(&body).as_deref(), Some("locked_out"));
    // Another user is not affected.
    let api = server.admin();
    let kit = api.user("kit", json!({})).await;
    api.put_json(
        &format!("/api/v1/users/{kit}/password"),
        json!({"password": "correct horse battery"}),
    )
    .await
    .expect(204);
    let (status, _, _, _) = post_password(&server.base, "kit", "correct horse battery", &[]).await;
    assert_eq!(status, 303);
}
