//! `/scim/v2`: the SCIM 2.0 protocol surface. SCIM has its own media type
//! (`application/scim+json`), error schema and discovery, so it is routed
//! apart from the admin API and its OpenAPI document. Handlers parse,
//! authenticate the SCIM client, call `provisioning::scim`, and render.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Origin;
use crate::auth::{Principal, Provision, Provisioner};
use crate::provisioning::scim::{Kind, ListParams, ScimError, discovery, resource};

const MEDIA: &str = "application/scim+json";

fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA));
    resp
}

/// A SCIM error in SCIM's own error schema (RFC 7644 §3.12), with SCIM's
/// media type: what every SCIM handler, and the router's guards in front of
/// `/scim/v2`, answer with when they refuse.
impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        scim_json(status, &self.body())
    }
}

/// A resource with its ETag (and Location when created).
fn resource_response(status: StatusCode, body: Value, etag: &str) -> Response {
    let location = body["meta"]["location"].as_str().map(str::to_string);
    let mut resp = scim_json(status, &body);
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok())
    {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

/// The SCIM client: an API key with the `scim` role, checked from the
/// headers alone, before any handler reads a body. axum runs extractors in
/// order, so putting this before the body means a caller without a SCIM key
/// is refused at once instead of being allowed to make the server buffer a
/// whole body first. It yields the capability it checked, so that handlers
/// do not check it again.
struct ScimClient(Provisioner);

impl ScimClient {
    /// The provisioning capability, checked when the request arrived.
    fn cap(&self) -> Provision<'_> {
        self.0.provision()
    }
}

fn forbidden(principal: &Principal) -> ScimError {
    ScimError {
        status: 403,
        scim_type: None,
        detail: format!(
            "a {} key cannot use SCIM; create a key with the scim role",
            principal.role().as_str()
        ),
    }
}

impl FromRequestParts<AppState> for ScimClient {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ScimError> {
        let Ok(origin) = Origin::from_request_parts(parts, s).await;
        client(s, &parts.headers, &origin).map(ScimClient)
    }
}

fn client(s: &AppState, headers: &HeaderMap, origin: &Origin) -> Result<Provisioner, ScimError> {
    let unauthorized = |d: &str| ScimError {
        status: 401,
        scim_type: None,
        detail: d.to_string(),
    };
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| unauthorized("send Authorization: Bearer <key of the scim role>"))?;
    let principal = s
        .keys
        .authenticate(key, origin)
        .map_err(ScimError::from)?
        .ok_or_else(|| unauthorized("invalid key"))?;
    principal.provisioner().ok_or_else(|| forbidden(&principal))
}

