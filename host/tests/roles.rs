//! The role matrix: every role against every kind of endpoint. A forbidden
//! call is a 403 that names the role, and writes nothing.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use common::InProcess;

use cohort_tests::Api;
use reqwest::Method;
use serde_json::{Value, json};

/// What each probe needs to exist.
struct Fixture {
    user: String,
    device: String,
}

/// A request: method, path, optional JSON body.
type Call = (Method, String, Option<Value>);

/// One kind of endpoint, and which roles may call it
/// (admin, help-desk, read-only, device-agent).
struct Probe {
    name: &'static str,
    allowed: [bool; 4],
    /// Builds the request from the fixture, a unique number and the role's
    /// index (the state probe suspends as admin, reactivates as help-desk).
    call: fn(&Fixture, usize, usize) -> Call,
}

const PROBES: &[Probe] = &[
    Probe {
        name: "list users",
        allowed: [true, true, true, false],
        call: |_, _, _| (Method::GET, "/api/v1/users".into(), None),
    },
    Probe {
        name: "get user",
        allowed: [true, true, true, false],
        call: |f, _, _| (Method::GET, format!("/api/v1/users/{}", f.user), None),
    },
    Probe {
        name: "create user",
        allowed: [true, false, false, false],
        call: |_, i, _| {
            (
                Method::POST,
                "/api/v1/users".into(),
                Some(
                    json!({"username": format!("new{i}"), "email": format!("new{i}@example.com")}),
                ),
            )
        },
    },
    Probe {
        name: "patch user",
        allowed: [true, false, false, false],
        call: |f, i, _| {
            (
                Method::PATCH,
                format!("/api/v1/users/{}", f.user),
                Some(json!({"phone": format!("{i}")})),
            )
        },
    },
    Probe {
        name: "change user state",
        allowed: [true, true, false, false],
        call: |f, _, role| {
            let to = if role == 0 { "suspended" } else { "active" };
            (
                Method::POST,
                format!("/api/v1/users/{}/state", f.user),
                Some(json!({"state": to})),
            )
        },
    },
    Probe {
        name: "list devices",
        allowed: [true, true, true, false],
        call: |_, _, _| (Method::GET, "/api/v1/devices".into(), None),
    },
    Probe {
        name: "create device",
        allowed: [true, false, false, false],
        call: |_, i, _| {
            (
                Method::POST,
                "/api/v1/devices".into(),
                Some(json!({"hostname": format!("h{i}"), "os_family": "linux"})),
            )
        },
    },
    Probe {
        name: "device check-in",
        allowed: [true, false, false, true],
        call: |f, i, _| {
            (
                Method::POST,
                format!("/api/v1/devices/{}/check-in", f.device),
                Some(json!({"agent_version": format!("1.{i}")})),
            )
        },
    },
    Probe {
        name: "bind",
        allowed: [true, false, false, false],
        call: |f, _, _| {
            (
                Method::PUT,
                format!("/api/v1/users/{}/devices/{}", f.user, f.device),
                None,
            )
        },
    },
    Probe {
        name: "read bindings",
        allowed: [true, true, true, false],
        call: |f, _, _| {
            (
                Method::GET,
                format!("/api/v1/users/{}/devices", f.user),
                None,
            )
        },
    },
    Probe {
        name: "read schema",
        allowed: [true, true, true, false],
        call: |_, _, _| (Method::GET, "/api/v1/attributes".into(), None),
    },
    Probe {
        name: "declare attribute",
        allowed: [true, false, false, false],
        call: |_, i, _| {
            (
                Method::POST,
                "/api/v1/attributes".into(),
                Some(json!({"name": format!("attr{i}"), "subject": "user", "type": "string"})),
            )
        },
    },
    Probe {
        name: "read audit",
        allowed: [true, true, true, false],
        call: |_, _, _| (Method::GET, "/api/v1/audit".into(), None),
    },
    Probe {
        name: "list api keys",
        allowed: [true, false, false, false],
        call: |_, _, _| (Method::GET, "/api/v1/api-keys".into(), None),
    },
    Probe {
        name: "create api key",
        allowed: [true, false, false, false],
        call: |_, i, _| {
            (
                Method::POST,
                "/api/v1/api-keys".into(),
                Some(json!({"name": format!("k{i}"), "role": "read-only"})),
            )
        },
    },
    Probe {
        name: "backup",
        allowed: [true, false, false, false],
        call: |_, _, _| (Method::POST, "/api/v1/backup".into(), None),
    },
    Probe {
        name: "whoami",
        allowed: [true, true, true, true],
        call: |_, _, _| (Method::GET, "/api/v1/whoami".into(), None),
    },
];

