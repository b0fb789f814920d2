//! SCIM Groups: Cohort's static user groups. Dynamic groups follow their
//! rules and built-in groups are Cohort's own, so neither is a SCIM
//! resource. A group arrives whole (create, PUT, or PATCH applied to its
//! current form) and is written in one transaction: its name, and exactly
//! the members given, as manual members.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::filter::{self, member};
use super::{Scim, ScimError};
use crate::auth::Provision;
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::groups::Group;
use crate::groups::read as groups;

/// The core Group schema.
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// Group id → `GroupExtra` JSON.
const SCIM_GROUPS: cohort_storage::Keyspace = cohort_storage::Keyspace::new("scim_groups");

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct GroupExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
}

/// A group's ETag: its version and its members, since members change
/// without changing the group's own version.
fn etag(group: &Group, members: &BTreeSet<Uuid>) -> String {
    let mut h = Sha256::new();
    h.update(group.version.to_le_bytes());
    for m in members {
        h.update(m.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

impl Scim {
    fn scim_group(&self, id: &str) -> Result<Group, ScimError> {
        let not_found = || ScimError::not_found(format!("Group {id} not found"));
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        let g: Group = groups::group(&self.store, &id)?.ok_or_else(not_found)?;
        if g.is_dynamic() || g.built_in || g.subject != SubjectKind::User {
            return Err(not_found());
        }
        Ok(g)
    }

    fn members_of(&self, group: &Uuid) -> Result<BTreeSet<Uuid>, ScimError> {
        Ok(groups::manual_members(&self.store, group)?
            .into_iter()
            .collect())
    }

    /// A group as a SCIM resource, and its ETag.
    fn render_group(&self, g: &Group) -> Result<(Value, String), ScimError> {
        let members = self.members_of(&g.id)?;
        let base = self.base();
        let mut list = Vec::with_capacity(members.len());
        for m in &members {
            list.push(json!({"value": m.to_string(), "$ref": format!("{base}/Users/{m}"), "type": "User"}));
        }
        let extra: Option<GroupExtra> = self.store.get_json(SCIM_GROUPS, g.id.as_bytes())?;
        let tag = etag(g, &members);
        let mut out = Map::new();
        out.insert("schemas".into(), json!([GROUP]));
        out.insert("id".into(), json!(g.id.to_string()));
        if let Some(e) = extra.and_then(|e| e.external_id) {
            out.insert("externalId".into(), json!(e));
        }
        out.insert("displayName".into(), json!(g.name));
        out.insert("members".into(), Value::Array(list));
        out.insert(
            "meta".into(),
            json!({
                "resourceType": "Group",
                "created": g.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "lastModified": g.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "location": format!("{base}/Groups/{}", g.id),
                "version": tag,
            }),
        );
        Ok((Value::Object(out), tag))
    }

    /// One group, and its ETag.
    pub fn get_group(&self, _: &Provision<'_>, id: &str) -> Result<(Value, String), ScimError> {
        let g = self.scim_group(id)?;
        self.render_group(&g)
    }

    /// The static user groups matching `filter`, as SCIM resources.
    pub(super) fn matching_groups(
        &self,
        filter: Option<&filter::Filter>,
    ) -> Result<Vec<Value>, ScimError> {
        let mut matched = Vec::new();
        groups::for_each_group(&self.store, |g| {
            if g.is_dynamic() || g.built_in || g.subject != SubjectKind::User {
                return Ok(());
            }
            let (r, _) = self.render_group(&g)?;
            if filter.is_none_or(|f| filter::matches(f, &r)) {
                matched.push(r);
            }
            Ok::<_, ScimError>(())
        })?;
        Ok(matched)
    }

    /// Creates a group.
    pub async fn create_group(
        &self,
        cap: &Provision<'_>,
        body: &Value,
    ) -> Result<(Value, String), ScimError> {
        let (name, members, extra) = read_group(body)?;
        let view = self
            .groups
            .put_static(&cap.manage(), None, name, members, None)
            .await
            .map_err(group_error)?;
        self.put_group_extra(&view.group.id, &extra).await?;
        self.render_group(&view.group)
    }

    /// Replaces a group (PUT).
    pub async fn replace_group(
        &self,
        cap: &Provision<'_>,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(Value, String), ScimError> {
        let g = self.scim_group(id)?;
        self.check_group_etag(&g, if_match)?;
        let (name, members, extra) = read_group(body)?;
        self.write_group(cap, &g, name, members, extra).await
    }

    /// Applies a PATCH to a group (members added, removed, replaced; the
    /// name replaced).
    pub async fn patch_group(
        &self,
        cap: &Provision<'_>,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(Value, String), ScimError> {
        let g = self.scim_group(id)?;
        self.check_group_etag(&g, if_match)?;
        let (mut current, _) = self.render_group(&g)?;
        super::patch::apply(&mut current, body)?;
        let (name, members, extra) = read_group(&current)?;
        self.write_group(cap, &g, name, members, extra).await
    }

    async fn write_group(
        &self,
        cap: &Provision<'_>,
        g: &Group,
        name: String,
        members: BTreeSet<Uuid>,
        extra: GroupExtra,
    ) -> Result<(Value, String), ScimError> {
        let view = self
            .groups
            .put_static(&cap.manage(), Some(g.id), name, members, None)
            .await
            .map_err(group_error)?;
        self.put_group_extra(&g.id, &extra).await?;
        self.render_group(&view.group)
    }

    /// Deletes a group (groups have no suspended state).
    pub async fn delete_group(
        &self,
        cap: &Provision<'_>,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        let g = self.scim_group(id)?;
        self.check_group_etag(&g, if_match)?;
        self.groups
            .delete_group(&cap.manage(), g.id, None)
            .await
            .map_err(group_error)?;
        self.store
            .write(|txn| {
                txn.delete(SCIM_GROUPS, g.id.as_bytes());
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(())
    }

    fn check_group_etag(&self, g: &Group, if_match: Option<&str>) -> Result<(), ScimError> {
        let Some(want) = if_match.map(str::trim).filter(|w| *w != "*") else {
            return Ok(());
        };
        let current = etag(g, &self.members_of(&g.id)?);
        if want.trim_start_matches("W/") != current.trim_start_matches("W/") {
            return Err(ScimError::precondition(format!(
                "the group has changed; its ETag is now {current}"
            )));
        }
        Ok(())
    }

    async fn put_group_extra(&self, id: &Uuid, extra: &GroupExtra) -> Result<(), ScimError> {
        self.store
            .write(|txn| {
                if *extra == GroupExtra::default() {
                    txn.delete(SCIM_GROUPS, id.as_bytes());
                } else {
                    txn.put_json(SCIM_GROUPS, id.as_bytes(), extra)?;
                }
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(())
    }
}

/// A group body's name, members and extra data.
fn read_group(body: &Value) -> Result<(String, BTreeSet<Uuid>, GroupExtra), ScimError> {
    if !body.is_object() {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    }
    let name = member(body, "displayName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?
        .to_string();
    let mut members = BTreeSet::new();
    match member(body, "members") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let value = member(item, "value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ScimError::invalid_value(format!("members[{i}].value is required"))
                    })?;
                // `type` and `$ref` are informative: the value names the
                // user, and must be one.
                let id = Uuid::parse_str(value).map_err(|_| {
                    ScimError::invalid_value(format!(
                        "members[{i}].value {value:?} is not a user id"
                    ))
                })?;
                members.insert(id);
            }
        }
        Some(_) => return Err(ScimError::invalid_value("members must be a list")),
    }
    let external_id = member(body, "externalId")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(String::from);
    Ok((name, members, GroupExtra { external_id }))
}

/// Group errors in SCIM terms: a taken name is `uniqueness`, an unknown
/// member `invalidValue`.
fn group_error(e: DomainError) -> ScimError {
    match e {
        DomainError::Conflict {
            code: "group_name_taken",
            message,
            ..
        } => ScimError {
            status: 409,
            scim_type: Some("uniqueness"),
            detail: message,
        },
        DomainError::Invalid { field, message } if field == "subject_id" => {
            ScimError::invalid_value(format!("members: {message}"))
        }
        other => other.into(),
    }
}
