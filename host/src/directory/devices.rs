//! Devices: the computers and phones in the directory, their reported state,
//! and check-ins from the agent running on them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cohort_storage::WriteTxn;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::attributes::{AttrValue, SubjectKind, check_string, track_usage, validate_custom};
use super::layout::{self, DEVICES, DEVICES_BY_HOSTNAME, DEVICES_BY_SERIAL};
use super::query::{AttrRef, ListQuery, Subject, text};
use super::{Directory, Versioned, decode_patch};
use crate::audit::{self, Record};
use crate::auth::{Actor, CheckInDevice, ManageDirectory, Mutation, Read};
use crate::error::DomainError;
use crate::page::{self, Page, PageRequest};

/// Operating system family; device groups per family build on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Apple macOS.
    Macos,
    /// Microsoft Windows.
    Windows,
    /// Any Linux distribution.
    Linux,
    /// Apple iOS and iPadOS.
    Ios,
    /// Google Android.
    Android,
}

impl OsFamily {
    /// The family's name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Macos => "macos",
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
            OsFamily::Ios => "ios",
            OsFamily::Android => "android",
        }
    }
}

/// A device as stored and returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// Stable id (UUIDv7).
    pub id: Uuid,
    /// Host name the device reports. Not unique: fleets reuse names.
    pub hostname: String,
    /// Name shown in user interfaces.
    pub display_name: Option<String>,
    /// Operating system family.
    pub os_family: OsFamily,
    /// Operating system version, e.g. `14.5`.
    pub os_version: Option<String>,
    /// CPU architecture, e.g. `arm64`.
    pub architecture: Option<String>,
    /// Hardware serial number.
    pub serial_number: Option<String>,
    /// Version of the agent that checks in.
    pub agent_version: Option<String>,
    /// Last check-in; null until the first one.
    pub last_contact: Option<DateTime<Utc>>,
    /// Whether the system disk is encrypted; null when unknown.
    pub disk_encryption: Option<bool>,
    /// Whether the device is enrolled in MDM; null when unknown.
    pub mdm_enrolled: Option<bool>,
    /// Values of declared custom attributes.
    pub custom_attributes: BTreeMap<String, AttrValue>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Increases by one with every change; the ETag.
    pub version: u64,
}

/// The writable fields of a device: the body of a create, and what a PATCH
/// or check-in is applied to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    /// Host name, 1–253 characters without spaces.
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub hostname: String,
    /// Operating system family.
    pub os_family: OsFamily,
    /// Name shown in user interfaces.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Operating system version.
    #[serde(default)]
    pub os_version: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Hardware serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Agent version.
    #[serde(default)]
    pub agent_version: Option<String>,
    /// Whether the system disk is encrypted.
    #[serde(default)]
    pub disk_encryption: Option<bool>,
    /// Whether the device is enrolled in MDM.
    #[serde(default)]
    pub mdm_enrolled: Option<bool>,
    /// Values for declared custom attributes; null removes one in a PATCH.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom_attributes: BTreeMap<String, Value>,
}

/// What an agent reports at check-in. Every field is optional; fields left
/// out keep their value. The check-in itself updates `last_contact`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Operating system family (a reinstall can change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_family: Option<OsFamily>,
    /// Operating system version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// CPU architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Hardware serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Whether the system disk is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_encryption: Option<bool>,
    /// Whether the device is enrolled in MDM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_enrolled: Option<bool>,
    /// Custom attribute values to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub custom_attributes: BTreeMap<String, Value>,
}