#[tokio::test]
async fn every_role_against_every_kind_of_endpoint() {
    let s = InProcess::start();
    let admin = s.admin();
    let user = admin.create_user("subject").await;
    let device = admin
        .post(
            "/api/v1/devices",
            json!({"hostname": "dev", "os_family": "macos"}),
        )
        .await
        .expect(201);
    let fixture = Fixture {
        user: user["id"].as_str().unwrap().into(),
        device: device.body["id"].as_str().unwrap().into(),
    };
    admin
        .post(
            &format!("/api/v1/users/{}/state", fixture.user),
            json!({"state": "active"}),
        )
        .await
        .expect(200);
    let roles = ["admin", "help-desk", "read-only", "device-agent"];
    let mut clients: Vec<Api> = Vec::new();
    for role in roles {
        let key = admin.create_key(&format!("{role}-key"), role).await;
        clients.push(s.client(Some(&key)));
    }
    let mut n = 0;
    for probe in PROBES {
        for (r, role) in roles.iter().enumerate() {
            n += 1;
            let (method, path, body) = (probe.call)(&fixture, n, r);
            let resp = clients[r].send(method, &path, body.as_ref(), &[]).await;
            if probe.allowed[r] {
                assert!(
                    resp.status.is_success(),
                    "{role} should be allowed to {}: {} {}",
                    probe.name,
                    resp.status,
                    resp.body
                );
            } else {
                assert_eq!(
                    resp.status.as_u16(),
                    403,
                    "{role} must not {}: {}",
                    probe.name,
                    resp.body
                );
                assert_eq!(resp.code(), "forbidden");
                assert!(
                    resp.body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(role)
                );
            }
        }
    }
    // Only the allowed calls left audit events: count events per actor.
    for (r, role) in roles.iter().enumerate() {
        let events = admin
            .get(&format!("/api/v1/audit?actor={role}-key&limit=500"))
            .await
            .expect(200);
        let writes = PROBES
            .iter()
            .filter(|p| p.allowed[r])
            .filter(|p| (p.call)(&fixture, 0, r).0 != Method::GET && p.name != "backup")
            .count();
        assert_eq!(
            events.body["items"].as_array().unwrap().len(),
            writes,
            "{role}"
        );
    }
}

#[tokio::test]
async fn revoked_keys_stop_working_at_once() {
    let s = InProcess::start();
    let admin = s.admin();
    let created = admin
        .post(
            "/api/v1/api-keys",
            json!({"name": "temp", "role": "read-only"}),
        )
        .await
        .expect(201);
    let secret = created.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("cohort_"));
    let id = created.body["id"].as_str().unwrap();
    let temp = s.client(Some(secret));
    let me = temp.get("/api/v1/whoami").await.expect(200);
    assert_eq!(me.body["role"], "read-only");
    // Secrets are never listed.
    let list = admin.get("/api/v1/api-keys").await.expect(200);
    assert!(!list.body.to_string().contains(secret));
    admin
        .delete(&format!("/api/v1/api-keys/{id}"))
        .await
        .expect(204);
    temp.get("/api/v1/users").await.expect(401);
    // A key cannot revoke itself.
    let own = admin.get("/api/v1/whoami").await.body["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin
        .delete(&format!("/api/v1/api-keys/{own}"))
        .await
        .expect(409);
    assert_eq!(r.code(), "key_in_use");
    let r = admin
        .post("/api/v1/api-keys", json!({"name": "temp2", "role": "root"}))
        .await
        .expect(422);
    assert_eq!(r.field(), "role");
}

