//! Resources, group bindings and effective access in both directions.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]
use crate::common;

use common::InProcess;

use serde_json::{Value, json};

fn via_names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["group_name"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn access_follows_bindings_and_memberships_both_ways() {
    let server = InProcess::start_with_plugins(&[]);
    let api = server.admin();
    let ada = api
        .user(
            "ada",
            json!({"department": "Engineering", "location": "Berlin"}),
        )
        .await;
    let bob = api
        .user("bob", json!({"department": "Sales", "location": "Berlin"}))
        .await;
    let mac = api.device("mac-1", "macos", json!({})).await;
    let eng = api
        .equals_group("Engineering", "user", "department", "Engineering")
        .await;
    let berlin = api
        .equals_group("Berlin", "user", "location", "Berlin")
        .await;
    let macs = api
        .equals_group("Macs", "device", "os_family", "macos")
        .await;

    let gitlab = api
        .post(
            "/api/v1/resources",
            json!({"type": "application", "name": "GitLab"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wifi = api
        .post(
            "/api/v1/resources",
            json!({"type": "radius", "name": "Office Wi-Fi"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (r, g) in [
        (&gitlab, &eng),
        (&gitlab, &berlin),
        (&wifi, &berlin),
        (&wifi, &macs),
    ] {
        api.post(
            &format!("/api/v1/resources/{r}/groups"),
            json!({"group_id": g}),
        )
        .await
        .expect(200);
    }
    api.post(
        &format!("/api/v1/groups/{eng}/groups"),
        json!({"group_id": macs}),
    )
    .await
    .expect(204);

    // What can ada reach, and through which groups?
    let a = api
        .get(&format!("/api/v1/users/{ada}/access"))
        .await
        .expect(200)
        .body;
    let res = a["resources"].as_array().unwrap();
    assert_eq!(res.len(), 2, "{a}");
    let gl = res
        .iter()
        .find(|r| r["resource"]["name"] == "GitLab")
        .unwrap();
    assert_eq!(via_names(&gl["via"]), ["Berlin", "Engineering"]);
    assert_eq!(a["groups"][0]["group"]["group_name"], "Macs", "{a}");
    assert_eq!(via_names(&a["groups"][0]["via"]), ["Engineering"]);

    // The Mac reaches the Wi-Fi through Macs, and Engineering may use it.
    let d = api
        .get(&format!("/api/v1/devices/{mac}/access"))
        .await
        .expect(200)
        .body;
    assert_eq!(d["resources"][0]["resource"]["name"], "Office Wi-Fi", "{d}");
    assert_eq!(via_names(&d["groups"][0]["via"]), ["Macs"]);
    assert_eq!(d["groups"][0]["group"]["group_name"], "Engineering");

    // Who reaches the Wi-Fi, and why? Paged across the bound groups.
    let mut grantees = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(&format!("/api/v1/resources/{wifi}/access?limit=1{cursor}"))
            .await
            .expect(200)
            .body;
        grantees.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut ids: Vec<&str> = grantees
        .iter()
        .map(|g| g["subject_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![ada.as_str(), bob.as_str(), mac.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "{grantees:?}");
    let m = grantees
        .iter()
        .find(|g| g["subject_id"] == mac.as_str())
        .unwrap();
    assert_eq!(m["subject"], "device");

    // Access moves with membership: bob leaves Berlin, loses both resources.
    api.patch(
        &format!("/api/v1/users/{bob}"),
        json!({"location": "Denver"}),
    )
    .await
    .expect(200);
    let b = api
        .get(&format!("/api/v1/users/{bob}/access"))
        .await
        .expect(200)
        .body;
    assert_eq!(b["resources"], json!([]), "{b}");

    // Unbinding and deleting a group drop the paths; names are unique per type.
    api.delete(&format!("/api/v1/resources/{gitlab}/groups/{berlin}"))
        .await
        .expect(204);
    let a = api
        .get(&format!("/api/v1/users/{ada}/access"))
        .await
        .expect(200)
        .body;
    let gl = a["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"]["name"] == "GitLab")
        .unwrap()
        .clone();
    assert_eq!(via_names(&gl["via"]), ["Engineering"]);
    assert_eq!(
        api.post(
            "/api/v1/resources",
            json!({"type": "application", "name": "gitlab"})
        )
        .await
        .expect(409)
        .code(),
        "resource_name_taken"
    );
    assert_eq!(
        api.post(
            "/api/v1/resources",
            json!({"type": "Bad Type", "name": "x"})
        )
        .await
        .expect(422)
        .field(),
        "type"
    );
    assert_eq!(
        api.post(
            &format!("/api/v1/groups/{eng}/groups"),
            json!({"group_id": berlin})
        )
        .await
        .expect(422)
        .field(),
        "group_id"
    );
    api.delete(&format!("/api/v1/groups/{macs}/groups/{eng}"))
        .await
        .expect(204);
    let d = api
        .get(&format!("/api/v1/devices/{mac}/access"))
        .await
        .expect(200)
        .body;
    assert_eq!(d["groups"], json!([]), "{d}");
    let events = api
        .get(&format!(
            "/api/v1/audit?resource_type=resource&resource_id={wifi}"
        ))
        .await
        .expect(200)
        .body;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "resource.bind")
    );
}
