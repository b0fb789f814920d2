//! The directory's key layout. Every query the API answers without a scan has
//! an index here; the comment on each keyspace says which query it serves.

use cohort_storage::Keyspace;
use uuid::Uuid;

/// user id (16 bytes) → `User` JSON. UUIDv7 ids make this creation order.
pub(super) const USERS: Keyspace = Keyspace::new("users");
/// [`username`] key → user id. Uniqueness and lookup by username.
pub(super) const USERS_BY_USERNAME: Keyspace = Keyspace::new("users_by_username");
/// [`email`] key → user id. Uniqueness and lookup by email.
pub(super) const USERS_BY_EMAIL: Keyspace = Keyspace::new("users_by_email");
/// manager id ++ report id → (). Clearing `manager_id` when a manager goes.
pub(super) const USERS_BY_MANAGER: Keyspace = Keyspace::new("users_by_manager");
/// device id → `Device` JSON.
pub(super) const DEVICES: Keyspace = Keyspace::new("devices");
/// lowercased hostname ++ 0 ++ device id → (). Hostnames need not be unique.
pub(super) const DEVICES_BY_HOSTNAME: Keyspace = Keyspace::new("devices_by_hostname");
/// lowercased serial number ++ 0 ++ device id → (). Enrollment finds the
/// device a re-imaged machine already is; serials need not be unique.
pub(super) const DEVICES_BY_SERIAL: Keyspace = Keyspace::new("devices_by_serial");
/// user id ++ device id → `Binding` JSON. The devices of a user.
pub(super) const USER_DEVICES: Keyspace = Keyspace::new("user_devices");
/// device id ++ user id → `Binding` JSON. The users of a device.
pub(super) const DEVICE_USERS: Keyspace = Keyspace::new("device_users");
/// subject kind ++ 0 ++ name → `CustomAttribute` JSON.
pub(super) const ATTRIBUTE_DEFS: Keyspace = Keyspace::new("attribute_defs");
/// subject kind ++ 0 ++ name ++ 0 ++ subject id → (). Whether a custom
/// attribute is in use, without scanning every subject.
pub(super) const ATTRIBUTE_USAGE: Keyspace = Keyspace::new("attribute_usage");

/// Concatenates key parts.
pub(super) fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// A user id or device id as a key.
pub(super) fn id(id: &Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// Reads a UUID from 16 key bytes.
pub(super) fn uuid_at(bytes: &[u8], offset: usize) -> Option<Uuid> {
    bytes
        .get(offset..offset + 16)
        .and_then(|b| Uuid::from_slice(b).ok())
}

/// The index key of a username (RFC 8265 `UsernameCaseMapped`, see
/// [`super::identity`]). A string that is nobody's username keys as
/// itself, which no stored username has, so its look-up finds nobody
/// instead of whoever it folds onto.
pub(super) fn username(s: &str) -> Vec<u8> {
    super::identity::username_key(s)
        .unwrap_or_else(|| s.trim().to_string())
        .into_bytes()
}

/// The index key of an email (see [`super::identity`]).
pub(super) fn email(s: &str) -> Vec<u8> {
    super::identity::email_key(s).into_bytes()
}

/// The case-insensitive form of device hostnames and serial numbers, which
/// are not identities (neither unique nor used to sign in).
pub(super) fn fold(s: &str) -> Vec<u8> {
    s.to_lowercase().into_bytes()
}
