//! Bindings between users and devices: who uses which device. Each binding is
//! stored twice (user → device and device → user) in one transaction, so both
//! directions are an index walk and they can never disagree.

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Directory;
use super::attributes::SubjectKind;
use super::layout::{self, DEVICE_USERS, DEVICES, USER_DEVICES, USERS};
use crate::audit::{self, Record};
use crate::auth::{Actor, ManageDirectory, Mutation, Read};
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest};

/// A user bound to a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Binding {
    /// The user.
    pub user_id: Uuid,
    /// The device.
    pub device_id: Uuid,
    /// When the binding was made.
    pub created_at: DateTime<Utc>,
}

fn user_key(user: &Uuid, device: &Uuid) -> Vec<u8> {
    layout::join(&[&layout::id(user), &layout::id(device)])
}

fn device_key(device: &Uuid, user: &Uuid) -> Vec<u8> {
    layout::join(&[&layout::id(device), &layout::id(user)])
}

/// Writes a binding under both of its keys (the user's devices, the
/// device's users). Auditing is the caller's part.
pub(super) fn store_binding(txn: &mut WriteTxn<'_>, b: &Binding) -> Result<(), DomainError> {
    txn.put_json(USER_DEVICES, &user_key(&b.user_id, &b.device_id), b)?;
    txn.put_json(DEVICE_USERS, &device_key(&b.device_id, &b.user_id), b)?;
    Ok(())
}

fn record(
    txn: &mut WriteTxn<'_>,
    now: DateTime<Utc>,
    actor: &Actor,
    action: &str,
    b: &Binding,
    created: bool,
) -> Result<(), DomainError> {
    let (before, after) = if created {
        (None, Some(b))
    } else {
        (Some(b), None)
    };
    audit::record(
        txn,
        now,
        actor,
        Record {
            action,
            resource_type: "binding",
            resource_id: format!("{}/{}", b.user_id, b.device_id),
            changes: audit::diff(before, after),
        },
    )?;
    Ok(())
}

impl Directory {
    /// Removes every binding of one user or device (when it is deleted).
    pub(crate) fn unbind_all(
        &self,
        txn: &mut WriteTxn<'_>,
        kind: SubjectKind,
        id: &Uuid,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<(), DomainError> {
        let ks = match kind {
            SubjectKind::User => USER_DEVICES,
            SubjectKind::Device => DEVICE_USERS,
        };
        for (_, v) in txn.scan_prefix(ks, &layout::id(id))? {
            let b: Binding = cohort_storage::decode_json(ks, &v)?;
            txn.delete(USER_DEVICES, &user_key(&b.user_id, &b.device_id));
            txn.delete(DEVICE_USERS, &device_key(&b.device_id, &b.user_id));
            self.record_binding(txn, now, actor, "binding.delete", &b, false)?;
        }
        Ok(())
    }

    fn record_binding(
        &self,
        txn: &mut WriteTxn<'_>,
        now: DateTime<Utc>,
        actor: &Actor,
        action: &str,
        b: &Binding,
        created: bool,
    ) -> Result<(), DomainError> {
        record(txn, now, actor, action, b, created)?;
        self.emit(
            txn,
            actor,
            now,
            super::Change::Binding {
                user: b.user_id,
                device: b.device_id,
            },
        )
    }

    /// Binds a user to a device. Idempotent: binding again returns the
    /// existing binding and `false`.
    pub async fn bind(
        &self,
        cap: &ManageDirectory<'_>,
        user: &Uuid,
        device: &Uuid,
    ) -> Result<(Binding, bool), DomainError> {
        let now = self.clock.now();
        super::commit(&self.store, |txn| {
            self.bind_in(txn, cap.actor(), user, device, now)
        })
        .await
    }

    /// Binds a user to a device in the caller's transaction; `false` when
    /// they were bound already.
    pub(crate) fn bind_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        user: &Uuid,
        device: &Uuid,
        now: DateTime<Utc>,
    ) -> Result<(Binding, bool), DomainError> {
        if !txn.contains(USERS, &layout::id(user))? {
            return Err(DomainError::not_found("user", user));
        }
        if !txn.contains(DEVICES, &layout::id(device))? {
            return Err(DomainError::not_found("device", device));
        }
        if let Some(existing) = txn.get_json::<Binding>(USER_DEVICES, &user_key(user, device))? {
            return Ok((existing, false));
        }
        let b = Binding {
            user_id: *user,
            device_id: *device,
            created_at: now,
        };
        store_binding(txn, &b)?;
        self.record_binding(txn, now, actor, "binding.create", &b, true)?;
        Ok((b, true))
    }

    /// Removes a binding.
    pub async fn unbind(
        &self,
        cap: &ManageDirectory<'_>,
        user: &Uuid,
        device: &Uuid,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        super::commit(&self.store, |txn| {
            let b: Binding = txn
                .get_json(USER_DEVICES, &user_key(user, device))?
                .ok_or_else(|| DomainError::not_found("binding", format!("{user}/{device}")))?;
            txn.delete(USER_DEVICES, &user_key(user, device));
            txn.delete(DEVICE_USERS, &device_key(device, user));
            self.record_binding(txn, now, cap.actor(), "binding.delete", &b, false)?;
            Ok(())
        })
        .await
    }

    /// The bindings of a user or a device, oldest-bound device/user id first.
    pub fn list_bindings(
        &self,
        read: &Read,
        kind: SubjectKind,
        id: &Uuid,
        req: &PageRequest,
    ) -> Result<Page<Binding>, DomainError> {
        // 404 for an unknown subject rather than an empty list.
        let ks = match kind {
            SubjectKind::User => {
                self.get_user(read, id)?;
                USER_DEVICES
            }
            SubjectKind::Device => {
                self.get_device(read, id)?;
                DEVICE_USERS
            }
        };
        let tag = format!("bindings:{}", kind.as_str());
        let prefix = layout::id(id);
        let resume = req.resume_key(&tag)?;
        let entries = self.store.scan(ks, &prefix, resume.as_deref(), false);
        page::collect(&tag, req.limit, entries, |_, v| {
            Ok(page::Visit::Item(cohort_storage::decode_json(ks, v)?))
        })
    }
}
