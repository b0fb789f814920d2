//! Who may do what. A request authenticates with an API key and becomes a
//! [`Principal`]; the principal hands out *capabilities*, and every domain
//! operation that changes something takes one. An operation therefore cannot
//! be called without the permission check having happened first, and the
//! capability carries the actor that the audit log records.
//!
//! | role        | reads | user state changes | device check-in | everything else |
//! |-------------|-------|--------------------|-----------------|-----------------|
//! | admin       | yes   | yes                | yes             | yes             |
//! | help-desk   | yes   | yes                | no              | no              |
//! | read-only   | yes   | no                 | no              | no              |
//! | device-agent| no    | no                 | yes             | no              |
//! | scim        | through `/scim/v2` only: users and groups, nothing else | | | |
//! | device      | its own device only | no       | its own device  | rotate its own credential |
//!
//! `device` is not a role an API key can have: it is the principal of a
//! per-device credential, issued by enrollment (`crate::devices`) and bound
//! to one device id. Every device-scoped capability takes the device id and
//! refuses a device credential that names another device, so one stolen
//! laptop cannot speak for the fleet.

mod api_keys;

pub use api_keys::{ApiKey, ApiKeys, CreatedKey, NewApiKey};
pub(crate) use api_keys::{generate_secret, hash_secret};

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a key may do. See the module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads, and user state changes (activate, suspend) for support staff.
    HelpDesk,
    /// Reads only, for reporting and monitoring.
    ReadOnly,
    /// Device check-in for any device. Kept for MDM and inventory back-ends
    /// that report for a whole fleet; an agent on one device should use the
    /// per-device credential that enrollment issues instead.
    DeviceAgent,
    /// A SCIM client (Okta, Entra ID) provisioning users and groups through
    /// `/scim/v2`, and nothing else: one key per client, so the audit log
    /// names the client behind every change.
    Scim,
    /// A per-device credential from enrollment: check-in and reads of its
    /// own device, and rotating its own credential. No API key has it.
    Device,
}

impl Role {
    /// The role's name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::HelpDesk => "help-desk",
            Role::ReadOnly => "read-only",
            Role::DeviceAgent => "device-agent",
            Role::Scim => "scim",
            Role::Device => "device",
        }
    }
}

/// Longest user agent the audit log keeps, in characters. Clients send
/// what they like; an event is no place for kilobytes of it.
pub const MAX_USER_AGENT: usize = 256;

/// Where a change came from: the request that carried it. The audit log
/// records it with every event, so that an admin can tell from which
/// machine and program a change was made, and correlate it with the logs.
/// Changes Cohort makes on its own (start-up, schedules) have only an id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// Correlates the audit event with the request and its logs.
    pub request_id: String,
    /// The client's address: the socket peer, or behind a trusted proxy the
    /// address the proxy forwarded. `None` when there was no request, or no
    /// socket (a router driven in process).
    pub client_address: Option<IpAddr>,
    /// The client's `User-Agent`, printable and at most [`MAX_USER_AGENT`]
    /// characters.
    pub user_agent: Option<String>,
}

