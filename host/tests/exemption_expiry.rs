//! An exemption lapses at its `expires_at` by the server's clock, with no
//! other write: the scheduler's step re-decides its subject, and the change
//! is audited like any membership change.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use crate::common;

use cohort::clock::Clock;
use cohort_tests::Api;
use common::InProcess;
use serde_json::{Value, json};

async fn group_events(api: &Api, group: &str) -> Vec<Value> {
    api.get(&format!(
        "/api/v1/audit?resource_type=group&resource_id={group}&limit=500"
    ))
    .await
    .expect(200)
    .body["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn exemptions_lapse_when_the_clock_passes_their_expiry() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api.user("ada", json!({"department": "Engineering"})).await;
    let bob = api.user("bob", json!({"department": "Sales"})).await;
    let eng = api
        .equals_group("Engineering", "user", "department", "Engineering")
        .await;
    assert_eq!(api.member_ids(&eng).await, vec![ada.clone()]);

    // ada kept out for an hour, bob kept in for two.
    let now = server.clock.now();
    let in_an_hour = now + chrono::Duration::hours(1);
    let in_two_hours = now + chrono::Duration::hours(2);
    for (subject, kind, until) in [(&ada, "never", in_an_hour), (&bob, "always", in_two_hours)] {
        api.post(
            &format!("/api/v1/groups/{eng}/exemptions"),
            json!({"subject_id": subject, "kind": kind, "expires_at": until}),
        )
        .await
        .expect(200);
    }
    assert_eq!(api.member_ids(&eng).await, vec![bob.clone()]);
    assert_eq!(server.state.groups.next_lapse(), Some(in_an_hour));
    let events_before = group_events(&api, &eng).await.len();

    // Before the expiry the scheduler's step changes nothing.
    server.advance(chrono::Duration::minutes(59));
    assert_eq!(
        server.state.groups.apply_lapsed_exemptions().await.unwrap(),
        0
    );
    assert_eq!(api.member_ids(&eng).await, vec![bob.clone()]);
    assert_eq!(group_events(&api, &eng).await.len(), events_before);

    // Past ada's expiry: the rule has its say again, for her only.
    server.advance(chrono::Duration::minutes(2));
    assert_eq!(
        server.state.groups.apply_lapsed_exemptions().await.unwrap(),
        1
    );
    assert_eq!(
        cohort_tests::sorted(api.member_ids(&eng).await),
        cohort_tests::sorted(vec![ada.clone(), bob.clone()])
    );
    assert_eq!(server.state.groups.next_lapse(), Some(in_two_hours));
    let events = group_events(&api, &eng).await;
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "group.member_add" && e["changes"]["subject_id"]["after"] == ada)
        .collect();
    assert_eq!(
        added.len(),
        2,
        "added at creation and at the lapse: {events:?}"
    );
    assert_eq!(added[0]["actor"], "system", "{:?}", added[0]);
    assert_eq!(added[0]["request_id"], "exemption-expiry", "{:?}", added[0]);

    // A second look at the same time finds nothing more to do.
    assert_eq!(
        server.state.groups.apply_lapsed_exemptions().await.unwrap(),
        0
    );

    // Past bob's: out, since the rule never matched him.
    server.advance(chrono::Duration::hours(1));
    assert_eq!(
        server.state.groups.apply_lapsed_exemptions().await.unwrap(),
        1
    );
    assert_eq!(api.member_ids(&eng).await, vec![ada.clone()]);
    assert_eq!(server.state.groups.next_lapse(), None);
    let removed = group_events(&api, &eng)
        .await
        .into_iter()
        .filter(|e| {
            e["action"] == "group.member_remove" && e["changes"]["subject_id"]["after"] == bob
        })
        .count();
    assert_eq!(removed, 1);

    // The lapsed exemptions are still on record, as before.
    let listed = api
        .get(&format!("/api/v1/groups/{eng}/exemptions"))
        .await
        .expect(200)
        .body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
}
