//! The admin command line: `cohort users …`, `cohort groups …`,
//! `cohort keys …`, `cohort import …`. Every command is one or more calls to
//! the admin HTTP API, so the CLI can do exactly what the API lets its key
//! do, is audited the same way, and works against any host.
//!
//! Output is a table for people, or with `--output json` the API's own
//! JSON, unchanged, for scripts (`jq`). Errors print the API's error body
//! and exit with status 1; usage errors exit with 2, as clap does.

pub mod plugin;
mod table;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

pub use table::Output;

/// Where the API is and who calls it.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Base URL of a Cohort host; defaults to the configured listen address.
    #[arg(long, global = true, env = "COHORT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// An API key: admin for writes, read-only suffices for lists.
    #[arg(long, global = true, env = "COHORT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// `table` for people (the default), `json` for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Users.
#[derive(Subcommand, Debug)]
pub enum Users {
    /// List users, following pages (`--limit` caps the total).
    List {
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One user.
    Get {
        /// The user's id.
        id: String,
    },
    /// Create a user.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// `staged` (no sign-in yet) or `active`.
        #[arg(long)]
        state: Option<String>,
        /// Other attributes, `name=value` (repeatable); custom ones too.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// Change attributes, `name=value` (an empty value clears it).
    Update {
        /// The user's id.
        id: String,
        #[arg(long = "set", value_name = "NAME=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Move a user to `active`, `suspended` or `staged`.
    State {
        /// The user's id.
        id: String,
        /// The state to move to.
        state: String,
    },
    /// Delete a user.
    Delete {
        /// The user's id.
        id: String,
    },
}

/// Groups.
#[derive(Subcommand, Debug)]
pub enum Groups {
    /// List groups, following pages.
    List {
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One group.
    Get { id: String },
    /// Create a group from its JSON definition (a file, or `-` for stdin),
    /// as `POST /api/v1/groups` takes it.
    Create {
        #[arg(long, value_name = "FILE")]
        json: String,
    },
    /// A group's members, following pages.
    Members {
        id: String,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete a group.
    Delete { id: String },
    /// Recompute every dynamic group now.
    Recompute,
}

/// API keys.
#[derive(Subcommand, Debug)]
pub enum Keys {
    /// List keys (never their secrets).
    List,
    /// Create a key; its secret is shown this once.
    Create {
        #[arg(long)]
        name: String,
        /// admin, help-desk, read-only, scim, …
        #[arg(long)]
        role: String,
    },
    /// Revoke a key.
    Revoke { id: String },
}

/// Imports from HR systems and directories.
#[derive(Subcommand, Debug)]
pub enum Import {
    /// Start a run of an importer instance and, with `--wait`, follow it to
    /// its end.
    Run {
        /// The importer instance's id or name.
        instance: String,
        /// Plan only: write nothing.
        #[arg(long)]
        dry_run: bool,
        /// How records find their user.
        #[arg(long, value_enum)]
        match_on: Option<MatchOn>,
        /// Wait for the run to finish (or to wait for approval).
        #[arg(long)]
        wait: bool,
    },
    /// The last runs.
    List,
    /// One run.
    Get { id: String },
    /// Approve a run held by its change limit.
    Approve { id: String },
}

/// How an import matches records to users.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MatchOn {
    Email,
    Username,
    EmployeeId,
}

/// The admin commands, as `main` dispatches them.
#[derive(Debug)]
pub enum Admin {
    /// `cohort users …`
    Users(Users),
    /// `cohort groups …`
    Groups(Groups),
    /// `cohort keys …`
    Keys(Keys),
    /// `cohort import …`
    Import(Import),
}

/// Calls the API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("contacting {url}"))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let e = &v["error"];
                    Some(format!(
                        "{}: {}",
                        e["code"].as_str()?,
                        e["message"].as_str().unwrap_or_default()
                    ))
                })
                .unwrap_or(text);
            // From the server (or whatever answered): printed only once
            // nothing in it can move the terminal's cursor or reorder text.
            bail!("{status}: {}", table::printable(&detail));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server's answer is not JSON")
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// Every item of a paged list, following `next_cursor`, up to `limit`.
    async fn all(&self, path: &str, limit: Option<usize>) -> anyhow::Result<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={c}"),
                None => format!("{path}{sep}limit=500"),
            };
            let page = self.get(&page_path).await?;
            if let Some(batch) = page["items"].as_array() {
                items.extend(batch.iter().cloned());
            }
            if limit.is_some_and(|l| items.len() >= l) {
                items.truncate(limit.unwrap_or(usize::MAX));
                break;
            }
            match page["next_cursor"].as_str() {
                // A cursor met before would page for ever.
                Some(c) if seen.insert(c.to_string()) => cursor = Some(urlencode(c)),
                Some(_) => bail!("the server returned the same page cursor twice"),
                None => break,
            }
        }
        Ok(json!({ "items": items }))
    }
}

