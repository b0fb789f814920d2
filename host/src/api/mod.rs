//! The HTTP layer. It is thin on purpose: each handler parses its input,
//! asks the principal for the capability it needs, calls the domain and maps
//! the result. Anything that is a rule of the directory lives in the domain.

mod api_keys;
mod attributes;
mod audit;
pub mod client;
mod devices;
mod enrollment;
pub mod error;
pub mod extract;
mod groups;
mod idps;
mod imports;
mod me;
pub mod metrics;
mod openapi;
mod ops;
mod params;
mod plugins;
mod resources;
mod scim;
pub mod sign_in;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cohort_storage::Store;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::AuditLog;
use crate::auth::{ApiKeys, Origin, Principal};
use crate::directory::Directory;
use error::ApiError;
use extract::RequestId;
use metrics::Metrics;

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Users, devices, bindings, attribute schema.
    pub directory: Directory,
    /// Groups and their memberships.
    pub groups: crate::groups::Groups,
    /// Resources, bindings and effective access.
    pub access: crate::access::Access,
    /// The audit log (read side).
    pub audit: AuditLog,
    /// Authentication and API key management.
    pub keys: ApiKeys,
    /// The store, for backups and readiness.
    pub store: Store,
    /// How far this host is behind the others sharing its database.
    pub replication: Arc<crate::replication::Replication>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Where temporary backup files go (same filesystem as the store).
    pub data_dir: PathBuf,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The rendered OpenAPI document.
    pub openapi: Arc<String>,
    /// Installed plugins and the runtime they run in.
    pub plugins: crate::plugins::Registry,
    /// Configured plugin instances.
    pub instances: crate::plugins::Instances,
    /// Identity providers and federated sign-in.
    pub federation: crate::federation::Federation,
    /// Sign-in pages and sessions.
    pub sign_in: crate::federation::SignIn,
    /// Local passwords.
    pub credentials: crate::credentials::Credentials,
    /// The SCIM 2.0 service.
    pub scim: crate::provisioning::scim::Scim,
    /// Import runs.
    pub imports: crate::provisioning::imports::Imports,
    /// Device enrollment tokens, enrollment and device credentials.
    pub devices: crate::devices::Devices,
    /// Largest plugin upload body.
    pub max_upload_bytes: usize,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<client::TrustedProxies>,
    /// What backups are authenticated with (derived from the secret key).
    pub backup_key: cohort_storage::BackupKey,
    /// The one source of wall time, so that tests can move it.
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// Turns a missing capability into a 403 naming the role and the action.
pub(crate) fn allow<T>(cap: Option<T>, p: &Principal, what: &str) -> Result<T, ApiError> {
    cap.ok_or_else(|| ApiError::forbidden(&p.describe(), what))
}

/// Turns a refused device-scoped capability into a 403: `forbidden` for a
/// role that may not do it at all, `device_mismatch` for a device credential
/// that names another device.
pub(crate) fn allow_device<T>(
    cap: Result<T, crate::auth::DeviceDenied>,
    p: &Principal,
    what: &str,
) -> Result<T, ApiError> {
    cap.map_err(|denied| match denied {
        crate::auth::DeviceDenied::Role => ApiError::forbidden(&p.describe(), what),
        crate::auth::DeviceDenied::OtherDevice { own } => device_mismatch(own, what),
    })
}

