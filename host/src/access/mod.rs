//! Resources, what groups are bound to them, and the effective access that
//! follows: "what can this user reach, and through which groups?" and "who
//! can reach this resource, and why?".
//!
//! A resource is generic (a type such as `application`, `radius` or
//! `policy`, and a name); richer resource types come later. Groups bind to
//! resources, and user groups bind to device groups (the users of the one may
//! use the devices of the other). Access is never stored: it is read from the
//! bindings and the memberships the groups engine keeps current, so it
//! cannot go stale.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cohort_storage::{Keyspace, Store, WriteTxn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Record};
use crate::auth::{Actor, ManageDirectory, Mutation, Read};
use crate::clock::Clock;
use crate::directory::{SubjectKind, check_string, decode_patch};
use crate::error::DomainError;
use crate::groups::Group;
use crate::groups::read as groups;
use crate::id_pair::key as pair;
use crate::page::{self, Page, PageRequest};

/// resource id → `Resource` JSON.
const RESOURCES: Keyspace = Keyspace::new("resources");
/// type ++ 0 ++ lowercased name → resource id. Unique names per type.
const RESOURCE_NAMES: Keyspace = Keyspace::new("resource_names");
/// resource id ++ group id → `GroupBinding` JSON. Groups bound to a resource.
const RESOURCE_GROUPS: Keyspace = Keyspace::new("resource_groups");
/// group id ++ resource id → (). Resources a group is bound to.
const GROUP_RESOURCES: Keyspace = Keyspace::new("group_resources");
/// user group id ++ device group id → `GroupBinding` JSON.
const USER_GROUP_DEVICE_GROUPS: Keyspace = Keyspace::new("user_group_device_groups");
/// device group id ++ user group id → ().
const DEVICE_GROUP_USER_GROUPS: Keyspace = Keyspace::new("device_group_user_groups");

/// Something access is granted to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resource {
    /// Stable id.
    pub id: Uuid,
    /// What kind of thing: `application`, `radius`, `policy`, … (lowercase
    /// letters, digits, `-` and `_`, at most 32).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Unique per type, compared case-insensitively.
    pub name: String,
    /// Free-form description.
    pub description: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The ETag.
    pub version: u64,
}

/// The writable fields of a resource.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    /// The resource's type: 1-32 lowercase letters, digits, `-` or `_`
    /// (e.g. application, radius).
    #[serde(rename = "type")]
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    pub resource_type: String,
    /// Its name.
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A binding of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupBinding {
    /// The bound group.
    pub group_id: Uuid,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A group on an access path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
pub struct Via {
    /// Group id.
    pub group_id: Uuid,
    /// Group name.
    pub group_name: String,
}

/// A resource a subject reaches, and through which groups.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ResourceAccess {
    /// The resource.
    pub resource: Resource,
    /// The subject's groups bound to it.
    pub via: Vec<Via>,
}

/// A group a subject reaches through a user group ↔ device group binding.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GroupAccess {
    /// The reached group (a device group for users, a user group for devices).
    pub group: Via,
    /// The subject's groups bound to it.
    pub via: Vec<Via>,
}

/// What a user or device can reach.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SubjectAccess {
    /// The subject.
    pub subject_id: Uuid,
    /// Resources, each with the groups that grant it.
    pub resources: Vec<ResourceAccess>,
    /// For a user: device groups whose devices they may use. For a device:
    /// user groups whose users may use it.
    pub groups: Vec<GroupAccess>,
}

/// A subject that reaches a resource, and through which groups.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Grantee {
    /// User or device id.
    pub subject_id: Uuid,
    /// User or device.
    pub subject: SubjectKind,
    /// The groups that grant access.
    pub via: Vec<Via>,
}

/// The access service.
#[derive(Clone)]
pub struct Access {
    store: Store,
    clock: std::sync::Arc<dyn Clock>,
}

fn check_type(t: &str) -> Result<(), DomainError> {
    let ok = !t.is_empty()
        && t.len() <= 32
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "type",
            "must be 1-32 lowercase letters, digits, '-' or '_' (e.g. application, radius)",
        ))
    }
}

fn name_key(t: &str, name: &str) -> Vec<u8> {
    [t.as_bytes(), &[0], name.to_lowercase().as_bytes()].concat()
}

