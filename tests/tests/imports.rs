//! Import runs, end to end: the `echo-importer` test plugin reads a people
//! feed from a loopback server the test controls (two pages), and the run
//! plans, brakes, applies and links through the directory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "down", "plugin": "echo-importer",
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

fn okta(id: &str, status: &str, email: Option<&str>, department: &str) -> Value {
    let mut profile = json!({"login": email.unwrap_or(id), "firstName": "F", "lastName": id, "department": department});
    if let Some(e) = email {
        profile["email"] = json!(e);
    }
    json!({"id": id, "status": status, "created": "2026-01-01T00:00:00.000Z", "profile": profile})
}

#[tokio::test]
async fn okta_users_pages_waits_out_a_429_and_follows_removals() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let fake = FakeOkta::start();
    *fake.users.lock().unwrap() = vec![
        okta("00u1", "ACTIVE", Some("una@example.com"), "Engineering"),
        okta("00u2", "ACTIVE", Some("vic@example.com"), "Sales"),
        okta("00u3", "ACTIVE", None, "Ops"),
        okta("00u4", "DEPROVISIONED", Some("gone@example.com"), "Ops"),
        okta("00u5", "ACTIVE", Some("wes@example.com"), "Ops"),
        okta("00u6", "STAGED", Some("xan@example.com"), "Ops"),
    ];
    install_allowed(
        &api,
        "okta-users",
        fake.fake.port,
        json!([
            {"name": "domain", "kind": "text", "required": true},
            {"name": "token", "kind": "secret", "required": true},
            {"name": "search", "kind": "text"},
            {"name": "base_url", "kind": "url"}]),
    )
    .await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "okta", "plugin": "okta-users-test",
               "config": {"domain": "example.okta.com", "token": "00a-secret-token",
                          "base_url": format!("http://127.0.0.1:{}", fake.fake.port)}}),
    )
    .await
    .expect(201);

    let dry = api
        .run_import(json!({"instance": "okta", "dry_run": true}))
        .await;
    assert_eq!(dry["state"], "completed", "{dry}");
    // Four readable users (the deprovisioned one is left out), one
    // without an email reported; the 429 was waited out.
    assert_eq!(dry["counts"]["records"], 4, "{dry}");
    assert_eq!(dry["counts"]["errors"], 1, "{dry}");
    assert_eq!(dry["errors"][0]["external_id"], "00u3", "{dry}");
    assert!(
        dry["duration_ms"].as_u64().unwrap() >= 1000,
        "waited for Retry-After: {dry}"
    );
    assert!(
        fake.fake
            .requests()
            .iter()
            .all(|r| r.header("authorization") == Some("SSWS 00a-secret-token"))
    );

    let real = api
        .run_import(json!({"instance": "okta", "new_users": "active", "max_change_share": 1.0}))
        .await;
    assert_eq!(real["counts"]["created"], 4, "{real}");
    assert_eq!(
        user_by_email(&api, "una@example.com").await["department"],
        "Engineering"
    );

    let again = api.run_import(json!({"instance": "okta"})).await;
    assert_eq!(again["counts"]["created"], 0, "{again}");
    assert_eq!(again["counts"]["updated"], 0, "{again}");

    // Vic is deprovisioned in Okta: with missing = suspend, suspended here.
    fake.users.lock().unwrap()[1] = okta("00u2", "DEPROVISIONED", Some("vic@example.com"), "Sales");
    let removal = api
        .run_import(json!({"instance": "okta", "missing": "suspend", "max_change_share": 1.0}))
        .await;
    assert_eq!(removal["counts"]["suspended"], 1, "{removal}");
    assert_eq!(
        user_by_email(&api, "vic@example.com").await["state"],
        "suspended"
    );
}

