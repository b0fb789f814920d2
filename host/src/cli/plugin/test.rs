//! `cohort plugin test`: runs the built component itself (not a native
//! build of its code) through the server's own runtime, under the
//! configured limits, against cases in `tests/cases/*.json`. A case gives
//! the configuration, the HTTP exchanges the plugin should make with their
//! recorded answers, and what must come out. Requests are checked against
//! the manifest's `allowed_hosts` as on a server, then answered from the
//! case; a request with no recorded answer fails, and so does a recorded
//! exchange the plugin never asked for.
//!
//! `--record` sends the requests to the network instead and writes what was
//! asked and answered back into the case; `--bless` writes the outcome as
//! the expectation. Both are for an author to review before committing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use cohort::plugins::bindings::host::{HttpError, Method, Request, Response};
use cohort::plugins::bindings::{rules, types};
use cohort::plugins::instances::{
    config_entries, config_error, connector_error_message, preview_page, source_error,
};
use cohort::plugins::manifest::ConfigKind;
use cohort::plugins::{HttpTap, LoadedPlugin, Runtime, World};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One case file.
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// The instance's configuration, as `POST /api/v1/plugin-instances`
    /// takes it.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    config: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exchanges: Vec<Exchange>,
    /// IdP connectors: validated ID token claims for `map-claims`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claims: Option<Value>,
    /// Rule evaluators: `user` (the default) or `device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// Rule evaluators: custom attributes besides the standard ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    schema: Vec<SchemaEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subjects: Vec<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect: Option<Value>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
struct SchemaEntry {
    name: String,
    /// `text`, `number`, `boolean`, `timestamp` or `text-list`.
    #[serde(rename = "type")]
    type_: String,
}

#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct Exchange {
    request: RecordedRequest,
    response: RecordedResponse,
}

#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct RecordedRequest {
    method: String,
    url: String,
    /// Headers the request must carry (names case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct RecordedResponse {
    status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// A recorded header value that stands for "present, whatever its value".
const REDACTED: &str = "<redacted>";

/// Whether a header, query parameter or JSON key is named like a
/// credential, so that its value is not written to a case file (headers)
/// or is pointed out for review (URLs and bodies, which a replay needs as
/// they were).
fn credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth", "token", "key", "secret", "password", "cookie", "sig", "session", "code",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Where a recorded exchange may hold a credential a case file should not:
/// query parameters and JSON keys named like one.
fn credential_places(e: &Exchange) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(url) = reqwest::Url::parse(&e.request.url) {
        for (name, _) in url.query_pairs() {
            if credential(&name) {
                found.push(format!("the query parameter {name} of {}", e.request.url));
            }
        }
    }
    fn keys(v: &Value, path: &str, found: &mut Vec<String>, url: &str) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let here = format!("{path}/{k}");
                    if credential(k) && !matches!(v, Value::Null | Value::Bool(_)) {
                        found.push(format!("{here} in the answer to {url}"));
                    }
                    keys(v, &here, found, url);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    keys(v, &format!("{path}/{i}"), found, url);
                }
            }
            _ => {}
        }
    }
    if let Some(json) = &e.response.json {
        keys(json, "", &mut found, &e.request.url);
    }
    found
}

