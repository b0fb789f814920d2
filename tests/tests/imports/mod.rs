//! Import runs, end to end: the `echo-importer` test plugin reads a people
//! feed from a loopback server the test controls (two pages), and the run
//! plans, brakes, applies and links through the directory.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::sync::{Arc, Mutex};

use cohort_tests::{Api, Fake, FakeReply, Server};
use serde_json::{Value, json};

/// A loopback feed: `/people` and `/people2` answer the current pages.
struct Feed {
    port: u16,
    pages: Arc<Mutex<(String, String)>>,
}

impl Feed {
    fn start() -> Feed {
        let pages = Arc::new(Mutex::new((String::new(), String::new())));
        let served = Arc::clone(&pages);
        let fake = Fake::start(move |_, r| {
            let (one, two) = served.lock().unwrap().clone();
            FakeReply::json_text(if r.line.contains("/people2") {
                two
            } else {
                one
            })
        });
        Feed {
            port: fake.port,
            pages,
        }
    }

    /// Serves `people` (id, email, department) over two pages.
    fn set(&self, people: &[(&str, &str, &str)]) {
        let person = |(id, email, dept): &(&str, &str, &str)| json!({"id": id, "email": email, "department": dept});
        let half = people.len() / 2;
        let one = json!({"people": people[..half].iter().map(person).collect::<Vec<_>>(),
                         "next": format!("http://127.0.0.1:{}/people2", self.port)});
        let two =
            json!({"people": people[half..].iter().map(person).collect::<Vec<_>>(), "next": null});
        *self.pages.lock().unwrap() = (one.to_string(), two.to_string());
    }
}

async fn user_by_email(api: &Api, email: &str) -> Value {
    api.get(&format!("/api/v1/users?email={email}"))
        .await
        .expect(200)
        .body["items"][0]
        .clone()
}

