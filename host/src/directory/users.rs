//! Users: the people in the directory, their profile, their state, and the
//! indexes that keep usernames and emails unique.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::attributes::{AttrValue, SubjectKind, check_string, track_usage, validate_custom};
use super::identity;
use super::identity_reads::IdentityReads;
use super::layout::{self, USERS, USERS_BY_EMAIL, USERS_BY_MANAGER, USERS_BY_USERNAME};
use super::query::{AttrRef, ListQuery, Subject, text};
use super::{Directory, Versioned, decode_patch};
use crate::audit::{self, Record};
use crate::auth::{Actor, ChangeUserState, ManageDirectory, Mutation, Read};
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest};

/// Where a user is in their lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Created but not yet given access (e.g. before a start date).
    Staged,
    /// Has access.
    Active,
    /// Access withdrawn; the account and its history are kept.
    Suspended,
}

impl UserState {
    /// The state's name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Staged => "staged",
            UserState::Active => "active",
            UserState::Suspended => "suspended",
        }
    }

    /// The states a user in this state may move to. Staged users are
    /// activated; active users are suspended; suspended users are
    /// reactivated. Nothing returns to staged.
    pub fn allowed_next(self) -> &'static [UserState] {
        match self {
            UserState::Staged => &[UserState::Active],
            UserState::Active => &[UserState::Suspended],
            UserState::Suspended => &[UserState::Active],
        }
    }
}

/// A user as stored and returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Stable id (UUIDv7).
    pub id: Uuid,
    /// Unique login name, stored width-mapped and NFC with its case kept;
    /// compared under RFC 8265 `UsernameCaseMapped` (docs/users.md).
    pub username: String,
    /// Unique email, stored in NFKC with its case kept; compared caseless
    /// with the domain as an IDNA A-label (docs/users.md).
    pub email: String,
    /// Lifecycle state; changed only through `POST /api/v1/users/{id}/state`.
    pub state: UserState,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Name shown in user interfaces.
    pub display_name: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Office or work location.
    pub location: Option<String>,
    /// Employee type, e.g. full-time or contractor.
    pub employee_type: Option<String>,
    /// Company or legal entity.
    pub company: Option<String>,
    /// Cost center.
    pub cost_center: Option<String>,
    /// Employee id from the HR system.
    pub employee_id: Option<String>,
    /// Id of the user's manager, another user in the directory.
    pub manager_id: Option<Uuid>,
    /// Phone number.
    pub phone: Option<String>,
    /// Free-form description.
    pub description: Option<String>,
    /// Values of declared custom attributes.
    pub custom_attributes: BTreeMap<String, AttrValue>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Increases by one with every change; the ETag.
    pub version: u64,
}

/// The writable fields of a user: the body of a create, and what a PATCH
/// (JSON merge patch) is applied to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Unique login name: 1–64 letters, digits and `. _ @ + -`, starting
    /// with a letter or digit. Letters of any one script are allowed
    /// (RFC 8265); invisible characters and mixed scripts are refused.
    #[schema(min_length = 1)]
    pub username: String,
    /// Unique email address.
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    /// Initial state on create (`staged` by default, or `active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<UserState>,
    /// Given name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Name shown in user interfaces.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Department.
    #[serde(default)]
    pub department: Option<String>,
    /// Job title.
    #[serde(default)]
    pub job_title: Option<String>,
    /// Office or work location.
    #[serde(default)]
    pub location: Option<String>,
    /// Employee type.
    #[serde(default)]
    pub employee_type: Option<String>,
    /// Company.
    #[serde(default)]
    pub company: Option<String>,
    /// Cost center.
    #[serde(default)]
    pub cost_center: Option<String>,
    /// Employee id.
    #[serde(default)]
    pub employee_id: Option<String>,
    /// Id of the manager, an existing user.
    #[serde(default)]
    pub manager_id: Option<Uuid>,
    /// Phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Free-form description.
    #[serde(default)]
    pub description: Option<String>,
    /// Values for declared custom attributes; null removes one in a PATCH.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom_attributes: BTreeMap<String, Value>,
}