#[tokio::test]
async fn schedules_start_runs_when_due() {
    // A short scheduler tick, so the test waits for the run, not the tick.
    let server = Server::start_with_plugins(&[("COHORT_SCHEDULE_TICK_MS", "100")]);
    let api = server.admin();
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "nightly-csv", "plugin": "csv",
               "config": {"data": "email,department\nsam@example.com,Ops\ntia@example.com,Ops\n"}}),
    )
    .await
    .expect(201);
    let r = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "Nightly", "every_hours": 0, "input": {"instance": "nightly-csv"}}),
        )
        .await;
    assert_eq!(r.field(), "every_hours", "{}", r.body);
    let r = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "Nightly", "every_hours": 24, "input": {"instance": "nightly-csv", "dry_run": true}}),
        )
        .await;
    assert_eq!(r.field(), "input.dry_run", "{}", r.body);
    let schedule = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "Nightly", "every_hours": 24, "input": {"instance": "nightly-csv", "new_users": "active"}}),
        )
        .await
        .expect(201)
        .body;
    let r = api
        .post(
            "/api/v1/import-schedules",
            json!({"name": "nightly", "every_hours": 24, "input": {"instance": "nightly-csv"}}),
        )
        .await;
    assert_eq!(r.status, 409);

    // Due now: the scheduler (every 100 ms here) starts it.
    let mut run = Value::Null;
    for _ in 0..100 {
        let runs = api.get("/api/v1/import-runs").await.expect(200).body;
        if let Some(r) = runs["items"].as_array().unwrap().first()
            && r["state"] == "completed"
        {
            run = r.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run["started_by"], "schedule:Nightly", "{run}");
    assert_eq!(run["counts"]["created"], 2, "{run}");
    assert_eq!(
        user_by_email(&api, "sam@example.com").await["state"],
        "active"
    );
    let listed = api.get("/api/v1/import-schedules").await.expect(200).body;
    let s = &listed["items"][0];
    assert_eq!(s["last_run_id"], run["id"], "{listed}");
    assert!(
        s["next_run_at"].as_str().unwrap() > schedule["next_run_at"].as_str().unwrap(),
        "{listed}"
    );

    let id = schedule["id"].as_str().unwrap();
    api.delete(&format!("/api/v1/import-schedules/{id}"))
        .await
        .expect(204);
    assert_eq!(
        api.get("/api/v1/import-schedules").await.expect(200).body["items"],
        json!([])
    );
}

