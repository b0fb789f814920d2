//! `/api/v1/groups`: groups, their members, exemptions and suggestions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, MergePatch, if_match, versioned};
use super::extract::{Authorized, needs};
use super::params::{IdPair, IdPath, Kind, Paging, kind, parse_id};
use super::{AppState, allow};
use crate::auth::Principal;
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::groups::model::Exemption;
use crate::groups::{
    ExemptionInput, Explanation, GroupInput, GroupType, GroupView, Member, Membership, Preview,
    PreviewInput, RecomputeRun, Suggestion,
};
use crate::page::Page;

fn group_response(status: StatusCode, view: GroupView) -> Response {
    versioned(
        status,
        view.group.version,
        "/api/v1/groups",
        view.group.id,
        view,
    )
}

/// List groups.
#[utoipa::path(
    get, path = "/api/v1/groups", tag = "groups",
    params(
        Paging,
        ("subject" = Option<SubjectKind>, Query, description = "`user` or `device`"),
        ("type" = Option<crate::groups::GroupType>, Query, description = "`static` or `dynamic`"),
    ),
    responses((status = 200, body = Page<GroupView>), (status = 400, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_groups(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    paging: Paging,
) -> Result<Json<Page<GroupView>>, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    let subject = match paging.get("subject") {
        None => None,
        Some(v) => Some(
            SubjectKind::parse(v)
                .ok_or_else(|| DomainError::bad_query("subject", "must be user or device"))?,
        ),
    };
    let group_type = match paging.get("type") {
        None => None,
        Some("static") => Some(GroupType::Static),
        Some("dynamic") => Some(GroupType::Dynamic),
        Some(_) => {
            return Err(DomainError::bad_query("type", "must be static or dynamic").into());
        }
    };
    Ok(Json(s.groups.list_groups(
        &read,
        subject,
        group_type,
        &paging.page,
    )?))
}

/// Create a group. A dynamic group's rule is checked completely and its
/// members computed before the answer.
#[utoipa::path(
    post, path = "/api/v1/groups", tag = "groups",
    request_body = GroupInput,
    responses((status = 201, body = GroupView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create_group(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    ApiJson(input): ApiJson<GroupInput>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "create groups")?;
    let view = s.groups.create_group(&cap, input).await?;
    Ok(group_response(StatusCode::CREATED, view))
}

/// Get a group with its status.
#[utoipa::path(
    get, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_group(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Group>,
) -> Result<Response, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    let view = s.groups.get_group(&read, &id)?;
    Ok(group_response(StatusCode::OK, view))
}

/// Change a group with a JSON merge patch.
#[utoipa::path(
    patch, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    request_body(content = Object, description = "Merge patch over the fields of GroupInput", content_type = "application/merge-patch+json"),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn update_group(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change groups")?;
    let view = s
        .groups
        .update_group(&cap, id, patch, if_match(&headers)?)
        .await?;
    Ok(group_response(StatusCode::OK, view))
}

/// Delete a group with its memberships.
#[utoipa::path(
    delete, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "Group id"), ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_group(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "delete groups")?;
    s.groups.delete_group(&cap, id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of a copy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The copy's name.
    pub name: String,
}

