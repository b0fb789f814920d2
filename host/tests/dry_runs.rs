//! An import's dry run tells what the real run will do (issue #25): for
//! random feeds with bad records, duplicates, look-alikes and misspelled
//! attributes, the dry run's counts and per-record errors equal the real
//! run's, record by record. The oracle is the real run itself, through the
//! API, on the same directory the dry run looked at.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use cohort_tests::Api;
use common::InProcess;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One row of the feed: employee id, email, first name, extra value.
type Row = (usize, usize, usize, usize);

const IDS: [&str; 5] = ["100", "101", "102", "103", "104"];
const EMAILS: [&str; 8] = [
    "ann@example.com",
    "bob@example.com",
    "ann@example.com",
    "not-an-email",
    "pre0@example.com",
    "pre1@EXAMPLE.com",
    "k\u{200B}ate@example.com",
    "kate@ex\u{0430}mple.com",
];
const NAMES: [&str; 3] = ["Ann", "Bob", ""];
/// An extra column: a standard attribute, a custom one that is defined, a
/// misspelled one that is not, or none.
const EXTRA: [Option<(&str, [&str; 2])>; 4] = [
    None,
    Some(("Department", ["Eng", "Sales"])),
    Some(("Badge", ["B-1", "B-2"])),
    Some(("Titel", ["Boss", "Chief"])),
];

fn csv(rows: &[Row], extra: usize) -> String {
    let mut text = String::from("Employee ID,E-mail,First Name");
    if let Some((column, _)) = EXTRA[extra] {
        text.push(',');
        text.push_str(column);
    }
    text.push('\n');
    for (id, email, name, value) in rows {
        text.push_str(&format!("{},{},{}", IDS[*id], EMAILS[*email], NAMES[*name]));
        if let Some((_, values)) = EXTRA[extra] {
            text.push(',');
            text.push_str(values[*value % 2]);
        }
        text.push('\n');
    }
    text
}

/// What a run did that its dry run must have foretold.
fn outcome(run: &Value) -> Value {
    json!({
        "state": run["state"],
        "counts": run["counts"],
        "errors": run["errors"],
    })
}

async fn dry_run_and_real_run(rows: Vec<Row>, extra: usize, match_on: &str, new_users: &str) {
    let server = InProcess::start_with_plugins(&[]);
    let api: Api = server.admin();
    // What the feed meets: two people already there, one of them linked to
    // nothing, and a custom attribute that exists.
    for (i, department) in ["Eng", "Sales"].iter().enumerate() {
        api.post(
            "/api/v1/users",
            json!({"username": format!("pre{i}"), "email": format!("pre{i}@example.com"),
                   "employee_id": IDS[i], "department": department, "state": "active"}),
        )
        .await
        .expect(201);
    }
    api.post(
        "/api/v1/attributes",
        json!({"name": "badge", "subject": "user", "type": "string"}),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "feed", "plugin": "csv", "config": {"data": csv(&rows, extra)}}),
    )
    .await
    .expect(201);
    let input = json!({"instance": "feed", "match_on": match_on, "new_users": new_users,
                       "max_change_share": 1.0});
    let mut dry_input = input.clone();
    dry_input["dry_run"] = json!(true);
    let dry = api.run_import(dry_input).await;
    let users_before = api.get("/api/v1/users?limit=500").await.expect(200).body["items"].clone();
    let mut real = api.run_import(input).await;
    if real["state"] == "awaiting_approval" {
        // The brake (several records updating one user can touch more
        // than the whole directory): what a dry run foretells is the run
        // once approved.
        real = api
            .post(
                &format!(
                    "/api/v1/import-runs/{}/approve",
                    real["id"].as_str().unwrap()
                ),
                json!({}),
            )
            .await
            .expect(200)
            .body;
    }
    assert_eq!(
        outcome(&dry),
        outcome(&real),
        "feed:\n{}\ndry: {dry}\nreal: {real}",
        csv(&rows, extra)
    );
    // The dry run changed nothing.
    assert_eq!(
        users_before.as_array().unwrap().len(),
        2,
        "the dry run wrote: {users_before}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_dry_run_foretells_the_real_run_record_by_record(
        rows in prop::collection::vec((0..IDS.len(), 0..EMAILS.len(), 0..NAMES.len(), 0..2usize), 1..8),
        extra in 0..EXTRA.len(),
        by_email in any::<bool>(),
        active in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(dry_run_and_real_run(
            rows,
            extra,
            if by_email { "email" } else { "employee_id" },
            if active { "active" } else { "staged" },
        ));
    }
}

/// The case the issue reported: a misspelled attribute. The dry run used to
/// plan two updates with no error, and the real run then failed both.
#[tokio::test]
async fn a_misspelled_attribute_fails_the_dry_run_as_it_fails_the_real_run() {
    let rows = vec![(0, 4, 0, 0), (1, 5, 1, 1)];
    dry_run_and_real_run(rows.clone(), 3, "employee_id", "active").await;
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    api.post(
        "/api/v1/users",
        json!({"username": "pre0", "email": "pre0@example.com", "employee_id": "100"}),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "feed", "plugin": "csv", "config": {"data": csv(&rows[..1], 3)}}),
    )
    .await
    .expect(201);
    let dry = api
        .run_import(json!({"instance": "feed", "match_on": "employee_id", "dry_run": true}))
        .await;
    assert_eq!(dry["counts"]["updated"], 0, "{dry}");
    assert_eq!(dry["counts"]["errors"], 1, "{dry}");
    assert_eq!(dry["errors"][0]["external_id"], "100", "{dry}");
    assert!(
        dry["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("titel"),
        "{dry}"
    );
}