/// A fake Personio: `POST /v1/auth` gives a token, `GET
/// /v1/company/employees?offset&limit` pages of at most 100 employees in
/// Personio's `{"label", "value"}` shape, the second page answering 429
/// with `Retry-After: 1` once.
fn fake_personio(employees: Arc<Mutex<Vec<Value>>>) -> Fake {
    let mut limited = false;
    Fake::start(move |_, r| {
        if r.line.starts_with("POST /v1/auth") {
            let creds: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if creds["client_secret"] != "personio-secret" {
                return FakeReply::status("401 Unauthorized");
            }
            return FakeReply::json(&json!({"success": true, "data": {"token": "tok-1"}}));
        }
        let offset: usize = r
            .line
            .split("offset=")
            .nth(1)
            .and_then(|rest| rest.split(['&', ' ']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if offset == 100 && !limited {
            limited = true;
            return FakeReply::busy("429 Too Many Requests");
        }
        let employees = employees.lock().unwrap().clone();
        let end = (offset + 100).min(employees.len());
        let pages = employees.len().div_ceil(100);
        FakeReply::json(
            &json!({"success": true, "data": employees[offset.min(end)..end],
               "metadata": {"total_elements": employees.len(), "current_page": offset / 100, "total_pages": pages},
               "offset": offset, "limit": 100}),
        )
    })
}

fn personio_employee(id: usize, email: Option<String>, status: &str) -> Value {
    let mut attrs = json!({
        "id": {"label": "ID", "value": id, "type": "integer", "universal_id": "id"},
        "first_name": {"label": "First name", "value": "Emp", "type": "standard", "universal_id": "first_name"},
        "last_name": {"label": "Last name", "value": format!("No {id}"), "type": "standard", "universal_id": "last_name"},
        "status": {"label": "Status", "value": status, "type": "status", "universal_id": "status"},
        "department": {"label": "Department", "value": {"type": "Department", "attributes": {"id": 7, "name": "IT"}}, "type": "standard", "universal_id": "department"},
    });
    if let Some(e) = email {
        attrs["email"] =
            json!({"label": "Email", "value": e, "type": "standard", "universal_id": "email"});
    }
    json!({"type": "Employee", "attributes": attrs})
}

#[tokio::test]
async fn personio_dry_run_real_run_rerun_removals_and_the_brake_over_pages_with_a_429_and_a_malformed_employee()
 {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let mut employees: Vec<Value> = (0..250)
        .map(|i| personio_employee(i, Some(format!("emp{i}@example.com")), "active"))
        .collect();
    employees[5] = personio_employee(5, None, "active");
    employees[150] = personio_employee(150, Some("left@example.com".into()), "inactive");
    let employees = Arc::new(Mutex::new(employees));
    let fake = fake_personio(Arc::clone(&employees));
    let port = fake.port;
    install_allowed(
        &api,
        "personio",
        port,
        json!([
            {"name": "client_id", "kind": "text", "required": true},
            {"name": "client_secret", "kind": "secret", "required": true},
            {"name": "base_url", "kind": "url"}]),
    )
    .await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "personio", "plugin": "personio-test",
               "config": {"client_id": "cid", "client_secret": "personio-secret",
                          "base_url": format!("http://127.0.0.1:{port}")}}),
    )
    .await
    .expect(201);

    // A dry run first: the plan, nothing written.
    let dry = api
        .run_import(json!({"instance": "personio", "match_on": "employee_id", "dry_run": true}))
        .await;
    assert_eq!(dry["counts"]["created"], 248, "{dry}");
    assert!(user_by_email(&api, "emp42@example.com").await.is_null());
    let done = api
        .run_import(
            json!({"instance": "personio", "new_users": "active", "match_on": "employee_id"}),
        )
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["records"], 248, "{done}");
    assert_eq!(done["counts"]["created"], 248, "{done}");
    assert_eq!(done["counts"]["errors"], 1, "{done}");
    assert_eq!(done["errors"][0]["external_id"], "5", "{done}");
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.line.starts_with("GET"))
            .all(|r| r.header("authorization") == Some("Bearer tok-1")),
        "{requests:?}"
    );
    let emp = user_by_email(&api, "emp42@example.com").await;
    assert_eq!(emp["department"], "IT");
    assert_eq!(emp["employee_id"], "42");
    let again = api
        .run_import(json!({"instance": "personio", "match_on": "employee_id"}))
        .await;
    assert_eq!(again["counts"]["unchanged"], 248, "{again}");

    // Two leave (Personio marks them inactive): suspended with
    // missing = suspend.
    {
        let mut e = employees.lock().unwrap();
        e[10] = personio_employee(10, Some("emp10@example.com".into()), "inactive");
        e[11] = personio_employee(11, Some("emp11@example.com".into()), "inactive");
    }
    let removal = api
        .run_import(
            json!({"instance": "personio", "match_on": "employee_id", "missing": "suspend"}),
        )
        .await;
    assert_eq!(removal["counts"]["suspended"], 2, "{removal}");
    assert_eq!(
        user_by_email(&api, "emp10@example.com").await["state"],
        "suspended"
    );

    // A reorganisation that moves everyone is stopped by the brake.
    for emp in employees.lock().unwrap().iter_mut() {
        emp["attributes"]["department"]["value"]["attributes"]["name"] = json!("Platform");
    }
    let braked = api
        .run_import(json!({"instance": "personio", "match_on": "employee_id"}))
        .await;
    assert_eq!(braked["state"], "awaiting_approval", "{braked}");
    assert_eq!(
        user_by_email(&api, "emp42@example.com").await["department"],
        "IT"
    );
}

