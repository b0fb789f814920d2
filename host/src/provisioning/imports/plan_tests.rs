//! Unit tests of planning an import: records in, changes out, with the
//! directory and the source's links given as in-memory maps. They pin what
//! a dry run shows and what the brake counts, without a store or a plugin.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use uuid::Uuid;

use super::model::count_plan;
use super::plan::{KnownDevices, KnownUsers, Source, plan_devices, plan_users};
use super::{Change, Counts, ImportInput};
use crate::directory::{Device, User};

fn user(email: &str, employee_id: Option<&str>, state: &str, extra: Value) -> User {
    let mut v = json!({
        "id": Uuid::now_v7(),
        "username": email,
        "email": email,
        "state": state,
        "employee_id": employee_id,
        "custom_attributes": {},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "version": 3,
    });
    for (k, x) in extra.as_object().expect("an object") {
        v[k] = x.clone();
    }
    serde_json::from_value(v).expect("a user")
}

fn device(hostname: &str, serial: Option<&str>) -> Device {
    serde_json::from_value(json!({
        "id": Uuid::now_v7(),
        "hostname": hostname,
        "os_family": "linux",
        "serial_number": serial,
        "custom_attributes": {},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "version": 5,
    }))
    .expect("a device")
}

fn input(policy: Value) -> ImportInput {
    let mut v = json!({"instance": "hr"});
    for (k, x) in policy.as_object().expect("an object") {
        v[k] = x.clone();
    }
    serde_json::from_value(v).expect("an input")
}

fn record(external_id: &str, attributes: Value) -> Source {
    Source {
        device: false,
        external_id: external_id.into(),
        attributes: attrs(attributes),
    }
}

fn attrs(v: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(v).expect("attributes")
}

fn known(users: &[&User]) -> KnownUsers {
    let mut k = KnownUsers::default();
    for u in users {
        k.add((*u).clone());
    }
    k
}

fn no_links() -> HashMap<String, Uuid> {
    HashMap::new()
}

/// The user a single-change plan updates, with the fields it changes.
fn updated(plan: &[Change]) -> (Uuid, BTreeMap<String, (Value, Value)>) {
    match plan {
        [
            Change::Update {
                user_id, fields, ..
            },
        ] => (*user_id, fields.clone()),
        other => panic!("expected one update, got {other:?}"),
    }
}

#[test]
fn a_record_without_a_user_is_a_create() {
    let ada = user("ada@example.com", None, "active", json!({}));
    let r = json!({"email": "grace@example.com", "first_name": "Grace"});
    let plan = plan_users(
        &input(json!({})),
        &known(&[&ada]),
        &no_links(),
        vec![record("e7", r.clone())],
    );
    assert_eq!(
        plan,
        vec![Change::Create {
            external_id: "e7".into(),
            attributes: attrs(r),
        }]
    );
}

#[test]
fn a_changed_record_updates_only_the_fields_that_differ() {
    let ada = user(
        "ada@example.com",
        None,
        "active",
        json!({"first_name": "Ada", "department": "R&D", "custom_attributes": {"badge": "7"}}),
    );
    let r = json!({
        "email": "ada@example.com",
        "first_name": "Ada",
        "department": "Ops",
        "badge": "8",
        "floor": 2,
    });
    let plan = plan_users(
        &input(json!({})),
        &known(&[&ada]),
        &no_links(),
        vec![record("e1", r)],
    );
    let expected: BTreeMap<String, (Value, Value)> = [
        ("department".to_string(), (json!("R&D"), json!("Ops"))),
        ("badge".to_string(), (json!("7"), json!("8"))),
        ("floor".to_string(), (Value::Null, json!(2))),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        plan,
        vec![Change::Update {
            external_id: "e1".into(),
            user_id: ada.id,
            version: 3,
            fields: expected,
        }]
    );
}

