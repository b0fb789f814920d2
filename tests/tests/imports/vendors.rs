//! Each vendor importer against a fake of its API on loopback: paging,
//! authentication, rate limits and removals.

use super::*;

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

/// A fake Personio: `POST /v1/auth` gives a token, `GET
/// /v1/company/employees?offset&limit` pages of at most 100 employees in
/// Personio's `{"label", "value"}` shape, the second page answering 429
/// with `Retry-After: 1` once.
pub(super) fn fake_personio(employees: Arc<Mutex<Vec<Value>>>) -> Fake {
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

pub(super) fn personio_employee(id: usize, email: Option<String>, status: &str) -> Value {
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
pub(super) async fn install_allowed(api: &Api, plugin: &str, port: u16, config: Value) {
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
            .join("../plugins/importers/google/testdata/test-key.pem"),
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