#[tokio::test]
async fn bamboohr_reads_the_directory_with_the_api_key_and_waits_out_a_503() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let directory = json!({"fields": [{"id": "displayName", "type": "text", "name": "Display name"}],
        "employees": [
            {"id": "123", "displayName": "John Doe", "firstName": "John", "lastName": "Doe", "preferredName": null,
             "jobTitle": "Customer Service Representative", "workPhone": "555-555-5555", "mobilePhone": null,
             "workEmail": "jdoe@example.com", "department": "Customer Service", "location": "Lindon, Utah",
             "division": null, "photoUploaded": false, "canUploadPhoto": 1},
            {"id": "124", "displayName": "Jane Roe", "firstName": "Jane", "lastName": "Roe",
             "workEmail": "jroe@example.com", "department": "Engineering", "location": "Remote"},
            {"id": "125", "displayName": "No Mail", "firstName": "No", "lastName": "Mail", "workEmail": null}]})
    .to_string();
    let fake = busy_once(directory, "503 Service Unavailable");
    let port = fake.port;
    install_allowed(
        &api,
        "bamboohr",
        port,
        json!([
            {"name": "company", "kind": "text", "required": true},
            {"name": "api_key", "kind": "secret", "required": true},
            {"name": "base_url", "kind": "url"}]),
    )
    .await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "bamboo", "plugin": "bamboohr-test",
               "config": {"company": "acme", "api_key": "bamboo-key",
                          "base_url": format!("http://127.0.0.1:{port}")}}),
    )
    .await
    .expect(201);
    let done = api
        .run_import(json!({"instance": "bamboo", "match_on": "employee_id"}))
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["created"], 2, "{done}");
    assert_eq!(done["errors"][0]["external_id"], "125", "{done}");
    let jane = user_by_email(&api, "jroe@example.com").await;
    assert_eq!(jane["state"], "staged");
    assert_eq!(jane["employee_id"], "124");
    let heads: Vec<String> = fake.requests().iter().map(|r| r.text()).collect();
    let last = heads.last().unwrap().to_ascii_lowercase();
    assert!(
        last.starts_with("get /api/gateway.php/acme/v1/employees/directory "),
        "{last}"
    );
    // "bamboo-key:x", base64.
    assert!(
        last.contains("authorization: basic ymftym9vlwtletp4"),
        "{last}"
    );
}

/// A fake that answers `status` (with `Retry-After: 1`) to the first
/// request and `body` as JSON to every later one.
fn busy_once(body: String, status: &'static str) -> Fake {
    let mut busy = false;
    Fake::start(move |_, _| {
        if busy {
            return FakeReply::json_text(body.clone());
        }
        busy = true;
        FakeReply::busy(status)
    })
}

/// Installs `plugin` from `target/test-plugins` as `<plugin>-test`, allowed
/// to reach `127.0.0.1:port`, with `config` fields.
async fn install_allowed(api: &Api, plugin: &str, port: u16, config: Value) {
    use base64::Engine as _;
    let wasm = std::fs::read(cohort_tests::plugins_dir().join(format!("{plugin}.wasm"))).unwrap();
    api.post(
        "/api/v1/plugins",
        json!({"component": base64::engine::general_purpose::STANDARD.encode(&wasm), "manifest": {
            "name": format!("{plugin}-test"), "version": "1.0.0", "world": "directory-importer",
            "description": format!("{plugin}, allowed to reach the fake"),
            "allowed_hosts": [format!("127.0.0.1:{port}")],
            "config": config}}),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn workday_reads_a_raas_report_with_the_integration_user_and_waits_out_a_429() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let report = json!({"Report_Entry": [
        {"Employee_ID": "21001", "Email_Address": "logan@example.com", "First_Name": "Logan",
         "Last_Name": "McNeil", "Business_Title": "Chief Executive Officer",
         "Department": "Executive Management", "Location": "San Francisco", "Worker_Type": "Regular"},
        {"Employee_ID": "21002", "Email_Address": "oliver@example.com", "First_Name": "Oliver",
         "Last_Name": "Reynolds", "Business_Title": "VP, Human Resources", "Department": "Human Resources",
         "Location": ["Chicago", "Remote"]},
        {"Employee_ID": "21003", "First_Name": "No", "Last_Name": "Email"},
        {"Employee_ID": "21004", "Email_Address": "gone@example.com", "Active_Status": "0"}]})
    .to_string();
    let fake = busy_once(report, "429 Too Many Requests");
    let port = fake.port;
    install_allowed(
        &api,
        "workday",
        port,
        json!([
            {"name": "report_url", "kind": "url", "required": true},
            {"name": "username", "kind": "text", "required": true},
            {"name": "password", "kind": "secret", "required": true},
            {"name": "mappings", "kind": "text-list"},
            {"name": "id_field", "kind": "text"}]),
    )
    .await;
    let url = format!(
        "http://127.0.0.1:{port}/ccx/service/customreport2/acme/ISU/Cohort_Workers?format=json"
    );
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "workday", "plugin": "workday-test",
               "config": {"report_url": url, "username": "ISU_Cohort@acme", "password": "wd-pass"}}),
    )
    .await
    .expect(201);
    let done = api
        .run_import(
            json!({"instance": "workday", "match_on": "employee_id", "new_users": "active"}),
        )
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["created"], 2, "{done}");
    assert_eq!(done["errors"][0]["external_id"], "21003", "{done}");
    let oliver = user_by_email(&api, "oliver@example.com").await;
    assert_eq!(oliver["location"], "Chicago");
    assert_eq!(oliver["job_title"], "VP, Human Resources");
    let heads: Vec<String> = fake.requests().iter().map(|r| r.text()).collect();
    assert_eq!(heads.len(), 2, "one 429, then the report");
    assert!(
        heads[1]
            .to_ascii_lowercase()
            .contains("authorization: basic "),
        "{heads:?}"
    );
}