#[test]
fn an_unchanged_record_is_linked_once_and_then_left_alone() {
    let ada = user("ada@example.com", None, "active", json!({"last_name": "L"}));
    let r = || record("e1", json!({"email": "ada@example.com", "last_name": "L"}));
    let users = known(&[&ada]);
    let first = plan_users(&input(json!({})), &users, &no_links(), vec![r()]);
    assert_eq!(
        first,
        vec![Change::Link {
            external_id: "e1".into(),
            user_id: ada.id,
        }]
    );
    let links: HashMap<String, Uuid> = [("e1".to_string(), ada.id)].into_iter().collect();
    let later = plan_users(&input(json!({})), &users, &links, vec![r()]);
    assert_eq!(
        later,
        vec![Change::Link {
            external_id: String::new(),
            user_id: ada.id,
        }]
    );
    let mut counts = Counts::default();
    count_plan(&mut counts, &later);
    assert_eq!((counts.unchanged, counts.updated), (1, 0));
}

#[test]
fn changed_ignore_leaves_a_changed_user_as_is() {
    let ada = user("ada@example.com", None, "active", json!({}));
    let plan = plan_users(
        &input(json!({"changed": "ignore"})),
        &known(&[&ada]),
        &no_links(),
        vec![record(
            "e1",
            json!({"email": "ada@example.com", "job_title": "CTO"}),
        )],
    );
    assert_eq!(
        plan,
        vec![Change::Link {
            external_id: "e1".into(),
            user_id: ada.id,
        }]
    );
}

#[test]
fn matching_by_email_folds_case_as_the_directory_does() {
    let ada = user("Ada.Lovelace@Example.com", None, "active", json!({}));
    let plan = plan_users(
        &input(json!({})),
        &known(&[&ada]),
        &no_links(),
        vec![record("e1", json!({"email": "ada.lovelace@EXAMPLE.COM"}))],
    );
    let (id, fields) = updated(&plan);
    assert_eq!(
        id, ada.id,
        "the same email in another case is the same user"
    );
    assert_eq!(
        fields.get("email"),
        Some(&(
            json!("Ada.Lovelace@Example.com"),
            json!("ada.lovelace@EXAMPLE.COM")
        ))
    );
}

#[test]
fn matching_by_employee_id_ignores_the_email() {
    let ada = user("ada@example.com", Some("E1"), "active", json!({}));
    let bob = user("bob@example.com", Some("E2"), "active", json!({}));
    let users = known(&[&ada, &bob]);
    let r = || {
        record(
            "e2",
            json!({"employee_id": "E2", "email": "ada@example.com"}),
        )
    };

    let by_id = plan_users(
        &input(json!({"match_on": "employee_id"})),
        &users,
        &no_links(),
        vec![r()],
    );
    let (id, fields) = updated(&by_id);
    assert_eq!(id, bob.id);
    assert!(fields.contains_key("email") && !fields.contains_key("employee_id"));

    let by_email = plan_users(&input(json!({})), &users, &no_links(), vec![r()]);
    let (id, fields) = updated(&by_email);
    assert_eq!(id, ada.id);
    assert!(fields.contains_key("employee_id") && !fields.contains_key("email"));

    let unknown = plan_users(
        &input(json!({"match_on": "employee_id"})),
        &users,
        &no_links(),
        vec![record(
            "e3",
            json!({"employee_id": "E3", "email": "bob@example.com"}),
        )],
    );
    assert!(matches!(unknown.as_slice(), [Change::Create { .. }]));
}

#[test]
fn a_stored_link_wins_over_the_email() {
    let ada = user("ada@example.com", None, "active", json!({}));
    let bob = user("bob@example.com", None, "active", json!({}));
    let links: HashMap<String, Uuid> = [("e1".to_string(), bob.id)].into_iter().collect();
    let plan = plan_users(
        &input(json!({})),
        &known(&[&ada, &bob]),
        &links,
        vec![record("e1", json!({"email": "ada@example.com"}))],
    );
    assert_eq!(updated(&plan).0, bob.id);
}

