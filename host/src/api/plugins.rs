//! `/api/v1/plugins` and `/api/v1/plugin-instances`: install, inspect,
//! enable/disable and remove plugins; configure instances; try rule
//! evaluators and importers without touching the directory.
//!
//! Plugin calls run on blocking threads: a plugin that spins for its whole
//! CPU budget never holds up an async worker serving other requests.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, etag, if_match, json_body};
use super::extract::{Authorized, needs};
use super::{AppState, allow};
use crate::auth::Principal;
use crate::directory::SubjectKind;
use crate::plugins::batch::{attribute_defs, matching, sample_batch, wit_kind};
use crate::plugins::bindings::rules;
use crate::plugins::instances::{Instance, InstanceUpdate, NewInstance, PreviewPage, SourceError};
use crate::plugins::registry::{LoadFailure, PluginView};
use crate::plugins::{Manifest, World};

/// Most rules one evaluation request may carry.
const MAX_RULES: usize = 100;
/// Most subjects one evaluation request may carry.
const MAX_SUBJECTS: usize = 1_000;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "plugin task panicked");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the plugin call failed inside the server",
        )
    })
}

fn forbidden(p: &Principal) -> ApiError {
    ApiError::forbidden(&p.describe(), "manage plugins")
}

/// Installed plugins.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    /// By name.
    pub items: Vec<PluginView>,
    /// Files in the plugins directory (or uploads) that failed to load at start-up.
    pub failed: Vec<LoadFailure>,
}

/// A plugin upload.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The manifest, the same fields as a `plugin.toml`.
    pub manifest: Manifest,
    /// The component (`.wasm`), base64.
    pub component: String,
}

/// List installed plugins with their health.
#[utoipa::path(
    get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = PluginList), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_plugins(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<PluginList>, ApiError> {
    allow(p.read(), &p, "read plugins")?;
    let (items, failed) = s.plugins.list();
    Ok(Json(PluginList { items, failed }))
}

/// Install a plugin. The component is compiled, checked against its world
/// and WIT version, and asked to describe itself before anything is stored.
#[utoipa::path(
    post, path = "/api/v1/plugins", tag = "plugins",
    request_body = Upload,
    responses(
        (status = 201, body = PluginView), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn install_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    req: Request,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    allow(p.manage_plugins(), &p, "manage plugins")?;
    let upload: Upload = json_body(req, s.max_upload_bytes).await?;
    let component = component_bytes(&upload)?;
    let registry = s.plugins.clone();
    let committed = blocking(move || {
        let cap = p.manage_plugins().ok_or_else(|| forbidden(&p))?;
        registry
            .install(&cap, upload.manifest, &component)
            .map_err(ApiError::from)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(committed.durable().await?)))
}

/// The component of an upload, decoded.
fn component_bytes(upload: &Upload) -> Result<Vec<u8>, ApiError> {
    B64.decode(upload.component.as_bytes()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("not base64: {e}"),
        )
        .with_field("component")
    })
}

/// One plugin: manifest, world, version, health, call counts.
#[utoipa::path(
    get, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    allow(p.read(), &p, "read plugins")?;
    Ok(Json(s.plugins.get(&name)?))
}

/// Upgrade an uploaded plugin in place: a new component and manifest under
/// the same name. Its instances, with their secrets, and the import links,
/// schedules and groups that name them, stay. Refused (`409
/// incompatible_upgrade`, naming the instance and the reason) unless the
/// new version implements the same world and every instance is a valid
/// configuration of it: new required fields need a `default`, a field may
/// not become or stop being a secret, and the new code must accept each
/// instance's configuration. The version replaced is kept for
/// `POST /api/v1/plugins/{name}/rollback`. Audited as `plugin.upgrade`.
#[utoipa::path(
    put, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    request_body = Upload,
    responses(
        (status = 200, body = PluginView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn upgrade_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<PluginView>, ApiError> {
    allow(p.manage_plugins(), &p, "manage plugins")?;
    let upload: Upload = json_body(req, s.max_upload_bytes).await?;
    if upload.manifest.name != name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!(
                "the manifest names {:?}, the path {name:?}; a plugin keeps its name across versions",
                upload.manifest.name
            ),
        )
        .with_field("manifest.name"));
    }
    let component = component_bytes(&upload)?;
    let instances = s.instances.clone();
    let committed = blocking(move || {
        let cap = p.manage_plugins().ok_or_else(|| forbidden(&p))?;
        instances
            .upgrade_plugin(&cap, upload.manifest, &component)
            .map_err(ApiError::from)
    })
    .await??;
    Ok(Json(committed.durable().await?))
}