/// Copy a group: rule, exclusion, settings, exemptions and manual members.
#[utoipa::path(
    post, path = "/api/v1/groups/{id}/copy", tag = "groups",
    params(("id" = String, Path, description = "Group to copy")),
    request_body = CopyRequest,
    responses((status = 201, body = GroupView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn copy_group(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    ApiJson(body): ApiJson<CopyRequest>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "create groups")?;
    let view = s.groups.copy_group(&cap, id, body.name).await?;
    Ok(group_response(StatusCode::CREATED, view))
}

/// List a group's members.
#[utoipa::path(
    get, path = "/api/v1/groups/{id}/members", tag = "groups",
    params(
        ("id" = String, Path, description = "Group id"),
        Paging,
    ),
    responses((status = 200, body = Page<Member>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_members(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Group>,
    Paging { page, .. }: Paging,
) -> Result<Json<Page<Member>>, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    Ok(Json(s.groups.list_members(&read, &id, &page)?))
}

/// The body naming a subject.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    /// A user or device id.
    pub subject_id: Uuid,
}

/// Add a member to a static group.
#[utoipa::path(
    post, path = "/api/v1/groups/{id}/members", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    request_body = SubjectRef,
    responses((status = 200, body = Member), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn add_member(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    ApiJson(body): ApiJson<SubjectRef>,
) -> Result<Json<Member>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change group members")?;
    Ok(Json(s.groups.add_member(&cap, id, body.subject_id).await?))
}

/// Remove a member added by hand.
#[utoipa::path(
    delete, path = "/api/v1/groups/{id}/members/{subject}", tag = "groups",
    params(("id" = String, Path, description = "Group id"), ("subject" = String, Path, description = "User or device id")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn remove_member(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPair(id, subject, _): IdPair<kind::Group, kind::Subject>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change group members")?;
    s.groups.remove_member(&cap, id, subject).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a dynamic group's exemptions.
#[utoipa::path(
    get, path = "/api/v1/groups/{id}/exemptions", tag = "groups",
    params(
        ("id" = String, Path, description = "Group id"),
        Paging,
    ),
    responses((status = 200, body = Page<Exemption>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_exemptions(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Group>,
    Paging { page, .. }: Paging,
) -> Result<Json<Page<Exemption>>, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    Ok(Json(s.groups.list_exemptions(&read, &id, &page)?))
}

/// Set an exemption ("always" or "never" a member); it applies before the
/// answer.
#[utoipa::path(
    post, path = "/api/v1/groups/{id}/exemptions", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    request_body = ExemptionInput,
    responses((status = 200, body = Exemption), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn set_exemption(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    ApiJson(body): ApiJson<ExemptionInput>,
) -> Result<Json<Exemption>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change group exemptions")?;
    Ok(Json(s.groups.set_exemption(&cap, id, body).await?))
}

/// Remove an exemption.
#[utoipa::path(
    delete, path = "/api/v1/groups/{id}/exemptions/{subject}", tag = "groups",
    params(("id" = String, Path, description = "Group id"), ("subject" = String, Path, description = "User or device id")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn remove_exemption(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPair(id, subject, _): IdPair<kind::Group, kind::Subject>,
) -> Result<StatusCode, ApiError> {
    let cap = allow(p.manage_directory(), &p, "change group exemptions")?;
    s.groups.remove_exemption(&cap, id, subject).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a review-mode group's suggestions.
#[utoipa::path(
    get, path = "/api/v1/groups/{id}/suggestions", tag = "groups",
    params(
        ("id" = String, Path, description = "Group id"),
        ("dismissed" = Option<bool>, Query, description = "List rejected suggestions instead of pending ones"),
        Paging,
    ),
    responses((status = 200, body = Page<Suggestion>), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_suggestions(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Group>,
    paging: Paging,
) -> Result<Json<Page<Suggestion>>, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    let dismissed = match paging.get("dismissed") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(DomainError::bad_query("dismissed", "must be true or false").into()),
    };
    Ok(Json(s.groups.list_suggestions(
        &read,
        &id,
        dismissed,
        &paging.page,
    )?))
}

/// Which suggestions to accept or reject.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuggestionDecision {
    /// The subjects whose suggestions to decide; all pending ones when absent.
    #[serde(default)]
    pub subject_ids: Option<Vec<Uuid>>,
}

/// How many suggestions were decided.
#[derive(Debug, Serialize, ToSchema)]
pub struct Decided {
    /// Suggestions accepted or rejected.
    pub decided: u64,
}

/// Accept suggestions: the memberships change, and groups depending on this
/// one follow, before the answer.
#[utoipa::path(
    post, path = "/api/v1/groups/{id}/suggestions/accept", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    request_body = SuggestionDecision,
    responses((status = 200, body = Decided), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn accept_suggestions(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    ApiJson(body): ApiJson<SuggestionDecision>,
) -> Result<Json<Decided>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "review group suggestions")?;
    let decided = s
        .groups
        .decide_suggestions(&cap, id, body.subject_ids, true)
        .await?;
    Ok(Json(Decided { decided }))
}

/// Reject suggestions: they are dismissed until the rule suggests something
/// else for the subject.
#[utoipa::path(
    post, path = "/api/v1/groups/{id}/suggestions/reject", tag = "groups",
    params(("id" = String, Path, description = "Group id")),
    request_body = SuggestionDecision,
    responses((status = 200, body = Decided), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn reject_suggestions(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
    IdPath(id, _): IdPath<kind::Group>,
    ApiJson(body): ApiJson<SuggestionDecision>,
) -> Result<Json<Decided>, ApiError> {
    let cap = allow(p.manage_directory(), &p, "review group suggestions")?;
    let decided = s
        .groups
        .decide_suggestions(&cap, id, body.subject_ids, false)
        .await?;
    Ok(Json(Decided { decided }))
}

/// Start a full recompute of every dynamic group (or get the one already
/// running). Answers at once with the run; follow it at its `Location`.
#[utoipa::path(
    post, path = "/api/v1/groups/recompute", tag = "groups",
    responses((status = 202, body = RecomputeRun)),
    security(("api_key" = []))
)]
pub async fn recompute(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::ManageDirectory>,
) -> Result<Response, ApiError> {
    let cap = allow(p.manage_directory(), &p, "recompute groups")?;
    use crate::auth::Mutation;
    let run = s.groups.start_recompute(cap.actor(), "api").await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        format!("/api/v1/groups/recompute/{}", run.id)
            .parse()
            .expect("location is ASCII"),
    );
    Ok((StatusCode::ACCEPTED, headers, Json(run)).into_response())
}

/// The latest full recomputes, newest first (the last 50 are kept).
#[utoipa::path(
    get, path = "/api/v1/groups/recompute", tag = "groups",
    responses((status = 200, body = Vec<RecomputeRun>)),
    security(("api_key" = []))
)]
pub async fn list_recomputes(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
) -> Result<Json<Vec<RecomputeRun>>, ApiError> {
    allow(p.read(), &p, "read groups")?;
    Ok(Json(s.groups.list_runs()?))
}