/// An id as one path segment: `../` or `?` in it cannot reach another
/// endpoint.
pub(crate) fn seg(id: &str) -> String {
    urlencode(id)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `name=value` pairs as a JSON object; an empty value is `null` (clears).
fn pairs(set: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for s in set {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set {s:?}: expected NAME=VALUE");
        };
        let value = if v.is_empty() {
            Value::Null
        } else {
            Value::String(v.to_string())
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// A client of `target`'s API.
pub(crate) fn client(target: &Target, default_server: &str) -> anyhow::Result<Client> {
    let Some(key) = target.api_key.clone() else {
        bail!("an API key is needed: pass --api-key or set COHORT_API_KEY");
    };
    let base = target
        .server
        .clone()
        .unwrap_or_else(|| default_server.to_string())
        .trim_end_matches('/')
        .to_string();
    Ok(Client {
        http: reqwest::Client::new(),
        base,
        key,
    })
}

/// Runs one admin command and prints its result.
pub async fn run(target: &Target, default_server: &str, command: Admin) -> anyhow::Result<()> {
    let client = client(target, default_server)?;
    let (value, shape) = match command {
        Admin::Users(c) => users(&client, c).await?,
        Admin::Groups(c) => groups(&client, c).await?,
        Admin::Keys(c) => keys(&client, c).await?,
        Admin::Import(c) => import(&client, c).await?,
    };
    table::print(target.output, &value, shape);
    Ok(())
}

use table::Shape;

const USER_COLUMNS: &[&str] = &["id", "username", "email", "state", "department"];
const GROUP_COLUMNS: &[&str] = &["id", "name", "subject", "type", "member_count"];
const KEY_COLUMNS: &[&str] = &["id", "name", "role", "created_at", "last_used_at"];
const RUN_COLUMNS: &[&str] = &["id", "instance_id", "state", "started_at", "duration_ms"];
const MEMBER_COLUMNS: &[&str] = &["subject_id", "subject_type", "source", "since"];

async fn users(c: &Client, cmd: Users) -> anyhow::Result<(Value, Shape)> {
    Ok(match cmd {
        Users::List { limit } => (
            c.all("/api/v1/users", limit).await?,
            Shape::List(USER_COLUMNS),
        ),
        Users::Get { id } => (
            c.get(&format!("/api/v1/users/{}", seg(&id))).await?,
            Shape::One,
        ),
        Users::Create {
            username,
            email,
            state,
            set,
        } => {
            let mut body = pairs(&set)?;
            body.insert("username".into(), username.into());
            body.insert("email".into(), email.into());
            if let Some(s) = state {
                body.insert("state".into(), s.into());
            }
            (
                c.call(Method::POST, "/api/v1/users", Some(Value::Object(body)))
                    .await?,
                Shape::One,
            )
        }
        Users::Update { id, set } => (
            c.call(
                Method::PATCH,
                &format!("/api/v1/users/{}", seg(&id)),
                Some(Value::Object(pairs(&set)?)),
            )
            .await?,
            Shape::One,
        ),
        Users::State { id, state } => (
            c.call(
                Method::POST,
                &format!("/api/v1/users/{}/state", seg(&id)),
                Some(json!({ "state": state })),
            )
            .await?,
            Shape::One,
        ),
        Users::Delete { id } => {
            c.call(Method::DELETE, &format!("/api/v1/users/{}", seg(&id)), None)
                .await?;
            (json!({ "deleted": id }), Shape::One)
        }
    })
}

async fn groups(c: &Client, cmd: Groups) -> anyhow::Result<(Value, Shape)> {
    Ok(match cmd {
        Groups::List { limit } => (
            c.all("/api/v1/groups", limit).await?,
            Shape::List(GROUP_COLUMNS),
        ),
        Groups::Get { id } => (
            c.get(&format!("/api/v1/groups/{}", seg(&id))).await?,
            Shape::One,
        ),
        Groups::Create { json: file } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{file} is not a JSON group definition"))?;
            (
                c.call(Method::POST, "/api/v1/groups", Some(body)).await?,
                Shape::One,
            )
        }
        Groups::Members { id, limit } => (
            c.all(&format!("/api/v1/groups/{}/members", seg(&id)), limit)
                .await?,
            Shape::List(MEMBER_COLUMNS),
        ),
        Groups::Delete { id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/groups/{}", seg(&id)),
                None,
            )
            .await?;
            (json!({ "deleted": id }), Shape::One)
        }
        Groups::Recompute => (
            c.call(Method::POST, "/api/v1/groups/recompute", None)
                .await?,
            Shape::One,
        ),
    })
}

async fn keys(c: &Client, cmd: Keys) -> anyhow::Result<(Value, Shape)> {
    Ok(match cmd {
        Keys::List => (c.get("/api/v1/api-keys").await?, Shape::List(KEY_COLUMNS)),
        Keys::Create { name, role } => (
            c.call(
                Method::POST,
                "/api/v1/api-keys",
                Some(json!({ "name": name, "role": role })),
            )
            .await?,
            Shape::One,
        ),
        Keys::Revoke { id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/api-keys/{}", seg(&id)),
                None,
            )
            .await?;
            (json!({ "revoked": id }), Shape::One)
        }
    })
}