/// 403 `device_mismatch`: a device credential named a device not its own.
pub(crate) fn device_mismatch(own: uuid::Uuid, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "device_mismatch",
        format!("a device credential may {what} only its own device ({own})"),
    )
    .with_field("id")
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cohort API",
        description = "Admin API of Cohort, a self-hosted directory. Authenticate with `Authorization: Bearer <API key>`. Errors have the shape `{\"error\": {\"code\", \"message\", \"field\"?}}`. Input is bounded (see Limits in the README): a body nested more than 64 levels deep is `400 too_deep`, a request target over 32 KiB is `414 uri_too_long`, a path or query parameter that is not UTF-8 once percent-decoded is `400 invalid_path` / `400 invalid_query`, and a field past its own limit (a CEL expression, a rule, routing) is `422 too_long`, `too_deep` or `too_many`, naming the field."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "users", description = "People in the directory"),
        (name = "devices", description = "Computers and phones"),
        (name = "enrollment", description = "Device enrollment tokens, enrollment and per-device credentials"),
        (name = "bindings", description = "Which users use which devices"),
        (name = "attributes", description = "The attribute schema"),
        (name = "groups", description = "Static and dynamic groups of users and devices"),
        (name = "access", description = "Resources, group bindings and effective access"),
        (name = "federation", description = "Identity providers for federated sign-in"),
        (name = "sign-in", description = "The signed-in user, sessions, local passwords"),
        (name = "imports", description = "Import runs from importer plugins: dry runs, the blast-radius brake, approval"),
        (name = "audit", description = "The audit log"),
        (name = "api-keys", description = "API keys and roles"),
        (name = "plugins", description = "WebAssembly plugins and their configured instances"),
        (name = "ops", description = "Health, metrics and backups"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "device_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A per-device credential (cohort_device_...) returned by enrollment",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "enrollment_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A device enrollment token (cohort_enroll_...) from POST /api/v1/device-enrollment-tokens",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A session token from POST /api/v1/me/token, or the session cookie (cohort_session; __Host-cohort_session when Cohort is served over https)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes with their OpenAPI descriptions.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::change_state))
        .routes(routes!(users::user_devices))
        .routes(routes!(users::bind_device, users::unbind_device))
        .routes(routes!(devices::list_devices, devices::create_device))
        .routes(routes!(
            devices::get_device,
            devices::update_device,
            devices::delete_device
        ))
        .routes(routes!(devices::check_in))
        .routes(routes!(devices::device_users))
        .routes(routes!(enrollment::enroll))
        .routes(routes!(
            enrollment::get_credential,
            enrollment::revoke_credential
        ))
        .routes(routes!(enrollment::rotate_credential))
        .routes(routes!(enrollment::list_tokens, enrollment::create_token))
        .routes(routes!(enrollment::get_token, enrollment::revoke_token))
        .routes(routes!(
            attributes::list_attributes,
            attributes::create_attribute
        ))
        .routes(routes!(
            attributes::get_attribute,
            attributes::update_attribute,
            attributes::delete_attribute
        ))
        .routes(routes!(groups::list_groups, groups::create_group))
        .routes(routes!(groups::recompute, groups::list_recomputes))
        .routes(routes!(groups::get_recompute))
        .routes(routes!(groups::preview))
        .routes(routes!(groups::explain))
        .routes(routes!(
            groups::get_group,
            groups::update_group,
            groups::delete_group
        ))
        .routes(routes!(groups::copy_group))
        .routes(routes!(groups::list_members, groups::add_member))
        .routes(routes!(groups::remove_member))
        .routes(routes!(groups::list_exemptions, groups::set_exemption))
        .routes(routes!(groups::remove_exemption))
        .routes(routes!(groups::list_suggestions))
        .routes(routes!(groups::accept_suggestions))
        .routes(routes!(groups::reject_suggestions))
        .routes(routes!(groups::user_groups))
        .routes(routes!(groups::device_groups))
        .routes(routes!(
            resources::list_resources,
            resources::create_resource
        ))
        .routes(routes!(
            resources::get_resource,
            resources::update_resource,
            resources::delete_resource
        ))
        .routes(routes!(
            resources::resource_groups,
            resources::bind_resource
        ))
        .routes(routes!(resources::unbind_resource))
        .routes(routes!(resources::grantees))
        .routes(routes!(resources::bound_groups, resources::bind_groups))
        .routes(routes!(resources::unbind_groups))
        .routes(routes!(resources::user_access))
        .routes(routes!(resources::device_access))
        .routes(routes!(audit::query))
        .routes(routes!(audit::export))
        .routes(routes!(api_keys::list_keys, api_keys::create_key))
        .routes(routes!(api_keys::revoke_key))
        .routes(routes!(api_keys::whoami))
        .routes(routes!(plugins::list_plugins, plugins::install_plugin))
        .routes(routes!(
            plugins::get_plugin,
            plugins::upgrade_plugin,
            plugins::remove_plugin
        ))
        .routes(routes!(plugins::roll_back_plugin))
        .routes(routes!(plugins::enable_plugin))
        .routes(routes!(plugins::disable_plugin))
        .routes(routes!(plugins::evaluate))
        .routes(routes!(plugins::list_instances, plugins::create_instance))
        .routes(routes!(
            plugins::get_instance,
            plugins::update_instance,
            plugins::delete_instance
        ))
        .routes(routes!(plugins::preview_instance))
        .routes(routes!(idps::list_idps, idps::create_idp))
        .routes(routes!(idps::get_idp, idps::update_idp, idps::delete_idp))
        .routes(routes!(idps::get_routing, idps::put_routing))
        .routes(routes!(idps::simulate))
        .routes(routes!(imports::list_runs, imports::start_run))
        .routes(routes!(imports::get_run))
        .routes(routes!(imports::run_changes))
        .routes(routes!(imports::approve_run))
        .routes(routes!(imports::list_schedules, imports::create_schedule))
        .routes(routes!(imports::delete_schedule))
        .routes(routes!(me::me))
        .routes(routes!(me::token))
        .routes(routes!(me::sign_out))
        .routes(routes!(me::set_password, me::clear_password))
        .routes(routes!(me::activation_link))
        .routes(routes!(me::list_session_keys))
        .routes(routes!(me::rotate_session_key))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::backup))
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi_json() -> String {
    let (_, mut api) = api_routes().split_for_parts();
    openapi::document_shared_errors(&mut api);
    api.to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// The whole HTTP application over `state`. Tests can drive it without a
/// socket.
pub fn router(state: AppState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    routes
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/sign-in/password", post(sign_in::password))
        .route("/sign-in/callback", get(sign_in::callback))
        .route("/sign-in/done", get(sign_in::done))
        .route("/sign-out", post(sign_in::sign_out))
        .route(
            "/activate",
            get(sign_in::activate_form).post(sign_in::activate),
        )
        .route("/.well-known/jwks.json", get(me::jwks))
        .nest("/scim/v2", scim::routes())
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not support that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn(guard_target))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Refuses a request target that no handler should have to look at: longer
/// than [`crate::limits::MAX_URI_BYTES`] (414), or with a path segment or
/// query parameter that does not percent-decode to UTF-8 (400). Without
/// this, extractors would replace invalid bytes with U+FFFD and a lookup
/// would quietly search for something the client never sent. SCIM paths
/// get SCIM error bodies.
async fn guard_target(req: Request, next: Next) -> Response {
    let scim = req.uri().path().starts_with("/scim/");
    let refuse = |e: ApiError, scim_type: &'static str| -> Response {
        if scim {
            crate::provisioning::scim::ScimError {
                status: e.status().as_u16(),
                scim_type: (e.status() == StatusCode::BAD_REQUEST).then_some(scim_type),
                detail: e.message().to_string(),
            }
            .into_response()
        } else {
            e.into_response()
        }
    };
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > crate::limits::MAX_URI_BYTES {
        let limit = crate::limits::MAX_URI_BYTES;
        return refuse(
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("the request target is {target_len} bytes long; {limit} is the limit"),
            ),
            "invalidValue",
        );
    }
    if let Err(e) = extract::check_target(req.uri().path(), req.uri().query()) {
        let scim_type = if e.field() == Some("filter") {
            "invalidFilter"
        } else {
            "invalidValue"
        };
        return refuse(e, scim_type);
    }
    next.run(req).await
}