#[tokio::test]
async fn microsoft_graph_gets_a_token_follows_next_links_and_waits_out_a_429() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let mut limited = false;
    let fake = Fake::start(move |port, r| {
        let user = |id: &str, mail: Option<&str>, enabled: bool| {
            json!({"id": id, "accountEnabled": enabled, "userPrincipalName": format!("{id}@contoso.com"),
                   "mail": mail, "givenName": "G", "surname": id, "department": "Retail",
                   "officeLocation": "18/2111"})
        };
        let reply = if r.line.starts_with("POST /contoso-tenant/oauth2/v2.0/token") {
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "graph-token"})
        } else if r.line.starts_with("GET /v1.0/devices") {
            json!({"value": [
                {"id": "d-1", "displayName": "ADELE-LAPTOP", "operatingSystem": "Windows",
                 "operatingSystemVersion": "10.0.22631.3296", "isManaged": true, "accountEnabled": true,
                 "registeredOwners": [{"@odata.type": "#microsoft.graph.user", "id": "adele",
                                       "userPrincipalName": "adele@contoso.com", "mail": "adele@contoso.com"}]},
                {"id": "d-2", "displayName": "Hololens", "operatingSystem": "Holographic", "accountEnabled": true},
                {"id": "d-3", "displayName": "OLD-PC", "operatingSystem": "Windows", "accountEnabled": false}]})
        } else if r.line.contains("skiptoken") {
            if !limited {
                limited = true;
                return FakeReply::busy("429 Too Many Requests");
            }
            json!({"value": [user("carla", Some("carla@contoso.com"), true), user("dan", None, true)]})
        } else {
            json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
                   "@odata.nextLink": format!("http://127.0.0.1:{port}/v1.0/users?$skiptoken=X2"),
                   "value": [user("adele", Some("adele@contoso.com"), true), user("bert", Some("bert@contoso.com"), false)]})
        };
        FakeReply::json(&reply)
    });
    let port = fake.port;
    install_allowed(
        &api,
        "microsoft-graph",
        port,
        json!([
            {"name": "tenant", "kind": "text", "required": true},
            {"name": "client_id", "kind": "text", "required": true},
            {"name": "client_secret", "kind": "secret", "required": true},
            {"name": "filter", "kind": "text"},
            {"name": "devices", "kind": "boolean"},
            {"name": "login_url", "kind": "url"},
            {"name": "graph_url", "kind": "url"}]),
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "graph", "plugin": "microsoft-graph-test",
               "config": {"tenant": "contoso-tenant", "client_id": "app-id", "client_secret": "s3cret&more",
                          "devices": true, "login_url": base, "graph_url": base}}),
    )
    .await
    .expect(201);
    let done = api
        .run_import(json!({"instance": "graph", "new_users": "active"}))
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["created"], 2, "{done}");
    assert_eq!(done["counts"]["devices_created"], 1, "{done}");
    let errors = done["errors"].to_string();
    assert!(
        errors.contains("\"dan\"") && errors.contains("Holographic"),
        "{errors}"
    );
    // The device, bound to its owner.
    let adele = user_by_email(&api, "adele@contoso.com").await;
    let devices = api
        .get(&format!(
            "/api/v1/users/{}/devices",
            adele["id"].as_str().unwrap()
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(devices["items"].as_array().unwrap().len(), 1, "{devices}");
    let device_id = devices["items"][0]["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    let device = api
        .get(&format!("/api/v1/devices/{device_id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(device["os_family"], "windows", "{device}");
    assert_eq!(device["hostname"], "ADELE-LAPTOP");
    assert_eq!(device["mdm_enrolled"], true);
    // Again: nothing changes, devices included.
    let again = api.run_import(json!({"instance": "graph"})).await;
    assert_eq!(again["counts"]["devices_created"], 0, "{again}");
    assert_eq!(again["counts"]["devices_updated"], 0, "{again}");
    let carla = user_by_email(&api, "carla@contoso.com").await;
    assert_eq!(carla["username"], "carla@contoso.com");
    assert_eq!(carla["location"], "18/2111");
    let log: Vec<String> = fake.requests().iter().map(|r| r.text()).collect();
    let token = log.iter().find(|l| l.starts_with("POST")).unwrap();
    assert!(token.contains("grant_type=client_credentials"), "{token}");
    assert!(token.contains("client_secret=s3cret%26more"), "{token}");
    assert!(
        token.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"),
        "{token}"
    );
    assert!(
        log.iter()
            .filter(|l| l.starts_with("GET"))
            .all(|l| l.contains("Bearer graph-token")),
        "{log:?}"
    );
}

#[tokio::test]
async fn hibob_searches_people_as_a_service_user() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let people = json!({"employees": [
        {"id": "3332883884017713238", "email": "mike@example.com", "firstName": "Mike", "surname": "Ross",
         "displayName": "Mike Ross", "work": {"title": "Associate", "department": "Legal", "site": "New York",
         "employeeIdInCompany": 1021}},
        {"id": "3332883884017713239", "email": "rachel@example.com", "firstName": "Rachel", "surname": "Zane",
         "work": {"title": "Paralegal", "department": "Legal", "site": "New York"}},
        {"id": "3332883884017713240", "firstName": "No", "surname": "Email", "work": {}}]})
    .to_string();
    let fake = busy_once(people, "429 Too Many Requests");
    let port = fake.port;
    install_allowed(
        &api,
        "hibob",
        port,
        json!([
            {"name": "service_user_id", "kind": "text", "required": true},
            {"name": "token", "kind": "secret", "required": true},
            {"name": "base_url", "kind": "url"}]),
    )
    .await;
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "bob", "plugin": "hibob-test",
               "config": {"service_user_id": "SERVICE-1", "token": "bob-token",
                          "base_url": format!("http://127.0.0.1:{port}")}}),
    )
    .await
    .expect(201);
    let done = api.run_import(json!({"instance": "bob"})).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["created"], 2, "{done}");
    assert_eq!(
        done["errors"][0]["external_id"], "3332883884017713240",
        "{done}"
    );
    let mike = user_by_email(&api, "mike@example.com").await;
    assert_eq!(mike["employee_id"], "1021");
    assert_eq!(mike["location"], "New York");
    let heads: Vec<String> = fake.requests().iter().map(|r| r.text()).collect();
    let last = heads.last().unwrap();
    assert!(
        last.to_ascii_lowercase()
            .starts_with("post /v1/people/search "),
        "{last}"
    );
    assert!(last.contains("\"showInactive\":false"), "{last}");
    assert!(last.contains("work.department"), "{last}");
}