/// A case's configuration as the plugin gets it: `"$env:NAME"` stands for
/// the environment variable NAME, so that a credential a `--record` needs
/// never sits in the case file. Unset, the text stays as it is, which is
/// what a replay needs.
fn resolve_env(config: &Map<String, Value>) -> Map<String, Value> {
    config
        .iter()
        .map(|(k, v)| {
            let v = match v.as_str().and_then(|s| s.strip_prefix("$env:")) {
                Some(var) => std::env::var(var).map_or_else(|_| v.clone(), Value::String),
                None => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Patch => "PATCH".into(),
        Method::Delete => "DELETE".into(),
        Method::Head => "HEAD".into(),
        Method::Other(o) => o.to_ascii_uppercase(),
    }
}

/// What the tap does for the current case.
#[derive(Debug, Default)]
enum Mode {
    /// Between cases (loading the component included): nothing reaches the
    /// network.
    #[default]
    Refuse,
    /// Answer from these exchanges; the flag marks the ones used.
    Replay(Vec<(Exchange, bool)>),
    /// Let requests through and keep what the network answered.
    Record(Vec<Exchange>),
}

/// The runtime's HTTP tap: one per test run, set up again for each case.
#[derive(Debug, Default)]
pub struct Tap {
    mode: Mutex<Mode>,
    /// Requests no exchange answered.
    unanswered: Mutex<Vec<String>>,
}

impl HttpTap for Tap {
    fn answer(&self, request: &Request) -> Option<Result<Response, HttpError>> {
        let mut mode = self.mode.lock();
        let method = method_name(&request.method);
        let exchanges = match &mut *mode {
            Mode::Record(_) => return None,
            Mode::Refuse => {
                return Some(Err(HttpError::Connection(format!(
                    "{method} {}: a plugin makes requests only while a case runs",
                    request.url
                ))));
            }
            Mode::Replay(exchanges) => exchanges,
        };
        let found = exchanges.iter_mut().find(|(e, used)| {
            !used
                && e.request.method.eq_ignore_ascii_case(&method)
                && e.request.url == request.url
                && e.request.headers.iter().all(|(name, value)| {
                    request.headers.iter().any(|(n, v)| {
                        n.eq_ignore_ascii_case(name) && (value == REDACTED || v == value)
                    })
                })
        });
        let Some((exchange, used)) = found else {
            let line = format!("{method} {}", request.url);
            self.unanswered.lock().push(line.clone());
            return Some(Err(HttpError::Connection(format!(
                "no recorded exchange answers {line}"
            ))));
        };
        *used = true;
        let r = &exchange.response;
        let body = match (&r.json, &r.text) {
            (Some(json), _) => serde_json::to_vec(json).unwrap_or_default(),
            (None, Some(text)) => text.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if r.json.is_some()
            && !r
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Some(Ok(Response {
            status: r.status,
            headers,
            body,
        }))
    }

    fn observe(&self, request: &Request, response: &Response) {
        if let Mode::Record(seen) = &mut *self.mode.lock() {
            let json = serde_json::from_slice::<Value>(&response.body).ok();
            let text = match json {
                Some(_) => None,
                None => Some(String::from_utf8_lossy(&response.body).into_owned()),
            };
            seen.push(Exchange {
                // Credentials are kept as names only: a replay checks that
                // the plugin still sends them, not what they were.
                request: RecordedRequest {
                    method: method_name(&request.method),
                    url: request.url.clone(),
                    headers: request
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            let k = k.to_ascii_lowercase();
                            let v = if credential(&k) {
                                REDACTED.to_string()
                            } else {
                                v.clone()
                            };
                            (k, v)
                        })
                        .collect(),
                },
                response: RecordedResponse {
                    status: response.status,
                    headers: response
                        .headers
                        .iter()
                        .filter(|(k, _)| {
                            matches!(
                                k.to_ascii_lowercase().as_str(),
                                "content-type" | "link" | "retry-after"
                            )
                        })
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect(),
                    json,
                    text,
                },
            });
        }
    }
}

/// How a run treats its cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Compare with `expect`.
    Check,
    /// Write the outcome into `expect`.
    Bless,
    /// Use the network, and write the exchanges and the outcome.
    Record,
}

/// The outcome of a test run.
pub struct Report {
    pub passed: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub written: Vec<String>,
    /// What a recording wrote that looks like a credential.
    pub review: Vec<String>,
}

/// The case files under `dir/tests/cases`, by name.
pub fn find_cases(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cases = dir.join("tests").join("cases");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cases)
        .with_context(|| format!("reading {}", cases.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("{} has no *.json cases", cases.display());
    }
    Ok(found)
}

