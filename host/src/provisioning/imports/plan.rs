//! Planning an import: what a source's records would change in the
//! directory. Each record is matched to a user or device (by the link a
//! previous run of the same source stored, else by email, employee id or
//! serial number) and becomes a create, an update, or a link; users the
//! source imported before and no longer lists may be suspended.
//!
//! The deciding is pure: it takes the directory and the source's links as
//! loaded maps, so a dry run, the brake and the unit tests below all see
//! exactly what a real run would do. Only `Imports::plan` reads the store.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Change, Changed, ImportInput, ImportRun, Imports, LINKS, MatchOn, Missing};
use crate::directory::read as directory;
use crate::directory::{Device, User, UserState};
use crate::error::DomainError;

/// Attributes a record may set directly on a user; any other name is a
/// custom attribute.
pub(super) const STANDARD: [&str; 15] = [
    "username",
    "email",
    "first_name",
    "last_name",
    "display_name",
    "department",
    "job_title",
    "location",
    "employee_type",
    "company",
    "cost_center",
    "employee_id",
    "manager_id",
    "phone",
    "description",
];
/// Attributes a device record may set directly; `owner` (an email or
/// username) binds the device to that user; any other name is a custom
/// attribute.
pub(super) const DEVICE_STANDARD: [&str; 9] = [
    "hostname",
    "display_name",
    "os_family",
    "os_version",
    "architecture",
    "serial_number",
    "agent_version",
    "disk_encryption",
    "mdm_enrolled",
];

/// A record as read from the source.
pub(super) struct Source {
    pub(super) device: bool,
    pub(super) external_id: String,
    pub(super) attributes: BTreeMap<String, Value>,
}

/// Device links live beside user links, apart by this prefix.
pub(super) fn device_link(external_id: &str) -> String {
    format!("device:{external_id}")
}

/// The directory's users, indexed the ways a record finds its user.
#[derive(Default)]
pub(super) struct KnownUsers {
    /// By email in the directory's compared form (case folded), so that a
    /// record matches the user the directory would call the same.
    by_email: HashMap<Vec<u8>, Uuid>,
    by_employee: HashMap<String, Uuid>,
    users: HashMap<Uuid, User>,
}

impl KnownUsers {
    pub(super) fn add(&mut self, u: User) {
        self.by_email.insert(directory::email_form(&u.email), u.id);
        if let Some(e) = &u.employee_id {
            self.by_employee.insert(e.clone(), u.id);
        }
        self.users.insert(u.id, u);
    }
}

/// The directory's devices, indexed by serial number.
#[derive(Default)]
pub(super) struct KnownDevices {
    by_serial: HashMap<String, Uuid>,
    devices: HashMap<Uuid, Device>,
}

impl KnownDevices {
    pub(super) fn add(&mut self, d: Device) {
        if let Some(sn) = &d.serial_number {
            self.by_serial.insert(sn.clone(), d.id);
        }
        self.devices.insert(d.id, d);
    }
}

impl Imports {
    /// What the records would change, against the directory and this
    /// source's links as they are now.
    pub(super) fn plan(
        &self,
        run: &ImportRun,
        all: Vec<Source>,
    ) -> Result<Vec<Change>, DomainError> {
        let (devices, records): (Vec<Source>, Vec<Source>) =
            all.into_iter().partition(|r| r.device);
        let mut users = KnownUsers::default();
        directory::for_each_user(&self.store, |u| {
            users.add(u);
            Ok::<_, DomainError>(())
        })?;
        let linked = self.links(&run.instance_id)?;
        let mut plan = plan_users(&run.input, &users, &linked, records);
        if !devices.is_empty() {
            let mut known = KnownDevices::default();
            directory::for_each_device(&self.store, |d| {
                known.add(d);
                Ok::<_, DomainError>(())
            })?;
            plan.extend(plan_devices(&run.input, &known, &linked, devices));
        }
        Ok(plan)
    }

    /// The source's links: external id → user id, and (under
    /// `device_link`) → device id.
    fn links(&self, instance: &str) -> Result<HashMap<String, Uuid>, DomainError> {
        let mut linked: HashMap<String, Uuid> = HashMap::new();
        let prefix = [instance.as_bytes(), &[0]].concat();
        for entry in self.store.scan(LINKS, &prefix, None, false) {
            let (k, v) = entry?;
            if let (Ok(ext), Ok(id)) = (
                String::from_utf8(k[prefix.len()..].to_vec()),
                Uuid::from_slice(&v),
            ) {
                linked.insert(ext, id);
            }
        }
        Ok(linked)
    }
}

