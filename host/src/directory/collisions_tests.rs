//! A store as schema version 2 wrote it (`to_lowercase` index keys), with
//! users that are one identity under the new rules, migrated to the end.

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::audit::AuditEvent;
use crate::clock::TestClock;
use crate::migrations::MIGRATIONS;

/// Writes a user the way version 2 did: the record and both indexes under
/// `to_lowercase` keys.
fn old_user(txn: &mut WriteTxn<'_>, username: &str, email: &str) -> Uuid {
    let id = Uuid::now_v7();
    txn.put_json(
        USERS,
        id.as_bytes(),
        &json!({"id": id, "username": username, "email": email, "state": "active",
                "custom_attributes": {}, "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z", "version": 1}),
    )
    .unwrap();
    txn.put(
        USERS_BY_USERNAME,
        username.to_lowercase().as_bytes(),
        id.as_bytes().to_vec(),
    );
    txn.put(
        USERS_BY_EMAIL,
        email.to_lowercase().as_bytes(),
        id.as_bytes().to_vec(),
    );
    id
}

#[test]
fn collisions_are_kept_indexed_once_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::open_store(dir.path());
    assert_eq!(store.migrate(&MIGRATIONS[..2]).unwrap(), 2);
    let (kate, wide, hidden, ada) = store
        .write(|txn| {
            // Created in this order, so ids sort the same way.
            let kate = old_user(txn, "kate", "kate@example.com");
            let wide = old_user(txn, "kate2", "\u{FF4B}ate@example.com");
            let hidden = old_user(txn, "kate3", "ka\u{200B}te@Example.com");
            let ada = old_user(txn, "Ada", "Ada@B\u{FC}cher.de");
            Ok::<_, StorageError>((kate, wide, hidden, ada))
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    // Under the old keys these were four different addresses (a Kelvin
    // sign could not be among them: `to_lowercase` already folded it onto
    // `kate`, which is the bug the new keys fix the other way round).
    assert_eq!(
        store.scan(USERS_BY_EMAIL, b"", None, false).count(),
        4,
        "the old store is as version 2 left it"
    );

    assert_eq!(store.migrate(&MIGRATIONS[..3]).unwrap(), 3);

    let index = |ks, key: &str| {
        store
            .get(ks, key.as_bytes())
            .unwrap()
            .map(|v| Uuid::from_slice(&v).unwrap())
    };
    // The older user keeps the address; the look-alikes hold no entry.
    assert_eq!(index(USERS_BY_EMAIL, "kate@example.com"), Some(kate));
    assert_eq!(index(USERS_BY_EMAIL, "ada@xn--bcher-kva.de"), Some(ada));
    assert_eq!(store.scan(USERS_BY_EMAIL, b"", None, false).count(), 2);
    // Usernames did not collide and keep their (ASCII-lowercase) keys.
    assert_eq!(index(USERS_BY_USERNAME, "kate2"), Some(wide));
    assert_eq!(index(USERS_BY_USERNAME, "ada"), Some(ada));
    // No user was removed.
    assert_eq!(store.scan(USERS, b"", None, false).count(), 4);

    let collisions: Vec<Collision> = store
        .scan(IDENTITY_COLLISIONS, b"", None, false)
        .map(|e| cohort_storage::decode_json(IDENTITY_COLLISIONS, &e.unwrap().1).unwrap())
        .collect();
    let mut found: Vec<(Uuid, Uuid, &str)> = collisions
        .iter()
        .map(|c| (c.user_id, c.kept_user_id, c.field.as_str()))
        .collect();
    found.sort();
    assert_eq!(found, vec![(wide, kate, "email"), (hidden, kate, "email")]);
    assert!(collisions.iter().all(|c| c.reported_at.is_none()));

    let t = Utc.with_ymd_and_hms(2026, 12, 6, 6, 0, 0).unwrap();
    let directory = super::super::Directory::new(store.clone(), TestClock::at(t));
    assert_eq!(directory.report_identity_collisions().unwrap(), 2);
    let events: Vec<AuditEvent> = crate::audit::all_events(&store)
        .into_iter()
        .filter(|e: &AuditEvent| e.action == "user.identity_collision")
        .collect();
    assert_eq!(events.len(), 2);
    let about: Vec<String> = events.iter().map(|e| e.resource_id.clone()).collect();
    assert!(about.contains(&wide.to_string()) && about.contains(&hidden.to_string()));
    assert!(events.iter().all(|e| e.time == t && e.actor == "system"));
    let wide_event = events
        .iter()
        .find(|e| e.resource_id == wide.to_string())
        .unwrap();
    let detail = serde_json::to_value(&wide_event.changes).unwrap();
    assert_eq!(detail["kept_user_id"]["after"], json!(kate.to_string()));
    assert_eq!(detail["value"]["after"], json!("\u{FF4B}ate@example.com"));
    // Reported once: a restart writes nothing more.
    assert_eq!(directory.report_identity_collisions().unwrap(), 0);
}

#[test]
fn a_collided_user_can_change_and_takes_the_key_once_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::open_store(dir.path());
    store.migrate(&MIGRATIONS[..2]).unwrap();
    let (kate, wide) = store
        .write(|txn| {
            let kate = old_user(txn, "kate", "kate@example.com");
            let wide = old_user(txn, "kate2", "\u{FF4B}ate@example.com");
            Ok::<_, StorageError>((kate, wide))
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    store.migrate(MIGRATIONS).unwrap();
    let t = Utc.with_ymd_and_hms(2026, 12, 6, 6, 0, 0).unwrap();
    let directory = super::super::Directory::new(store.clone(), TestClock::at(t));
    let actor = Actor::system("test");
    let holder = || {
        store
            .get(USERS_BY_EMAIL, b"kate@example.com")
            .unwrap()
            .map(|v| Uuid::from_slice(&v).unwrap())
    };
    let change = |id: Uuid, patch: serde_json::Value| {
        store
            .write(|txn| {
                let user = super::super::load_user(txn, &id)?;
                let mut input = serde_json::to_value(super::super::UserInput::from(&user)).unwrap();
                crate::json::merge_patch(&mut input, &patch);
                let input = serde_json::from_value(input).unwrap();
                directory.replace_user_in(txn, &actor, &id, input, None, None)
            })
            .map(|w| w.durable_blocking().unwrap())
    };
    // The younger user may change other fields; the older keeps the key.
    change(wide, json!({"department": "Sales"})).unwrap();
    assert_eq!(holder(), Some(kate));
    change(kate, json!({"email": "kate.new@example.com"})).unwrap();
    assert_eq!(holder(), None, "the older user's move frees the key");
    // The younger user's next change indexes it.
    change(wide, json!({"department": "Ops"})).unwrap();
    assert_eq!(holder(), Some(wide));
}

/// A store version 3 wrote: email keys kept default-ignorable code points
/// that are not format characters, so `kate` with a combining grapheme
/// joiner was a second address. Version 4 re-keys; the collision version 3
/// found and reported stays reported.
#[test]
fn version_4_folds_default_ignorables_and_keeps_old_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::open_store(dir.path());
    assert_eq!(store.migrate(&MIGRATIONS[..2]).unwrap(), 2);
    let (kate, wide) = store
        .write(|txn| {
            let kate = old_user(txn, "kate", "kate@example.com");
            let wide = old_user(txn, "kate2", "\u{FF4B}ate@example.com");
            Ok::<_, StorageError>((kate, wide))
        })
        .unwrap()
        .durable_blocking()
        .unwrap();
    assert_eq!(store.migrate(&MIGRATIONS[..3]).unwrap(), 3);
    let t = Utc.with_ymd_and_hms(2026, 12, 6, 6, 0, 0).unwrap();
    let directory = super::super::Directory::new(store.clone(), TestClock::at(t));
    assert_eq!(directory.report_identity_collisions().unwrap(), 1);
    // What version 3's binary wrote for an address with U+034F: the user
    // and an index entry under the key that kept the character.
    let hidden = store
        .write(|txn| {
            let id = Uuid::now_v7();
            txn.put_json(
                USERS,
                id.as_bytes(),
                &json!({"id": id, "username": "kate3", "email": "kate\u{34F}@example.com",
                        "state": "active", "custom_attributes": {},
                        "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z", "version": 1}),
            )?;
            txn.put(USERS_BY_USERNAME, b"kate3", id.as_bytes().to_vec());
            txn.put(
                USERS_BY_EMAIL,
                "kate\u{34F}@example.com".as_bytes(),
                id.as_bytes().to_vec(),
            );
            Ok::<_, StorageError>(id)
        })
        .unwrap()
        .durable_blocking()
        .unwrap();

    assert_eq!(store.migrate(&MIGRATIONS[..4]).unwrap(), 4);

    let index = |key: &str| {
        store
            .get(USERS_BY_EMAIL, key.as_bytes())
            .unwrap()
            .map(|v| Uuid::from_slice(&v).unwrap())
    };
    assert_eq!(index("kate@example.com"), Some(kate));
    assert_eq!(index("kate\u{34F}@example.com"), None);
    assert_eq!(store.scan(USERS_BY_EMAIL, b"", None, false).count(), 1);
    // The new collision is reported; the old one is not again.
    assert_eq!(directory.report_identity_collisions().unwrap(), 1);
    let collisions: Vec<Collision> = store
        .scan(IDENTITY_COLLISIONS, b"", None, false)
        .map(|e| cohort_storage::decode_json(IDENTITY_COLLISIONS, &e.unwrap().1).unwrap())
        .collect();
    let mut found: Vec<(Uuid, Uuid)> = collisions
        .iter()
        .map(|c| (c.user_id, c.kept_user_id))
        .collect();
    found.sort();
    assert_eq!(found, vec![(wide, kate), (hidden, kate)]);
    assert!(collisions.iter().all(|c| c.reported_at == Some(t)));
}