impl From<&User> for UserInput {
    fn from(u: &User) -> Self {
        UserInput {
            username: u.username.clone(),
            email: u.email.clone(),
            state: None,
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            display_name: u.display_name.clone(),
            department: u.department.clone(),
            job_title: u.job_title.clone(),
            location: u.location.clone(),
            employee_type: u.employee_type.clone(),
            company: u.company.clone(),
            cost_center: u.cost_center.clone(),
            employee_id: u.employee_id.clone(),
            manager_id: u.manager_id,
            phone: u.phone.clone(),
            description: u.description.clone(),
            custom_attributes: u
                .custom_attributes
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::to_value(v).expect("attribute values serialize"),
                    )
                })
                .collect(),
        }
    }
}

/// Body of a state change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    /// The state to move to.
    pub state: UserState,
}

impl Subject for User {
    fn attribute_ref(&self, name: &str) -> Option<AttrRef<'_>> {
        let s = text;
        match name {
            "id" => Some(AttrRef::Id(self.id)),
            "username" => Some(AttrRef::Text(&self.username)),
            "email" => Some(AttrRef::Text(&self.email)),
            "state" => Some(AttrRef::Text(self.state.as_str())),
            "first_name" => s(&self.first_name),
            "last_name" => s(&self.last_name),
            "display_name" => s(&self.display_name),
            "department" => s(&self.department),
            "job_title" => s(&self.job_title),
            "location" => s(&self.location),
            "employee_type" => s(&self.employee_type),
            "company" => s(&self.company),
            "cost_center" => s(&self.cost_center),
            "employee_id" => s(&self.employee_id),
            "manager_id" => self.manager_id.map(AttrRef::Id),
            "phone" => s(&self.phone),
            "description" => s(&self.description),
            "created_at" => Some(AttrRef::Time(self.created_at)),
            "updated_at" => Some(AttrRef::Time(self.updated_at)),
            custom => self.custom_attributes.get(custom).map(AttrRef::from),
        }
    }
}

/// Sort keys an index serves; the first is the default.
pub const USER_SORTS: &[&str] = &["created_at", "username", "email"];

/// Fields a PATCH may not touch, with the reason given to the client.
const READ_ONLY: &[(&str, &str)] = &[
    ("id", "is assigned by Cohort"),
    ("created_at", "is set by Cohort"),
    ("updated_at", "is set by Cohort"),
    ("version", "is set by Cohort; send it as If-Match instead"),
    (
        "state",
        "changes only through POST /api/v1/users/{id}/state",
    ),
];

/// Maps a refused username or email to the domain error naming its field.
fn checked<T>(field: &str, r: Result<T, identity::IdentityError>) -> Result<T, DomainError> {
    r.map_err(|error| DomainError::Identity {
        field: field.into(),
        error,
    })
}

/// Deletes a unique-index entry only while it still points at `id`: after
/// a collision the migration reported, the key belongs to the other user.
fn remove_index(
    txn: &mut WriteTxn<'_>,
    ks: cohort_storage::Keyspace,
    key: &[u8],
    id: &[u8],
) -> Result<(), DomainError> {
    if txn.get(ks, key)?.as_deref() == Some(id) {
        txn.delete(ks, key);
    }
    Ok(())
}

/// Loads a user inside a transaction.
pub(crate) fn load(txn: &WriteTxn<'_>, id: &Uuid) -> Result<User, DomainError> {
    txn.get_json(USERS, &layout::id(id))?
        .ok_or_else(|| DomainError::not_found("user", id))
}

