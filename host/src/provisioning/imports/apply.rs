//! Writing a plan: each change in its own transaction through the
//! directory's write path (validation, audit as the importer, incremental
//! group recompute), with the source's link stored beside it. Apart from
//! planning because this is the only part of a run that changes the
//! directory, and it does so change by change so that one bad record does
//! not stop the rest.

use std::collections::BTreeMap;

use cohort_storage::Committed;
use serde_json::Value;
use uuid::Uuid;

use super::plan::{DEVICE_STANDARD, STANDARD, device_link};
use super::{Change, ImportRun, Imports, LINKS, NewUsers, link_key, push_error};
use crate::auth::Actor;
use crate::directory::read as directory;
use crate::directory::{Device, DeviceInput, Directory, User, UserInput, UserState};
use crate::error::DomainError;

/// Writes between two waits for durability.
const BATCH: usize = 500;

impl Imports {
    /// Writes a plan, change by change (each its own transaction, waiting
    /// for durability every few hundred), recording per-change errors.
    pub(super) async fn apply(
        &self,
        run: &mut ImportRun,
        actor: &Actor,
        plan: Vec<Change>,
    ) -> Result<(), DomainError> {
        let instance = run.instance_id.clone();
        let new_users = run.input.new_users;
        let mut pending: Option<Committed<()>> = None;
        for (n, change) in plan.into_iter().enumerate() {
            let result = self.store.write(|txn| {
                self.write_change(txn, &self.directory, &instance, new_users, actor, &change)
            });
            match result {
                Ok(c) => {
                    count_done(&mut run.counts, &change);
                    pending = Some(c);
                }
                Err(e) => push_error(run, Some(external_id(&change)), e.to_string()),
            }
            if (n + 1) % BATCH == 0
                && let Some(c) = pending.take()
            {
                c.durable().await?;
            }
        }
        if let Some(c) = pending {
            c.durable().await?;
        }
        Ok(())
    }

    /// What [`Imports::apply`] would do with `plan`, found by doing it in a
    /// rehearsal ([`cohort_storage::Store::rehearse`]) that is dropped at
    /// the end: each change through the same write path, each failure the
    /// same per-record error, later records seeing earlier ones. Group
    /// rules are not evaluated (the in-memory memberships must not see
    /// changes that will not be made), so the counts and errors are the
    /// directory's, not the groups'. Blocking: the caller runs it off the
    /// async threads.
    pub(super) fn rehearse(
        &self,
        run: &mut ImportRun,
        actor: &Actor,
        plan: &[Change],
    ) -> Result<(), DomainError> {
        let directory = self.directory.without_listeners();
        let instance = run.instance_id.clone();
        let new_users = run.input.new_users;
        self.store.rehearse(|txn| {
            for change in plan {
                let point = txn.savepoint();
                match self.write_change(txn, &directory, &instance, new_users, actor, change) {
                    Ok(()) => {
                        txn.release(point);
                        count_done(&mut run.counts, change);
                    }
                    Err(e) => {
                        txn.roll_back_to(point);
                        push_error(run, Some(external_id(change)), e.to_string());
                    }
                }
            }
            Ok::<_, DomainError>(())
        })
    }

    /// One change of a plan, in `txn`, through `directory`'s write path.
    fn write_change(
        &self,
        txn: &mut cohort_storage::WriteTxn<'_>,
        directory: &Directory,
        instance: &str,
        new_users: NewUsers,
        actor: &Actor,
        change: &Change,
    ) -> Result<(), DomainError> {
        match change {
            Change::Create {
                external_id,
                attributes,
            } => {
                let mut input = input_from(None, attributes)?;
                input.state = Some(match new_users {
                    NewUsers::Staged => UserState::Staged,
                    NewUsers::Active => UserState::Active,
                });
                let now = self.clock.now();
                let user = directory.create_user_in(txn, actor, input, now)?;
                txn.put(
                    LINKS,
                    &link_key(instance, external_id),
                    user.id.as_bytes().to_vec(),
                );
            }
            Change::Update {
                external_id,
                user_id,
                version,
                fields,
            } => {
                let current = crate::directory::load_user(txn, user_id)?;
                let input = input_from(Some(&current), &after_values(fields))?;
                directory.replace_user_in(txn, actor, user_id, input, None, Some(*version))?;
                txn.put(
                    LINKS,
                    &link_key(instance, external_id),
                    user_id.as_bytes().to_vec(),
                );
            }
            Change::Suspend {
                user_id, version, ..
            } => {
                let current = crate::directory::load_user(txn, user_id)?;
                directory.replace_user_in(
                    txn,
                    actor,
                    user_id,
                    UserInput::from(&current),
                    Some(UserState::Suspended),
                    Some(*version),
                )?;
            }
            Change::Link {
                external_id,
                user_id,
            } => {
                if !external_id.is_empty() {
                    txn.put(
                        LINKS,
                        &link_key(instance, external_id),
                        user_id.as_bytes().to_vec(),
                    );
                }
            }
            Change::CreateDevice {
                external_id,
                attributes,
                owner,
            } => {
                let input = device_input_from(None, attributes)?;
                let now = self.clock.now();
                let device = directory.create_device_in(txn, actor, input, now)?;
                txn.put(
                    LINKS,
                    &link_key(instance, &device_link(external_id)),
                    device.id.as_bytes().to_vec(),
                );
                self.bind_owner(txn, directory, actor, &device.id, owner.as_deref())?;
            }
            Change::UpdateDevice {
                external_id,
                device_id,
                version,
                fields,
                owner,
            } => {
                let current = crate::directory::load_device(txn, device_id)?;
                let input = device_input_from(Some(&current), &after_values(fields))?;
                directory.replace_device_in(txn, actor, device_id, input, Some(*version))?;
                txn.put(
                    LINKS,
                    &link_key(instance, &device_link(external_id)),
                    device_id.as_bytes().to_vec(),
                );
                self.bind_owner(txn, directory, actor, device_id, owner.as_deref())?;
            }
            Change::LinkDevice {
                external_id,
                device_id,
                owner,
            } => {
                txn.put(
                    LINKS,
                    &link_key(instance, &device_link(external_id)),
                    device_id.as_bytes().to_vec(),
                );
                self.bind_owner(txn, directory, actor, device_id, owner.as_deref())?;
            }
        }
        Ok(())
    }