/// The request body as JSON; SCIM-shaped errors for bad or oversized bodies.
fn body(raw: Result<Bytes, BytesRejection>) -> Result<Value, ScimError> {
    let bytes = raw.map_err(|e| ScimError {
        status: e.status().as_u16(),
        scim_type: (e.status() == StatusCode::PAYLOAD_TOO_LARGE).then_some("tooLarge"),
        detail: e.body_text(),
    })?;
    // Refused before parsing, so that the parser never recurses that deep.
    crate::limits::json_depth(&bytes, crate::limits::MAX_JSON_DEPTH).map_err(|e| {
        ScimError::invalid_syntax(format!(
            "the body nests objects and arrays more than {} levels deep (at byte {}); {} is the limit",
            e.limit, e.offset, e.limit
        ))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

fn list_params(q: &[(String, String)]) -> Result<ListParams, ScimError> {
    let mut p = ListParams::default();
    let number = |k: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| ScimError::invalid_value(format!("{k} must be an integer")))
    };
    for (k, v) in q {
        match k.as_str() {
            "filter" => p.filter = Some(v.clone()),
            "startIndex" => p.start_index = Some(number(k, v)?.max(1) as usize),
            "count" => p.count = Some(number(k, v)?.max(0) as usize),
            "sortBy" => p.sort_by = Some(v.clone()),
            "sortOrder" => p.descending = v.eq_ignore_ascii_case("descending"),
            "attributes" => p.attributes = split(v),
            "excludedAttributes" => p.excluded = split(v),
            _ => {}
        }
    }
    Ok(p)
}

fn split(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A `/.search` body as list parameters.
fn search_params(b: &Value) -> Result<ListParams, ScimError> {
    let mut q = Vec::new();
    if let Some(o) = b.as_object() {
        for (k, v) in o {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                _ => continue,
            };
            q.push((k.clone(), text));
        }
    }
    list_params(&q)
}

async fn service_provider_config(State(s): State<AppState>) -> Response {
    let base = s.scim.base();
    scim_json(
        StatusCode::OK,
        &discovery::service_provider_config(
            &base,
            s.scim.settings().accept_passwords,
            s.scim.settings().max_payload,
        ),
    )
}

fn list_of(items: Vec<Value>) -> Value {
    json!({
        "schemas": [resource::LIST],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

fn all_resource_types(s: &AppState) -> Result<Vec<Value>, ScimError> {
    let customs = !s.scim.custom_attributes()?.is_empty();
    Ok(discovery::resource_types(&s.scim.base(), customs))
}

fn all_schemas(s: &AppState) -> Result<Vec<Value>, ScimError> {
    Ok(discovery::schemas(
        &s.scim.base(),
        s.scim.settings().accept_passwords,
        &s.scim.custom_attributes()?,
    ))
}

async fn resource_types(State(s): State<AppState>) -> Result<Response, ScimError> {
    Ok(scim_json(StatusCode::OK, &list_of(all_resource_types(&s)?)))
}

/// The discovery entry with this `id`; `what` names the list for the 404.
fn find_by_id(all: Vec<Value>, id: &str, what: &str) -> Result<Response, ScimError> {
    all.into_iter()
        .find(|r| r["id"] == id)
        .map(|r| scim_json(StatusCode::OK, &r))
        .ok_or_else(|| ScimError::not_found(format!("no {what} {id}")))
}

async fn resource_type(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    find_by_id(all_resource_types(&s)?, &id, "resource type")
}

async fn schemas(State(s): State<AppState>) -> Result<Response, ScimError> {
    Ok(scim_json(StatusCode::OK, &list_of(all_schemas(&s)?)))
}

async fn schema(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ScimError> {
    find_by_id(all_schemas(&s)?, &id, "schema")
}

/// The resource kind a path names; anything else is a SCIM 404.
fn kind(segment: &str) -> Result<Kind, ScimError> {
    Kind::parse(segment).ok_or_else(|| ScimError::not_found("no such SCIM endpoint"))
}

/// `If-Match` as sent.
fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

async fn list(
    State(s): State<AppState>,
    client: ScimClient,
    Path(resource): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let cap = client.cap();
    let params = list_params(&q)?;
    Ok(scim_json(
        StatusCode::OK,
        &s.scim.list(&cap, kind, &params).await?,
    ))
}

async fn search(
    State(s): State<AppState>,
    client: ScimClient,
    Path(resource): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let cap = client.cap();
    let params = search_params(&body(raw)?)?;
    Ok(scim_json(
        StatusCode::OK,
        &s.scim.list(&cap, kind, &params).await?,
    ))
}

async fn search_all(
    State(s): State<AppState>,
    client: ScimClient,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let cap = client.cap();
    let params = search_params(&body(raw)?)?;
    Ok(scim_json(
        StatusCode::OK,
        &s.scim.search_all(&cap, &params).await?,
    ))
}

async fn create(
    State(s): State<AppState>,
    client: ScimClient,
    Path(resource): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let cap = client.cap();
    let (r, etag) = s.scim.create(&cap, kind, &body(raw)?).await?;
    Ok(resource_response(StatusCode::CREATED, r, &etag))
}

async fn get_one(
    State(s): State<AppState>,
    client: ScimClient,
    headers: HeaderMap,
    Path((resource, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let cap = client.cap();
    let (r, etag) = s.scim.get(&cap, kind, &id)?;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if unchanged {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    let params = list_params(&q)?;
    let r = resource::project(r, &params.attributes, &params.excluded);
    Ok(resource_response(StatusCode::OK, r, &etag))
}

/// PUT (replace) and PATCH: the same request, but for what the body means.
async fn write(
    State(s): State<AppState>,
    client: ScimClient,
    method: Method,
    headers: HeaderMap,
    Path((resource, id)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let cap = client.cap();
    let body = body(raw)?;
    let if_match = if_match(&headers);
    let (r, etag) = match method {
        Method::PATCH => {
            s.scim
                .patch(&cap, kind, &id, &body, if_match.as_deref())
                .await?
        }
        Method::PUT => {
            s.scim
                .replace(&cap, kind, &id, &body, if_match.as_deref())
                .await?
        }
        // Only PUT and PATCH are routed here; anything else is refused
        // rather than taken for a replace.
        _ => return Err(ScimError::method_not_allowed()),
    };
    Ok(resource_response(StatusCode::OK, r, &etag))
}

async fn delete(
    State(s): State<AppState>,
    client: ScimClient,
    headers: HeaderMap,
    Path((resource, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let cap = client.cap();
    s.scim
        .delete(&cap, kind, &id, if_match(&headers).as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn bulk(
    State(s): State<AppState>,
    client: ScimClient,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ScimError> {
    let cap = client.cap();
    let out = s.scim.bulk(&cap, &body(raw)?).await?;
    Ok(scim_json(StatusCode::OK, &out))
}

async fn unknown() -> ScimError {
    ScimError::not_found("no such SCIM endpoint")
}

/// The `/scim/v2` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/.search", post(search_all))
        .route("/{resource}", get(list).post(create))
        .route("/{resource}/.search", post(search))
        .route(
            "/{resource}/{id}",
            get(get_one).put(write).patch(write).delete(delete),
        )
        .route("/Bulk", post(bulk))
        .fallback(unknown)
}
