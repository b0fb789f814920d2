//! The SCIM 2.0 service (RFC 7643 / 7644) for Users and Groups: what `/scim/v2`
//! does, independent of HTTP. Resources are rendered from the directory on
//! every read, so SCIM and the admin API can never disagree; the only
//! SCIM-specific state is what the directory has no field for
//! (`externalId`).

pub mod bulk;
pub mod discovery;
pub mod filter;
pub mod groups;
pub mod patch;
pub mod resource;

use std::collections::HashMap;
use std::sync::Arc;

use cohort_storage::{Keyspace, Store, WriteTxn};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Mutation, Provision};
use crate::clock::Clock;
use crate::credentials::Credentials;
use crate::directory::read as directory;
use crate::directory::{Directory, User, UserState};
use crate::error::DomainError;
use resource::{Extra, Incoming};

/// User id → `Extra` JSON: SCIM data the directory has no field for.
const SCIM_USERS: Keyspace = Keyspace::new("scim_users");

/// Most results one list request returns; advertised in
/// `ServiceProviderConfig`.
pub const MAX_RESULTS: usize = 1000;

/// A SCIM error (RFC 7644 §3.12): an HTTP status, and for 400s a
/// `scimType`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {scim_type:?}: {detail}")]
pub struct ScimError {
    /// HTTP status.
    pub status: u16,
    /// `invalidFilter`, `invalidValue`, `uniqueness`, …
    pub scim_type: Option<&'static str>,
    /// For people.
    pub detail: String,
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    /// 400 invalidValue.
    pub fn invalid_value(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), d)
    }
    /// 400 invalidSyntax.
    pub fn invalid_syntax(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), d)
    }
    /// 400 invalidFilter.
    pub fn invalid_filter(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidFilter"), d)
    }
    /// 400 invalidPath.
    pub fn invalid_path(d: impl Into<String>) -> Self {
        Self::new(400, Some("invalidPath"), d)
    }
    /// 400 noTarget.
    pub fn no_target(d: impl Into<String>) -> Self {
        Self::new(400, Some("noTarget"), d)
    }
    /// 400 mutability.
    pub fn mutability(d: impl Into<String>) -> Self {
        Self::new(400, Some("mutability"), d)
    }
    /// 404.
    pub fn not_found(d: impl Into<String>) -> Self {
        Self::new(404, None, d)
    }
    /// 405: a method this endpoint does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(405, None, "method not allowed")
    }
    /// 412: the If-Match version is not current.
    pub fn precondition(d: impl Into<String>) -> Self {
        Self::new(412, None, d)
    }

    /// The SCIM error body.
    pub fn body(&self) -> Value {
        let mut b = json!({
            "schemas": [resource::ERROR],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            b["scimType"] = json!(t);
        }
        b
    }
}

impl From<DomainError> for ScimError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound { kind, id } => Self::not_found(format!("{kind} {id} not found")),
            DomainError::Conflict { code, message, .. } if code.ends_with("_taken") => {
                Self::new(409, Some("uniqueness"), message)
            }
            DomainError::Conflict { message, .. } => Self::new(409, None, message),
            DomainError::Invalid { field, message } => {
                Self::invalid_value(format!("{}: {message}", scim_field(&field)))
            }
            // SCIM has no scimType for these; the detail carries Cohort's
            // stable code so a client can tell the rules apart.
            DomainError::Identity { field, error } => Self::invalid_value(format!(
                "{}: {error} ({})",
                scim_field(&field),
                error.code()
            )),
            DomainError::VersionMismatch { current } => Self::precondition(format!(
                "the resource has changed; its version is now {}",
                resource::etag(current)
            )),
            DomainError::InvalidTransition { from, to, .. } => {
                Self::invalid_value(format!("a user cannot go from {from} to {to}"))
            }
            other => {
                tracing::error!(error = %other, "SCIM request failed");
                Self::new(500, None, "internal error; see the server log")
            }
        }
    }
}

impl From<cohort_storage::StorageError> for ScimError {
    fn from(e: cohort_storage::StorageError) -> Self {
        DomainError::from(e).into()
    }
}

/// The SCIM name of a directory field, for error messages.
fn scim_field(field: &str) -> &str {
    match field {
        "username" => "userName",
        "email" => "emails",
        "first_name" => "name.givenName",
        "last_name" => "name.familyName",
        "display_name" => "displayName",
        "job_title" => "title",
        "employee_type" => "userType",
        "phone" => "phoneNumbers",
        "location" => "addresses",
        "department" => "department",
        "employee_id" => "employeeNumber",
        "cost_center" => "costCenter",
        "company" => "organization",
        "manager_id" => "manager",
        other => other,
    }
}