/// Go back to the version the last upgrade replaced, under the same checks
/// as an upgrade. The version rolled back from is kept in turn, so a second
/// rollback undoes the first. Audited as `plugin.rollback`.
#[utoipa::path(
    post, path = "/api/v1/plugins/{name}/rollback", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, body = PluginView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn roll_back_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    allow(p.manage_plugins(), &p, "manage plugins")?;
    let instances = s.instances.clone();
    let committed = blocking(move || {
        let cap = p.manage_plugins().ok_or_else(|| forbidden(&p))?;
        instances
            .roll_back_plugin(&cap, &name)
            .map_err(ApiError::from)
    })
    .await??;
    Ok(Json(committed.durable().await?))
}

/// Remove an uploaded plugin that no instance uses.
#[utoipa::path(
    delete, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn remove_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "manage plugins")?;
    s.instances.remove_plugin(&cap, &name)?.durable().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Allow calls to a plugin again.
#[utoipa::path(
    post, path = "/api/v1/plugins/{name}/enable", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn enable_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "manage plugins")?;
    Ok(Json(
        s.plugins.set_enabled(&cap, &name, true)?.durable().await?,
    ))
}

/// Refuse calls to a plugin; its instances stay configured.
#[utoipa::path(
    post, path = "/api/v1/plugins/{name}/disable", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn disable_plugin(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "manage plugins")?;
    Ok(Json(
        s.plugins.set_enabled(&cap, &name, false)?.durable().await?,
    ))
}

/// Rules and sample subjects to try a rule evaluator on.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// `user` or `device`.
    pub kind: SubjectKind,
    /// Rule texts in the evaluator's language (at most 100).
    #[schema(min_items = 1, max_items = 100)]
    pub rules: Vec<String>,
    /// Sample subjects: attribute name → value, typed by the schema (at most 1,000).
    #[schema(value_type = Vec<Object>, max_items = 1000)]
    pub subjects: Vec<BTreeMap<String, Value>>,
    /// Also return per-condition outcomes.
    #[serde(default)]
    pub explain: bool,
    /// The evaluation time for relative dates; defaults to now.
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

/// The outcome of an evaluation.
#[derive(Serialize, ToSchema)]
pub struct EvaluateResponse {
    /// For each rule, the indices of the subjects it matches.
    pub matches: Vec<Vec<u32>>,
    /// Per-condition outcomes, when `explain` was set.
    pub explanations: Vec<Explanation>,
    /// Subjects that could not be evaluated against a rule (they do not match).
    pub errors: Vec<EvaluationIssue>,
}

/// One condition's outcome for one subject.
#[derive(Serialize, ToSchema)]
#[schema(as = ConditionOutcome)]
pub struct Explanation {
    /// Rule index.
    pub rule: u32,
    /// Subject index.
    pub subject: u32,
    /// The condition's position in the rule.
    pub at: String,
    /// Whether it held.
    pub matched: bool,
    /// Why, in words.
    pub detail: String,
}

/// A per-subject evaluation error.
#[derive(Serialize, ToSchema)]
pub struct EvaluationIssue {
    /// Rule index.
    pub rule: u32,
    /// Subject index.
    pub subject: u32,
    /// What went wrong.
    pub message: String,
}