async fn import(c: &Client, cmd: Import) -> anyhow::Result<(Value, Shape)> {
    Ok(match cmd {
        Import::Run {
            instance,
            dry_run,
            match_on,
            wait,
        } => {
            let mut body = json!({ "instance": instance, "dry_run": dry_run });
            if let Some(m) = match_on {
                body["match_on"] = match m {
                    MatchOn::Email => "email",
                    MatchOn::Username => "username",
                    MatchOn::EmployeeId => "employee_id",
                }
                .into();
            }
            let mut run = c
                .call(Method::POST, "/api/v1/import-runs", Some(body))
                .await?;
            if wait {
                let id = run["id"].as_str().unwrap_or_default().to_string();
                let mut delay = std::time::Duration::from_millis(100);
                while matches!(run["state"].as_str(), Some("queued" | "running")) {
                    // The run goes on in the server; this only waits for it.
                    #[allow(clippy::disallowed_methods)] // polling a remote run
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(2));
                    run = c.get(&format!("/api/v1/import-runs/{}", seg(&id))).await?;
                }
            }
            (run, Shape::One)
        }
        Import::List => (
            c.get("/api/v1/import-runs").await?,
            Shape::List(RUN_COLUMNS),
        ),
        Import::Get { id } => (
            c.get(&format!("/api/v1/import-runs/{}", seg(&id))).await?,
            Shape::One,
        ),
        Import::Approve { id } => (
            c.call(
                Method::POST,
                &format!("/api/v1/import-runs/{}/approve", seg(&id)),
                None,
            )
            .await?,
            Shape::One,
        ),
    })
}