/// Run every case in `cases` against `plugin`.
pub fn run_cases(
    runtime: &Arc<Runtime>,
    tap: &Tap,
    plugin: &Arc<LoadedPlugin>,
    cases: &[PathBuf],
    run: Run,
    show_logs: bool,
) -> anyhow::Result<Report> {
    let mut report = Report {
        passed: Vec::new(),
        failed: Vec::new(),
        written: Vec::new(),
        review: Vec::new(),
    };
    for path in cases {
        let label = path.display().to_string();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut case: Case =
            serde_json::from_str(&text).with_context(|| format!("{}: not a case", label))?;
        if run == Run::Record {
            for field in plugin
                .manifest()
                .config
                .iter()
                .filter(|f| f.kind == ConfigKind::Secret)
            {
                if let Some(Value::String(v)) = case.config.get(&field.name)
                    && !v.starts_with("$env:")
                {
                    bail!(
                        "{label}: config.{0} is a secret; give it as \"$env:NAME\" and set NAME \
                         in the environment, so that the recorded case does not hold it",
                        field.name
                    );
                }
            }
        }
        *tap.unanswered.lock() = Vec::new();
        *tap.mode.lock() = match run {
            Run::Record => Mode::Record(Vec::new()),
            Run::Check | Run::Bless => {
                Mode::Replay(case.exchanges.iter().cloned().map(|e| (e, false)).collect())
            }
        };
        let outcome = outcome(runtime, plugin, &case, show_logs)
            .with_context(|| format!("{label}: the case cannot run"))?;
        let mode = std::mem::take(&mut *tap.mode.lock());
        match run {
            Run::Record | Run::Bless => {
                if let Mode::Record(seen) = mode {
                    for place in seen.iter().flat_map(credential_places) {
                        report
                            .review
                            .push(format!("{label}: {place} may hold a credential"));
                    }
                    case.exchanges = seen;
                }
                case.expect = Some(outcome);
                let mut text = serde_json::to_string_pretty(&case)?;
                text.push('\n');
                std::fs::write(path, text).with_context(|| format!("writing {label}"))?;
                report.written.push(label);
            }
            Run::Check => {
                let mut problems = Vec::new();
                if let Mode::Replay(exchanges) = mode {
                    for (e, _) in exchanges.iter().filter(|(_, used)| !used) {
                        problems.push(format!(
                            "recorded but never requested: {} {}",
                            e.request.method, e.request.url
                        ));
                    }
                }
                for line in tap.unanswered.lock().iter() {
                    problems.push(format!("requested but not recorded: {line}"));
                }
                match &case.expect {
                    None => problems.push(format!(
                        "no \"expect\"; the outcome was:\n{}",
                        serde_json::to_string_pretty(&outcome)?
                    )),
                    Some(expect) => {
                        if !agrees(expect, &outcome) {
                            problems.push(format!(
                                "expected:\n{}\nbut got:\n{}",
                                serde_json::to_string_pretty(expect)?,
                                serde_json::to_string_pretty(&outcome)?
                            ));
                        }
                    }
                }
                if problems.is_empty() {
                    report.passed.push(label);
                } else {
                    report.failed.push((label, problems.join("\n")));
                }
            }
        }
    }
    Ok(report)
}

/// A new tap, for the runtime that runs the cases.
pub fn new_tap() -> Arc<Tap> {
    Arc::new(Tap::default())
}

/// An expected `{"error": "…"}` (nothing else beside it, and not empty) is
/// met by an error that contains its text; anything else must be equal.
fn agrees(expect: &Value, outcome: &Value) -> bool {
    for key in ["error", "compile_error"] {
        if let (Some(Value::String(want)), Some(Value::String(got))) =
            (expect.get(key), outcome.get(key))
        {
            let alone = expect.as_object().is_some_and(|o| o.len() == 1);
            return alone && !want.is_empty() && got.contains(want.as_str());
        }
    }
    expect == outcome
}

/// What the plugin did with the case, as the case's `expect` states it.
fn outcome(
    runtime: &Arc<Runtime>,
    plugin: &Arc<LoadedPlugin>,
    case: &Case,
    show_logs: bool,
) -> anyhow::Result<Value> {
    let manifest = plugin.manifest();
    let plain = |e: cohort::plugins::PluginError| json!({ "error": e.to_string() });
    let config = || {
        config_entries(manifest, &resolve_env(&case.config))
            .map_err(|e| anyhow::anyhow!("its config: {e}"))
    };
    // The plugin's own check of its configuration, as a save makes it: the
    // outcome when it refuses.
    let refused = |checked: Result<Result<(), types::ConfigError>, _>| match checked {
        Err(e) => Some(plain(e)),
        Ok(Err(e)) => Some(json!({ "error": config_error(e).to_string() })),
        Ok(Ok(())) => None,
    };
    match manifest.world {
        World::DirectoryImporter => {
            let config = config()?;
            if let Some(outcome) = refused(runtime.importer_validate_config(plugin, &config)) {
                return Ok(outcome);
            }
            let mut records = Vec::new();
            let mut problems = Vec::new();
            let mut cursor: Option<String> = None;
            // A source that never stops paging is the plugin's bug, shown.
            for _ in 0..1000 {
                let (page, logs) =
                    runtime.importer_fetch_page_logged(plugin, &config, cursor.as_deref());
                if show_logs {
                    for line in logs {
                        eprintln!("  log {} {} {:?}", line.level, line.message, line.fields);
                    }
                }
                let page = match page {
                    Err(e) => return Ok(plain(e)),
                    Ok(Err(e)) => return Ok(json!({ "error": source_error(e).message })),
                    Ok(Ok(page)) => preview_page(page),
                };
                records.extend(page.records);
                problems.extend(page.problems);
                cursor = page.next_cursor;
                if cursor.is_none() {
                    return Ok(json!({ "records": records, "problems": problems }));
                }
            }
            Ok(json!({ "error": "the plugin returned a next cursor 1000 times" }))
        }
        World::IdpConnector => {
            let config = config()?;
            if let Some(outcome) = refused(runtime.idp_validate_config(plugin, &config)) {
                return Ok(outcome);
            }
            let endpoints = match runtime.idp_endpoints(plugin, &config) {
                Err(e) => return Ok(plain(e)),
                Ok(Err(e)) => return Ok(json!({ "error": connector_error_message(e) })),
                Ok(Ok(e)) => json!({
                    "issuer": e.issuer,
                    "issuer_aliases": e.issuer_aliases,
                    "scopes": e.scopes,
                    "authorize_params": e.authorize_params,
                }),
            };
            let mut out = json!({ "endpoints": endpoints });
            if let Some(claims) = &case.claims {
                let identity = match runtime.idp_map_claims(plugin, &config, &claims.to_string()) {
                    Err(e) => return Ok(plain(e)),
                    Ok(Err(e)) => return Ok(json!({ "error": connector_error_message(e) })),
                    Ok(Ok(m)) => json!({
                        "subject": m.subject,
                        "attributes": m.attributes.iter()
                            .map(|a| (a.name.clone(), cohort::plugins::instances::value_json(&a.value)))
                            .collect::<Map<String, Value>>(),
                    }),
                };
                out["identity"] = identity;
            }
            Ok(out)
        }
        World::RuleEvaluator => rule_outcome(runtime, plugin, case),
    }
}

