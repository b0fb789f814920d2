//! Look-alike identities (issue #23, finding 3), in process: the Kelvin
//! sign, zero-width characters and a Cyrillic letter in the REST API, in
//! SCIM (create and `userName eq` filters) and in imports. The sign-in
//! through an OpenID Provider asserting a look-alike is in
//! `tests/tests/identities.rs`, against the binary.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use cohort_tests::{Api, urlencode};
use common::InProcess;
use serde_json::{Value, json};

const KELVIN_KATE: &str = "\u{212A}ate";

async fn users_where(api: &Api, field: &str, value: &str) -> Vec<Value> {
    api.get(&format!("/api/v1/users?{field}={}", urlencode(value)))
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_rest_api_normalises_or_refuses_look_alikes() {
    let server = InProcess::start();
    let api = server.admin();
    let kate = api.user("kate", json!({})).await;

    // The Kelvin sign is canonically the letter K: the address is Kate's,
    // so it is taken, not a second account.
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "kate2", "email": format!("{KELVIN_KATE}@example.com")}),
        )
        .await
        .expect(409);
    assert_eq!((r.code(), r.field()), ("email_taken", "email"));
    // Elsewhere it is accepted, and stored without the Kelvin sign.
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "kate3", "email": format!("{KELVIN_KATE}@other.example")}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["email"], "Kate@other.example");
    // Full-width letters are the same address too.
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "kate4", "email": "\u{FF4B}\u{FF41}\u{FF54}\u{FF45}@example.com"}),
        )
        .await
        .expect(409);
    assert_eq!(r.code(), "email_taken");

    // Refused, each with a stable code naming the field.
    for (body, code, field) in [
        (
            json!({"username": KELVIN_KATE, "email": "k1@example.com"}),
            "disallowed_character",
            "username",
        ),
        (
            json!({"username": "ka\u{200B}te", "email": "k2@example.com"}),
            "invisible_character",
            "username",
        ),
        (
            json!({"username": "k\u{0430}te", "email": "k3@example.com"}),
            "mixed_script",
            "username",
        ),
        (
            json!({"username": "k4", "email": "ka\u{200B}te@example.com"}),
            "invisible_character",
            "email",
        ),
        (
            json!({"username": "k5", "email": "kate@\u{FEFF}example.com"}),
            "invisible_character",
            "email",
        ),
        (
            json!({"username": "k6", "email": "kate@ex\u{0430}mple.com"}),
            "mixed_script",
            "email",
        ),
    ] {
        let r = api.post("/api/v1/users", body.clone()).await.expect(422);
        assert_eq!((r.code(), r.field()), (code, field), "{body}: {}", r.body);
    }
    // A PATCH is held to the same rules.
    let r = api
        .patch(
            &format!("/api/v1/users/{kate}"),
            json!({"email": "kate@ex\u{0435}mple.com"}),
        )
        .await
        .expect(422);
    assert_eq!((r.code(), r.field()), ("mixed_script", "email"));

    // Look-ups: the Kelvin spelling of the email finds Kate (it is her
    // address); a Kelvin username finds nobody (no username can hold it);
    // the Cyrillic domain finds nobody.
    let found = users_where(&api, "email", &format!("{KELVIN_KATE}@EXAMPLE.COM")).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], kate.as_str());
    assert!(users_where(&api, "username", KELVIN_KATE).await.is_empty());
    assert!(
        users_where(&api, "email", "kate@ex\u{0430}mple.com")
            .await
            .is_empty()
    );

    // Letters of one other script are usernames, stored in NFC and unique
    // whatever the case or composition.
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "Zoe\u{0308}", "email": "zoe@example.com"}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["username"], "Zo\u{EB}");
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "ZO\u{CB}", "email": "zoe2@example.com"}),
        )
        .await
        .expect(409);
    assert_eq!(r.code(), "username_taken");
}

/// Default-ignorable code points that are not format (Cf) characters:
/// the combining grapheme joiner, a variation selector, a supplementary
/// variation selector, the Hangul filler and a Mongolian free variation
/// selector (attacker review D of issue #23). Each renders as nothing.
const IGNORABLE: [char; 5] = ['\u{034F}', '\u{FE0F}', '\u{E0100}', '\u{3164}', '\u{180B}'];

