//! Device enrollment against the real binary: enrollment tokens, the
//! credential an enrollment returns, and that a device credential speaks
//! for its own device and nothing else. Token expiry needs a clock the test
//! can move, which the binary does not have: it is tested in
//! `host/src/devices/tests.rs` with the injected clock.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use common::InProcess;

use cohort_tests::Api;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Creates an enrollment token and returns (id, secret).
async fn token(api: &Api, body: Value) -> (String, String) {
    let r = api
        .post("/api/v1/device-enrollment-tokens", body)
        .await
        .expect(201);
    (
        r.body["id"].as_str().expect("id").to_string(),
        r.body["secret"].as_str().expect("secret").to_string(),
    )
}

/// Enrolls with `token` and the given facts.
async fn enroll(s: &InProcess, token: &str, facts: Value) -> cohort_tests::Resp {
    s.client(Some(token))
        .post("/api/v1/devices/enroll", facts)
        .await
}

fn laptop(hostname: &str, serial: &str) -> Value {
    json!({"hostname": hostname, "os_family": "macos", "os_version": "14.5", "serial_number": serial})
}

#[tokio::test]
async fn an_enrolled_device_checks_in_for_itself_and_nothing_else() {
    let s = InProcess::start();
    let admin = s.admin();
    let group = admin
        .post(
            "/api/v1/groups",
            json!({"name": "Berlin laptops", "subject": "device"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let created = admin
        .post(
            "/api/v1/device-enrollment-tokens",
            json!({"name": "Berlin office", "max_uses": 2, "device_group": group}),
        )
        .await
        .expect(201);
    let secret = created.body["secret"].as_str().unwrap().to_string();
    let token_id = created.body["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("cohort_enroll_"), "{secret}");
    assert_eq!(
        created.header("location"),
        format!("/api/v1/device-enrollment-tokens/{token_id}")
    );
    assert_eq!(created.body["state"], "active");
    assert_eq!(created.body["uses"], 0);
    assert_eq!(created.body["max_uses"], 2);
    assert_eq!(created.body["device_group"], group.as_str());
    assert!(secret.starts_with(created.body["token_prefix"].as_str().unwrap()));

    let r = enroll(&s, &secret, laptop("ada-mbp", "C02ADA"))
        .await
        .expect(201);
    let device = r.body["device"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), format!("/api/v1/devices/{device}"));
    assert_eq!(r.body["reenrolled"], false);
    assert_eq!(r.body["device"]["hostname"], "ada-mbp");
    assert!(r.body["device"]["last_contact"].is_string(), "{}", r.body);
    assert_eq!(r.body["credential"]["device_id"], device.as_str());
    assert_eq!(
        r.body["credential"]["enrollment_token_id"],
        token_id.as_str()
    );
    let cred = r.body["secret"].as_str().unwrap().to_string();
    assert!(cred.starts_with("cohort_device_"), "{cred}");

    // The token counted the use; the device joined the token's group.
    let t = admin
        .get(&format!("/api/v1/device-enrollment-tokens/{token_id}"))
        .await
        .expect(200);
    assert_eq!(t.body["uses"], 1);
    assert_eq!(t.body["state"], "active");
    assert!(t.body["last_used_at"].is_string());
    assert!(t.body.get("secret").is_none() && t.body.get("hash").is_none());
    let members = admin
        .get(&format!("/api/v1/groups/{group}/members"))
        .await
        .expect(200);
    assert_eq!(members.body["items"][0]["subject_id"], device.as_str());
    assert_eq!(members.body["items"][0]["source"], "manual");

    let dev = s.client(Some(&cred));
    let who = dev.get("/api/v1/whoami").await.expect(200);
    assert_eq!(who.body["role"], "device");
    assert_eq!(who.body["device_id"], device.as_str());
    assert_eq!(who.body["name"], format!("device:{device}"));

    // Its own device: check in and read.
    let own = format!("/api/v1/devices/{device}");
    let c = dev
        .post(&format!("{own}/check-in"), json!({"os_version": "15.0"}))
        .await
        .expect(200);
    assert_eq!(c.body["os_version"], "15.0");
    dev.get(&own).await.expect(200);
    dev.get(&format!("{own}/credential")).await.expect(200);

    // Another device: 403 device_mismatch, and nothing written.
    let other = admin.device("build-01", "linux", json!({})).await;
    let before = admin
        .get(&format!("/api/v1/devices/{other}"))
        .await
        .expect(200);
    let r = dev
        .post(
            &format!("/api/v1/devices/{other}/check-in"),
            json!({"os_version": "hacked"}),
        )
        .await
        .expect(403);
    assert_eq!(r.code(), "device_mismatch");
    assert_eq!(r.field(), "id");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&device)
    );
    // Whose device it is decides before the body is read: a malformed or
    // unsupported body for another device is still 403, not 400/415/422.
    for (ct, body) in [
        (Some("application/json"), &b"{\""[..]),
        (Some("application/json"), &br#"{"zzz": 1}"#[..]),
        (Some("text/plain"), &b"hello"[..]),
    ] {
        let r = dev
            .send_raw(
                reqwest::Method::POST,
                &format!("/api/v1/devices/{other}/check-in"),
                ct,
                body.to_vec(),
            )
            .await;
        assert_eq!(r.status, 403, "{ct:?}: {}", r.body);
        assert_eq!(r.code(), "device_mismatch", "{}", r.body);
    }
    assert_eq!(
        dev.get(&format!("/api/v1/devices/{other}"))
            .await
            .expect(403)
            .code(),
        "device_mismatch"
    );
    assert_eq!(
        dev.get(&format!("/api/v1/devices/{other}/credential"))
            .await
            .expect(403)
            .code(),
        "device_mismatch"
    );
    assert_eq!(
        dev.post(
            &format!("/api/v1/devices/{other}/credential/rotate"),
            json!({})
        )
        .await
        .expect(403)
        .code(),
        "device_mismatch"
    );
    // An id that is not even a UUID is another device too.
    assert_eq!(
        dev.post("/api/v1/devices/nope/check-in", json!({}))
            .await
            .expect(403)
            .code(),
        "device_mismatch"
    );
    let after = admin
        .get(&format!("/api/v1/devices/{other}"))
        .await
        .expect(200);
    assert_eq!(before.body, after.body);

    // Everything else: 403 forbidden.
    for (method, path, body) in [
        (Method::GET, "/api/v1/devices".to_string(), None),
        (Method::GET, "/api/v1/users".to_string(), None),
        (Method::GET, format!("{own}/users"), None),
        (Method::GET, "/api/v1/groups".to_string(), None),
        (Method::GET, "/api/v1/audit".to_string(), None),
        (Method::PATCH, own.clone(), Some(json!({"hostname": "x"}))),
        (Method::DELETE, own.clone(), None),
        (Method::DELETE, format!("{own}/credential"), None),
        (
            Method::POST,
            "/api/v1/devices".to_string(),
            Some(json!({"hostname": "x", "os_family": "linux"})),
        ),
        (
            Method::POST,
            "/api/v1/device-enrollment-tokens".to_string(),
            Some(json!({"name": "mine"})),
        ),
        (
            Method::POST,
            "/api/v1/api-keys".to_string(),
            Some(json!({"name": "mine", "role": "admin"})),
        ),
    ] {
        let r = dev.send(method.clone(), &path, body.as_ref(), &[]).await;
        assert_eq!(r.status.as_u16(), 403, "{method} {path}: {}", r.body);
        assert_eq!(r.code(), "forbidden", "{method} {path}");
    }
    // SCIM does not take device credentials at all.
    assert_eq!(dev.get("/scim/v2/Users").await.status.as_u16(), 401);

    // The enrollment token is no API key, and says where it belongs.
    let r = s
        .client(Some(&secret))
        .get("/api/v1/devices")
        .await
        .expect(401);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/devices/enroll")
    );
    // Nor is a device credential an enrollment token.
    assert_eq!(
        enroll(&s, &cred, laptop("x", "X1"))
            .await
            .expect(401)
            .code(),
        "invalid_enrollment_token"
    );

    // The credential record shows the last use, never the secret.
    let c = admin.get(&format!("{own}/credential")).await.expect(200);
    assert!(c.body["last_used_at"].is_string(), "{}", c.body);
    assert!(c.body.get("secret").is_none() && c.body.get("hash").is_none());
    assert!(cred.starts_with(c.body["key_prefix"].as_str().unwrap()));

    // The role-wide device-agent key still reports for any device.
    let agent = s.client(Some(&admin.create_key("mdm-bridge", "device-agent").await));
    agent
        .post(
            &format!("/api/v1/devices/{other}/check-in"),
            json!({"os_version": "1"}),
        )
        .await
        .expect(200);
    // A device credential cannot be created as an API key.
    let r = admin
        .post("/api/v1/api-keys", json!({"name": "d", "role": "device"}))
        .await
        .expect(422);
    assert_eq!(r.field(), "role");
}

#[tokio::test]
async fn tokens_refuse_when_used_up_revoked_or_unknown() {
    let s = InProcess::start();
    let admin = s.admin();

    // Used up: max_uses defaults to one.
    let (id, one) = token(&admin, json!({"name": "single"})).await;
    enroll(&s, &one, laptop("a", "S-A")).await.expect(201);
    let r = enroll(&s, &one, laptop("b", "S-B")).await.expect(401);
    assert_eq!(r.code(), "enrollment_token_exhausted");
    assert_eq!(r.header("www-authenticate"), "Bearer");
    let t = admin
        .get(&format!("/api/v1/device-enrollment-tokens/{id}"))
        .await
        .expect(200);
    assert_eq!(
        (t.body["uses"].clone(), t.body["state"].clone()),
        (json!(1), json!("exhausted"))
    );

    // Revoked: at once, kept in the list as revoked, idempotent.
    let (id, revoked) = token(&admin, json!({"name": "to-revoke", "max_uses": 10})).await;
    let path = format!("/api/v1/device-enrollment-tokens/{id}");
    admin.delete(&path).await.expect(204);
    admin.delete(&path).await.expect(204);
    assert_eq!(
        enroll(&s, &revoked, laptop("c", "S-C"))
            .await
            .expect(401)
            .code(),
        "enrollment_token_revoked"
    );
    let t = admin.get(&path).await.expect(200);
    assert_eq!(t.body["state"], "revoked");
    assert!(t.body["revoked_at"].is_string());
    assert_eq!(t.body["uses"], 0);

    // Unknown, missing, malformed.
    assert_eq!(
        enroll(&s, "cohort_enroll_nothing", laptop("d", "S-D"))
            .await
            .expect(401)
            .code(),
        "invalid_enrollment_token"
    );
    let r = s
        .client(None)
        .post("/api/v1/devices/enroll", laptop("d", "S-D"))
        .await
        .expect(401);
    assert_eq!(r.code(), "unauthorized");
    // The token is checked before the body: a bad body with a bad token is 401.
    s.client(Some("cohort_enroll_nothing"))
        .post("/api/v1/devices/enroll", json!({"hostname": 5}))
        .await
        .expect(401);
    // With a good token, a bad body is a 422 naming the field, and uses
    // nothing.
    let (id, good) = token(&admin, json!({"name": "good"})).await;
    let r = enroll(
        &s,
        &good,
        json!({"hostname": "has space", "os_family": "linux"}),
    )
    .await
    .expect(422);
    assert_eq!(r.field(), "hostname");
    let r = enroll(&s, &good, json!({"hostname": "x", "os_family": "beos"}))
        .await
        .expect(422);
    assert_eq!(r.field(), "os_family");
    let t = admin
        .get(&format!("/api/v1/device-enrollment-tokens/{id}"))
        .await
        .expect(200);
    assert_eq!(t.body["uses"], 0);

    // Only the refused hostnames never made it in.
    let list = admin.get("/api/v1/devices").await.expect(200);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a"]);

    // The list pages and filters by state.
    let page = admin
        .get("/api/v1/device-enrollment-tokens?limit=2")
        .await
        .expect(200);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let rest = admin
        .get(&format!(
            "/api/v1/device-enrollment-tokens?limit=2&cursor={cursor}"
        ))
        .await
        .expect(200);
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert!(rest.body["next_cursor"].is_null());
    let active = admin
        .get("/api/v1/device-enrollment-tokens?state=active")
        .await
        .expect(200);
    assert_eq!(active.body["items"][0]["name"], "good");
    assert_eq!(active.body["items"].as_array().unwrap().len(), 1);
    let r = admin
        .get("/api/v1/device-enrollment-tokens?state=sleepy")
        .await
        .expect(400);
    assert_eq!(r.field(), "state");
    assert_eq!(
        admin
            .get("/api/v1/device-enrollment-tokens?colour=red")
            .await
            .expect(400)
            .field(),
        "colour"
    );
    admin
        .get("/api/v1/device-enrollment-tokens/not-an-id")
        .await
        .expect(404);
}

#[tokio::test]
async fn token_input_is_checked() {
    let s = InProcess::start();
    let admin = s.admin();
    let user_group = admin
        .post(
            "/api/v1/groups",
            json!({"name": "people", "subject": "user"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let missing = "0190f5f4-0000-7000-8000-000000000000";
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(129)}), "name"),
        (json!({"name": "t", "max_uses": 0}), "max_uses"),
        (json!({"name": "t", "max_uses": 10_001}), "max_uses"),
        (json!({"name": "t", "max_uses": -1}), "max_uses"),
        (json!({"name": "t", "ttl_seconds": 0}), "ttl_seconds"),
        (
            json!({"name": "t", "ttl_seconds": 7_776_001}),
            "ttl_seconds",
        ),
        (
            json!({"name": "t", "ttl_seconds": 60, "expires_at": "2999-01-01T00:00:00Z"}),
            "ttl_seconds",
        ),
        (
            json!({"name": "t", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "t", "expires_at": "2999-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"name": "t", "expires_at": "tomorrow"}), "expires_at"),
        (
            json!({"name": "t", "device_group": missing}),
            "device_group",
        ),
        (
            json!({"name": "t", "device_group": user_group}),
            "device_group",
        ),
        (json!({"name": "t", "device_group": "nope"}), "device_group"),
        (json!({"name": "t", "secret": "mine"}), "secret"),
    ] {
        let r = admin
            .post("/api/v1/device-enrollment-tokens", body.clone())
            .await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.body);
        assert_eq!(r.field(), field, "{body}: {}", r.body);
    }
    // Non-admin keys may not see or make tokens.
    let reader = s.client(Some(&admin.create_key("auditor", "read-only").await));
    assert_eq!(
        reader
            .post("/api/v1/device-enrollment-tokens", json!({"name": "t"}))
            .await
            .expect(403)
            .code(),
        "forbidden"
    );
    reader
        .get("/api/v1/device-enrollment-tokens")
        .await
        .expect(403);
    let list = admin
        .get("/api/v1/device-enrollment-tokens")
        .await
        .expect(200);
    assert!(list.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn two_concurrent_enrollments_with_a_one_use_token_make_one_device() {
    let s = InProcess::start();
    let admin = s.admin();
    for round in 0..5 {
        let (id, secret) = token(&admin, json!({"name": format!("race-{round}")})).await;
        let (a, b) = tokio::join!(
            enroll(
                &s,
                &secret,
                laptop(&format!("race{round}-a"), &format!("RA{round}"))
            ),
            enroll(
                &s,
                &secret,
                laptop(&format!("race{round}-b"), &format!("RB{round}"))
            ),
        );
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 401], "{} / {}", a.body, b.body);
        let loser = if a.status.as_u16() == 401 { &a } else { &b };
        assert_eq!(loser.code(), "enrollment_token_exhausted");
        let t = admin
            .get(&format!("/api/v1/device-enrollment-tokens/{id}"))
            .await
            .expect(200);
        assert_eq!(t.body["uses"], 1);
    }
    let list = admin.get("/api/v1/devices?limit=500").await.expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 5);
}

mod lifecycle;
