//! Every error status the API promises, in the one error shape, and nothing
//! written when a request is refused.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
use crate::common;

use common::InProcess;

use cohort_tests::Api;
use reqwest::Method;
use serde_json::json;

async fn audit_count(api: &Api) -> usize {
    api.get("/api/v1/audit?limit=500").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let s = InProcess::start();
    let api = s.admin();
    let user = api.create_user("taken").await;
    let id = user["id"].as_str().unwrap();
    let before = audit_count(&api).await;

    // 400 malformed JSON, with the position.
    let r = api
        .send_raw(
            Method::POST,
            "/api/v1/users",
            Some("application/json"),
            b"{\"username\": ".to_vec(),
        )
        .await
        .expect(400);
    assert_eq!(r.code(), "malformed_json");
    assert!(r.field().contains("line 1 column"), "{}", r.body);

    // 415 without a JSON content type.
    let r = api
        .send_raw(
            Method::POST,
            "/api/v1/users",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await
        .expect(415);
    assert_eq!(r.code(), "unsupported_media_type");
    api.send_raw(Method::POST, "/api/v1/users", None, b"{}".to_vec())
        .await
        .expect(415);

    // 413 over the body limit (1 MiB by default).
    let huge = format!(
        "{{\"username\": \"x\", \"email\": \"x@example.com\", \"description\": \"{}\"}}",
        "a".repeat(2 << 20)
    );
    let r = api
        .send_raw(
            Method::POST,
            "/api/v1/users",
            Some("application/json"),
            huge.into_bytes(),
        )
        .await
        .expect(413);
    assert_eq!(r.code(), "payload_too_large");

    // 422 unknown field, wrong type, missing field, invalid values: each names the field.
    for (body, field) in [
        (
            json!({"username": "a", "email": "a@example.com", "nickname": "x"}),
            "nickname",
        ),
        (json!({"username": 5, "email": "a@example.com"}), "username"),
        (json!({"username": "a"}), "email"),
        (
            json!({"username": "a b", "email": "a@example.com"}),
            "username",
        ),
        (json!({"username": "a", "email": "not-an-email"}), "email"),
        (
            json!({"username": "a", "email": "a@example.com", "state": "suspended"}),
            "state",
        ),
        (
            json!({"username": "a", "email": "a@example.com", "manager_id": "nope"}),
            "manager_id",
        ),
    ] {
        let r = api.post("/api/v1/users", body.clone()).await.expect(422);
        assert_eq!(r.code(), "invalid_field", "{body}");
        assert_eq!(r.field(), field, "{body}: {}", r.body);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }

    // 409 duplicate username or email, case-insensitively.
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "TAKEN", "email": "new@example.com"}),
        )
        .await
        .expect(409);
    assert_eq!((r.code(), r.field()), ("username_taken", "username"));
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "new", "email": "Taken@Example.com"}),
        )
        .await
        .expect(409);
    assert_eq!((r.code(), r.field()), ("email_taken", "email"));

    // 409 invalid state transition.
    let r = api
        .post(
            &format!("/api/v1/users/{id}/state"),
            json!({"state": "suspended"}),
        )
        .await
        .expect(409);
    assert_eq!(r.code(), "invalid_state_transition");
    let r = api
        .post(
            &format!("/api/v1/users/{id}/state"),
            json!({"state": "paused"}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "state");
    // State is not writable through PATCH.
    let r = api
        .patch(&format!("/api/v1/users/{id}"), json!({"state": "active"}))
        .await
        .expect(422);
    assert_eq!(r.field(), "state");

    // 412 stale If-Match.
    let r = api
        .send(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&json!({"phone": "1"})),
            &[("if-match", "\"9\"")],
        )
        .await
        .expect(412);
    assert_eq!(r.code(), "precondition_failed");

    // 404: unknown id, malformed id, unknown route.
    api.get("/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057")
        .await
        .expect(404);
    let r = api.get("/api/v1/users/not-a-uuid").await.expect(404);
    assert_eq!(r.code(), "not_found");
    let r = api.get("/api/v1/nothing-here").await.expect(404);
    assert_eq!(r.code(), "not_found");
    let r = api
        .send(Method::PUT, "/api/v1/users", None, &[])
        .await
        .expect(405);
    assert_eq!(r.code(), "method_not_allowed");

    // 400 bad query parameters name the parameter.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("sort=shoe_size", "sort"),
        ("shoe_size=9", "shoe_size"),
        ("cursor=%21%21", "cursor"),
    ] {
        let r = api.get(&format!("/api/v1/users?{q}")).await.expect(400);
        assert_eq!((r.code(), r.field()), ("invalid_query", field), "{q}");
    }
    let r = api.get("/api/v1/audit?from=yesterday").await.expect(400);
    assert_eq!(r.field(), "from");

    // A body is an object: serde would otherwise take a struct's fields in
    // order from an array, at the top or nested, and a repeated key would
    // silently win.
    for (body, field) in [
        (r#"["a", "a@example.com"]"#.to_string(), ""),
        (
            r#"{"username": "a", "email": "a@example.com", "username": "b"}"#.to_string(),
            "username",
        ),
    ] {
        let r = api
            .send_raw(
                Method::POST,
                "/api/v1/users",
                Some("application/json"),
                body.clone().into_bytes(),
            )
            .await
            .expect(422);
        assert_eq!((r.code(), r.field()), ("invalid_field", field), "{body}");
    }
    let r = api
        .post(
            &format!(
                "/api/v1/devices/{}/check-in",
                "01890a5d-ac96-774b-bcce-b302099a8057"
            ),
            json!([null, null]),
        )
        .await
        .expect(422);
    assert_eq!(r.code(), "invalid_field");
    // A merge patch that is not an object is refused as such, even with a
    // stale If-Match: the shape of a body is checked first, everywhere.
    for patch in [json!(null), json!([1]), json!("x")] {
        let r = api
            .send(
                Method::PATCH,
                &format!("/api/v1/users/{id}"),
                Some(&patch),
                &[("if-match", "\"9\"")],
            )
            .await
            .expect(422);
        assert_eq!(r.code(), "invalid_field", "{patch}");
    }

    // The changes of an import run page with checked numbers.
    for (q, field) in [
        ("offset=x", "offset"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let r = api
            .get(&format!(
                "/api/v1/import-runs/01890a5d-ac96-774b-bcce-b302099a8057/changes?{q}"
            ))
            .await
            .expect(400);
        assert_eq!((r.code(), r.field()), ("invalid_query", field), "{q}");
    }

    // None of the refused requests wrote anything.
    assert_eq!(audit_count(&api).await, before);
    let users = api.get("/api/v1/users").await.expect(200);
    assert_eq!(users.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("/api/v1/users/{id}")).await.body["version"],
        1
    );
}

#[tokio::test]
async fn authentication_errors_are_401_with_the_error_shape() {
    let s = InProcess::start();
    let r = s.client(None).get("/api/v1/users").await.expect(401);
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(r.header("www-authenticate"), "Bearer");
    let r = s
        .client(Some("not-a-real-key"))
        .get("/api/v1/users")
        .await
        .expect(401);
    assert_eq!(r.code(), "unauthorized");
    let r = s
        .client(None)
        .send(
            Method::GET,
            "/api/v1/users",
            None,
            &[("authorization", "Basic Zm9vOmJhcg==")],
        )
        .await
        .expect(401);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
}