/// Evaluate rules over sample subjects with a rule-evaluator plugin. Nothing
/// in the directory is read or changed; use it to try a rule or a plugin.
#[utoipa::path(
    post, path = "/api/v1/plugins/{name}/evaluate", tag = "plugins",
    params(("name" = String, Path, description = "A rule-evaluator plugin")),
    request_body = EvaluateRequest,
    responses(
        (status = 200, body = EvaluateResponse),
        (status = 409, description = "Disabled, or not a rule evaluator", body = ErrorBody),
        (status = 422, description = "A rule or subject is invalid; `field` points at it", body = ErrorBody),
        (status = 502, description = "The plugin failed (trap, limit, bad output)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn evaluate(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<EvaluateRequest>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    let read = allow(p.read(), &p, "evaluate rules")?;
    let invalid = |field: String, message: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    };
    if input.rules.is_empty() || input.rules.len() > MAX_RULES {
        return Err(invalid(
            "rules".into(),
            format!("give 1 to {MAX_RULES} rules"),
        ));
    }
    if input.subjects.len() > MAX_SUBJECTS {
        return Err(invalid(
            "subjects".into(),
            format!("give at most {MAX_SUBJECTS} subjects"),
        ));
    }
    let plugin = s.plugins.callable(&name, World::RuleEvaluator)?;
    let attributes = s.directory.list_attributes(&read, Some(input.kind))?;
    let schema = attribute_defs(input.kind, &attributes);
    let batch = sample_batch(input.kind, &attributes, &input.subjects)?;
    let sources: Vec<rules::RuleSource> = input
        .rules
        .into_iter()
        .map(|text| rules::RuleSource { text })
        .collect();
    let options = rules::EvaluateOptions {
        now_millis: input
            .now
            .unwrap_or_else(|| s.clock.now())
            .timestamp_millis(),
        explain: input.explain,
    };
    let runtime = s.plugins.runtime().clone();
    let kind = wit_kind(input.kind);
    let rule_count = sources.len();
    let outcome = blocking(move || -> Result<_, ApiError> {
        let session = match runtime.compile_rules(plugin, kind, &schema, &sources)? {
            Ok(session) => session,
            Err(rules::CompileError::Invalid(problems)) => {
                let first = problems.first();
                let field = first
                    .map(|p| format!("rules[{}]{}", p.rule, p.at))
                    .unwrap_or_else(|| "rules".into());
                let message = problems
                    .iter()
                    .map(|p| format!("rules[{}]{}: {}", p.rule, p.at, p.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_rule",
                    message,
                )
                .with_field(field));
            }
            Err(rules::CompileError::Other(m)) => {
                return Err(
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rule", m)
                        .with_field("rules"),
                );
            }
        };
        match session.evaluate(&batch, options)? {
            Ok(evaluation) => Ok(evaluation),
            Err(rules::EvaluateError::InvalidBatch(m) | rules::EvaluateError::Other(m)) => Err(
                ApiError::new(StatusCode::BAD_GATEWAY, "plugin_evaluation_failed", m),
            ),
        }
    })
    .await??;
    let matches = matching(&outcome, rule_count, input.subjects.len());
    Ok(Json(EvaluateResponse {
        matches,
        explanations: outcome
            .explanations
            .into_iter()
            .map(|x| Explanation {
                rule: x.rule,
                subject: x.subject,
                at: x.at,
                matched: x.matched,
                detail: x.detail,
            })
            .collect(),
        errors: outcome
            .errors
            .into_iter()
            .map(|x| EvaluationIssue {
                rule: x.rule,
                subject: x.subject,
                message: x.message,
            })
            .collect(),
    }))
}

/// All plugin instances.
#[derive(Serialize, ToSchema)]
pub struct InstanceList {
    /// Oldest first.
    pub items: Vec<Instance>,
}

fn instance_response(status: StatusCode, instance: Instance) -> Response {
    let tag = etag(instance.version);
    (status, [(header::ETAG, tag)], Json(instance)).into_response()
}