/// Writes a user and its indexes (uniqueness, confusables, manager, attribute
/// usage), refusing a username or email another user holds. Auditing and
/// telling listeners is the caller's part.
pub(super) fn store_user(
    txn: &mut WriteTxn<'_>,
    before: Option<&User>,
    after: &User,
) -> Result<(), DomainError> {
    let id = layout::id(&after.id);
    // Every check below reads; on PostgreSQL, one round trip for all (the
    // embedded engines ignore it). Computed once for the checks too.
    let identity = IdentityReads::of(&after.username, &after.email);
    identity.prefetch_in(txn)?;
    let [near_username, near_email] = identity.neighbours();
    type KeyFn = fn(&str) -> Vec<u8>;
    let unique: [(_, _, _, KeyFn, _, _); 2] = [
        (
            USERS_BY_USERNAME,
            "username",
            "username_taken",
            layout::username,
            &after.username,
            before.map(|b| &b.username),
        ),
        (
            USERS_BY_EMAIL,
            "email",
            "email_taken",
            layout::email,
            &after.email,
            before.map(|b| &b.email),
        ),
    ];
    for (ks, field, code, key_of, new, old) in unique {
        let new_key = key_of(new);
        let old_key = old.map(|o| key_of(o));
        if let Some(holder) = txn.get(ks, &new_key)?
            && holder != id
        {
            // A collision the identity migration reported: the older
            // user keeps the key, and this one may change other fields.
            if old_key.as_ref() == Some(&new_key) {
                continue;
            }
            return Err(DomainError::Conflict {
                code,
                field: Some(field.into()),
                message: format!("another user already has {field} {new:?}"),
            });
        }
        if let Some(old_key) = old_key
            && old_key != new_key
        {
            remove_index(txn, ks, &old_key, &id)?;
        }
        // Also when the key is unchanged: it may have been freed.
        txn.put(ks, &new_key, id.to_vec());
    }
    super::confusables::check_and_index(
        txn,
        "username",
        &after.id,
        before.map(|b| b.username.as_str()),
        &after.username,
        near_username,
    )?;
    super::confusables::check_and_index(
        txn,
        "email",
        &after.id,
        before.map(|b| b.email.as_str()),
        &after.email,
        near_email,
    )?;
    let old_manager = before.and_then(|b| b.manager_id);
    if old_manager != after.manager_id {
        if let Some(m) = old_manager {
            txn.delete(USERS_BY_MANAGER, &layout::join(&[&layout::id(&m), &id]));
        }
        if let Some(m) = after.manager_id {
            txn.put(
                USERS_BY_MANAGER,
                &layout::join(&[&layout::id(&m), &id]),
                Vec::new(),
            );
        }
    }
    track_usage(
        txn,
        SubjectKind::User,
        &id,
        before.map(|b| &b.custom_attributes),
        Some(&after.custom_attributes),
    );
    txn.put_json(USERS, &id, after)?;
    Ok(())
}

impl Directory {
    /// Validates input and builds the user it describes; `existing` is the
    /// user being updated, if any.
    fn build_user(
        &self,
        txn: &WriteTxn<'_>,
        input: UserInput,
        existing: Option<&User>,
        now: DateTime<Utc>,
    ) -> Result<User, DomainError> {
        let username = checked("username", identity::username(&input.username))?.display;
        let email = checked("email", identity::email(&input.email))?.display;
        let text_fields = [
            ("first_name", &input.first_name, 256),
            ("last_name", &input.last_name, 256),
            ("display_name", &input.display_name, 256),
            ("department", &input.department, 256),
            ("job_title", &input.job_title, 256),
            ("location", &input.location, 256),
            ("employee_type", &input.employee_type, 256),
            ("company", &input.company, 256),
            ("cost_center", &input.cost_center, 256),
            ("employee_id", &input.employee_id, 256),
            ("phone", &input.phone, 64),
            ("description", &input.description, 4096),
        ];
        for (field, value, max) in text_fields {
            if let Some(v) = value {
                check_string(field, v, max)?;
            }
        }
        let id = existing.map_or_else(Uuid::now_v7, |u| u.id);
        if let Some(m) = input.manager_id {
            if m == id {
                return Err(DomainError::invalid(
                    "manager_id",
                    "a user cannot be their own manager",
                ));
            }
            if !txn.contains(USERS, &layout::id(&m))? {
                return Err(DomainError::invalid(
                    "manager_id",
                    format!("no user with id {m}"),
                ));
            }
        }
        let custom_attributes = validate_custom(txn, SubjectKind::User, &input.custom_attributes)?;
        let state = match (existing, input.state) {
            (Some(u), _) => u.state,
            (None, None) => UserState::Staged,
            (None, Some(UserState::Suspended)) => {
                return Err(DomainError::invalid(
                    "state",
                    "a new user starts as staged or active",
                ));
            }
            (None, Some(s)) => s,
        };
        Ok(User {
            id,
            username,
            email,
            state,
            first_name: input.first_name,
            last_name: input.last_name,
            display_name: input.display_name,
            department: input.department,
            job_title: input.job_title,
            location: input.location,
            employee_type: input.employee_type,
            company: input.company,
            cost_center: input.cost_center,
            employee_id: input.employee_id,
            manager_id: input.manager_id,
            phone: input.phone,
            description: input.description,
            custom_attributes,
            created_at: existing.map_or(now, |u| u.created_at),
            updated_at: now,
            version: existing.map_or(1, |u| u.version + 1),
        })
    }