impl From<&Device> for DeviceInput {
    fn from(d: &Device) -> Self {
        DeviceInput {
            hostname: d.hostname.clone(),
            os_family: d.os_family,
            display_name: d.display_name.clone(),
            os_version: d.os_version.clone(),
            architecture: d.architecture.clone(),
            serial_number: d.serial_number.clone(),
            agent_version: d.agent_version.clone(),
            disk_encryption: d.disk_encryption,
            mdm_enrolled: d.mdm_enrolled,
            custom_attributes: d
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

impl Subject for Device {
    fn attribute_ref(&self, name: &str) -> Option<AttrRef<'_>> {
        let s = text;
        match name {
            "id" => Some(AttrRef::Id(self.id)),
            "hostname" => Some(AttrRef::Text(&self.hostname)),
            "display_name" => s(&self.display_name),
            "os_family" => Some(AttrRef::Text(self.os_family.as_str())),
            "os_version" => s(&self.os_version),
            "architecture" => s(&self.architecture),
            "serial_number" => s(&self.serial_number),
            "agent_version" => s(&self.agent_version),
            "last_contact" => self.last_contact.map(AttrRef::Time),
            "disk_encryption" => self.disk_encryption.map(AttrRef::Bool),
            "mdm_enrolled" => self.mdm_enrolled.map(AttrRef::Bool),
            "created_at" => Some(AttrRef::Time(self.created_at)),
            "updated_at" => Some(AttrRef::Time(self.updated_at)),
            custom => self.custom_attributes.get(custom).map(AttrRef::from),
        }
    }
}

impl Versioned for Device {
    fn version(&self) -> u64 {
        self.version
    }
}

/// Sort keys an index serves; the first is the default.
pub const DEVICE_SORTS: &[&str] = &["created_at", "hostname"];

const READ_ONLY: &[(&str, &str)] = &[
    ("id", "is assigned by Cohort"),
    ("created_at", "is set by Cohort"),
    ("updated_at", "is set by Cohort"),
    ("version", "is set by Cohort; send it as If-Match instead"),
    ("last_contact", "is set by device check-ins"),
];

fn hostname_key(hostname: &str, id: &Uuid) -> Vec<u8> {
    layout::join(&[&layout::fold(hostname), &[0], &layout::id(id)])
}

/// The `DEVICES_BY_SERIAL` key of a device, when it has a serial number.
pub(crate) fn serial_key(serial: Option<&str>, id: &Uuid) -> Option<Vec<u8>> {
    serial.map(|s| layout::join(&[&layout::fold(s), &[0], &layout::id(id)]))
}

/// What an enrollment did to the directory.
#[derive(Clone, Debug)]
pub struct Enrolled {
    /// The device as it now is.
    pub device: Device,
    /// Whether an existing device (same serial number) was enrolled again
    /// rather than a new one created.
    pub reenrolled: bool,
}

/// Loads a device inside a transaction.
pub(crate) fn load(txn: &WriteTxn<'_>, id: &Uuid) -> Result<Device, DomainError> {
    txn.get_json(DEVICES, &layout::id(id))?
        .ok_or_else(|| DomainError::not_found("device", id))
}

/// The ids of the devices whose serial number is `serial` (compared
/// case-insensitively).
fn devices_with_serial(txn: &WriteTxn<'_>, serial: &str) -> Result<Vec<Uuid>, DomainError> {
    let prefix = layout::join(&[&layout::fold(serial), &[0]]);
    Ok(txn
        .scan_prefix(DEVICES_BY_SERIAL, &prefix)?
        .iter()
        .filter_map(|(k, _)| layout::uuid_at(k, prefix.len()))
        .collect())
}

/// A check-in reports the device's own facts, and its serial number is
/// how enrollment recognises it. A device taking a serial number that
/// another device has would make that device's next enrollment ambiguous
/// (refused until an admin removes one of the two, and the admin has to
/// guess which): one agent could lock another machine out of enrolling
/// again. So a check-in may change the serial number only to one that no
/// other device has; an admin can still record duplicates, and a device
/// that already shares its serial number keeps checking in.
fn refuse_serial_of_another(
    txn: &WriteTxn<'_>,
    before: &Device,
    after: &Device,
) -> Result<(), DomainError> {
    let Some(serial) = after.serial_number.as_deref() else {
        return Ok(());
    };
    if before
        .serial_number
        .as_deref()
        .is_some_and(|old| layout::fold(old) == layout::fold(serial))
    {
        return Ok(());
    }
    if devices_with_serial(txn, serial)?
        .iter()
        .any(|id| *id != after.id)
    {
        return Err(DomainError::Conflict {
            code: "serial_number_taken",
            field: Some("serial_number".into()),
            message: "another device has this serial number; a check-in cannot take it (an admin can correct either device)".into(),
        });
    }
    Ok(())
}

/// Writes a device and its indexes (hostname, serial, attribute usage).
/// Auditing and telling listeners is the caller's part.
pub(super) fn store_device(
    txn: &mut WriteTxn<'_>,
    before: Option<&Device>,
    after: &Device,
) -> Result<(), DomainError> {
    let id = layout::id(&after.id);
    if before.is_none_or(|b| layout::fold(&b.hostname) != layout::fold(&after.hostname)) {
        if let Some(b) = before {
            txn.delete(DEVICES_BY_HOSTNAME, &hostname_key(&b.hostname, &b.id));
        }
        txn.put(
            DEVICES_BY_HOSTNAME,
            &hostname_key(&after.hostname, &after.id),
            Vec::new(),
        );
    }
    let old_serial = before.and_then(|b| serial_key(b.serial_number.as_deref(), &b.id));
    let new_serial = serial_key(after.serial_number.as_deref(), &after.id);
    if old_serial != new_serial {
        if let Some(k) = old_serial {
            txn.delete(DEVICES_BY_SERIAL, &k);
        }
        if let Some(k) = new_serial {
            txn.put(DEVICES_BY_SERIAL, &k, Vec::new());
        }
    }
    track_usage(
        txn,
        SubjectKind::Device,
        &id,
        before.map(|b| &b.custom_attributes),
        Some(&after.custom_attributes),
    );
    txn.put_json(DEVICES, &id, after)?;
    Ok(())
}

impl Directory {
    fn build_device(
        &self,
        txn: &WriteTxn<'_>,
        input: DeviceInput,
        existing: Option<&Device>,
        now: DateTime<Utc>,
        last_contact: Option<DateTime<Utc>>,
    ) -> Result<Device, DomainError> {
        if input.hostname.is_empty()
            || input.hostname.len() > 253
            || input
                .hostname
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(DomainError::invalid(
                "hostname",
                "must be 1-253 characters without spaces",
            ));
        }
        for (field, value) in [
            ("display_name", &input.display_name),
            ("os_version", &input.os_version),
            ("architecture", &input.architecture),
            ("serial_number", &input.serial_number),
            ("agent_version", &input.agent_version),
        ] {
            if let Some(v) = value {
                check_string(field, v, 256)?;
            }
        }
        let custom_attributes =
            validate_custom(txn, SubjectKind::Device, &input.custom_attributes)?;
        Ok(Device {
            id: existing.map_or_else(Uuid::now_v7, |d| d.id),
            hostname: input.hostname,
            display_name: input.display_name,
            os_family: input.os_family,
            os_version: input.os_version,
            architecture: input.architecture,
            serial_number: input.serial_number,
            agent_version: input.agent_version,
            last_contact: last_contact.or(existing.and_then(|d| d.last_contact)),
            disk_encryption: input.disk_encryption,
            mdm_enrolled: input.mdm_enrolled,
            custom_attributes,
            created_at: existing.map_or(now, |d| d.created_at),
            updated_at: now,
            version: existing.map_or(1, |d| d.version + 1),
        })
    }

    fn put_device(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        action: &str,
        before: Option<&Device>,
        after: &Device,
    ) -> Result<(), DomainError> {
        store_device(txn, before, after)?;
        let at = after.updated_at;
        self.record_write(
            txn,
            actor,
            action,
            SubjectKind::Device,
            after.id,
            at,
            before,
            after,
        )
    }

    /// Creates a device in the caller's transaction (imports), through the
    /// same validation, audit and group recompute as an API create.
    pub(crate) fn create_device_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        input: DeviceInput,
        now: DateTime<Utc>,
    ) -> Result<Device, DomainError> {
        let device = self.build_device(txn, input, None, now, None)?;
        self.put_device(txn, actor, "device.create", None, &device)?;
        Ok(device)
    }