#[tokio::test]
async fn invisible_non_format_characters_make_no_second_address() {
    let server = InProcess::start();
    let api = server.admin();
    let kate = api
        .user("kate", json!({"email": "kate@b\u{FC}cher.de"}))
        .await;
    let other = api.user("other", json!({})).await;
    for c in IGNORABLE {
        for (body, field) in [
            (
                json!({"username": "k1", "email": format!("kate{c}@b\u{FC}cher.de")}),
                "email",
            ),
            (
                json!({"username": "k1", "email": format!("kate@b\u{FC}c{c}her.de")}),
                "email",
            ),
        ] {
            let r = api.post("/api/v1/users", body.clone()).await.expect(422);
            assert_eq!(
                (r.code(), r.field()),
                ("invisible_character", field),
                "{body}: {}",
                r.body
            );
        }
        // Usernames refuse it too (PRECIS disallows it; our check runs
        // first, with the same code).
        let r = api
            .post(
                "/api/v1/users",
                json!({"username": format!("kate{c}"), "email": "k2@example.com"}),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), "username", "{}", r.body);
        let r = api
            .patch(
                &format!("/api/v1/users/{other}"),
                json!({"email": format!("kate{c}@b\u{FC}cher.de")}),
            )
            .await
            .expect(422);
        assert_eq!((r.code(), r.field()), ("invisible_character", "email"));
        // A look-up with it reaches the visible address.
        let found = users_where(&api, "email", &format!("kate{c}@b\u{FC}cher.de")).await;
        assert_eq!(found.len(), 1, "{c:?}");
        assert_eq!(found[0]["id"], kate.as_str());
    }
    // A full-width at sign is an at sign, in a look-up as in a create.
    let found = users_where(&api, "email", "KATE\u{FF20}B\u{DC}CHER.DE").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], kate.as_str());
    let r = api
        .post(
            "/api/v1/users",
            json!({"username": "k3", "email": "kate\u{FF20}b\u{FC}cher.de"}),
        )
        .await
        .expect(409);
    assert_eq!((r.code(), r.field()), ("email_taken", "email"));

    // SCIM: create and PATCH.
    let scim = server.client(Some(&api.create_key("okta", "scim").await));
    let other = scim
        .post("/scim/v2/Users", scim_user("other2", "other2@example.com"))
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    for c in IGNORABLE {
        let email = format!("kate{c}@b\u{FC}cher.de");
        let r = scim.post("/scim/v2/Users", scim_user("k4", &email)).await;
        assert_eq!(r.status.as_u16(), 400, "{c:?}: {}", r.body);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("emails:") && detail.contains("invisible_character"),
            "{detail}"
        );
        let r = scim
            .patch(
                &format!("/scim/v2/Users/{other}"),
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "emails",
                                       "value": [{"value": email, "type": "work"}]}]}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 400, "{c:?}: {}", r.body);
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("invisible_character"),
            "{}",
            r.body
        );
    }
}

/// Same-script look-alikes (UTS #39 confusables) of an existing identity are
/// refused, in REST and SCIM, create and update; a merely similar name is
/// not.
#[tokio::test]
async fn same_script_look_alikes_of_another_user_are_refused() {
    let server = InProcess::start();
    let api = server.admin();
    let admin = api.user("admin", json!({})).await;
    api.user("login", json!({})).await;
    let other = api.user("other", json!({})).await;
    for (body, field) in [
        (
            json!({"username": "adm\u{131}n", "email": "x1@example.com"}),
            "username",
        ),
        (
            json!({"username": "\u{251}dmin", "email": "x2@example.com"}),
            "username",
        ),
        (
            json!({"username": "\u{1C0}ogin", "email": "x3@example.com"}),
            "username",
        ),
        (
            json!({"username": "x4", "email": "adm\u{131}n@example.com"}),
            "email",
        ),
    ] {
        let r = api.post("/api/v1/users", body.clone()).await.expect(409);
        assert_eq!(
            (r.code(), r.field()),
            ("confusable", field),
            "{body}: {}",
            r.body
        );
    }
    let r = api
        .patch(
            &format!("/api/v1/users/{other}"),
            json!({"username": "\u{251}dmin"}),
        )
        .await
        .expect(409);
    assert_eq!((r.code(), r.field()), ("confusable", "username"));
    // Not a look-alike: accepted. And the user itself may change other
    // fields, or its own case.
    api.user("admit", json!({})).await;
    api.patch(
        &format!("/api/v1/users/{admin}"),
        json!({"username": "Admin"}),
    )
    .await
    .expect(200);

    let scim = server.client(Some(&api.create_key("okta", "scim").await));
    let r = scim
        .post("/scim/v2/Users", scim_user("adm\u{131}n", "x5@example.com"))
        .await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap().contains("confusable"),
        "{}",
        r.body
    );
    let r = scim
        .patch(
            &format!("/scim/v2/Users/{other}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "userName", "value": "\u{1C0}ogin"}]}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
}

fn scim_user(user_name: &str, email: &str) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
           "userName": user_name, "emails": [{"value": email, "type": "work"}]})
}

