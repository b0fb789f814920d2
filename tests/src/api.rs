//! A small HTTP client for the API, and its decoded responses.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic fails the test that called it"
)]
// A process is observed from outside: waiting for it polls with real time.
#![allow(clippy::disallowed_methods)]

use super::*;

/// A response, decoded.
#[derive(Debug)]
pub struct Resp {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty, a string when not JSON).
    pub body: Value,
}

impl Resp {
    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `error.field` of an error body.
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
}

/// A small HTTP client bound to one server and one key.
#[derive(Clone)]
pub struct Api {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client for the server at `base` (`http://127.0.0.1:<port>`) with
    /// `key`, or with none: for servers not started here (the in-process
    /// harness of the `cohort` crate's own tests).
    pub fn new(base: &str, key: Option<&str>) -> Api {
        Api {
            base: base.to_string(),
            key: key.map(str::to_string),
            http: crate::http_client_builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Sends a request with an optional JSON body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("json"));
        }
        let resp = req.send().await.expect("request failed");
        Self::decode(resp).await
    }

    /// POST that tolerates a dead server: `None` when the request could not
    /// complete (connection refused or reset), else status and body.
    pub async fn try_post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.ok()?;
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Sends raw bytes with a content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::decode(req.send().await.expect("request failed")).await
    }

    async fn decode(resp: reqwest::Response) -> Resp {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(&body), &[]).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(&body), &[]).await
    }

    /// PUT without a body.
    pub async fn put(&self, path: &str) -> Resp {
        self.send(Method::PUT, path, None, &[]).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// GET that returns the raw body text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("request failed");
        (resp.status(), resp.text().await.expect("body"))
    }

    /// Creates a user and returns its JSON.
    pub async fn create_user(&self, username: &str) -> Value {
        self.post(
            "/api/v1/users",
            serde_json::json!({"username": username, "email": format!("{username}@example.com")}),
        )
        .await
        .expect(201)
        .body
    }

    /// Creates an API key with `role` and returns its secret.
    pub async fn create_key(&self, name: &str, role: &str) -> String {
        let r = self
            .post(
                "/api/v1/api-keys",
                serde_json::json!({"name": name, "role": role}),
            )
            .await
            .expect(201);
        r.body["secret"].as_str().expect("secret").to_string()
    }

    /// PUT with a JSON body.
    pub async fn put_json(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Some(&body), &[]).await
    }

    /// Creates an active user with extra fields and returns its id.
    pub async fn user(&self, username: &str, extra: Value) -> String {
        let mut body = serde_json::json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "state": "active",
        });
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                body[k] = v;
            }
        }
        self.create("/api/v1/users", body).await
    }

    /// Creates a device with extra fields and returns its id.
    pub async fn device(&self, hostname: &str, os_family: &str, extra: Value) -> String {
        let mut body = serde_json::json!({"hostname": hostname, "os_family": os_family});
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                body[k] = v;
            }
        }
        self.create("/api/v1/devices", body).await
    }

    /// Creates a dynamic group of `subject`s with `rule` and returns its id.
    pub async fn dynamic_group(&self, name: &str, subject: &str, rule: Value) -> String {
        self.create(
            "/api/v1/groups",
            serde_json::json!({"name": name, "subject": subject, "type": "dynamic", "rule": rule}),
        )
        .await
    }

    /// A dynamic group of `subject`s whose `attribute` equals `value`: the
    /// rule most tests need, in one line.
    pub async fn equals_group(
        &self,
        name: &str,
        subject: &str,
        attribute: &str,
        value: &str,
    ) -> String {
        self.dynamic_group(
            name,
            subject,
            serde_json::json!({"conditions": [eq(attribute, serde_json::json!([value]))]}),
        )
        .await
    }

    /// POSTs `body` to a collection, expects `201 Created` and returns the
    /// new resource's id.
    pub async fn create(&self, path: &str, body: Value) -> String {
        self.post(path, body).await.expect(201).body["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Every item of a paged list, across all pages.
    pub async fn all_items(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let page = self
                .get(&format!("{path}{sep}limit=500{cursor}"))
                .await
                .expect(200)
                .body;
            out.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        out
    }

    /// Every member id of a group, sorted, across all pages.
    pub async fn member_ids(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .all_items(&format!("/api/v1/groups/{group}/members"))
            .await
            .iter()
            .map(|m| m["subject_id"].as_str().expect("subject_id").to_string())
            .collect();
        out.sort();
        out
    }

    /// Starts a full group recompute and waits for it; returns its counts.
    pub async fn recompute(&self) -> Value {
        let run = self
            .post("/api/v1/groups/recompute", serde_json::json!({}))
            .await
            .expect(202)
            .body;
        let id = run["id"].as_str().expect("run id").to_string();
        for _ in 0..600 {
            let run = self
                .get(&format!("/api/v1/groups/recompute/{id}"))
                .await
                .expect(200)
                .body;
            match run["state"].as_str() {
                Some("finished") => return run["counts"].clone(),
                Some("running") => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => panic!("the recompute did not finish: {run}"),
            }
        }
        panic!("the recompute did not finish in 30 s");
    }

    /// Starts an import run and waits until it is no longer running;
    /// returns the run as the API shows it.
    pub async fn run_import(&self, body: Value) -> Value {
        let started = self
            .post("/api/v1/import-runs", body)
            .await
            .expect(202)
            .body;
        self.wait_for_import(started["id"].as_str().expect("run id"))
            .await
    }

    /// Waits until the import run `id` (started by the API or a schedule)
    /// is no longer running; returns it as the API shows it. What is waited
    /// for is the run's own work, not a timer.
    pub async fn wait_for_import(&self, id: &str) -> Value {
        for _ in 0..600 {
            let run = self
                .get(&format!("/api/v1/import-runs/{id}"))
                .await
                .expect(200)
                .body;
            if run["state"] != "running" {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("import run {id} did not finish in 30 s");
    }
}