    /// Writes `after` with its indexes and audit event, replacing `before`.
    /// Checks uniqueness of username and email.
    fn put_user(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        action: &str,
        before: Option<&User>,
        after: &User,
    ) -> Result<(), DomainError> {
        store_user(txn, before, after)?;
        let at = after.updated_at;
        self.record_write(
            txn,
            actor,
            action,
            SubjectKind::User,
            after.id,
            at,
            before,
            after,
        )
    }

    /// Creates a user inside the caller's transaction, through the same
    /// validation, audit and group recompute as [`Directory::create_user`]:
    /// for sign-in's just-in-time creation, which commits with its link.
    pub(crate) fn create_user_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        input: UserInput,
        now: DateTime<Utc>,
    ) -> Result<User, DomainError> {
        let user = self.build_user(txn, input, None, now)?;
        self.put_user(txn, actor, "user.create", None, &user)?;
        Ok(user)
    }

    /// Creates a user.
    pub async fn create_user(
        &self,
        cap: &ManageDirectory<'_>,
        input: UserInput,
    ) -> Result<User, DomainError> {
        let now = self.clock.now();
        IdentityReads::prefetch_ahead(&self.store, &input.username, &input.email);
        super::commit(&self.store, |txn| {
            let user = self.build_user(txn, input, None, now)?;
            self.put_user(txn, cap.actor(), "user.create", None, &user)?;
            Ok(user)
        })
        .await
    }

    /// One user by id.
    pub fn get_user(&self, _: &Read, id: &Uuid) -> Result<User, DomainError> {
        self.store
            .get_json(USERS, &layout::id(id))?
            .ok_or_else(|| DomainError::not_found("user", id))
    }

    /// Applies a JSON merge patch (RFC 7396) to a user's writable fields.
    pub async fn update_user(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
        patch: &Value,
        if_match: Option<u64>,
    ) -> Result<User, DomainError> {
        let now = self.clock.now();
        super::commit(&self.store, |txn| {
            let before = load(txn, id)?;
            before.check_version(if_match)?;
            let input: UserInput = decode_patch(&UserInput::from(&before), patch, READ_ONLY)?;
            let after = self.build_user(txn, input, Some(&before), now)?;
            if after
                == (User {
                    updated_at: after.updated_at,
                    version: after.version,
                    ..before.clone()
                })
            {
                // Nothing changed: no write, no audit event, same version.
                return Ok(before);
            }
            self.put_user(txn, cap.actor(), "user.update", Some(&before), &after)?;
            Ok(after)
        })
        .await
    }

    /// Replaces a user's writable fields and, when given, their state, in
    /// the caller's transaction: one write and one audit event, for
    /// provisioning (a SCIM replace can rename and deactivate at once).
    /// Unchanged input writes nothing.
    pub(crate) fn replace_user_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        id: &Uuid,
        input: UserInput,
        state: Option<UserState>,
        if_match: Option<u64>,
    ) -> Result<User, DomainError> {
        let now = self.clock.now();
        let before = load(txn, id)?;
        before.check_version(if_match)?;
        let mut after = self.build_user(txn, input, Some(&before), now)?;
        if let Some(to) = state
            && to != before.state
        {
            if !before.state.allowed_next().contains(&to) {
                return Err(DomainError::InvalidTransition {
                    from: before.state.as_str(),
                    to: to.as_str(),
                    allowed: before
                        .state
                        .allowed_next()
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            after.state = to;
        }
        if after
            == (User {
                updated_at: after.updated_at,
                version: after.version,
                ..before.clone()
            })
        {
            return Ok(before);
        }
        let action = if after.state != before.state {
            "user.state_change"
        } else {
            "user.update"
        };
        self.put_user(txn, actor, action, Some(&before), &after)?;
        Ok(after)
    }

    /// Moves a user to another state, if the transition is allowed.
    pub async fn change_user_state(
        &self,
        cap: &ChangeUserState<'_>,
        id: &Uuid,
        to: UserState,
        if_match: Option<u64>,
    ) -> Result<User, DomainError> {
        let now = self.clock.now();
        super::commit(&self.store, |txn| {
            let before = load(txn, id)?;
            before.check_version(if_match)?;
            if !before.state.allowed_next().contains(&to) {
                return Err(DomainError::InvalidTransition {
                    from: before.state.as_str(),
                    to: to.as_str(),
                    allowed: before
                        .state
                        .allowed_next()
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            let after = User {
                state: to,
                updated_at: now,
                version: before.version + 1,
                ..before.clone()
            };
            self.put_user(txn, cap.actor(), "user.state_change", Some(&before), &after)?;
            Ok(after)
        })
        .await
    }

    /// Deletes a user, their device bindings, and their place as anyone's
    /// manager (those users' `manager_id` is cleared, each with its own audit
    /// event).
    pub async fn delete_user(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
        if_match: Option<u64>,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let actor = cap.actor();
        super::commit(&self.store, |txn| {
            let user = load(txn, id)?;
            user.check_version(if_match)?;
            let key = layout::id(id);
            for (k, _) in txn.scan_prefix(USERS_BY_MANAGER, &key)? {
                let Some(report_id) = crate::id_pair::second(&k) else {
                    continue;
                };
                let before = load(txn, &report_id)?;
                let after = User {
                    manager_id: None,
                    updated_at: now,
                    version: before.version + 1,
                    ..before.clone()
                };
                self.put_user(txn, actor, "user.update", Some(&before), &after)?;
            }
            self.unbind_all(txn, SubjectKind::User, id, now, actor)?;
            if let Some(m) = user.manager_id {
                txn.delete(USERS_BY_MANAGER, &layout::join(&[&layout::id(&m), &key]));
            }
            remove_index(
                txn,
                USERS_BY_USERNAME,
                &layout::username(&user.username),
                &key,
            )?;
            remove_index(txn, USERS_BY_EMAIL, &layout::email(&user.email), &key)?;
            super::confusables::unindex(txn, &user.id, &user.username, &user.email);
            track_usage(
                txn,
                SubjectKind::User,
                &key,
                Some(&user.custom_attributes),
                None,
            );
            txn.delete(USERS, &key);
            audit::record(
                txn,
                now,
                actor,
                Record {
                    action: "user.delete",
                    resource_type: "user",
                    resource_id: id.to_string(),
                    changes: audit::diff(Some(&user), None),
                },
            )?;
            self.emit(
                txn,
                actor,
                now,
                super::Change::Subject {
                    kind: SubjectKind::User,
                    id: *id,
                    attributes: None,
                },
            )
        })
        .await
    }

    /// Parses list parameters for users.
    pub fn user_query(&self, params: &[(String, String)]) -> Result<ListQuery, DomainError> {
        self.parse_list_query(SubjectKind::User, USER_SORTS, params)
    }

    /// A page of users matching `query`, walked along the sort key's index.
    pub fn list_users(
        &self,
        _: &Read,
        query: &ListQuery,
        req: &PageRequest,
    ) -> Result<Page<User>, DomainError> {
        let tag = query.cursor_tag(SubjectKind::User);
        // An exact username or email filter is one index lookup.
        type KeyFn = fn(&str) -> Vec<u8>;
        let lookups: [(_, _, KeyFn); 2] = [
            ("username", USERS_BY_USERNAME, layout::username),
            ("email", USERS_BY_EMAIL, layout::email),
        ];
        for (name, ks, key_of) in lookups {
            if let Some(v) = query.exact(name) {
                let found = match self.store.get(ks, &key_of(v))? {
                    Some(id) => self.store.get_json::<User>(USERS, &id)?,
                    None => None,
                };
                return Ok(Page {
                    items: found.into_iter().filter(|u| query.matches(u)).collect(),
                    next_cursor: None,
                });
            }
        }
        let resume = req.resume_key(&tag)?;
        let index = match query.sort {
            "username" => USERS_BY_USERNAME,
            "email" => USERS_BY_EMAIL,
            _ => USERS,
        };
        let entries = self
            .store
            .scan(index, b"", resume.as_deref(), query.descending);
        page::collect(&tag, req.limit, entries, |_, v| {
            let user: User = if index == USERS {
                cohort_storage::decode_json(USERS, v)?
            } else {
                match self.store.get_json(USERS, v)? {
                    Some(u) => u,
                    // The user was deleted between the index read and this one.
                    None => return Ok(page::Visit::Skip),
                }
            };
            Ok(query.matches(&user).then_some(user).into())
        })
    }
}

impl Versioned for User {
    fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_lifecycle() {
        assert_eq!(UserState::Staged.allowed_next(), &[UserState::Active]);
        assert!(
            !UserState::Active
                .allowed_next()
                .contains(&UserState::Staged)
        );
        assert!(
            UserState::Suspended
                .allowed_next()
                .contains(&UserState::Active)
        );
    }
}