    /// Replaces a device's writable fields in the caller's transaction
    /// (imports). Unchanged input writes nothing.
    pub(crate) fn replace_device_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        id: &Uuid,
        input: DeviceInput,
        if_match: Option<u64>,
    ) -> Result<Device, DomainError> {
        let now = self.clock.now();
        let before = load(txn, id)?;
        before.check_version(if_match)?;
        let after = self.build_device(txn, input, Some(&before), now, None)?;
        if after
            == (Device {
                updated_at: after.updated_at,
                version: after.version,
                ..before.clone()
            })
        {
            return Ok(before);
        }
        self.put_device(txn, actor, "device.update", Some(&before), &after)?;
        Ok(after)
    }

    /// Enrolls a device in the caller's transaction (device enrollment):
    /// the device with the same serial number when there is exactly one,
    /// updated with the reported fields that are present (as a check-in
    /// would be), else a new device. Either way `last_contact` is now.
    pub(crate) fn enroll_device_in(
        &self,
        txn: &mut WriteTxn<'_>,
        actor: &Actor,
        input: DeviceInput,
        now: DateTime<Utc>,
    ) -> Result<Enrolled, DomainError> {
        let existing = match input.serial_number.as_deref() {
            Some(serial) => devices_with_serial(txn, serial)?,
            None => Vec::new(),
        };
        match existing.as_slice() {
            [] => {
                let device = self.build_device(txn, input, None, now, Some(now))?;
                self.put_device(txn, actor, "device.enroll", None, &device)?;
                Ok(Enrolled {
                    device,
                    reenrolled: false,
                })
            }
            [id] => {
                let before = load(txn, id)?;
                let mut patch = serde_json::to_value(&input).map_err(|e| {
                    DomainError::Internal(format!("encoding the device's facts: {e}"))
                })?;
                if let Value::Object(fields) = &mut patch {
                    fields.retain(|_, v| {
                        !(v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty))
                    });
                }
                let merged: DeviceInput =
                    decode_patch(&DeviceInput::from(&before), &patch, READ_ONLY)?;
                let after = self.build_device(txn, merged, Some(&before), now, Some(now))?;
                self.put_device(txn, actor, "device.enroll", Some(&before), &after)?;
                Ok(Enrolled {
                    device: after,
                    reenrolled: true,
                })
            }
            _ => Err(DomainError::Conflict {
                code: "serial_number_ambiguous",
                field: Some("serial_number".into()),
                message: format!(
                    "{} devices have this serial number, so enrollment cannot tell which one this is; delete or correct the duplicates first",
                    existing.len()
                ),
            }),
        }
    }

    /// Creates a device.
    pub async fn create_device(
        &self,
        cap: &ManageDirectory<'_>,
        input: DeviceInput,
    ) -> Result<Device, DomainError> {
        let now = self.clock.now();
        super::commit(&self.store, |txn| {
            let device = self.build_device(txn, input, None, now, None)?;
            self.put_device(txn, cap.actor(), "device.create", None, &device)?;
            Ok(device)
        })
        .await
    }

    /// One device by id.
    pub fn get_device(&self, _: &Read, id: &Uuid) -> Result<Device, DomainError> {
        self.store
            .get_json(DEVICES, &layout::id(id))?
            .ok_or_else(|| DomainError::not_found("device", id))
    }

    /// Applies a JSON merge patch to a device's writable fields.
    pub async fn update_device(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
        patch: &Value,
        if_match: Option<u64>,
    ) -> Result<Device, DomainError> {
        self.patch_device(cap.actor(), "device.update", id, patch, if_match, false)
            .await
    }

    /// Records a check-in of the device the capability is for: the
    /// reported fields, and `last_contact = now`.
    pub async fn check_in_device(
        &self,
        cap: &CheckInDevice<'_>,
        report: CheckIn,
    ) -> Result<Device, DomainError> {
        let patch = serde_json::to_value(&report).expect("check-in serializes");
        self.patch_device(
            cap.actor(),
            "device.check_in",
            &cap.device(),
            &patch,
            None,
            true,
        )
        .await
    }

    async fn patch_device(
        &self,
        actor: &Actor,
        action: &str,
        id: &Uuid,
        patch: &Value,
        if_match: Option<u64>,
        contact: bool,
    ) -> Result<Device, DomainError> {
        let now = self.clock.now();
        super::commit(&self.store, |txn| {
            let before = load(txn, id)?;
            before.check_version(if_match)?;
            let input: DeviceInput = decode_patch(&DeviceInput::from(&before), patch, READ_ONLY)?;
            let after =
                self.build_device(txn, input, Some(&before), now, contact.then_some(now))?;
            if contact {
                refuse_serial_of_another(txn, &before, &after)?;
            }
            if after
                == (Device {
                    updated_at: after.updated_at,
                    version: after.version,
                    ..before.clone()
                })
            {
                return Ok(before);
            }
            self.put_device(txn, actor, action, Some(&before), &after)?;
            Ok(after)
        })
        .await
    }

    /// Deletes a device and its user bindings.
    pub async fn delete_device(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
        if_match: Option<u64>,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let actor = cap.actor();
        super::commit(&self.store, |txn| {
            let device = load(txn, id)?;
            device.check_version(if_match)?;
            let key = layout::id(id);
            self.unbind_all(txn, SubjectKind::Device, id, now, actor)?;
            txn.delete(DEVICES_BY_HOSTNAME, &hostname_key(&device.hostname, id));
            if let Some(k) = serial_key(device.serial_number.as_deref(), id) {
                txn.delete(DEVICES_BY_SERIAL, &k);
            }
            track_usage(
                txn,
                SubjectKind::Device,
                &key,
                Some(&device.custom_attributes),
                None,
            );
            txn.delete(DEVICES, &key);
            audit::record(
                txn,
                now,
                actor,
                Record {
                    action: "device.delete",
                    resource_type: "device",
                    resource_id: id.to_string(),
                    changes: audit::diff(Some(&device), None),
                },
            )?;
            self.emit(
                txn,
                actor,
                now,
                super::Change::Subject {
                    kind: SubjectKind::Device,
                    id: *id,
                    attributes: None,
                },
            )
        })
        .await
    }

    /// Parses list parameters for devices.
    pub fn device_query(&self, params: &[(String, String)]) -> Result<ListQuery, DomainError> {
        self.parse_list_query(SubjectKind::Device, DEVICE_SORTS, params)
    }

    /// A page of devices matching `query`.
    pub fn list_devices(
        &self,
        _: &Read,
        query: &ListQuery,
        req: &PageRequest,
    ) -> Result<Page<Device>, DomainError> {
        let mut tag = query.cursor_tag(SubjectKind::Device);
        // An exact hostname filter walks only that hostname's index range,
        // whose keys end in the (time-ordered) id: right for either sort.
        let (index, prefix) = match (query.exact("hostname"), query.sort) {
            (Some(h), _) => {
                tag.push_str(":exact");
                (DEVICES_BY_HOSTNAME, layout::join(&[&layout::fold(h), &[0]]))
            }
            (None, "hostname") => (DEVICES_BY_HOSTNAME, Vec::new()),
            (None, _) => (DEVICES, Vec::new()),
        };
        let resume = req.resume_key(&tag)?;
        let entries = self
            .store
            .scan(index, &prefix, resume.as_deref(), query.descending);
        page::collect(&tag, req.limit, entries, |k, v| {
            let device: Device = if index == DEVICES {
                cohort_storage::decode_json(DEVICES, v)?
            } else {
                let Some(id) = k.get(k.len().saturating_sub(16)..) else {
                    return Ok(page::Visit::Skip);
                };
                match self.store.get_json(DEVICES, id)? {
                    Some(d) => d,
                    None => return Ok(page::Visit::Skip),
                }
            };
            Ok(query.matches(&device).then_some(device).into())
        })
    }
}