/// Who may not call an endpoint hears so before anything about their input:
/// a malformed body (bad shape, bad JSON, no JSON content type) from a key
/// without the role is a 403, where an admin gets the 4xx about the body.
#[tokio::test]
async fn authorization_comes_before_the_body_is_read() {
    let s = InProcess::start_with_plugins(&[]);
    let admin = s.admin();
    let user = admin.create_user("someone").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let device = admin
        .post(
            "/api/v1/devices",
            json!({"hostname": "box", "os_family": "linux"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reader = s.client(Some(&admin.create_key("reader", "read-only").await));
    let help_desk = s.client(Some(&admin.create_key("desk", "help-desk").await));
    let writes = [
        (Method::POST, "/api/v1/users".to_string()),
        (Method::PATCH, format!("/api/v1/users/{user}")),
        (Method::POST, "/api/v1/groups".to_string()),
        (Method::POST, "/api/v1/attributes".to_string()),
        (Method::POST, "/api/v1/api-keys".to_string()),
        (Method::POST, "/api/v1/plugins".to_string()),
        (Method::POST, "/api/v1/plugin-instances".to_string()),
        (Method::POST, "/api/v1/idps".to_string()),
        (Method::POST, "/api/v1/import-runs".to_string()),
        (Method::PUT, format!("/api/v1/users/{user}/password")),
        (Method::POST, format!("/api/v1/devices/{device}/check-in")),
    ];
    let bodies: [(Option<&str>, &[u8]); 3] = [
        (
            Some("application/json"),
            br#"{"username": 5, "surprise": true}"#,
        ),
        (Some("application/json"), b"{not json"),
        (None, b"plain text"),
    ];
    for (method, path) in &writes {
        for (ct, body) in &bodies {
            for (who, api) in [("read-only", &reader), ("help-desk", &help_desk)] {
                let r = api.send_raw(method.clone(), path, *ct, body.to_vec()).await;
                assert_eq!(r.status, 403, "{who} {method} {path} {ct:?}: {}", r.body);
                assert_eq!(r.code(), "forbidden", "{who} {method} {path}");
            }
            // The same request from an admin is about the body, so the
            // order is what decides.
            let r = admin
                .send_raw(method.clone(), path, *ct, body.to_vec())
                .await;
            assert!(
                matches!(r.status.as_u16(), 400 | 415 | 422),
                "admin {method} {path} {ct:?}: {} {}",
                r.status,
                r.body
            );
        }
    }
}

/// SCIM checks its client from the headers before it reads a body: a caller
/// without a SCIM key is refused at once, however large a body it declares,
/// and cannot make the server hold one.
#[test]
fn scim_refuses_callers_before_reading_their_bodies() {
    use std::io::{Read, Write};
    let s = InProcess::start();
    let addr = s.base.trim_start_matches("http://").to_string();
    for (path, auth) in [
        ("/scim/v2/Users", ""),
        ("/scim/v2/Bulk", ""),
        ("/scim/v2/.search", ""),
        ("/scim/v2/Users", "Authorization: Bearer not-a-key\r\n"),
    ] {
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // A megabyte declared, one byte sent: an answer can only come from
        // a server that did not wait for the rest.
        write!(
            sock,
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/scim+json\r\nContent-Length: 1000000\r\n\r\n{{"
        )
        .unwrap();
        let mut answer = [0u8; 512];
        let n = sock.read(&mut answer).expect("an answer before the body");
        let head = String::from_utf8_lossy(&answer[..n]);
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
    }
}

/// A caller without read rights is refused before its path is looked at:
/// 403 for a malformed id as for a valid one, where an admin gets the 404.
#[tokio::test]
async fn the_role_is_checked_before_the_id_is_parsed() {
    let s = InProcess::start();
    let admin = s.admin();
    let key = admin.create_key("agent-key", "device-agent").await;
    let agent = s.client(Some(&key));
    for path in [
        "/api/v1/users/not-an-id/groups",
        "/api/v1/devices/not-an-id/groups",
    ] {
        let r = agent.get(path).await;
        assert_eq!(r.status.as_u16(), 403, "{path}: {}", r.body);
        assert_eq!(admin.get(path).await.status.as_u16(), 404, "{path}");
    }
}