/// List plugin instances (secrets are never included).
#[utoipa::path(
    get, path = "/api/v1/plugin-instances", tag = "plugins",
    responses((status = 200, body = InstanceList), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_instances(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<InstanceList>, ApiError> {
    allow(p.read(), &p, "read plugin instances")?;
    Ok(Json(InstanceList {
        items: s.instances.list()?,
    }))
}

/// Configure a plugin. The config is checked against the manifest, then by
/// the plugin; secret fields are encrypted and never returned.
#[utoipa::path(
    post, path = "/api/v1/plugin-instances", tag = "plugins",
    request_body = NewInstance,
    responses(
        (status = 201, body = Instance), (status = 409, body = ErrorBody),
        (status = 422, description = "`field` names the config field at fault", body = ErrorBody),
        (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_instance(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    ApiJson(input): ApiJson<NewInstance>,
) -> Result<Response, ApiError> {
    allow(p.manage_plugins(), &p, "manage plugins")?;
    let instances = s.instances.clone();
    let committed = blocking(move || {
        let cap = p.manage_plugins().ok_or_else(|| forbidden(&p))?;
        instances.create(&cap, input).map_err(ApiError::from)
    })
    .await??;
    Ok(instance_response(
        StatusCode::CREATED,
        committed.durable().await?,
    ))
}

/// One plugin instance.
#[utoipa::path(
    get, path = "/api/v1/plugin-instances/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 200, body = Instance), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_instance(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    allow(p.read(), &p, "read plugin instances")?;
    Ok(instance_response(StatusCode::OK, s.instances.get(&id)?))
}

/// Change an instance's name or config (merged; `null` removes a field).
#[utoipa::path(
    patch, path = "/api/v1/plugin-instances/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Instance id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body = InstanceUpdate,
    responses(
        (status = 200, body = Instance), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn update_instance(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<InstanceUpdate>,
) -> Result<Response, ApiError> {
    allow(p.manage_plugins(), &p, "manage plugins")?;
    let expected = if_match(&headers)?;
    let instances = s.instances.clone();
    let committed = blocking(move || {
        let cap = p.manage_plugins().ok_or_else(|| forbidden(&p))?;
        instances
            .update(&cap, &id, input, expected)
            .map_err(ApiError::from)
    })
    .await??;
    Ok(instance_response(
        StatusCode::OK,
        committed.durable().await?,
    ))
}

/// Delete an instance.
#[utoipa::path(
    delete, path = "/api/v1/plugin-instances/{id}", tag = "plugins",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_instance(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "manage plugins")?;
    s.instances.delete(&cap, &id)?.durable().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which page to preview.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The `next_cursor` of a previous preview; absent for the first page.
    pub cursor: Option<String>,
    /// Also return what the plugin logged while it read the page (its
    /// `host::log` lines, within the per-call log limit), for its author.
    /// They go to the server log either way.
    #[serde(default)]
    pub logs: bool,
}

/// The importer's answer: a page, or its own error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PreviewOutcome {
    /// The page.
    Page(PreviewPage),
    /// The source's error (bad credentials, rate limit…), as the importer reported it.
    SourceError(SourceError),
}

/// Fetch one page from an importer instance, without importing anything.
#[utoipa::path(
    post, path = "/api/v1/plugin-instances/{id}/preview", tag = "plugins",
    params(("id" = String, Path, description = "Instance id")),
    request_body = PreviewRequest,
    responses(
        (status = 200, body = PreviewOutcome), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn preview_instance(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<PreviewRequest>,
) -> Result<Json<PreviewOutcome>, ApiError> {
    allow(p.manage_plugins(), &p, "run plugin instances")?;
    let instances = s.instances.clone();
    let outcome = blocking(move || {
        instances
            .preview(&id, input.cursor.as_deref(), input.logs)
            .map_err(ApiError::from)
    })
    .await??;
    Ok(Json(match outcome {
        Ok(page) => PreviewOutcome::Page(page),
        Err(e) => PreviewOutcome::SourceError(e),
    }))
}