/// Characters a user agent may not bring into the audit log: control
/// characters, and the invisible ones that reorder or hide text where it
/// is shown (bidirectional overrides and isolates, zero-width characters),
/// with which a client could make its entry read as something else in a
/// console or a spreadsheet.
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl Origin {
    /// A request's origin. The user agent is taken as sent, with anything
    /// unprintable replaced, so that it can be shown and exported safely.
    pub fn new(
        request_id: impl Into<String>,
        client_address: Option<IpAddr>,
        user_agent: Option<&[u8]>,
    ) -> Origin {
        let user_agent = user_agent
            .map(|raw| {
                String::from_utf8_lossy(raw)
                    .chars()
                    .map(|c| if unsafe_to_show(c) { '\u{fffd}' } else { c })
                    .take(MAX_USER_AGENT)
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .filter(|ua| !ua.is_empty());
        Origin {
            request_id: request_id.into(),
            client_address,
            user_agent,
        }
    }

    /// The origin of work Cohort does on its own, named by `request_id`.
    pub fn internal(request_id: impl Into<String>) -> Origin {
        Origin {
            request_id: request_id.into(),
            ..Origin::default()
        }
    }
}

/// Who made a change, as the audit log records it.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The API key's name (or a system actor such as `system`).
    pub name: String,
    /// The API key's id, when the actor is a key.
    pub key_id: Option<String>,
    /// The request the change came with.
    pub origin: Origin,
}

impl Actor {
    /// An actor for changes Cohort makes on its own (bootstrap, migrations).
    pub fn system(request_id: impl Into<String>) -> Self {
        Actor::named("system", Origin::internal(request_id))
    }

    /// An actor that is not an API key (a signed-in user, sign-in itself,
    /// an import run), acting for the request `origin`.
    pub fn named(name: impl Into<String>, origin: Origin) -> Self {
        Actor {
            name: name.into(),
            key_id: None,
            origin,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    actor: Actor,
    role: Role,
    /// The device a device credential is bound to; `None` for API keys.
    device: Option<Uuid>,
}

/// Why a device-scoped capability was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceDenied {
    /// The caller's role may not do this for any device.
    Role,
    /// A device credential asked to act for another device.
    OtherDevice {
        /// The device the credential is bound to.
        own: Uuid,
    },
}

/// Permission to read the directory and the audit log.
#[derive(Debug)]
pub struct Read(());

/// Permission to change anything in the directory.
#[derive(Debug)]
pub struct ManageDirectory<'a>(&'a Actor);

/// Permission to change a user's state (and nothing else).
#[derive(Debug)]
pub struct ChangeUserState<'a>(&'a Actor);

/// Permission to report the attributes of one device, the one it names.
#[derive(Debug)]
pub struct CheckInDevice<'a>(&'a Actor, Uuid);

impl CheckInDevice<'_> {
    /// The device this permission is for: the domain takes the id from
    /// here, never from the request, so a credential cannot be pointed at
    /// another device after the check.
    pub fn device(&self) -> Uuid {
        self.1
    }
}

/// Permission to replace the credential of one device: the device itself,
/// or an admin.
#[derive(Debug)]
pub struct RotateDeviceCredential<'a>(&'a Actor, Uuid, Option<&'a str>);

impl RotateDeviceCredential<'_> {
    /// The device whose credential is replaced.
    pub fn device(&self) -> Uuid {
        self.1
    }

    /// When the device rotates its own credential: the id of the credential
    /// it authenticated with. The rotation may replace only that one. It
    /// was checked when the request arrived, and an admin may revoke it (or
    /// the device be enrolled again) before the rotation commits; replacing
    /// whatever is current then would hand a fresh secret to the holder of
    /// a credential that was just taken away.
    pub fn presented_credential(&self) -> Option<&str> {
        self.2
    }
}

/// Permission to create and revoke API keys, device enrollment tokens and
/// device credentials, and to take backups.
#[derive(Debug)]
pub struct ManageKeys<'a>(&'a Actor);

/// Permission to install, enable, disable and remove plugins, and to
/// configure plugin instances (which hold third-party credentials).
#[derive(Debug)]
pub struct ManagePlugins<'a>(&'a Actor);

/// Permission to provision over SCIM: read and change users and groups,
/// through the SCIM endpoints only.
#[derive(Debug)]
pub struct Provision<'a>(&'a Actor);

/// [`Provision`] held by value, for the SCIM client extractor: it checks the
/// role once, before the body is read, and hands the handler a capability it
/// need not check again.
#[derive(Debug)]
pub struct Provisioner(Actor);

impl Provisioner {
    /// The capability, for the length of the request.
    pub fn provision(&self) -> Provision<'_> {
        Provision(&self.0)
    }
}

impl<'a> Provision<'a> {
    /// Reading what SCIM shows.
    pub fn read(&self) -> Read {
        Read(())
    }

    /// The directory changes SCIM makes, audited as the SCIM client.
    pub fn manage(&self) -> ManageDirectory<'a> {
        ManageDirectory(self.0)
    }

    /// State changes (`active`).
    pub fn change_user_state(&self) -> ChangeUserState<'a> {
        ChangeUserState(self.0)
    }
}

/// A capability that changes something knows who is changing it.
pub trait Mutation {
    /// The actor recorded in the audit log.
    fn actor(&self) -> &Actor;
}