/// Longest request id accepted from a client; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// Assigns the request id, works out where the request comes from (client
/// address and user agent, for the audit log), logs the request and records
/// its metrics.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = crate::clock::Stopwatch::start();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.chars().all(|c| c.is_ascii_graphic())
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().clone();
    // No connection info when the router is driven in process (tests,
    // benchmarks): then there is no address, which is not an error.
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client = state.trusted_proxies.client_address(peer, req.headers());
    let origin = Origin::new(
        request_id.clone(),
        client,
        req.headers().get(header::USER_AGENT).map(|v| v.as_bytes()),
    );
    req.extensions_mut().insert(origin);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut resp = next.run(req).await.into_response();
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    state
        .metrics
        .record(method.as_str(), &route, status, elapsed);
    tracing::debug!(
        request_id = %request_id,
        client = ?client,
        method = %method,
        route = %route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::clock::SystemClock;
    use crate::config::{Config, Secret};

    /// Tests and benchmarks drive the router without a socket, so there is
    /// no connection info: the request works, and its events have no address.
    #[tokio::test]
    async fn without_connection_info_requests_work_and_record_no_address() {
        const KEY: &str = "in-process-admin-key-0123456789";
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            bootstrap_admin_key: Some(Secret::new(KEY)),
            ..Config::default()
        };
        config.plugins.cache_dir = Some(dir.path().join("cache"));
        config.plugins.max_instances = 4;
        let store =
            crate::server::open_store(&config.data_dir, &config.storage.open_options()).unwrap();
        let app = crate::server::build(&config, store, Arc::new(SystemClock)).unwrap();
        let router = super::router(app.state);
        let call = |req: Request<Body>| {
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await.unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (
                    status,
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                )
            }
        };
        let (status, user) = call(
            Request::post("/api/v1/users")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .header("user-agent", "in-process/1")
                .header("x-forwarded-for", "203.0.113.9")
                .body(Body::from(
                    r#"{"username":"ada","email":"ada@example.com"}"#,
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{user}");
        let (status, page) = call(
            Request::get("/api/v1/audit?action=user.create")
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let event = &page["items"][0];
        assert_eq!(event["resource_id"], user["id"]);
        assert!(event["client_address"].is_null(), "{event}");
        assert_eq!(event["user_agent"], "in-process/1");
    }

    /// The committed `docs/openapi.json` is what API clients and reviewers
    /// read; it must not drift from the code. Regenerate with
    /// `UPDATE_OPENAPI=1 cargo test -p cohort openapi`.
    #[test]
    fn committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let current = format!("{}\n", super::openapi_json());
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &current).expect("writing docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == current,
            "docs/openapi.json is out of date: run UPDATE_OPENAPI=1 cargo test -p cohort openapi"
        );
    }
}
