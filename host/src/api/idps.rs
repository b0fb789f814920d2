//! `/api/v1/idps`: identity providers for federated sign-in. Parse,
//! authorize, call the federation service.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, MergePatch, etag, if_match, versioned};
use super::extract::{Authorized, needs};
use super::params::{IdPath, kind};
use super::{AppState, allow};
use crate::federation::idps::Simulation;
use crate::federation::{Idp, IdpInput, Routing, RoutingInput};

fn idp_response(status: StatusCode, i: Idp) -> Response {
    versioned(status, i.version, "/api/v1/idps", i.id, i)
}

/// All identity providers.
#[derive(Serialize, ToSchema)]
pub struct IdpList {
    /// By name.
    pub items: Vec<Idp>,
}

/// List identity providers.
#[utoipa::path(
    get, path = "/api/v1/idps", tag = "federation",
    responses((status = 200, body = IdpList)),
    security(("api_key" = []))
)]
pub async fn list_idps(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<IdpList>, ApiError> {
    let read = allow(p.read(), &p, "read identity providers")?;
    Ok(Json(IdpList {
        items: s.federation.list(&read)?,
    }))
}

/// Create an identity provider. Its connector instance holds the provider
/// settings and the client secret; the provider's discovery document and
/// keys are fetched now, and any problem is a 422.
#[utoipa::path(
    post, path = "/api/v1/idps", tag = "federation",
    request_body = IdpInput,
    responses((status = 201, body = Idp), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_idp(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    ApiJson(input): ApiJson<IdpInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "configure identity providers")?;
    let idp = s.federation.create(&cap, input).await?;
    Ok(idp_response(StatusCode::CREATED, idp))
}

/// Get an identity provider.
#[utoipa::path(
    get, path = "/api/v1/idps/{id}", tag = "federation",
    params(("id" = String, Path, description = "IdP id")),
    responses((status = 200, body = Idp), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_idp(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Idp>,
) -> Result<Response, ApiError> {
    let read = allow(p.read(), &p, "read identity providers")?;
    let idp = s.federation.get(&read, &id)?;
    Ok(idp_response(StatusCode::OK, idp))
}

/// Change an identity provider with a JSON merge patch. Discovery is
/// checked again when the connector instance changes or the IdP is enabled.
#[utoipa::path(
    patch, path = "/api/v1/idps/{id}", tag = "federation",
    params(("id" = String, Path, description = "IdP id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body(content = Object, description = "Merge patch over the fields of IdpInput", content_type = "application/merge-patch+json"),
    responses((status = 200, body = Idp), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn update_idp(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    IdPath(id, _): IdPath<kind::Idp>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "configure identity providers")?;
    let idp = s
        .federation
        .update(&cap, &id, &patch, if_match(&headers)?)
        .await?;
    Ok(idp_response(StatusCode::OK, idp))
}

/// Delete an identity provider (its connector instance stays).
#[utoipa::path(
    delete, path = "/api/v1/idps/{id}", tag = "federation",
    params(("id" = String, Path, description = "IdP id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_idp(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    IdPath(id, _): IdPath<kind::Idp>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "configure identity providers")?;
    s.federation.delete(&cap, &id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The sign-in routing: ordered rules and a default.
#[utoipa::path(
    get, path = "/api/v1/sign-in/routing", tag = "federation",
    responses((status = 200, body = Routing)),
    security(("api_key" = []))
)]
pub async fn get_routing(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Response, ApiError> {
    let read = allow(p.read(), &p, "read the sign-in routing")?;
    let r = s.federation.routing(&read)?;
    Ok(routing_response(r))
}

/// Replace the sign-in routing as a whole.
#[utoipa::path(
    put, path = "/api/v1/sign-in/routing", tag = "federation",
    params(("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body = RoutingInput,
    responses((status = 200, body = Routing), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn put_routing(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManagePlugins>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<RoutingInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_plugins(), &p, "change the sign-in routing")?;
    let r = s
        .federation
        .set_routing(&cap, input, if_match(&headers)?)
        .await?;
    Ok(routing_response(r))
}

fn routing_response(r: Routing) -> Response {
    let tag = etag(r.version);
    let mut resp = Json(r).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

/// What to simulate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateInput {
    /// The username or email a user would type.
    pub identifier: String,
    /// Upstream claims, as the IdP would send them in the ID token; when
    /// given and the user is routed to an IdP, the answer also says what
    /// the connector maps and which user that matches.
    #[schema(value_type = Option<Object>)]
    pub claims: Option<Value>,
}

/// Where a user would be sent to sign in, and why. Nothing is signed in.
#[utoipa::path(
    post, path = "/api/v1/sign-in/simulate", tag = "federation",
    request_body = SimulateInput,
    responses((status = 200, body = Simulation), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn simulate(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    ApiJson(input): ApiJson<SimulateInput>,
) -> Result<Json<Simulation>, ApiError> {
    let read = allow(p.read(), &p, "simulate sign-ins")?;
    Ok(Json(
        s.federation
            .simulate(&read, &input.identifier, input.claims)
            .await?,
    ))
}