fn load_group(r: &impl cohort_storage::Reader, id: &Uuid) -> Result<Group, DomainError> {
    groups::group(r, id)?.ok_or_else(|| DomainError::not_found("group", id))
}

fn record(
    txn: &mut WriteTxn<'_>,
    now: DateTime<Utc>,
    actor: &Actor,
    action: &str,
    resource_type: &str,
    resource_id: String,
    fields: &[(&str, Value, Value)],
) -> Result<(), DomainError> {
    audit::record(
        txn,
        now,
        actor,
        Record {
            action,
            resource_type,
            resource_id,
            changes: audit::changes(fields),
        },
    )?;
    Ok(())
}

/// Drops every binding of a deleted group, in the deleting transaction.
pub fn forget_group(txn: &mut WriteTxn<'_>, group: &Uuid) -> Result<(), DomainError> {
    for (k, _) in txn.scan_prefix(GROUP_RESOURCES, group.as_bytes())? {
        if let Some(r) = crate::id_pair::second(&k) {
            txn.delete(RESOURCE_GROUPS, &pair(&r, group));
        }
        txn.delete(GROUP_RESOURCES, &k);
    }
    for (ks, reverse) in [
        (USER_GROUP_DEVICE_GROUPS, DEVICE_GROUP_USER_GROUPS),
        (DEVICE_GROUP_USER_GROUPS, USER_GROUP_DEVICE_GROUPS),
    ] {
        for (k, _) in txn.scan_prefix(ks, group.as_bytes())? {
            if let Some(other) = crate::id_pair::second(&k) {
                txn.delete(reverse, &pair(&other, group));
            }
            txn.delete(ks, &k);
        }
    }
    Ok(())
}

impl Access {
    /// The service over `store`.
    pub fn new(store: Store, clock: std::sync::Arc<dyn Clock>) -> Self {
        Access { store, clock }
    }

    fn build(
        input: ResourceInput,
        existing: Option<&Resource>,
        now: DateTime<Utc>,
    ) -> Result<Resource, DomainError> {
        check_type(&input.resource_type)?;
        let name = input.name.trim().to_string();
        if name.is_empty() {
            return Err(DomainError::invalid("name", "must not be empty"));
        }
        check_string("name", &name, 256)?;
        if let Some(d) = &input.description {
            check_string("description", d, 4096)?;
        }
        Ok(Resource {
            id: existing.map_or_else(Uuid::now_v7, |r| r.id),
            resource_type: input.resource_type,
            name,
            description: input.description,
            created_at: existing.map_or(now, |r| r.created_at),
            updated_at: now,
            version: existing.map_or(1, |r| r.version + 1),
        })
    }

    fn put(
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        action: &str,
        before: Option<&Resource>,
        after: &Resource,
    ) -> Result<(), DomainError> {
        let key = name_key(&after.resource_type, &after.name);
        if before.is_none_or(|b| name_key(&b.resource_type, &b.name) != key) {
            if txn.contains(RESOURCE_NAMES, &key)? {
                return Err(DomainError::Conflict {
                    code: "resource_name_taken",
                    field: Some("name".into()),
                    message: format!(
                        "another {} resource is already named {:?}",
                        after.resource_type, after.name
                    ),
                });
            }
            if let Some(b) = before {
                txn.delete(RESOURCE_NAMES, &name_key(&b.resource_type, &b.name));
            }
            txn.put(RESOURCE_NAMES, &key, after.id.as_bytes().to_vec());
        }
        txn.put_json(RESOURCES, after.id.as_bytes(), after)?;
        audit::record(
            txn,
            after.updated_at,
            actor,
            Record {
                action,
                resource_type: "resource",
                resource_id: after.id.to_string(),
                changes: audit::diff(before, Some(after)),
            },
        )?;
        Ok(())
    }

    async fn commit<T>(
        &self,
        f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, DomainError>,
    ) -> Result<T, DomainError> {
        Ok(self.store.write(f)?.durable().await?)
    }

    /// Creates a resource.
    pub async fn create_resource(
        &self,
        cap: &ManageDirectory<'_>,
        input: ResourceInput,
    ) -> Result<Resource, DomainError> {
        let now = self.clock.now();
        self.commit(|txn| {
            let r = Self::build(input, None, now)?;
            Self::put(txn, cap.actor(), "resource.create", None, &r)?;
            Ok(r)
        })
        .await
    }

