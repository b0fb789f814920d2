//! A device after enrollment: its credential rotated and revoked, enrolling
//! again, serial numbers, a failed enrollment, and what the audit keeps.

use super::*;

#[tokio::test]
async fn credentials_rotate_revoke_and_go_with_their_device() {
    let s = InProcess::start();
    let admin = s.admin();
    let (_, t) = token(&admin, json!({"name": "fleet", "max_uses": 5})).await;
    let r = enroll(&s, &t, laptop("rot", "ROT1")).await.expect(201);
    let device = r.body["device"]["id"].as_str().unwrap().to_string();
    let first = r.body["secret"].as_str().unwrap().to_string();
    let first_id = r.body["credential"]["id"].clone();
    let own = format!("/api/v1/devices/{device}");
    let check_in = |key: String| {
        let s = &s;
        let own = own.clone();
        async move {
            s.client(Some(&key))
                .post(&format!("{own}/check-in"), json!({"agent_version": "3"}))
                .await
                .status
                .as_u16()
        }
    };

    // The device rotates its own credential: the old secret stops at once.
    let rotated = s
        .client(Some(&first))
        .post(&format!("{own}/credential/rotate"), json!({}))
        .await
        .expect(200);
    let second = rotated.body["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_ne!(rotated.body["id"], first_id);
    assert_eq!(check_in(first.clone()).await, 401);
    assert_eq!(check_in(second.clone()).await, 200);

    // An admin rotates it too.
    let third = admin
        .post(&format!("{own}/credential/rotate"), json!({}))
        .await
        .expect(200)
        .body["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(check_in(second.clone()).await, 401);
    assert_eq!(check_in(third.clone()).await, 200);

    // Revoked: 401, no credential left; an admin may issue a new one.
    admin.delete(&format!("{own}/credential")).await.expect(204);
    assert_eq!(check_in(third.clone()).await, 401);
    admin.get(&format!("{own}/credential")).await.expect(404);
    admin.delete(&format!("{own}/credential")).await.expect(404);
    let fourth = admin
        .post(&format!("{own}/credential/rotate"), json!({}))
        .await
        .expect(200)
        .body["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(check_in(fourth.clone()).await, 200);

    // Deleting the device revokes its credential in the same change.
    admin.delete(&own).await.expect(204);
    let r = s.client(Some(&fourth)).get(&own).await.expect(401);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device credential")
    );
    admin.get(&format!("{own}/credential")).await.expect(404);
    admin
        .post(&format!("{own}/credential/rotate"), json!({}))
        .await
        .expect(404);

    // The audit log has each step, and no secret or hash of one.
    let (_, log) = admin.get_text("/api/v1/audit/export?order=asc").await;
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["resource_type"] == "device_credential")
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    let device_actor = format!("device:{device}");
    assert_eq!(actions.len(), 6, "{actions:?}");
    assert_eq!(actions[0].0, "device_credential.issue");
    assert!(actions[0].1.starts_with("enrollment-token:"));
    assert_eq!(
        actions[1],
        ("device_credential.rotate", device_actor.as_str())
    );
    assert_eq!(actions[2], ("device_credential.rotate", "bootstrap-admin"));
    assert_eq!(actions[3], ("device_credential.revoke", "bootstrap-admin"));
    assert_eq!(actions[4], ("device_credential.issue", "bootstrap-admin"));
    assert_eq!(actions[5], ("device_credential.revoke", "bootstrap-admin"));
    assert_secret_free(&log, &[&t, &first, &second, &third, &fourth]);
}

#[tokio::test]
async fn a_device_that_enrolls_again_keeps_its_identity() {
    let s = InProcess::start();
    let admin = s.admin();
    let (_, t) = token(&admin, json!({"name": "reimage", "max_uses": 10})).await;
    let r = enroll(&s, &t, laptop("old-name", "C02REIMAGE"))
        .await
        .expect(201);
    let device = r.body["device"]["id"].as_str().unwrap().to_string();
    let old = r.body["secret"].as_str().unwrap().to_string();
    let user = admin.user("grace", json!({})).await;
    admin
        .put(&format!("/api/v1/users/{user}/devices/{device}"))
        .await
        .expect(201);
    admin
        .patch(
            &format!("/api/v1/devices/{device}"),
            json!({"display_name": "Grace's Mac"}),
        )
        .await
        .expect(200);

    // Same serial (any case): the same device, a new credential, the old one dead.
    let r = enroll(
        &s,
        &t,
        json!({"hostname": "new-name", "os_family": "macos", "serial_number": "c02reimage"}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["reenrolled"], true);
    assert_eq!(r.body["device"]["id"], device.as_str());
    assert_eq!(r.body["device"]["hostname"], "new-name");
    // Facts the agent did not report keep their values.
    assert_eq!(r.body["device"]["display_name"], "Grace's Mac");
    assert_eq!(r.body["device"]["os_version"], "14.5");
    let new = r.body["secret"].as_str().unwrap().to_string();
    s.client(Some(&old))
        .get(&format!("/api/v1/devices/{device}"))
        .await
        .expect(401);
    s.client(Some(&new))
        .get(&format!("/api/v1/devices/{device}"))
        .await
        .expect(200);
    let bound = admin
        .get(&format!("/api/v1/devices/{device}/users"))
        .await
        .expect(200);
    assert_eq!(bound.body["items"][0]["user_id"], user.as_str());

    // A device an admin or an import created is found by serial number too.
    let pre = admin
        .device("prestaged", "windows", json!({"serial_number": "PF-1"}))
        .await;
    let r = enroll(
        &s,
        &t,
        json!({"hostname": "DESKTOP-1", "os_family": "windows", "serial_number": "PF-1"}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["device"]["id"], pre.as_str());

    // A serial number changed by an admin follows: the old one no longer matches.
    admin
        .patch(
            &format!("/api/v1/devices/{pre}"),
            json!({"serial_number": "PF-2"}),
        )
        .await
        .expect(200);
    let r = enroll(
        &s,
        &t,
        json!({"hostname": "DESKTOP-1", "os_family": "windows", "serial_number": "PF-1"}),
    )
    .await
    .expect(201);
    assert_ne!(r.body["device"]["id"], pre.as_str());

    // Two devices with one serial: enrollment cannot tell which, and writes nothing.
    admin
        .device("dup", "linux", json!({"serial_number": "DUP"}))
        .await;
    admin
        .device("dup", "linux", json!({"serial_number": "DUP"}))
        .await;
    let (id, once) = token(&admin, json!({"name": "dup"})).await;
    let r = enroll(
        &s,
        &once,
        json!({"hostname": "dup", "os_family": "linux", "serial_number": "DUP"}),
    )
    .await
    .expect(409);
    assert_eq!(r.code(), "serial_number_ambiguous");
    assert_eq!(r.field(), "serial_number");
    let t = admin
        .get(&format!("/api/v1/device-enrollment-tokens/{id}"))
        .await
        .expect(200);
    assert_eq!(t.body["uses"], 0);
}

/// A check-in cannot take another device's serial number: two devices with
/// one serial number make the other's next enrollment ambiguous, so one
/// agent could lock another machine out of enrolling again.
#[tokio::test]
async fn a_check_in_cannot_take_another_devices_serial_number() {
    let s = InProcess::start();
    let admin = s.admin();
    let (_, t) = token(&admin, json!({"name": "fleet", "max_uses": 10})).await;
    let victim = enroll(&s, &t, laptop("victim", "C02VICTIM"))
        .await
        .expect(201)
        .body["device"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = enroll(&s, &t, laptop("mallory", "C02MALLORY"))
        .await
        .expect(201);
    let mallory = r.body["device"]["id"].as_str().unwrap().to_string();
    let agent = s.client(Some(r.body["secret"].as_str().unwrap()));
    let check_in = format!("/api/v1/devices/{mallory}/check-in");
    let before = admin
        .get(&format!("/api/v1/devices/{mallory}"))
        .await
        .expect(200);

    for serial in ["C02VICTIM", "c02victim"] {
        let r = agent
            .post(
                &check_in,
                json!({"serial_number": serial, "hostname": "renamed"}),
            )
            .await
            .expect(409);
        assert_eq!(r.code(), "serial_number_taken", "{}", r.body);
        assert_eq!(r.field(), "serial_number");
    }
    let after = admin
        .get(&format!("/api/v1/devices/{mallory}"))
        .await
        .expect(200);
    assert_eq!(after.body, before.body, "nothing was written");
    // The victim still enrolls again as itself.
    let r = enroll(&s, &t, laptop("victim", "C02VICTIM"))
        .await
        .expect(200);
    assert_eq!(r.body["device"]["id"], victim.as_str());

    // Its own serial number in another case, or a new one nobody has, is fine.
    agent
        .post(&check_in, json!({"serial_number": "c02mallory"}))
        .await
        .expect(200);
    agent
        .post(&check_in, json!({"serial_number": "C02NEWBOARD"}))
        .await
        .expect(200);
    // A device that already shares its serial number (an admin recorded
    // both) keeps checking in.
    admin
        .device("twin", "macos", json!({"serial_number": "C02NEWBOARD"}))
        .await;
    agent
        .post(
            &check_in,
            json!({"serial_number": "C02NEWBOARD", "os_version": "15.0"}),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn an_enrollment_that_fails_late_leaves_nothing_behind() {
    let s = InProcess::start();
    let admin = s.admin();
    let group = admin
        .post(
            "/api/v1/groups",
            json!({"name": "kiosks", "subject": "device"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (id, t) = token(
        &admin,
        json!({"name": "kiosks", "device_group": group, "max_uses": 3}),
    )
    .await;
    // The group goes away after the token was made: the device would be
    // created, its credential issued, and only then the group step fails.
    admin
        .delete(&format!("/api/v1/groups/{group}"))
        .await
        .expect(204);
    let (_, before) = admin.get_text("/api/v1/audit/export").await;
    let r = enroll(&s, &t, laptop("kiosk-1", "K1")).await.expect(409);
    assert_eq!(r.code(), "enrollment_group_unusable");
    assert_eq!(r.field(), "device_group");
    let list = admin.get("/api/v1/devices").await.expect(200);
    assert!(list.body["items"].as_array().unwrap().is_empty());
    let tok = admin
        .get(&format!("/api/v1/device-enrollment-tokens/{id}"))
        .await
        .expect(200);
    assert_eq!(tok.body["uses"], 0);
    let (_, after) = admin.get_text("/api/v1/audit/export").await;
    assert_eq!(before, after, "a failed enrollment wrote audit events");
}

#[tokio::test]
async fn enrollment_is_audited_without_secrets() {
    let s = InProcess::start();
    let admin = s.admin();
    let (id, t) = token(&admin, json!({"name": "audited", "max_uses": 2})).await;
    let r = enroll(&s, &t, laptop("aud", "AUD1")).await.expect(201);
    let device = r.body["device"]["id"].as_str().unwrap().to_string();
    let cred = r.body["secret"].as_str().unwrap().to_string();
    admin
        .delete(&format!("/api/v1/device-enrollment-tokens/{id}"))
        .await
        .expect(204);

    let q = |filter: String| {
        let admin = admin.clone();
        async move {
            admin
                .get(&format!("/api/v1/audit?order=asc&{filter}"))
                .await
                .expect(200)
                .body["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let token_events = q(format!(
        "resource_type=device_enrollment_token&resource_id={id}"
    ))
    .await;
    let actions: Vec<&str> = token_events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "device_enrollment_token.create",
            "device_enrollment_token.use",
            "device_enrollment_token.revoke"
        ]
    );
    assert_eq!(token_events[0]["actor"], "bootstrap-admin");
    let used = &token_events[1];
    assert_eq!(used["actor"], format!("enrollment-token:{id}"));
    assert_eq!(used["changes"]["uses"]["before"], 0);
    assert_eq!(used["changes"]["uses"]["after"], 1);
    assert_eq!(used["changes"]["device_id"]["after"], device.as_str());
    let device_events = q(format!("resource_type=device&resource_id={device}")).await;
    assert_eq!(device_events[0]["action"], "device.enroll");
    assert_eq!(device_events[0]["actor"], format!("enrollment-token:{id}"));
    assert_eq!(
        device_events[0]["changes"]["serial_number"]["after"],
        "AUD1"
    );

    let (_, log) = admin.get_text("/api/v1/audit/export").await;
    let (_, csv) = admin.get_text("/api/v1/audit/export?format=csv").await;
    assert_secret_free(&log, &[&t, &cred]);
    assert_secret_free(&csv, &[&t, &cred]);
    // The server log does not carry them either.
    assert_secret_free(&s.log(), &[&t, &cred]);
}

/// Neither a secret, nor its random part, nor its stored hash is in `text`.
fn assert_secret_free(text: &str, secrets: &[&str]) {
    for secret in secrets {
        let random = ["cohort_enroll_", "cohort_device_"]
            .iter()
            .find_map(|p| secret.strip_prefix(p))
            .expect("a Cohort secret");
        let hash: String = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!text.contains(random), "a secret leaked");
        assert!(!text.contains(&hash), "a secret's hash leaked");
    }
}