/// One full recompute: running, finished (with what it changed) or failed.
#[utoipa::path(
    get, path = "/api/v1/groups/recompute/{id}", tag = "groups",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RecomputeRun), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_recompute(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPath(id, _): IdPath<kind::Recompute>,
) -> Result<Json<RecomputeRun>, ApiError> {
    allow(p.read(), &p, "read groups")?;
    s.groups
        .get_run(&id)?
        .map(Json)
        .ok_or_else(|| DomainError::not_found("recompute", id).into())
}

/// A group a subject is in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectGroup {
    /// Group id.
    pub id: Uuid,
    /// Group name.
    pub name: String,
    /// How the subject is a member.
    #[serde(flatten)]
    pub membership: Membership,
}

/// The subject's groups. The id is parsed after the read check, so a caller
/// without read rights gets 403 whatever the id looks like.
fn subject_groups<K: Kind>(
    s: &AppState,
    p: &Principal,
    raw_id: &str,
) -> Result<Json<Vec<SubjectGroup>>, ApiError> {
    let read = allow(p.read(), p, "read groups")?;
    let id = parse_id::<K>(raw_id)?;
    let groups = s.groups.groups_of_subject(&read, &id)?;
    Ok(Json(
        groups
            .into_iter()
            .map(|(g, m)| SubjectGroup {
                id: g.id,
                name: g.name,
                membership: m,
            })
            .collect(),
    ))
}

/// The groups a user is in.
#[utoipa::path(
    get, path = "/api/v1/users/{id}/groups", tag = "groups",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = Vec<SubjectGroup>)),
    security(("api_key" = []))
)]
pub async fn user_groups(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<SubjectGroup>>, ApiError> {
    subject_groups::<kind::User>(&s, &p, &id)
}

/// The groups a device is in.
#[utoipa::path(
    get, path = "/api/v1/devices/{id}/groups", tag = "groups",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = Vec<SubjectGroup>)),
    security(("api_key" = []))
)]
pub async fn device_groups(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<SubjectGroup>>, ApiError> {
    subject_groups::<kind::Device>(&s, &p, &id)
}

/// Evaluate an unsaved rule over the whole directory: the members it would
/// have, and the difference with an existing group's members. Nothing is
/// written; any key that may read may call it.
#[utoipa::path(
    post, path = "/api/v1/groups/preview", tag = "groups",
    request_body = PreviewInput,
    responses((status = 200, body = Preview), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn preview(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    ApiJson(input): ApiJson<PreviewInput>,
) -> Result<Json<Preview>, ApiError> {
    let read = allow(p.read(), &p, "preview group rules")?;
    Ok(Json(s.groups.preview(&read, input).await?))
}

/// Why a user or device is, or is not, a member: condition by condition,
/// with exemptions, state scoping, referenced groups and related subjects.
#[utoipa::path(
    get, path = "/api/v1/groups/{id}/members/{subject}/explain", tag = "groups",
    params(("id" = String, Path, description = "Group id"), ("subject" = String, Path, description = "User or device id, member or not")),
    responses((status = 200, body = Explanation), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn explain(
    State(s): State<AppState>,
    Authorized(p, _): Authorized<needs::Read>,
    IdPair(id, subject, _): IdPair<kind::Group, kind::Subject>,
) -> Result<Json<Explanation>, ApiError> {
    let read = allow(p.read(), &p, "read groups")?;
    Ok(Json(s.groups.explain(&read, id, subject).await?))
}