#[test]
fn an_active_user_gone_from_the_source_is_suspended_when_asked() {
    let ada = user("ada@example.com", None, "active", json!({}));
    let bob = user("bob@example.com", None, "active", json!({}));
    let cy = user("cy@example.com", None, "suspended", json!({}));
    let dee = user("dee@example.com", None, "active", json!({}));
    let users = known(&[&ada, &bob, &cy, &dee]);
    // Dee was never imported by this source: not its to suspend.
    let links: HashMap<String, Uuid> = [("e1", ada.id), ("e2", bob.id), ("e3", cy.id)]
        .into_iter()
        .map(|(e, id)| (e.to_string(), id))
        .collect();
    let records = || vec![record("e1", json!({"email": "ada@example.com"}))];

    let plan = plan_users(
        &input(json!({"missing": "suspend"})),
        &users,
        &links,
        records(),
    );
    assert_eq!(
        plan,
        vec![
            Change::Link {
                external_id: String::new(),
                user_id: ada.id,
            },
            Change::Suspend {
                external_id: "e2".into(),
                user_id: bob.id,
                version: 3,
            },
        ]
    );

    let kept = plan_users(&input(json!({})), &users, &links, records());
    assert!(
        !kept.iter().any(|c| matches!(c, Change::Suspend { .. })),
        "missing defaults to ignore: {kept:?}"
    );
}

#[test]
fn a_device_is_found_by_link_or_serial_and_its_owner_kept_apart() {
    let old = device("old-name", Some("SN1"));
    let linked_one = device("kiosk", None);
    let mut devices = KnownDevices::default();
    devices.add(old.clone());
    devices.add(linked_one.clone());
    let links: HashMap<String, Uuid> = [("device:d9".to_string(), linked_one.id)]
        .into_iter()
        .collect();
    let dev = |ext: &str, a: Value| Source {
        device: true,
        external_id: ext.into(),
        attributes: attrs(a),
    };
    let plan = plan_devices(
        &input(json!({})),
        &devices,
        &links,
        vec![
            dev(
                "d1",
                json!({"serial_number": "SN1", "hostname": "new-name", "owner": "ada@example.com"}),
            ),
            dev(
                "d2",
                json!({"serial_number": "SN2", "os_family": "macos", "owner": "bob"}),
            ),
            dev("d9", json!({"hostname": "kiosk"})),
        ],
    );
    let renamed: BTreeMap<String, (Value, Value)> = [(
        "hostname".to_string(),
        (json!("old-name"), json!("new-name")),
    )]
    .into_iter()
    .collect();
    assert_eq!(
        plan,
        vec![
            Change::UpdateDevice {
                external_id: "d1".into(),
                device_id: old.id,
                version: 5,
                fields: renamed,
                owner: Some("ada@example.com".into()),
            },
            Change::CreateDevice {
                external_id: "d2".into(),
                attributes: attrs(json!({"serial_number": "SN2", "os_family": "macos"})),
                owner: Some("bob".into()),
            },
            Change::LinkDevice {
                external_id: "d9".into(),
                device_id: linked_one.id,
                owner: None,
            },
        ]
    );
}

#[test]
fn a_plan_is_counted_by_kind() {
    let id = Uuid::now_v7();
    let plan = vec![
        Change::Create {
            external_id: "a".into(),
            attributes: BTreeMap::new(),
        },
        Change::Create {
            external_id: "b".into(),
            attributes: BTreeMap::new(),
        },
        Change::Suspend {
            external_id: "c".into(),
            user_id: id,
            version: 1,
        },
        Change::Link {
            external_id: String::new(),
            user_id: id,
        },
        Change::LinkDevice {
            external_id: "d".into(),
            device_id: id,
            owner: None,
        },
    ];
    let mut counts = Counts::default();
    count_plan(&mut counts, &plan);
    assert_eq!(
        counts,
        Counts {
            created: 2,
            suspended: 1,
            unchanged: 2,
            ..Counts::default()
        }
    );
}