macro_rules! mutation {
    ($($t:ident),*) => {$(
        impl Mutation for $t<'_> {
            fn actor(&self) -> &Actor {
                self.0
            }
        }
    )*};
}
mutation!(
    Provision,
    ManageDirectory,
    ChangeUserState,
    CheckInDevice,
    RotateDeviceCredential,
    ManageKeys,
    ManagePlugins
);

impl<'a> ManageDirectory<'a> {
    /// Admins may change user state too.
    pub fn change_user_state(&self) -> ChangeUserState<'a> {
        ChangeUserState(self.0)
    }
}

impl Principal {
    pub(crate) fn new(actor: Actor, role: Role) -> Self {
        Principal {
            actor,
            role,
            device: None,
        }
    }

    /// The principal of a device credential bound to `device`.
    pub(crate) fn for_device(actor: Actor, device: Uuid) -> Self {
        Principal {
            actor,
            role: Role::Device,
            device: Some(device),
        }
    }

    /// The device a device credential is bound to; `None` for API keys.
    pub fn device(&self) -> Option<Uuid> {
        self.device
    }

    /// What a 403 calls the caller: "an API key with role admin", "the
    /// credential of device …".
    pub fn describe(&self) -> String {
        match self.device {
            Some(id) => format!("the credential of device {id}"),
            None => format!("an API key with role {}", self.role.as_str()),
        }
    }

    /// Checks a device-scoped action: `any` roles may act for every device,
    /// a device credential only for its own.
    fn for_device_id(&self, device: &Uuid, any: &[Role]) -> Result<(), DeviceDenied> {
        match self.device {
            Some(own) if own == *device => Ok(()),
            Some(own) => Err(DeviceDenied::OtherDevice { own }),
            None if any.contains(&self.role) => Ok(()),
            None => Err(DeviceDenied::Role),
        }
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The caller as the audit log names it.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Reads: every role but `device-agent`, `scim` and device credentials.
    pub fn read(&self) -> Option<Read> {
        (!matches!(self.role, Role::DeviceAgent | Role::Scim | Role::Device)).then_some(Read(()))
    }

    /// Reading one device: every reader, and the device's own credential.
    pub fn read_device(&self, device: &Uuid) -> Result<Read, DeviceDenied> {
        self.for_device_id(device, &[Role::Admin, Role::HelpDesk, Role::ReadOnly])
            .map(|()| Read(()))
    }

    /// SCIM provisioning: `scim` keys only, which can do nothing else.
    pub fn provision(&self) -> Option<Provision<'_>> {
        (self.role == Role::Scim).then_some(Provision(&self.actor))
    }

    /// [`Self::provision`] by value.
    pub fn provisioner(&self) -> Option<Provisioner> {
        (self.role == Role::Scim).then(|| Provisioner(self.actor.clone()))
    }

