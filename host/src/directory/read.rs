//! The directory's reads for other modules.
//!
//! How users and devices are stored (keyspaces, index keys, identity
//! folding) is private to the directory; groups, access, federation,
//! provisioning, credentials and sessions read through these functions.
//! Each takes a [`Reader`], so a caller in a transaction reads through that
//! transaction and a caller that only reads passes the store.

use cohort_storage::{Reader, StorageError};
use uuid::Uuid;

use super::layout::{self, DEVICES, USER_DEVICES, USERS, USERS_BY_EMAIL, USERS_BY_USERNAME};
use super::{Device, SubjectKind, User};

/// A user, if there is one with this id.
pub fn user(r: &impl Reader, id: &Uuid) -> Result<Option<User>, StorageError> {
    r.get_json(USERS, &layout::id(id))
}

/// A device, if there is one with this id.
pub fn device(r: &impl Reader, id: &Uuid) -> Result<Option<Device>, StorageError> {
    r.get_json(DEVICES, &layout::id(id))
}

/// Whether a user or device with this id exists, without decoding it.
pub fn subject_exists(r: &impl Reader, kind: SubjectKind, id: &Uuid) -> Result<bool, StorageError> {
    let ks = match kind {
        SubjectKind::User => USERS,
        SubjectKind::Device => DEVICES,
    };
    r.contains(ks, &layout::id(id))
}

/// Whether a user with this id exists.
pub fn user_exists(r: &impl Reader, id: &Uuid) -> Result<bool, StorageError> {
    subject_exists(r, SubjectKind::User, id)
}

/// The id of the user whose username is `username`, compared by its
/// identity key (RFC 8265), as sign-in and uniqueness compare it.
pub fn user_id_by_username(r: &impl Reader, username: &str) -> Result<Option<Uuid>, StorageError> {
    Ok(r.get(USERS_BY_USERNAME, &layout::username(username))?
        .and_then(|b| Uuid::from_slice(&b).ok()))
}

/// The id of the user whose email is `email`, compared by its identity key.
pub fn user_id_by_email(r: &impl Reader, email: &str) -> Result<Option<Uuid>, StorageError> {
    Ok(r.get(USERS_BY_EMAIL, &layout::email(email))?
        .and_then(|b| Uuid::from_slice(&b).ok()))
}

/// The user a username names.
pub fn user_by_username(r: &impl Reader, username: &str) -> Result<Option<User>, StorageError> {
    match user_id_by_username(r, username)? {
        Some(id) => user(r, &id),
        None => Ok(None),
    }
}

/// The user an email names.
pub fn user_by_email(r: &impl Reader, email: &str) -> Result<Option<User>, StorageError> {
    match user_id_by_email(r, email)? {
        Some(id) => user(r, &id),
        None => Ok(None),
    }
}

/// The user an identifier names, as the sign-in form reads it: an email
/// first, then a username.
pub fn user_by_identifier(r: &impl Reader, identifier: &str) -> Result<Option<User>, StorageError> {
    match user_by_email(r, identifier)? {
        Some(u) => Ok(Some(u)),
        None => user_by_username(r, identifier),
    }
}

/// Calls `f` with every user, in id (creation) order, one at a time.
pub fn for_each_user<E: From<StorageError>>(
    r: &impl Reader,
    mut f: impl FnMut(User) -> Result<(), E>,
) -> Result<(), E> {
    r.for_each(USERS, b"", |_, v| f(cohort_storage::decode_json(USERS, v)?))
}

/// Calls `f` with every device, in id (creation) order, one at a time.
pub fn for_each_device<E: From<StorageError>>(
    r: &impl Reader,
    mut f: impl FnMut(Device) -> Result<(), E>,
) -> Result<(), E> {
    r.for_each(DEVICES, b"", |_, v| {
        f(cohort_storage::decode_json(DEVICES, v)?)
    })
}

/// Calls `f` with every user–device binding as (user, device).
pub fn for_each_binding<E: From<StorageError>>(
    r: &impl Reader,
    mut f: impl FnMut(Uuid, Uuid) -> Result<(), E>,
) -> Result<(), E> {
    r.for_each(USER_DEVICES, b"", |k, _| match crate::id_pair::split(k) {
        Some((user, device)) => f(user, device),
        None => Ok(()),
    })
}

/// Whether `user` is bound to `device`.
pub fn is_bound(r: &impl Reader, user: &Uuid, device: &Uuid) -> Result<bool, StorageError> {
    r.contains(
        USER_DEVICES,
        &layout::join(&[&layout::id(user), &layout::id(device)]),
    )
}

/// How many users and devices there are, by walking both tables (for
/// estimates of work, not for hot paths).
pub fn subject_count(r: &impl Reader) -> Result<usize, StorageError> {
    let mut n = 0usize;
    for ks in [USERS, DEVICES] {
        r.for_each(ks, b"", |_, _| {
            n += 1;
            Ok::<_, StorageError>(())
        })?;
    }
    Ok(n)
}

/// The comparison form of a username: two usernames are the same identity
/// exactly when their forms are equal (SCIM filters compare this way).
pub fn username_form(s: &str) -> Vec<u8> {
    layout::username(s)
}

/// The comparison form of an email (see [`username_form`]).
pub fn email_form(s: &str) -> Vec<u8> {
    layout::email(s)
}