    /// Binds the device to the user the record names as owner (by email,
    /// then username). An owner that is not in the directory is an error
    /// for this record.
    fn bind_owner(
        &self,
        txn: &mut cohort_storage::WriteTxn<'_>,
        directory: &Directory,
        actor: &Actor,
        device: &Uuid,
        owner: Option<&str>,
    ) -> Result<(), DomainError> {
        let Some(owner) = owner.map(str::trim).filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let user = match directory::user_id_by_email(txn, owner)? {
            Some(id) => Some(id),
            None => directory::user_id_by_username(txn, owner)?,
        }
        .ok_or_else(|| {
            DomainError::invalid("owner", format!("no user {owner:?} to bind the device to"))
        })?;
        let now = self.clock.now();
        directory.bind_in(txn, actor, &user, device, now)?;
        Ok(())
    }
}

/// The values a planned update sets, from its field-by-field changes.
fn after_values(fields: &BTreeMap<String, (Value, Value)>) -> BTreeMap<String, Value> {
    fields
        .iter()
        .map(|(k, (_, a))| (k.clone(), a.clone()))
        .collect()
}

/// Counts a change that was made.
fn count_done(counts: &mut super::Counts, change: &Change) {
    match change {
        Change::Create { .. } => counts.created += 1,
        Change::Update { .. } => counts.updated += 1,
        Change::Suspend { .. } => counts.suspended += 1,
        Change::CreateDevice { .. } => counts.devices_created += 1,
        Change::UpdateDevice { .. } => counts.devices_updated += 1,
        Change::Link { .. } | Change::LinkDevice { .. } => {}
    }
}

/// The source's id of the record a change comes from.
fn external_id(change: &Change) -> String {
    match change {
        Change::Create { external_id, .. }
        | Change::Update { external_id, .. }
        | Change::Suspend { external_id, .. }
        | Change::Link { external_id, .. }
        | Change::CreateDevice { external_id, .. }
        | Change::UpdateDevice { external_id, .. }
        | Change::LinkDevice { external_id, .. } => external_id.clone(),
    }
}

/// Sets a record's attributes on a subject's writable fields (as JSON):
/// names in `standard` directly, others as custom attributes.
fn overlay(v: &mut Value, attrs: &BTreeMap<String, Value>, standard: &[&str]) {
    for (name, value) in attrs {
        if standard.contains(&name.as_str()) {
            v[name] = value.clone();
        } else {
            if !v["custom_attributes"].is_object() {
                v["custom_attributes"] = serde_json::json!({});
            }
            v["custom_attributes"][name] = value.clone();
        }
    }
}

/// A device's writable fields with a record's attributes over them.
fn device_input_from(
    current: Option<&Device>,
    attrs: &BTreeMap<String, Value>,
) -> Result<DeviceInput, DomainError> {
    if current.is_none() && !attrs.contains_key("os_family") {
        return Err(DomainError::invalid(
            "os_family",
            "a new device needs its OS family",
        ));
    }
    let mut v = match current {
        Some(d) => serde_json::to_value(DeviceInput::from(d)).unwrap_or_default(),
        None => serde_json::json!({"hostname": "", "os_family": "linux"}),
    };
    overlay(&mut v, attrs, &DEVICE_STANDARD);
    serde_json::from_value(v).map_err(|e| DomainError::invalid("attributes", e.to_string()))
}

/// A user's writable fields with a record's attributes over them. A new
/// user without a username takes the email.
fn input_from(
    current: Option<&User>,
    attrs: &BTreeMap<String, Value>,
) -> Result<UserInput, DomainError> {
    let mut v = match current {
        Some(u) => serde_json::to_value(UserInput::from(u)).unwrap_or_default(),
        None => serde_json::json!({"username": "", "email": ""}),
    };
    overlay(&mut v, attrs, &STANDARD);
    if current.is_none() && v["username"].as_str().is_none_or(str::is_empty) {
        v["username"] = v["email"].clone();
    }
    serde_json::from_value(v).map_err(|e| DomainError::invalid("attributes", e.to_string()))
}