#[tokio::test]
async fn dry_run_real_run_rerun_removals_and_the_brake() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let feed = Feed::start();
    // The echo importer, installed allowed to reach the feed.
    let wasm = std::fs::read(cohort_tests::plugins_dir().join("echo-importer.wasm")).unwrap();
    use base64::Engine as _;
    let component = base64::engine::general_purpose::STANDARD.encode(&wasm);
    api.post(
        "/api/v1/plugins",
        json!({"component": component, "manifest": {
            "name": "hr-feed", "version": "1.0.0", "world": "directory-importer",
            "description": "echo importer, allowed to reach the test feed",
            "allowed_hosts": [format!("127.0.0.1:{}", feed.port)],
            "config": [{"name": "url", "kind": "url", "required": true}, {"name": "token", "kind": "secret"}]}}),
    )
    .await
    .expect(201);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "hr", "plugin": "hr-feed",
               "config": {"url": format!("http://127.0.0.1:{}/people", feed.port)}}),
    )
    .await
    .expect(201);
    // An existing user the feed will match by email.
    let ada = api.user("ada", json!({"department": "Sales"})).await;
    let eng = api
        .post(
            "/api/v1/groups",
            json!({"name": "Engineering", "subject": "user", "type": "dynamic",
                   "rule": {"conditions": [cohort_tests::eq("department", json!(["Engineering"]))]},
                   "member_states": ["staged", "active"]}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    feed.set(&[
        ("e1", "ada@example.com", "Engineering"),
        ("e2", "bo@example.com", "Engineering"),
        ("e3", "cy@example.com", "Sales"),
        ("e4", "di@example.com", "Ops"),
    ]);

    // Dry run: the whole diff, nothing written.
    let dry = api
        .run_import(json!({"instance": "hr", "dry_run": true}))
        .await;
    assert_eq!(dry["state"], "completed", "{dry}");
    assert_eq!(dry["counts"]["records"], 4);
    assert_eq!(dry["counts"]["created"], 3);
    assert_eq!(dry["counts"]["updated"], 1);
    let id = dry["id"].as_str().unwrap();
    let changes = api
        .get(&format!("/api/v1/import-runs/{id}/changes"))
        .await
        .expect(200)
        .body;
    assert_eq!(changes["total"], 4, "{changes}");
    let update = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "update")
        .unwrap();
    assert_eq!(update["user_id"], ada.as_str());
    assert_eq!(
        update["fields"]["department"],
        json!(["Sales", "Engineering"])
    );
    assert!(
        user_by_email(&api, "bo@example.com").await.is_null(),
        "a dry run writes nothing"
    );

    // The real run: new users staged, ada updated, groups follow, audited.
    let real = api
        .run_import(json!({"instance": "hr", "max_change_share": 1.0}))
        .await;
    assert_eq!(real["state"], "completed", "{real}");
    assert_eq!(real["counts"]["created"], 3, "{real}");
    assert_eq!(real["counts"]["updated"], 1, "{real}");
    let bo = user_by_email(&api, "bo@example.com").await;
    assert_eq!(bo["state"], "staged");
    assert_eq!(bo["username"], "bo@example.com");
    let members = cohort_tests::sorted(api.member_ids(&eng).await);
    assert_eq!(
        members,
        cohort_tests::sorted(vec![ada.clone(), bo["id"].as_str().unwrap().to_string()])
    );
    let audit = api
        .get(&format!(
            "/api/v1/audit?resource_type=user&resource_id={}",
            bo["id"].as_str().unwrap()
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"][0]["actor"], "import:hr", "{audit}");

    // The same feed again changes nothing.
    let again = api.run_import(json!({"instance": "hr"})).await;
    assert_eq!(again["counts"]["created"], 0, "{again}");
    assert_eq!(again["counts"]["updated"], 0, "{again}");
    assert_eq!(again["counts"]["unchanged"], 4, "{again}");

    // Removals: di leaves the feed; with `missing: suspend` she is
    // suspended (once activated), and only users this source imported
    // are candidates.
    let di = user_by_email(&api, "di@example.com").await;
    let di_id = di["id"].as_str().unwrap();
    api.post(
        &format!("/api/v1/users/{di_id}/state"),
        json!({"state": "active"}),
    )
    .await
    .expect(200);
    api.user("eve", json!({})).await;
    feed.set(&[
        ("e1", "ada@example.com", "Engineering"),
        ("e2", "bo@example.com", "Engineering"),
        ("e3", "cy@example.com", "Sales"),
    ]);
    let removal = api
        .run_import(json!({"instance": "hr", "missing": "suspend", "max_change_share": 0.5}))
        .await;
    assert_eq!(removal["state"], "completed", "{removal}");
    assert_eq!(removal["counts"]["suspended"], 1, "{removal}");
    assert_eq!(
        user_by_email(&api, "di@example.com").await["state"],
        "suspended"
    );
    assert_eq!(
        user_by_email(&api, "eve@example.com").await["state"],
        "active"
    );

    // The brake: a feed that would change most of the directory stops
    // before writing, shows its plan, and applies it once approved.
    feed.set(&[
        ("e1", "ada@example.com", "Legal"),
        ("e2", "bo@example.com", "Legal"),
        ("e3", "cy@example.com", "Legal"),
    ]);
    let braked = api.run_import(json!({"instance": "hr"})).await;
    assert_eq!(braked["state"], "awaiting_approval", "{braked}");
    assert_eq!(braked["brake"]["changes"], 3, "{braked}");
    assert_eq!(
        user_by_email(&api, "ada@example.com").await["department"],
        "Engineering"
    );
    let id = braked["id"].as_str().unwrap();
    let plan = api
        .get(&format!("/api/v1/import-runs/{id}/changes"))
        .await
        .expect(200)
        .body;
    assert_eq!(plan["total"], 3, "{plan}");
    let approved = api
        .post(&format!("/api/v1/import-runs/{id}/approve"), json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(approved["state"], "completed", "{approved}");
    assert_eq!(approved["counts"]["updated"], 3, "{approved}");
    assert_eq!(approved["approved_by"], "bootstrap-admin", "{approved}");
    assert_eq!(
        user_by_email(&api, "ada@example.com").await["department"],
        "Legal"
    );
    let r = api
        .post(&format!("/api/v1/import-runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(r.status, 409);

    let list = api.get("/api/v1/import-runs").await.expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    assert_eq!(list["items"][0]["id"], id, "newest first");
}

#[tokio::test]
async fn a_source_that_fails_fails_the_run_and_bad_input_is_refused() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    // Allowed to call a port where nothing listens.
    vendors::install_allowed(
        &api,
        "echo-importer",
        9,
        json!([{"name": "url", "kind": "url", "required": true},
               {"name": "token", "kind": "secret"}]),
    )
    .await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "down", "plugin": "echo-importer-test",
               "config": {"url": "http://127.0.0.1:9/people"}}),
    )
    .await
    .expect(201);
    let failed = api.run_import(json!({"instance": "down"})).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["failure"]
            .as_str()
            .unwrap()
            .contains("source failed"),
        "{failed}"
    );

    let r = api
        .post("/api/v1/import-runs", json!({"instance": "nope"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.field(), "instance");
    let r = api
        .post(
            "/api/v1/import-runs",
            json!({"instance": "down", "max_change_share": 2}),
        )
        .await;
    assert_eq!(r.field(), "max_change_share");
    let r = api
        .post(
            "/api/v1/import-runs",
            json!({"instance": "down", "missing": "delete"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
}

#[tokio::test]
async fn the_csv_importer_imports_a_pasted_file() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let csv = "Employee ID,E-mail,First Name,Last Name,Department\n\
               100,ann@example.com,Ann,Archer,Engineering\n\
               101,ben@example.com,Ben,\"Baker, Jr.\",Sales\n\
               102,not-an-email,Cid,Cole,Ops\n\
               103,dee@example.com,Dee\n";
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "people-csv", "plugin": "csv", "config": {"data": csv}}),
    )
    .await
    .expect(201);
    let r = api
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "bad-csv", "plugin": "csv", "config": {"data": "name,dept\nx,y\n"}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);

    let done = api
        .run_import(
            json!({"instance": "people-csv", "new_users": "active", "match_on": "employee_id"}),
        )
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["records"], 3, "{done}");
    assert_eq!(done["counts"]["created"], 2, "{done}");
    // The malformed row (too few fields) and the invalid email are
    // reported per record; the rest of the file still imports.
    assert_eq!(done["counts"]["errors"], 2, "{done}");
    let errors = done["errors"].to_string();
    assert!(errors.contains("line 5"), "{errors}");
    assert!(errors.contains("102"), "{errors}");
    let ben = user_by_email(&api, "ben@example.com").await;
    assert_eq!(ben["last_name"], "Baker, Jr.");
    assert_eq!(ben["employee_id"], "101");
    assert_eq!(ben["state"], "active");
}

/// A fake Okta Users API: two pages linked by `Link: rel="next"`, the
/// second answering 429 with `Retry-After: 1` the first time it is asked.
struct FakeOkta {
    fake: Fake,
    users: Arc<Mutex<Vec<Value>>>,
}

impl FakeOkta {
    fn start() -> FakeOkta {
        let users: Arc<Mutex<Vec<Value>>> = Arc::default();
        let u = Arc::clone(&users);
        let mut limited = false;
        let fake = Fake::start(move |port, r| {
            let all = u.lock().unwrap().clone();
            let half = all.len() / 2;
            if !r.line.contains("after=") {
                let next = format!(
                    "<http://127.0.0.1:{port}/api/v1/users?after=p2&limit=200>; rel=\"next\""
                );
                return FakeReply::json(&Value::Array(all[..half].to_vec())).header("link", &next);
            }
            if !limited {
                limited = true;
                return FakeReply::busy("429 Too Many Requests");
            }
            FakeReply::json(&Value::Array(all[half..].to_vec()))
        });
        FakeOkta { fake, users }
    }
}

mod upgrades;
mod vendors;