    /// One resource.
    pub fn get_resource(&self, _: &Read, id: &Uuid) -> Result<Resource, DomainError> {
        self.store
            .get_json(RESOURCES, id.as_bytes())?
            .ok_or_else(|| DomainError::not_found("resource", id))
    }

    /// A page of resources, optionally of one type, in creation order.
    pub fn list_resources(
        &self,
        _: &Read,
        resource_type: Option<&str>,
        req: &PageRequest,
    ) -> Result<Page<Resource>, DomainError> {
        let tag = format!("resources:{}", resource_type.unwrap_or(""));
        let resume = req.resume_key(&tag)?;
        let entries = self.store.scan(RESOURCES, b"", resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            let r: Resource = cohort_storage::decode_json(RESOURCES, v)?;
            Ok(resource_type
                .is_none_or(|t| t == r.resource_type)
                .then_some(r)
                .into())
        })
    }

    /// Changes a resource with a JSON merge patch.
    pub async fn update_resource(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
        patch: &Value,
        if_match: Option<u64>,
    ) -> Result<Resource, DomainError> {
        let now = self.clock.now();
        self.commit(|txn| {
            let before: Resource = txn
                .get_json(RESOURCES, id.as_bytes())?
                .ok_or_else(|| DomainError::not_found("resource", id))?;
            if let Some(v) = if_match
                && v != before.version
            {
                return Err(DomainError::VersionMismatch {
                    current: before.version,
                });
            }
            let current = ResourceInput {
                resource_type: before.resource_type.clone(),
                name: before.name.clone(),
                description: before.description.clone(),
            };
            let input: ResourceInput = decode_patch(
                &current,
                patch,
                &[
                    ("id", "is assigned by Cohort"),
                    ("version", "is set by Cohort; send it as If-Match instead"),
                    ("created_at", "is set by Cohort"),
                    ("updated_at", "is set by Cohort"),
                ],
            )?;
            let after = Self::build(input, Some(&before), now)?;
            Self::put(txn, cap.actor(), "resource.update", Some(&before), &after)?;
            Ok(after)
        })
        .await
    }

    /// Deletes a resource and its bindings.
    pub async fn delete_resource(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        self.commit(|txn| {
            let r: Resource = txn
                .get_json(RESOURCES, id.as_bytes())?
                .ok_or_else(|| DomainError::not_found("resource", id))?;
            for (k, _) in txn.scan_prefix(RESOURCE_GROUPS, id.as_bytes())? {
                if let Some(g) = crate::id_pair::second(&k) {
                    txn.delete(GROUP_RESOURCES, &pair(&g, id));
                }
                txn.delete(RESOURCE_GROUPS, &k);
            }
            txn.delete(RESOURCE_NAMES, &name_key(&r.resource_type, &r.name));
            txn.delete(RESOURCES, id.as_bytes());
            audit::record(
                txn,
                now,
                cap.actor(),
                Record {
                    action: "resource.delete",
                    resource_type: "resource",
                    resource_id: id.to_string(),
                    changes: audit::diff(Some(&r), None),
                },
            )?;
            Ok(())
        })
        .await
    }

    /// Groups bound to a resource.
    pub fn resource_groups(
        &self,
        read: &Read,
        id: &Uuid,
    ) -> Result<Vec<GroupBinding>, DomainError> {
        self.get_resource(read, id)?;
        self.store
            .scan(RESOURCE_GROUPS, id.as_bytes(), None, false)
            .map(|e| {
                let (_, v) = e?;
                Ok(cohort_storage::decode_json(RESOURCE_GROUPS, &v)?)
            })
            .collect()
    }

    /// Binds a group to a resource (idempotent).
    pub async fn bind_resource(
        &self,
        cap: &ManageDirectory<'_>,
        resource: &Uuid,
        group: &Uuid,
    ) -> Result<GroupBinding, DomainError> {
        let now = self.clock.now();
        self.commit(|txn| {
            if !txn.contains(RESOURCES, resource.as_bytes())? {
                return Err(DomainError::not_found("resource", resource));
            }
            load_group(txn, group).map_err(|_| {
                DomainError::invalid("group_id", format!("no group with id {group}"))
            })?;
            let key = pair(resource, group);
            if let Some(b) = txn.get_json::<GroupBinding>(RESOURCE_GROUPS, &key)? {
                return Ok(b);
            }
            let b = GroupBinding {
                group_id: *group,
                created_at: now,
            };
            txn.put_json(RESOURCE_GROUPS, &key, &b)?;
            txn.put(GROUP_RESOURCES, &pair(group, resource), Vec::new());
            record(
                txn,
                now,
                cap.actor(),
                "resource.bind",
                "resource",
                resource.to_string(),
                &[("group_id", Value::Null, serde_json::json!(group))],
            )?;
            Ok(b)
        })
        .await
    }

    /// Unbinds a group from a resource.
    pub async fn unbind_resource(
        &self,
        cap: &ManageDirectory<'_>,
        resource: &Uuid,
        group: &Uuid,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        self.commit(|txn| {
            let key = pair(resource, group);
            if !txn.contains(RESOURCE_GROUPS, &key)? {
                return Err(DomainError::not_found(
                    "binding",
                    format!("{resource}/{group}"),
                ));
            }
            txn.delete(RESOURCE_GROUPS, &key);
            txn.delete(GROUP_RESOURCES, &pair(group, resource));
            record(
                txn,
                now,
                cap.actor(),
                "resource.unbind",
                "resource",
                resource.to_string(),
                &[("group_id", serde_json::json!(group), Value::Null)],
            )?;
            Ok(())
        })
        .await
    }

    /// The group ids bound to `group` across kinds (device groups of a user
    /// group, or user groups of a device group).
    pub fn bound_groups(&self, _: &Read, group: &Uuid) -> Result<Vec<GroupBinding>, DomainError> {
        let g = load_group(&self.store, group)?;
        let ks = match g.subject {
            SubjectKind::User => USER_GROUP_DEVICE_GROUPS,
            SubjectKind::Device => DEVICE_GROUP_USER_GROUPS,
        };
        let mut out = Vec::new();
        for entry in self.store.scan(ks, group.as_bytes(), None, false) {
            let (k, v) = entry?;
            let Some(other) = crate::id_pair::second(&k) else {
                continue;
            };
            let created_at = if g.subject == SubjectKind::User {
                cohort_storage::decode_json::<GroupBinding>(ks, &v)?.created_at
            } else {
                self.store
                    .get_json::<GroupBinding>(USER_GROUP_DEVICE_GROUPS, &pair(&other, group))?
                    .map_or(g.created_at, |b| b.created_at)
            };
            out.push(GroupBinding {
                group_id: other,
                created_at,
            });
        }
        Ok(out)
    }

    /// Binds a user group to a device group (either may be given first).
    pub async fn bind_groups(
        &self,
        cap: &ManageDirectory<'_>,
        a: &Uuid,
        b: &Uuid,
        bind: bool,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        self.commit(|txn| {
            let ga = load_group(txn, a)?;
            let gb = load_group(txn, b)
                .map_err(|_| DomainError::invalid("group_id", format!("no group with id {b}")))?;
            let (user_group, device_group) = match (ga.subject, gb.subject) {
                (SubjectKind::User, SubjectKind::Device) => (ga.id, gb.id),
                (SubjectKind::Device, SubjectKind::User) => (gb.id, ga.id),
                _ => {
                    return Err(DomainError::invalid(
                        "group_id",
                        "a user group binds to a device group; these hold the same kind of subject",
                    ));
                }
            };
            let key = pair(&user_group, &device_group);
            let exists = txn.contains(USER_GROUP_DEVICE_GROUPS, &key)?;
            if bind == exists {
                return if bind {
                    Ok(())
                } else {
                    Err(DomainError::not_found(
                        "binding",
                        format!("{user_group}/{device_group}"),
                    ))
                };
            }
            if bind {
                txn.put_json(
                    USER_GROUP_DEVICE_GROUPS,
                    &key,
                    &GroupBinding {
                        group_id: device_group,
                        created_at: now,
                    },
                )?;
                txn.put(
                    DEVICE_GROUP_USER_GROUPS,
                    &pair(&device_group, &user_group),
                    Vec::new(),
                );
            } else {
                txn.delete(USER_GROUP_DEVICE_GROUPS, &key);
                txn.delete(DEVICE_GROUP_USER_GROUPS, &pair(&device_group, &user_group));
            }
            let (b4, af) = if bind {
                (Value::Null, serde_json::json!(device_group))
            } else {
                (serde_json::json!(device_group), Value::Null)
            };
            record(
                txn,
                now,
                cap.actor(),
                if bind { "group.bind" } else { "group.unbind" },
                "group",
                user_group.to_string(),
                &[("device_group_id", b4, af)],
            )?;
            Ok(())
        })
        .await
    }

    fn via(&self, group: &Uuid) -> Result<Option<Via>, DomainError> {
        Ok(groups::group(&self.store, group)?.map(|g| Via {
            group_id: g.id,
            group_name: g.name,
        }))
    }

    /// What a user or device reaches, with the groups that grant it.
    pub fn subject_access(
        &self,
        _: &Read,
        kind: SubjectKind,
        subject: &Uuid,
    ) -> Result<SubjectAccess, DomainError> {
        if !crate::directory::read::subject_exists(&self.store, kind, subject)? {
            return Err(DomainError::not_found(kind.as_str(), subject));
        }
        let mut resources: BTreeMap<Uuid, BTreeSet<Via>> = BTreeMap::new();
        let mut groups: BTreeMap<Uuid, BTreeSet<Via>> = BTreeMap::new();
        let cross = match kind {
            SubjectKind::User => USER_GROUP_DEVICE_GROUPS,
            SubjectKind::Device => DEVICE_GROUP_USER_GROUPS,
        };
        for g in groups::groups_of(&self.store, subject)? {
            let Some(via) = self.via(&g)? else { continue };
            for e in self.store.scan(GROUP_RESOURCES, g.as_bytes(), None, false) {
                let (k, _) = e?;
                if let Some(r) = crate::id_pair::second(&k) {
                    resources.entry(r).or_default().insert(via.clone());
                }
            }
            for e in self.store.scan(cross, g.as_bytes(), None, false) {
                let (k, _) = e?;
                if let Some(o) = crate::id_pair::second(&k) {
                    groups.entry(o).or_default().insert(via.clone());
                }
            }
        }
        let mut out = SubjectAccess {
            subject_id: *subject,
            resources: Vec::new(),
            groups: Vec::new(),
        };
        for (r, via) in resources {
            if let Some(resource) = self.store.get_json::<Resource>(RESOURCES, r.as_bytes())? {
                out.resources.push(ResourceAccess {
                    resource,
                    via: via.into_iter().collect(),
                });
            }
        }
        for (g, via) in groups {
            if let Some(group) = self.via(&g)? {
                out.groups.push(GroupAccess {
                    group,
                    via: via.into_iter().collect(),
                });
            }
        }
        Ok(out)
    }

    /// Who reaches a resource, and through which of its bound groups: a page
    /// of subjects in id order, merged across the groups.
    pub fn grantees(
        &self,
        read: &Read,
        resource: &Uuid,
        req: &PageRequest,
    ) -> Result<Page<Grantee>, DomainError> {
        self.get_resource(read, resource)?;
        let tag = format!("grantees:{resource}");
        let after = req.resume_key(&tag)?;
        let mut bound: Vec<(Via, SubjectKind)> = Vec::new();
        for b in self.resource_groups(read, resource)? {
            if let Some(g) = groups::group(&self.store, &b.group_id)? {
                bound.push((
                    Via {
                        group_id: g.id,
                        group_name: g.name,
                    },
                    g.subject,
                ));
            }
        }
        // Each bound group's members, from just after the cursor, merged by
        // subject id: a page costs about `limit` reads per group.
        let mut merged: BTreeMap<Uuid, (SubjectKind, BTreeSet<Via>)> = BTreeMap::new();
        for (via, kind) in &bound {
            let start = after.as_deref().map(uuid_or_nil);
            for s in
                groups::members_after(&self.store, &via.group_id, start.as_ref(), req.limit + 1)?
            {
                merged
                    .entry(s)
                    .or_insert_with(|| (*kind, BTreeSet::new()))
                    .1
                    .insert(via.clone());
            }
        }
        let more = merged.len() > req.limit;
        let items: Vec<Grantee> = merged
            .into_iter()
            .take(req.limit)
            .map(|(subject_id, (subject, via))| Grantee {
                subject_id,
                subject,
                via: via.into_iter().collect(),
            })
            .collect();
        let next_cursor = match items.last() {
            Some(last) if more => Some(page::cursor(&tag, last.subject_id.as_bytes())),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}

fn uuid_or_nil(b: &[u8]) -> Uuid {
    Uuid::from_slice(b).unwrap_or(Uuid::nil())
}
