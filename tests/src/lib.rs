//! The end-to-end harness: start the real `cohort` binary on a free loopback
//! port with a temporary data directory, and talk to it over HTTP. Nothing
//! here reaches into the server's internals; if a test passes, a client
//! would see the same.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The admin key every test server is bootstrapped with.
pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";

/// Path of the `cohort` binary: `COHORT_BIN`, or the one next to the test
/// executable's target directory (`cargo build --bin cohort` puts it there).
pub fn cohort_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COHORT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/cohort
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("cohort");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --bin cohort` (the README's test command does)",
        bin.display()
    );
    bin
}

/// An `equals` condition of a group rule.
pub fn eq(attribute: &str, values: Value) -> Value {
    serde_json::json!({"attribute": attribute, "operator": "equals", "values": values})
}

/// A sorted copy, for comparing id lists.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A running server process and its data directory.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    data: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The opt-in to loopback peers every server started here gets.
pub const LOOPBACK_OPT_IN: (&str, &str) = ("COHORT_OUTBOUND_ALLOW_PRIVATE", "127.0.0.0/8,::1");

/// `target/test-plugins`, where `plugins/build` puts the built-in plugins
/// and the test guests.
pub fn plugins_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    assert!(
        dir.join("hostile.wasm").exists(),
        "{} has no built plugins: run plugins/build first (the README's test command does)",
        dir.display()
    );
    dir
}

/// The environment that makes a server load every built plugin, sharing
/// one compiled-component cache across tests.
pub fn plugin_env() -> Vec<(&'static str, String)> {
    let plugins = plugins_dir();
    let cache = plugins.join("../plugin-cache");
    vec![
        ("COHORT_PLUGINS_DIR", plugins.to_str().unwrap().to_string()),
        (
            "COHORT_PLUGIN_CACHE_DIR",
            cache.to_str().unwrap().to_string(),
        ),
    ]
}

impl Server {
    /// Starts a server on a fresh temporary data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server on a fresh temporary data directory with extra
    /// environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Server::launch(&data, dir.path().join("server.log"), env);
        s._dir = Some(dir);
        s
    }

    /// Starts a server that loads every built plugin from `target/plugins`,
    /// sharing one compiled-component cache across tests.
    pub fn start_with_plugins(env: &[(&str, &str)]) -> Server {
        let plugins = plugin_env();
        let mut all: Vec<(&str, &str)> = plugins.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(env);
        Server::start_with(&all)
    }

    /// Starts a server on an existing data directory (after a kill, or a
    /// restore). The caller owns the directory.
    pub fn start_on(data: &Path, log: PathBuf) -> Server {
        Server::launch(data, log, Vec::new())
    }

    fn launch(data: &Path, log: PathBuf, env: Vec<(String, String)>) -> Server {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(cohort_bin())
            .arg("serve")
            .env("COHORT_LISTEN", "127.0.0.1:0")
            .env("COHORT_DATA_DIR", data)
            .env("COHORT_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("COHORT_LOG_LEVEL", "warn")
            // Every peer a test starts (the OIDC provider, mock sources) is on
            // loopback, which the server refuses by default. A test that checks
            // the refusal passes `COHORT_OUTBOUND_ALLOW_PRIVATE=""`, which
            // overrides this.
            .env(LOOPBACK_OPT_IN.0, LOOPBACK_OPT_IN.1)
            .env_remove("COHORT_CONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn cohort");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("cohort exited before listening; its log:\n{log}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            base,
            data: data.to_path_buf(),
            log,
            env,
            _dir: None,
        }
    }

    /// The server's process id while it runs (benchmarks read its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..200 {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        panic!("server did not exit within 10 s of SIGTERM");
    }

    /// Kills the server and starts it again on the same data directory.
    pub fn restart_after_kill(&mut self) {
        self.kill();
        let dir = self._dir.take();
        let mut fresh = Server::launch(&self.data, self.log.clone(), self.env.clone());
        fresh._dir = dir;
        *self = fresh;
    }

    /// Stops the server (SIGTERM, a clean exit) and starts it again on the
    /// same data directory, with `env` as its environment instead: to start
    /// it with or without its plugins, say.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        let status = self.terminate();
        assert!(status.success(), "the server exited with {status}");
        let dir = self._dir.take();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut fresh = Server::launch(&self.data, self.log.clone(), env);
        fresh._dir = dir;
        *self = fresh;
    }

    /// A client for this server with the bootstrap admin key.
    pub fn admin(&self) -> Api {
        self.client(Some(ADMIN_KEY))
    }

    /// A client with `key`, or with none.
    pub fn client(&self, key: Option<&str>) -> Api {
        Api {
            base: self.base.clone(),
            key: key.map(str::to_string),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

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
        self.post("/api/v1/users", body).await.expect(201).body["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Creates a device with extra fields and returns its id.
    pub async fn device(&self, hostname: &str, os_family: &str, extra: Value) -> String {
        let mut body = serde_json::json!({"hostname": hostname, "os_family": os_family});
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                body[k] = v;
            }
        }
        self.post("/api/v1/devices", body).await.expect(201).body["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Creates a dynamic group of `subject`s with `rule` and returns its id.
    pub async fn dynamic_group(&self, name: &str, subject: &str, rule: Value) -> String {
        self.post(
            "/api/v1/groups",
            serde_json::json!({"name": name, "subject": subject, "type": "dynamic", "rule": rule}),
        )
        .await
        .expect(201)
        .body["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Every member id of a group, sorted, across all pages.
    pub async fn member_ids(&self, group: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get(&format!("/api/v1/groups/{group}/members?limit=500{cursor}"))
                .await
                .expect(200)
                .body;
            for m in page["items"].as_array().expect("items") {
                out.push(m["subject_id"].as_str().expect("subject_id").to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
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
        let id = started["id"].as_str().expect("run id").to_string();
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

/// A real OpenID Provider: npm `oidc-provider` (installed into `tests/npm`
/// by `npm ci --prefix tests/npm`) on a free loopback port, started by
/// `tests/npm/oidc-provider.mjs` and stopped when dropped.
pub struct OidcProvider {
    child: Child,
    /// Its issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

impl OidcProvider {
    /// Starts a provider with `settings`: `{"clients": [...], "accounts":
    /// {"<login>": {<claims>}}}` (see the script).
    pub fn start(settings: &Value) -> OidcProvider {
        Self::start_script("oidc-provider.mjs", settings)
    }

    /// Starts the provider the tests control (`tests/npm/fake-op.mjs`),
    /// which issues the bad ID tokens a real provider never does.
    pub fn start_fake(client_id: &str, client_secret: &str) -> OidcProvider {
        Self::start_script(
            "fake-op.mjs",
            &serde_json::json!({"client_id": client_id, "client_secret": client_secret}),
        )
    }

    /// Sets the fake provider's mode (see `fake-op.mjs`) and, when given,
    /// the keys it publishes.
    pub async fn control(&self, mode: &str, publish: Option<&[&str]>) {
        let mut body = serde_json::json!({"mode": mode});
        if let Some(p) = publish {
            body["publish"] = serde_json::json!(p);
        }
        let r = reqwest::Client::new()
            .post(format!("{}/control", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("fake provider reachable");
        assert!(r.status().is_success());
    }

    fn start_script(script: &str, settings: &Value) -> OidcProvider {
        let npm = Path::new(env!("CARGO_MANIFEST_DIR")).join("npm");
        assert!(
            npm.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix tests/npm` (the README's test command does)"
        );
        let mut child = Command::new("node")
            .arg(script)
            .arg(settings.to_string())
            .current_dir(&npm)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node (needed for the OpenID Provider)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the OpenID Provider did not start within 20 s");
        OidcProvider { child, issuer }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser for the sign-in pages: a cookie jar per origin, no automatic
/// redirects (each hop is visible to the test), and helpers for forms.
pub struct Browser {
    http: reqwest::Client,
    jar: std::sync::Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
}

/// One page or redirect a [`Browser`] got.
#[derive(Debug, Clone)]
pub struct Page {
    /// The URL requested.
    pub url: String,
    /// The status.
    pub status: u16,
    /// The absolute `Location`, for redirects.
    pub location: Option<String>,
    /// The body.
    pub body: String,
}

impl Page {
    /// The refusal reason Cohort's sign-in pages state in
    /// `<meta name="cohort-reason">`.
    pub fn reason(&self) -> Option<String> {
        let at = self.body.find(r#"name="cohort-reason" content=""#)?;
        let rest = &self.body[at + r#"name="cohort-reason" content=""#.len()..];
        rest.split('"').next().map(String::from)
    }

    /// The value of the first form input named `name`.
    pub fn input(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!(r#"name="{name}""#))?;
        let tag_start = self.body[..at].rfind('<')?;
        let tag_end = at + self.body[at..].find('>')?;
        let tag = &self.body[tag_start..tag_end];
        let v = tag.find("value=\"")?;
        tag[v + 7..].split('"').next().map(String::from)
    }

    /// The `action` of the first form.
    pub fn form_action(&self) -> Option<String> {
        let at = self.body.find("action=\"")?;
        self.body[at + 8..].split('"').next().map(String::from)
    }
}

fn origin(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_string()
}

/// `location` resolved against `base`.
pub fn absolute(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}{}", &base[..host_end], location)
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with no cookies.
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar: Default::default(),
        }
    }

    /// The cookie `name` held for `url`'s origin.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        jar.get(&origin(url))?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Forgets the cookie `name` for `url`'s origin.
    pub fn drop_cookie(&self, url: &str, name: &str) {
        if let Some(c) = self.jar.lock().unwrap().get_mut(&origin(url)) {
            c.retain(|(k, _)| k != name);
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Page {
        let cookies = self
            .jar
            .lock()
            .unwrap()
            .get(&origin(url))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let req = if cookies.is_empty() {
            req
        } else {
            req.header("cookie", cookies)
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap_or_default();
            let first = v.split(';').next().unwrap_or_default();
            let Some((k, val)) = first.split_once('=') else {
                continue;
            };
            let delete = val.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
            let mut jar = self.jar.lock().unwrap();
            let c = jar.entry(origin(url)).or_default();
            c.retain(|(name, _)| name != k.trim());
            if !delete {
                c.push((k.trim().to_string(), val.to_string()));
            }
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| absolute(url, l));
        let body = resp.text().await.unwrap_or_default();
        Page {
            url: url.to_string(),
            status,
            location,
            body,
        }
    }

    /// GET `url` (one hop).
    pub async fn get(&self, url: &str) -> Page {
        self.send(self.http.get(url), url).await
    }

    /// POST a form to `url` (one hop).
    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, url).await
    }

    /// Follows redirects from `page` until a page that is not one, or
    /// until the next hop would go to a URL starting with `stop_before`.
    pub async fn follow(&self, mut page: Page, stop_before: Option<&str>) -> Page {
        for _ in 0..20 {
            let Some(next) = page.location.clone() else {
                return page;
            };
            if stop_before.is_some_and(|s| next.starts_with(s)) {
                return page;
            }
            page = self.get(&next).await;
        }
        panic!("more than 20 redirects from {}", page.url)
    }

    /// Cohort's identifier step: GET the form, POST `identifier`. Returns
    /// Cohort's answer (a redirect to the provider, the password form, or a
    /// refusal page).
    pub async fn start_sign_in(&self, cohort: &str, identifier: &str, return_to: &str) -> Page {
        let form = self
            .get(&format!(
                "{cohort}/sign-in?return_to={}",
                urlencode(return_to)
            ))
            .await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.input("csrf").expect("the form has a csrf field");
        self.post(
            &format!("{cohort}/sign-in"),
            &[
                ("identifier", identifier),
                ("csrf", &csrf),
                ("return_to", return_to),
            ],
        )
        .await
    }

    /// Signs in as `identifier` and, at the provider, as `login`: Cohort's
    /// identifier step, the provider's login and consent forms, and back.
    /// Returns Cohort's answer to the callback.
    pub async fn through_provider(&self, cohort: &str, identifier: &str, login: &str) -> Page {
        let started = self.start_sign_in(cohort, identifier, "").await;
        assert_eq!(started.status, 303, "{}", started.body);
        let mut page = self.follow(started, Some(cohort)).await;
        while !page
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(cohort))
        {
            assert_eq!(page.status, 200, "provider page: {}", page.body);
            let action = absolute(&page.url, &page.form_action().expect("a provider form"));
            page = if page.body.contains(r#"name="login""#) {
                self.post(
                    &action,
                    &[("prompt", "login"), ("login", login), ("password", "x")],
                )
                .await
            } else {
                self.post(&action, &[("prompt", "consent")]).await
            };
            page = self.follow(page, Some(cohort)).await;
        }
        let callback = page.location.expect("back to Cohort");
        assert!(callback.contains("/sign-in/callback?"), "{callback}");
        self.get(&callback).await
    }
}

/// Percent-encodes a form value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A request a [`Fake`] got.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    /// The request line, e.g. `GET /people?page=2 HTTP/1.1`.
    pub line: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl FakeRequest {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Line, headers and body as one text, for assertions.
    pub fn text(&self) -> String {
        let mut out = format!("{}\r\n", self.line);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out
    }
}

/// What a [`Fake`] answers.
pub struct FakeReply {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl FakeReply {
    /// `200` with a JSON body.
    pub fn json(value: &Value) -> FakeReply {
        FakeReply::json_text(value.to_string())
    }

    /// `200` with a body that is JSON already.
    pub fn json_text(body: String) -> FakeReply {
        FakeReply {
            status: "200 OK".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// `status` (e.g. `429 Too Many Requests`) with `Retry-After: 1`.
    pub fn busy(status: &str) -> FakeReply {
        FakeReply::status(status).header("retry-after", "1")
    }

    /// `status` with no body.
    pub fn status(status: &str) -> FakeReply {
        FakeReply {
            status: status.into(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// With another header.
    pub fn header(mut self, name: &str, value: &str) -> FakeReply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A fake of a source's HTTP API on a free loopback port: each request
/// (one per connection) is answered by `handler` and logged.
pub struct Fake {
    /// Its port.
    pub port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>>,
}

impl Fake {
    /// Starts serving; `handler` gets the fake's port (for links) and the
    /// request.
    pub fn start(mut handler: impl FnMut(u16, &FakeRequest) -> FakeReply + Send + 'static) -> Fake {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let log: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>> = Default::default();
        let seen = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let request = FakeRequest {
                    line: line.trim().to_string(),
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let reply = handler(port, &request);
                if let Ok(mut log) = seen.lock() {
                    log.push(request);
                }
                let mut head = format!("HTTP/1.1 {}\r\n", reply.status);
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let _ = write!(
                    stream,
                    "{head}content-length: {}\r\nconnection: close\r\n\r\n{}",
                    reply.body.len(),
                    reply.body
                );
            }
        });
        Fake { port, log }
    }

    /// The requests so far, in order.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