    /// Directory changes: admins only.
    pub fn manage_directory(&self) -> Option<ManageDirectory<'_>> {
        (self.role == Role::Admin).then_some(ManageDirectory(&self.actor))
    }

    /// User state changes: admins and help-desk.
    pub fn change_user_state(&self) -> Option<ChangeUserState<'_>> {
        matches!(self.role, Role::Admin | Role::HelpDesk).then_some(ChangeUserState(&self.actor))
    }

    /// Device check-in for `device`: admins and `device-agent` keys for any
    /// device, a device credential for its own device only.
    pub fn check_in_device(&self, device: &Uuid) -> Result<CheckInDevice<'_>, DeviceDenied> {
        self.for_device_id(device, &[Role::Admin, Role::DeviceAgent])
            .map(|()| CheckInDevice(&self.actor, *device))
    }

    /// Replacing `device`'s credential: admins, and the device itself.
    pub fn rotate_device_credential(
        &self,
        device: &Uuid,
    ) -> Result<RotateDeviceCredential<'_>, DeviceDenied> {
        // A device credential's actor always carries its id; without one
        // the empty id matches no credential, and the rotation is refused.
        let presented = self
            .device
            .map(|_| self.actor.key_id.as_deref().unwrap_or_default());
        self.for_device_id(device, &[Role::Admin])
            .map(|()| RotateDeviceCredential(&self.actor, *device, presented))
    }

    /// Plugins and plugin instances: admins only. Plugins run code inside
    /// the server and instances hold credentials.
    pub fn manage_plugins(&self) -> Option<ManagePlugins<'_>> {
        (self.role == Role::Admin).then_some(ManagePlugins(&self.actor))
    }

    /// API keys and backups: admins only.
    pub fn manage_keys(&self) -> Option<ManageKeys<'_>> {
        (self.role == Role::Admin).then_some(ManageKeys(&self.actor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role) -> Principal {
        Principal::new(Actor::system("r"), role)
    }

    #[test]
    fn role_matrix() {
        let device = Uuid::now_v7();
        let rows = [
            (Role::Admin, [true, true, true, true, true]),
            (Role::HelpDesk, [true, false, true, false, false]),
            (Role::ReadOnly, [true, false, false, false, false]),
            (Role::DeviceAgent, [false, false, false, true, false]),
            (Role::Scim, [false, false, false, false, false]),
        ];
        for (role, expected) in rows {
            let p = p(role);
            let got = [
                p.read().is_some(),
                p.manage_directory().is_some(),
                p.change_user_state().is_some(),
                p.check_in_device(&device).is_ok(),
                p.manage_keys().is_some(),
            ];
            assert_eq!(got, expected, "{role:?}");
            assert_eq!(p.provision().is_some(), role == Role::Scim, "{role:?}");
        }
    }

    #[test]
    fn user_agents_are_printable_short_and_optional() {
        let o = Origin::new("r", None, Some(b"curl/8.5\r\nX-Evil: 1"));
        assert_eq!(
            o.user_agent.as_deref(),
            Some("curl/8.5\u{fffd}\u{fffd}X-Evil: 1")
        );
        let long = "a".repeat(MAX_USER_AGENT * 4);
        let o = Origin::new("r", None, Some(long.as_bytes()));
        assert_eq!(o.user_agent.unwrap().chars().count(), MAX_USER_AGENT);
        let o = Origin::new("r", None, Some(b"\xff\xfeMozilla"));
        assert!(o.user_agent.unwrap().ends_with("Mozilla"));
        assert_eq!(Origin::new("r", None, Some(b"  ")).user_agent, None);
        // Invisible reordering characters cannot disguise the entry.
        let spoof = Origin::new("r", None, Some("curl/8 \u{202e}exe.txt\u{200b}".as_bytes()));
        assert_eq!(
            spoof.user_agent.as_deref(),
            Some("curl/8 \u{fffd}exe.txt\u{fffd}")
        );
        assert_eq!(Origin::new("r", None, None).user_agent, None);
    }

    #[test]
    fn a_device_credential_acts_for_its_own_device_only() {
        let own = Uuid::now_v7();
        let other = Uuid::now_v7();
        let p = Principal::for_device(Actor::system("r"), own);
        assert_eq!(p.role(), Role::Device);
        assert_eq!(p.check_in_device(&own).map(|c| c.device()).ok(), Some(own));
        assert_eq!(
            p.check_in_device(&other).err(),
            Some(DeviceDenied::OtherDevice { own })
        );
        assert!(p.read_device(&own).is_ok());
        assert_eq!(
            p.read_device(&other).err(),
            Some(DeviceDenied::OtherDevice { own })
        );
        assert!(p.rotate_device_credential(&own).is_ok());
        assert!(p.rotate_device_credential(&other).is_err());
        assert!(p.read().is_none());
        assert!(p.manage_directory().is_none());
        assert!(p.change_user_state().is_none());
        assert!(p.manage_keys().is_none());
        assert!(p.manage_plugins().is_none());
        assert!(p.provision().is_none());
        // Keys without a device binding are judged by role alone.
        let agent = Principal::new(Actor::system("r"), Role::DeviceAgent);
        assert!(agent.check_in_device(&other).is_ok());
        assert_eq!(agent.read_device(&other).err(), Some(DeviceDenied::Role));
        assert_eq!(
            agent.rotate_device_credential(&other).err(),
            Some(DeviceDenied::Role)
        );
        let admin = Principal::new(Actor::system("r"), Role::Admin);
        assert!(admin.rotate_device_credential(&other).is_ok());
    }
}