/// Deployment choices for SCIM.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DELETE` removes the user instead of suspending them.
    pub hard_delete: bool,
    /// Passwords in SCIM bodies are set as local passwords; otherwise they
    /// are refused.
    pub accept_passwords: bool,
    /// Cohort's public URL, for `meta.location`.
    pub public_url: String,
    /// The largest request body, advertised as Bulk's `maxPayloadSize`.
    pub max_payload: usize,
}

/// A list request's parameters (RFC 7644 §3.4.2).
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// `filter`.
    pub filter: Option<String>,
    /// `startIndex`, 1-based.
    pub start_index: Option<usize>,
    /// `count`.
    pub count: Option<usize>,
    /// `sortBy`.
    pub sort_by: Option<String>,
    /// `sortOrder`: ascending unless `descending`.
    pub descending: bool,
    /// `attributes`.
    pub attributes: Vec<String>,
    /// `excludedAttributes`.
    pub excluded: Vec<String>,
}

/// The two resource types, as their endpoints name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/Users`
    Users,
    /// `/Groups`
    Groups,
}

impl Kind {
    /// The kind an endpoint segment names.
    pub fn parse(segment: &str) -> Option<Kind> {
        match segment {
            "Users" => Some(Kind::Users),
            "Groups" => Some(Kind::Groups),
            _ => None,
        }
    }
}

/// `If-Match: W/"3"` → version 3 for users. `*` or absent → none.
fn user_version(if_match: Option<&str>) -> Result<Option<u64>, ScimError> {
    let Some(v) = if_match.map(str::trim).filter(|v| *v != "*") else {
        return Ok(None);
    };
    v.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ScimError::precondition(format!("If-Match {v:?} is not an ETag of this server"))
        })
}

/// The SCIM service.
#[derive(Clone)]
pub struct Scim {
    store: Store,
    clock: Arc<dyn Clock>,
    directory: Directory,
    groups: crate::groups::Groups,
    credentials: Credentials,
    settings: Arc<Settings>,
    /// Lists and searches running at once. Each renders every candidate
    /// resource and runs the filter over it: for a large directory and a
    /// filter at its limits that is seconds of CPU and a rendered copy of
    /// the directory in memory. So they run on the blocking pool, where
    /// they never hold up the request threads, and only as many at a time
    /// as there are cores; the rest wait their turn.
    scans: Arc<tokio::sync::Semaphore>,
}