fn rule_outcome(
    runtime: &Arc<Runtime>,
    plugin: &Arc<LoadedPlugin>,
    case: &Case,
) -> anyhow::Result<Value> {
    use cohort::directory::{AttrType, Attribute, SubjectKind};
    use cohort::plugins::batch::{attribute_defs, matching, sample_batch, wit_kind};
    let kind = match case.kind.as_deref().unwrap_or("user") {
        "user" => SubjectKind::User,
        "device" => SubjectKind::Device,
        other => bail!("kind {other:?} is neither user nor device"),
    };
    // The standard schema every directory has, and the case's custom
    // attributes, named with the contract's type names.
    let mut attributes = cohort::directory::standard_schema(kind);
    for entry in &case.schema {
        let attr_type = match entry.type_.as_str() {
            "text" => AttrType::String,
            "number" => AttrType::Number,
            "boolean" => AttrType::Boolean,
            "timestamp" => AttrType::Date,
            "text-list" => AttrType::StringList,
            other => bail!(
                "schema: {}: type {other:?} is not text, number, boolean, timestamp or text-list",
                entry.name
            ),
        };
        attributes.push(Attribute {
            name: entry.name.clone(),
            subject: kind,
            attr_type,
            standard: false,
            description: None,
            created_at: None,
        });
    }
    let schema = attribute_defs(kind, &attributes);
    let batch =
        sample_batch(kind, &attributes, &case.subjects).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sources: Vec<rules::RuleSource> = case
        .rules
        .iter()
        .map(|text| rules::RuleSource { text: text.clone() })
        .collect();
    let session = match runtime.compile_rules(Arc::clone(plugin), wit_kind(kind), &schema, &sources)
    {
        Err(e) => return Ok(json!({ "error": e.to_string() })),
        Ok(Err(rules::CompileError::Invalid(problems))) => {
            let text: Vec<String> = problems
                .iter()
                .map(|p| format!("rule {} at {}: {}", p.rule, p.at, p.message))
                .collect();
            return Ok(json!({ "compile_error": text.join("; ") }));
        }
        Ok(Err(rules::CompileError::Other(m))) => return Ok(json!({ "compile_error": m })),
        Ok(Ok(session)) => session,
    };
    let options = rules::EvaluateOptions {
        now_millis: cohort::clock::Clock::now(&cohort::clock::SystemClock).timestamp_millis(),
        explain: false,
    };
    let evaluation = match session.evaluate(&batch, options) {
        Err(e) => return Ok(json!({ "error": e.to_string() })),
        Ok(Err(rules::EvaluateError::InvalidBatch(m) | rules::EvaluateError::Other(m))) => {
            return Ok(json!({ "error": m }));
        }
        Ok(Ok(evaluation)) => evaluation,
    };
    let matches = matching(&evaluation, case.rules.len(), case.subjects.len());
    Ok(json!({ "matches": matches }))
}
