//! Device enrollment and per-device credentials, on top of the directory.
//!
//! A role-wide `device-agent` key lets whoever holds it check in for every
//! device, so one compromised laptop could rewrite the whole fleet's
//! inventory. Enrollment replaces it with what endpoint managers do: an
//! admin creates an *enrollment token* (expiry, number of uses, optionally a
//! static device group), an agent exchanges it once for a *device
//! credential* bound to the one device it enrolled, and that credential can
//! only check in, read its own device and rotate itself.
//!
//! Every secret here is 256 random bits with a prefix that says what it is
//! (`cohort_enroll_…`, `cohort_device_…`), stored only as its SHA-256 hash,
//! and returned once. The key layout is private to this module; the
//! directory and groups are changed through their own functions, in the same
//! transaction, so an enrollment lands whole (device, credential, token use,
//! group membership and their audit events) or not at all.

mod credentials;
mod enroll;
mod tokens;

pub use credentials::{CREDENTIAL_PREFIX, DeviceCredential, DeviceCredentials, IssuedCredential};
pub use enroll::{EnrollError, Enrollment, TokenRefusal};
pub use tokens::{
    CreatedEnrollmentToken, DEFAULT_TTL_SECONDS, EnrollmentToken, MAX_TTL_SECONDS, MAX_USES,
    NewEnrollmentToken, TOKEN_PREFIX, TokenState,
};

use std::sync::Arc;

use cohort_storage::Store;

use crate::clock::Clock;
use crate::directory::Directory;
use crate::groups::Groups;

/// How often the last-used times of device credentials, kept in memory as
/// credentials authenticate, are written to the store.
pub const USAGE_FLUSH_SECONDS: u64 = 60;

/// Enrollment tokens, enrollment, and device credentials. Cheap to clone.
#[derive(Clone)]
pub struct Devices {
    store: Store,
    clock: Arc<dyn Clock>,
    directory: Directory,
    groups: Groups,
    credentials: DeviceCredentials,
}

impl Devices {
    /// The service over `store`. `credentials` must be the same instance the
    /// directory was given as a listener, so that deleting a device revokes
    /// its credential.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Directory,
        groups: Groups,
        credentials: DeviceCredentials,
    ) -> Self {
        Devices {
            store,
            clock,
            directory,
            groups,
            credentials,
        }
    }

    /// Device credentials: authentication, rotation, revocation.
    pub fn credentials(&self) -> &DeviceCredentials {
        &self.credentials
    }
}

#[cfg(test)]
mod tests;