impl Scim {
    /// The service.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Directory,
        groups: crate::groups::Groups,
        credentials: Credentials,
        settings: Settings,
    ) -> Scim {
        Scim {
            store,
            clock,
            directory,
            groups,
            credentials,
            settings: Arc::new(settings),
            scans: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    /// Runs `scan` on the blocking pool once a scan permit is free (see
    /// [`Scim::scans`]).
    async fn scan<T: Send + 'static>(
        &self,
        scan: impl FnOnce(Scim) -> Result<T, ScimError> + Send + 'static,
    ) -> Result<T, ScimError> {
        let internal = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "SCIM scan failed");
            ScimError::new(500, None, "internal error; see the server log")
        };
        // The permit goes with the scan, not with this future: a client
        // that hangs up drops the future, but the scan runs on to its end
        // and must go on counting.
        let permit = Arc::clone(&self.scans)
            .acquire_owned()
            .await
            .map_err(|e| internal(&e))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = scan(this);
            drop(permit);
            result
        })
        .await
        .map_err(|e| internal(&e))?
    }

    /// The base URL of the SCIM endpoints.
    pub fn base(&self) -> String {
        format!("{}/scim/v2", self.settings.public_url)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The declared custom user attributes, for the Cohort extension.
    pub fn custom_attributes(
        &self,
    ) -> Result<Vec<(String, crate::directory::AttrType)>, ScimError> {
        Ok(
            crate::directory::schema(&self.store, crate::directory::SubjectKind::User)?
                .into_iter()
                .filter(|a| !a.standard)
                .map(|a| (a.name, a.attr_type))
                .collect(),
        )
    }

    fn extra(&self, id: &Uuid) -> Result<Option<Extra>, ScimError> {
        Ok(self.store.get_json(SCIM_USERS, id.as_bytes())?)
    }

    fn render(&self, user: &User) -> Result<Value, ScimError> {
        Ok(resource::to_scim(
            user,
            self.extra(&user.id)?.as_ref(),
            &self.base(),
        ))
    }

    fn load(&self, id: &str) -> Result<User, ScimError> {
        let id = Uuid::parse_str(id)
            .map_err(|_| ScimError::not_found(format!("User {id} not found")))?;
        directory::user(&self.store, &id)?
            .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))
    }

    /// One user, and its version (the ETag).
    pub fn get_user(&self, _: &Provision<'_>, id: &str) -> Result<(Value, u64), ScimError> {
        let user = self.load(id)?;
        Ok((self.render(&user)?, user.version))
    }

    /// The users matching `filter`, as SCIM resources.
    fn matching_users(&self, filter: Option<&filter::Filter>) -> Result<Vec<Value>, ScimError> {
        // `userName eq "…"` is what Okta and Entra ask before every create:
        // one index lookup instead of a scan.
        let candidates: Vec<User> = match filter.and_then(username_lookup) {
            Some(name) => directory::user_by_username(&self.store, name)?
                .into_iter()
                .collect(),
            None => {
                let mut all = Vec::new();
                directory::for_each_user(&self.store, |u| {
                    all.push(u);
                    Ok::<_, ScimError>(())
                })?;
                all
            }
        };
        // Few candidates (an index lookup): their extras one by one;
        // otherwise all of them in one pass.
        let extras: HashMap<Vec<u8>, Extra> = if candidates.len() <= 16 {
            let mut m = HashMap::new();
            for u in &candidates {
                if let Some(e) = self.extra(&u.id)? {
                    m.insert(u.id.as_bytes().to_vec(), e);
                }
            }
            m
        } else {
            self.store
                .scan(SCIM_USERS, b"", None, false)
                .filter_map(Result::ok)
                .filter_map(|(k, v)| Some((k, cohort_storage::decode_json(SCIM_USERS, &v).ok()?)))
                .collect()
        };
        let base = self.base();
        Ok(candidates
            .iter()
            .map(|u| resource::to_scim(u, extras.get(u.id.as_bytes().as_slice()), &base))
            .filter(|r| filter.is_none_or(|f| filter::matches(f, r)))
            .collect())
    }

    fn matching(
        &self,
        kind: Kind,
        filter: Option<&filter::Filter>,
    ) -> Result<Vec<Value>, ScimError> {
        match kind {
            Kind::Users => self.matching_users(filter),
            Kind::Groups => self.matching_groups(filter),
        }
    }

    /// A page of `kind` (RFC 7644 §3.4.2): filtered, sorted, paged,
    /// projected. A filter that does not parse is refused before waiting
    /// for a scan.
    pub async fn list(
        &self,
        _: &Provision<'_>,
        kind: Kind,
        p: &ListParams,
    ) -> Result<Value, ScimError> {
        let filter = parse_filter(p)?;
        let p = p.clone();
        self.scan(move |this| list_response(this.matching(kind, filter.as_ref())?, &p))
            .await
    }

    /// One resource and its ETag.
    pub fn get(
        &self,
        cap: &Provision<'_>,
        kind: Kind,
        id: &str,
    ) -> Result<(Value, String), ScimError> {
        match kind {
            Kind::Users => self
                .get_user(cap, id)
                .map(|(v, version)| (v, resource::etag(version))),
            Kind::Groups => self.get_group(cap, id),
        }
    }

    /// Creates a resource.
    pub async fn create(
        &self,
        cap: &Provision<'_>,
        kind: Kind,
        body: &Value,
    ) -> Result<(Value, String), ScimError> {
        match kind {
            Kind::Users => self
                .create_user(cap, body)
                .await
                .map(|(v, version)| (v, resource::etag(version))),
            Kind::Groups => self.create_group(cap, body).await,
        }
    }

    /// Replaces a resource (PUT).
    pub async fn replace(
        &self,
        cap: &Provision<'_>,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(Value, String), ScimError> {
        match kind {
            Kind::Users => self
                .replace_user(cap, id, body, user_version(if_match)?)
                .await
                .map(|(v, version)| (v, resource::etag(version))),
            Kind::Groups => self.replace_group(cap, id, body, if_match).await,
        }
    }

    /// Patches a resource.
    pub async fn patch(
        &self,
        cap: &Provision<'_>,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(Value, String), ScimError> {
        match kind {
            Kind::Users => self
                .patch_user(cap, id, body, user_version(if_match)?)
                .await
                .map(|(v, version)| (v, resource::etag(version))),
            Kind::Groups => self.patch_group(cap, id, body, if_match).await,
        }
    }

    /// Deletes a resource (users: suspends, unless `hard_delete`).
    pub async fn delete(
        &self,
        cap: &Provision<'_>,
        kind: Kind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        match kind {
            Kind::Users => self.delete_user(cap, id, user_version(if_match)?).await,
            Kind::Groups => self.delete_group(cap, id, if_match).await,
        }
    }

    /// A search at the server root (RFC 7644 §3.4.3): users and groups
    /// together, users first, then sorted and paged as one list.
    pub async fn search_all(&self, _: &Provision<'_>, p: &ListParams) -> Result<Value, ScimError> {
        let filter = parse_filter(p)?;
        let p = p.clone();
        self.scan(move |this| {
            let mut items = this.matching(Kind::Users, filter.as_ref())?;
            items.extend(this.matching(Kind::Groups, filter.as_ref())?);
            list_response(items, &p)
        })
        .await
    }

    /// Refuses a password before anything is written: not accepted here,
    /// or not meeting the policy.
    fn check_password(&self, incoming: &Incoming) -> Result<(), ScimError> {
        let Some(p) = &incoming.password else {
            return Ok(());
        };
        if !self.settings.accept_passwords {
            return Err(ScimError::invalid_value(
                "this server does not accept passwords over SCIM (scim.accept_passwords)",
            ));
        }
        crate::credentials::check_policy(p)?;
        Ok(())
    }

    async fn set_password(
        &self,
        cap: &Provision<'_>,
        id: &Uuid,
        password: Option<String>,
    ) -> Result<(), ScimError> {
        if let Some(p) = password {
            self.credentials.set_password(&cap.manage(), id, p).await?;
        }
        Ok(())
    }

    /// Creates a user. `active` true (or absent) creates it active; false,
    /// staged.
    pub async fn create_user(
        &self,
        cap: &Provision<'_>,
        body: &Value,
    ) -> Result<(Value, u64), ScimError> {
        let mut incoming = resource::from_scim(body)?;
        self.check_password(&incoming)?;
        incoming.input.state = Some(if incoming.active == Some(false) {
            UserState::Staged
        } else {
            UserState::Active
        });
        let now = self.clock.now();
        let actor = cap.actor().clone();
        let user = self
            .store
            .write(|txn| {
                let (input, extra) = resolve_manager(txn, &incoming)?;
                let user = self.directory.create_user_in(txn, &actor, input, now)?;
                put_extra(txn, &user.id, &extra)?;
                Ok::<_, DomainError>(user)
            })?
            .durable()
            .await?;
        self.set_password(cap, &user.id, incoming.password).await?;
        Ok((self.render(&user)?, user.version))
    }

    /// Replaces a user (PUT): every writable attribute takes the body's
    /// value, absent ones are cleared.
    pub async fn replace_user(
        &self,
        cap: &Provision<'_>,
        id: &str,
        body: &Value,
        if_match: Option<u64>,
    ) -> Result<(Value, u64), ScimError> {
        let before = self.load(id)?;
        let incoming = resource::from_scim(body)?;
        self.write(cap, &before, incoming, if_match).await
    }

    /// Applies a PATCH to a user.
    pub async fn patch_user(
        &self,
        cap: &Provision<'_>,
        id: &str,
        body: &Value,
        if_match: Option<u64>,
    ) -> Result<(Value, u64), ScimError> {
        let before = self.load(id)?;
        let mut current = self.render(&before)?;
        patch::apply(&mut current, body)?;
        let incoming = resource::from_scim(&current)?;
        self.write(cap, &before, incoming, if_match).await
    }

    async fn write(
        &self,
        cap: &Provision<'_>,
        before: &User,
        incoming: Incoming,
        if_match: Option<u64>,
    ) -> Result<(Value, u64), ScimError> {
        self.check_password(&incoming)?;
        // SCIM's `active` is two-valued; a staged user stays staged when
        // told inactive, and becomes active when told active.
        let state = match incoming.active {
            Some(true) => Some(UserState::Active),
            Some(false) if before.state == UserState::Staged => None,
            Some(false) => Some(UserState::Suspended),
            None => None,
        };
        let actor = cap.actor().clone();
        let id = before.id;
        let user = self
            .store
            .write(|txn| {
                let (input, extra) = resolve_manager(txn, &incoming)?;
                let user = self
                    .directory
                    .replace_user_in(txn, &actor, &id, input, state, if_match)?;
                put_extra(txn, &id, &extra)?;
                Ok::<_, DomainError>(user)
            })?
            .durable()
            .await?;
        self.set_password(cap, &id, incoming.password).await?;
        Ok((self.render(&user)?, user.version))
    }

    /// DELETE: suspends the user (JumpCloud's treatment of Okta
    /// deprovisioning), or removes them with `scim.hard_delete`.
    pub async fn delete_user(
        &self,
        cap: &Provision<'_>,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<(), ScimError> {
        let user = self.load(id)?;
        if self.settings.hard_delete {
            self.directory
                .delete_user(&cap.manage(), &user.id, if_match)
                .await?;
            self.store
                .write(|txn| {
                    txn.delete(SCIM_USERS, user.id.as_bytes());
                    Ok::<_, DomainError>(())
                })?
                .durable()
                .await?;
            return Ok(());
        }
        if user.state == UserState::Active {
            self.directory
                .change_user_state(
                    &cap.change_user_state(),
                    &user.id,
                    UserState::Suspended,
                    if_match,
                )
                .await?;
        }
        Ok(())
    }
}