/// What user records would change. `linked` is the source's links from
/// earlier runs; a linked user no longer listed is suspended if the input
/// says so.
pub(super) fn plan_users(
    input: &ImportInput,
    known: &KnownUsers,
    linked: &HashMap<String, Uuid>,
    records: Vec<Source>,
) -> Vec<Change> {
    let mut plan = Vec::new();
    let mut present = HashSet::new();
    for Source {
        external_id,
        attributes: attrs,
        ..
    } in records
    {
        present.insert(external_id.clone());
        let key = match input.match_on {
            MatchOn::Email => attrs
                .get("email")
                .and_then(Value::as_str)
                .map(|e| known.by_email.get(&directory::email_form(e))),
            MatchOn::EmployeeId => attrs
                .get("employee_id")
                .and_then(Value::as_str)
                .map(|e| known.by_employee.get(e)),
        };
        let user = linked
            .get(&external_id)
            .or_else(|| key.flatten())
            .and_then(|id| known.users.get(id));
        match user {
            None => plan.push(Change::Create {
                external_id,
                attributes: attrs,
            }),
            Some(u) => {
                let fields = changed_fields(u, &attrs, &STANDARD);
                if fields.is_empty() || input.changed == Changed::Ignore {
                    if linked.get(&external_id) != Some(&u.id) {
                        plan.push(Change::Link {
                            external_id,
                            user_id: u.id,
                        });
                    } else {
                        plan.push(Change::Link {
                            external_id: String::new(),
                            user_id: u.id,
                        });
                    }
                } else {
                    plan.push(Change::Update {
                        external_id,
                        user_id: u.id,
                        version: u.version,
                        fields,
                    });
                }
            }
        }
    }
    if input.missing == Missing::Suspend {
        for (ext, id) in linked {
            if present.contains(ext) {
                continue;
            }
            if let Some(u) = known.users.get(id)
                && u.state == UserState::Active
            {
                plan.push(Change::Suspend {
                    external_id: ext.clone(),
                    user_id: *id,
                    version: u.version,
                });
            }
        }
    }
    plan
}

/// What device records would change: matched by this source's link,
/// else by serial number.
pub(super) fn plan_devices(
    input: &ImportInput,
    known: &KnownDevices,
    linked: &HashMap<String, Uuid>,
    records: Vec<Source>,
) -> Vec<Change> {
    let mut plan = Vec::new();
    for r in records {
        let mut attrs = r.attributes;
        let owner = attrs
            .remove("owner")
            .and_then(|o| o.as_str().map(String::from));
        let by_link = linked.get(&device_link(&r.external_id)).copied();
        let by_sn = attrs
            .get("serial_number")
            .and_then(Value::as_str)
            .and_then(|sn| known.by_serial.get(sn).copied());
        let device = by_link.or(by_sn).and_then(|id| known.devices.get(&id));
        match device {
            None => plan.push(Change::CreateDevice {
                external_id: r.external_id,
                attributes: attrs,
                owner,
            }),
            Some(d) => {
                let fields = changed_fields(d, &attrs, &DEVICE_STANDARD);
                if fields.is_empty() || input.changed == Changed::Ignore {
                    plan.push(Change::LinkDevice {
                        external_id: r.external_id,
                        device_id: d.id,
                        owner,
                    });
                } else {
                    plan.push(Change::UpdateDevice {
                        external_id: r.external_id,
                        device_id: d.id,
                        version: d.version,
                        fields,
                        owner,
                    });
                }
            }
        }
    }
    plan
}

/// The attributes of a record that differ from the subject's, as
/// `[before, after]`. Names in `standard` are the subject's own fields;
/// others are custom attributes.
fn changed_fields(
    subject: &impl Serialize,
    attrs: &BTreeMap<String, Value>,
    standard: &[&str],
) -> BTreeMap<String, (Value, Value)> {
    let current = serde_json::to_value(subject).unwrap_or_default();
    let mut fields = BTreeMap::new();
    for (name, after) in attrs {
        let before = if standard.contains(&name.as_str()) {
            current.get(name)
        } else {
            current["custom_attributes"].get(name)
        }
        .cloned()
        .unwrap_or(Value::Null);
        if before != *after {
            fields.insert(name.clone(), (before, after.clone()));
        }
    }
    fields
}