async fn scim_filter(scim: &Api, filter: &str) -> Vec<Value> {
    let r = scim
        .get(&format!("/scim/v2/Users?filter={}", urlencode(filter)))
        .await
        .expect(200);
    r.body["Resources"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn scim_refuses_look_alikes_and_filters_by_identity() {
    let server = InProcess::start();
    let scim = server.client(Some(&server.admin().create_key("okta", "scim").await));
    let kate = scim
        .post("/scim/v2/Users", scim_user("kate", "kate@example.com"))
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();

    for (body, code, field) in [
        (
            scim_user("ka\u{200D}te", "k1@example.com"),
            "invisible_character",
            "userName",
        ),
        (
            scim_user("k\u{0430}te", "k2@example.com"),
            "mixed_script",
            "userName",
        ),
        (
            scim_user("k3", "kate@ex\u{0435}mple.com"),
            "mixed_script",
            "emails",
        ),
    ] {
        let r = scim.post("/scim/v2/Users", body.clone()).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
        assert_eq!(r.body["scimType"], "invalidValue", "{}", r.body);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{field}:")) && detail.contains(code),
            "{detail}"
        );
    }
    // A PATCH and a replace are held to the same rules.
    let r = scim
        .patch(
            &format!("/scim/v2/Users/{kate}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "userName", "value": "k\u{0430}te"}]}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap().contains("mixed_script"),
        "{}",
        r.body
    );
    let r = scim
        .send(
            reqwest::Method::PUT,
            &format!("/scim/v2/Users/{kate}"),
            Some(&scim_user("kate", "kate@\u{2060}example.com")),
            &[],
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("invisible_character"),
        "{}",
        r.body
    );

    // The Kelvin address is Kate's: a uniqueness conflict, not a new user.
    let r = scim
        .post(
            "/scim/v2/Users",
            scim_user("kate5", &format!("{KELVIN_KATE}@example.com")),
        )
        .await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    assert_eq!(r.body["scimType"], "uniqueness");

    // `userName eq`: what Okta and Entra ask before a create.
    let ids = |found: Vec<Value>| -> Vec<String> {
        found
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(scim_filter(&scim, "userName eq \"KATE\"").await),
        [kate.as_str()]
    );
    assert_eq!(
        ids(scim_filter(&scim, "userName eq \"\u{FF2B}ATE\"").await),
        [kate.as_str()],
        "full-width letters are width-mapped"
    );
    for look_alike in [KELVIN_KATE, "k\u{0430}te", "ka\u{200B}te"] {
        assert!(
            scim_filter(&scim, &format!("userName eq \"{look_alike}\""))
                .await
                .is_empty(),
            "{look_alike:?} is nobody's username"
        );
    }
    assert_eq!(
        ids(scim_filter(
            &scim,
            &format!("emails[value eq \"{KELVIN_KATE}@example.com\"]")
        )
        .await),
        [kate.as_str()]
    );
    assert!(
        scim_filter(&scim, "emails.value eq \"kate@ex\u{0430}mple.com\"")
            .await
            .is_empty()
    );
}

/// A real provider whose client is registered for `server`'s callback.
#[tokio::test]
async fn imports_report_look_alike_records_as_failed() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let csv = "Employee ID,E-mail,First Name\n\
               300,ann@example.com,Ann\n\
               301,ka\u{200B}te@example.com,Kate\n\
               302,kate@ex\u{0430}mple.com,Kate\n";
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "people-csv", "plugin": "csv", "config": {"data": csv}}),
    )
    .await
    .expect(201);
    let done = api
        .run_import(
            json!({"instance": "people-csv", "new_users": "active", "match_on": "employee_id"}),
        )
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["created"], 1, "{done}");
    assert_eq!(done["counts"]["errors"], 2, "{done}");
    let errors = done["errors"].as_array().unwrap();
    let reason = |id: &str| {
        errors
            .iter()
            .find(|e| e["external_id"] == id)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no error for {id}: {done}"))
    };
    assert!(reason("301").contains("invisible_character"), "{done}");
    assert!(reason("302").contains("mixed_script"), "{done}");
}