/// `manager.value` as a Cohort user: its id, or a user's userName or
/// externalId. Anything else is kept in `Extra` and returned as sent.
fn resolve_manager(
    txn: &WriteTxn<'_>,
    incoming: &Incoming,
) -> Result<(crate::directory::UserInput, Extra), DomainError> {
    let mut input = incoming.input.clone();
    let mut extra = incoming.extra.clone();
    let Some(raw) = extra.manager.clone() else {
        return Ok((input, extra));
    };
    let by_id = Uuid::parse_str(raw.trim())
        .ok()
        .filter(|id| directory::user_exists(txn, id).unwrap_or(false));
    let by_name =
        || -> Result<Option<Uuid>, DomainError> { Ok(directory::user_id_by_username(txn, &raw)?) };
    let by_external = || -> Result<Option<Uuid>, DomainError> {
        for (k, v) in txn.scan_prefix(SCIM_USERS, b"")? {
            let e: Extra = cohort_storage::decode_json(SCIM_USERS, &v)?;
            if e.external_id.as_deref() == Some(raw.as_str()) {
                return Ok(Uuid::from_slice(&k).ok());
            }
        }
        Ok(None)
    };
    let found = match by_id {
        Some(id) => Some(id),
        None => match by_name()? {
            Some(id) => Some(id),
            None => by_external()?,
        },
    };
    if let Some(id) = found {
        input.manager_id = Some(id);
        extra.manager = None;
    }
    Ok((input, extra))
}