#[tokio::test]
async fn google_workspace_signs_a_service_account_assertion_and_reads_users_and_chromebooks() {
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    let mut limited = false;
    let fake = Fake::start(move |_, r| {
        let user = |id: &str, email: Option<&str>, suspended: bool| {
            json!({"kind": "admin#directory#user", "id": id, "primaryEmail": email,
                   "name": {"givenName": "G", "familyName": id, "fullName": format!("G {id}")},
                   "suspended": suspended,
                   "organizations": [{"title": "Writer", "department": "Writing", "primary": true}]})
        };
        let reply = if r.line.starts_with("POST /token") {
            json!({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"})
        } else if r.line.contains("/devices/chromeos") {
            json!({"kind": "admin#directory#chromeosdevices", "chromeosdevices": [
                {"kind": "admin#directory#chromeosdevice", "deviceId": "cb-1", "serialNumber": "5CD1234",
                 "status": "ACTIVE", "osVersion": "119.0.6045.158", "model": "HP Chromebook 14",
                 "annotatedUser": "liz@example.com"},
                {"deviceId": "cb-2", "serialNumber": "5CD9999", "status": "DEPROVISIONED"}]})
        } else if r.line.contains("pageToken=") {
            if !limited {
                limited = true;
                return FakeReply::busy("429 Too Many Requests");
            }
            json!({"kind": "admin#directory#users", "users": [user("3", Some("jack@example.com"), false), user("4", None, false)]})
        } else {
            json!({"kind": "admin#directory#users", "nextPageToken": "pg2",
                   "users": [user("1", Some("liz@example.com"), false), user("2", Some("gone@example.com"), true)]})
        };
        FakeReply::json(&reply)
    });
    let port = fake.port;
    install_allowed(
        &api,
        "google-workspace",
        port,
        json!([
            {"name": "service_account_key", "kind": "secret", "required": true},
            {"name": "admin_email", "kind": "text", "required": true},
            {"name": "customer", "kind": "text"},
            {"name": "devices", "kind": "boolean"},
            {"name": "token_url", "kind": "url"},
            {"name": "api_url", "kind": "url"}]),
    )
    .await;
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/google-workspace/testdata/test-key.pem"),
    )
    .unwrap();
    let key = json!({"type": "service_account", "project_id": "cohort-test",
                     "client_email": "cohort@cohort-test.iam.gserviceaccount.com", "private_key": pem,
                     "token_uri": "https://oauth2.googleapis.com/token"})
    .to_string();
    let r = api
        .post(
            "/api/v1/plugin-instances",
            json!({"name": "gw-bad", "plugin": "google-workspace-test",
                   "config": {"service_account_key": "{}", "admin_email": "admin@example.com"}}),
        )
        .await;
    assert_eq!(r.status, 422, "a key that is not a key: {}", r.body);
    api.post(
        "/api/v1/plugin-instances",
        json!({"name": "gw", "plugin": "google-workspace-test",
               "config": {"service_account_key": key, "admin_email": "admin@example.com", "devices": true,
                          "token_url": format!("http://127.0.0.1:{port}/token"),
                          "api_url": format!("http://127.0.0.1:{port}")}}),
    )
    .await
    .expect(201);
    let done = api
        .run_import(json!({"instance": "gw", "new_users": "active"}))
        .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["counts"]["created"], 2, "{done}");
    assert_eq!(done["counts"]["devices_created"], 1, "{done}");
    assert_eq!(done["errors"][0]["external_id"], "4", "{done}");
    let liz = user_by_email(&api, "liz@example.com").await;
    assert_eq!(liz["job_title"], "Writer");
    let devices = api
        .get(&format!(
            "/api/v1/users/{}/devices",
            liz["id"].as_str().unwrap()
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(devices["items"].as_array().unwrap().len(), 1, "{devices}");
    // The token request is a JWT bearer grant whose claims name the admin.
    let log: Vec<String> = fake.requests().iter().map(|r| r.text()).collect();
    let token = log.iter().find(|l| l.starts_with("POST /token")).unwrap();
    assert!(
        token.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
        "{token}"
    );
    let assertion = token.split("assertion=").nth(1).unwrap();
    let claims = assertion.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "admin@example.com", "{claims}");
    assert_eq!(claims["iss"], "cohort@cohort-test.iam.gserviceaccount.com");
    assert!(
        claims["scope"]
            .as_str()
            .unwrap()
            .contains("device.chromeos.readonly"),
        "{claims}"
    );
}