fn put_extra(txn: &mut WriteTxn<'_>, id: &Uuid, extra: &Extra) -> Result<(), DomainError> {
    if *extra == Extra::default() {
        txn.delete(SCIM_USERS, id.as_bytes());
    } else {
        txn.put_json(SCIM_USERS, id.as_bytes(), extra)?;
    }
    Ok(())
}

/// The request's filter, parsed.
fn parse_filter(p: &ListParams) -> Result<Option<filter::Filter>, ScimError> {
    match p.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Ok(Some(
            filter::parse(f).map_err(|e| ScimError::invalid_filter(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// A ListResponse of `matched`: sorted by `sortBy`, the page from
/// `startIndex` of `count` (at most [`MAX_RESULTS`]), projected.
fn list_response(mut matched: Vec<Value>, p: &ListParams) -> Result<Value, ScimError> {
    if let Some(sort) = &p.sort_by {
        let path = filter::parse_path(sort).ok_or_else(|| {
            ScimError::invalid_value(format!("sortBy {sort:?} is not an attribute"))
        })?;
        matched.sort_by_cached_key(|r| {
            filter::values(r, &path)
                .first()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_lowercase))
                .unwrap_or_default()
        });
        if p.descending {
            matched.reverse();
        }
    }
    let total = matched.len();
    let start = p.start_index.unwrap_or(1).max(1);
    let count = p.count.unwrap_or(100).min(MAX_RESULTS);
    let page: Vec<Value> = matched
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|r| resource::project(r, &p.attributes, &p.excluded))
        .collect();
    Ok(json!({
        "schemas": [resource::LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    }))
}

/// The user name a filter looks up exactly, when it is just that.
fn username_lookup(f: &filter::Filter) -> Option<&str> {
    match f {
        filter::Filter::Compare(p, filter::Op::Eq, Value::String(v))
            if p.sub.is_none()
                && p.attr.eq_ignore_ascii_case("userName")
                && p.urn
                    .as_deref()
                    .is_none_or(|u| u.eq_ignore_ascii_case(resource::USER)) =>
        {
            Some(v)
        }
        _ => None,
    }
}
