//! The attribute schema: the standard attributes every user and device has,
//! plus the custom attributes admins declare with a name and a type. Input is
//! validated against it here; group rules and CEL expressions (later issues)
//! are checked against the same schema, so an attribute name means the same
//! thing everywhere.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use cohort_storage::WriteTxn;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Directory;
use super::layout::{ATTRIBUTE_DEFS, ATTRIBUTE_USAGE};
use crate::audit::{self, Record};
use crate::auth::{ManageDirectory, Mutation, Read};
use crate::error::DomainError;

/// Longest string value accepted in any attribute.
pub const MAX_STRING_LEN: usize = 4096;
/// Most entries in a string-list value.
pub const MAX_LIST_LEN: usize = 256;
/// Most custom attributes one subject may carry.
pub const MAX_CUSTOM_PER_SUBJECT: usize = 128;

/// What an attribute belongs to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// A person in the directory.
    User,
    /// A computer or phone.
    Device,
}

impl SubjectKind {
    /// The kind's name in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::Device => "device",
        }
    }

    /// Parses a path segment.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" | "users" => Some(SubjectKind::User),
            "device" | "devices" => Some(SubjectKind::Device),
            _ => None,
        }
    }
}

/// The type of an attribute's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttrType {
    /// Text.
    String,
    /// A JSON number (stored as a 64-bit float).
    Number,
    /// true or false.
    Boolean,
    /// A date (`2026-01-31`) or a date-time (`2026-01-31T09:00:00Z`).
    Date,
    /// A list of strings, such as a user's skills.
    StringList,
}

/// A custom attribute's value. Dates are strings whose type the schema knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AttrValue {
    /// See [`AttrType::Boolean`].
    Bool(bool),
    /// See [`AttrType::Number`].
    Number(f64),
    /// See [`AttrType::String`] and [`AttrType::Date`].
    String(String),
    /// See [`AttrType::StringList`].
    StringList(Vec<String>),
}

/// One attribute of the schema, standard or custom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attribute {
    /// The name used in JSON, filters and rules.
    pub name: String,
    /// Whether users or devices carry it.
    pub subject: SubjectKind,
    /// The type of its values.
    #[serde(rename = "type")]
    pub attr_type: AttrType,
    /// True for built-in attributes, which cannot be changed or deleted.
    pub standard: bool,
    /// What the attribute means.
    pub description: Option<String>,
    /// When an admin declared it; null for standard attributes.
    pub created_at: Option<DateTime<Utc>>,
}

/// Input to declare a custom attribute.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAttribute {
    /// `^[a-z][a-z0-9_]{0,63}$`, not a standard attribute's name.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub name: String,
    /// Users or devices.
    pub subject: SubjectKind,
    /// The type of its values; it cannot change later.
    #[serde(rename = "type")]
    pub attr_type: AttrType,
    /// What the attribute means.
    #[serde(default)]
    pub description: Option<String>,
}

/// Changes to a custom attribute. Only the description can change: a new type
/// would invalidate stored values and rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeUpdate {
    /// The new description, or null to clear it.
    pub description: Option<String>,
}

use AttrType::{Boolean, Date, String as Str};

const USER_STANDARD: &[(&str, AttrType, &str)] = &[
    ("id", Str, "Stable unique id, assigned by Cohort"),
    ("username", Str, "Unique login name (case-insensitive)"),
    ("email", Str, "Unique email address (case-insensitive)"),
    ("first_name", Str, "Given name"),
    ("last_name", Str, "Family name"),
    ("display_name", Str, "Name shown in user interfaces"),
    ("state", Str, "staged, active or suspended"),
    ("department", Str, "Department"),
    ("job_title", Str, "Job title"),
    ("location", Str, "Office or work location"),
    (
        "employee_type",
        Str,
        "Employee type, e.g. full-time, contractor",
    ),
    ("company", Str, "Company or legal entity"),
    ("cost_center", Str, "Cost center"),
    ("employee_id", Str, "Employee id from the HR system"),
    ("manager_id", Str, "Id of the user's manager"),
    ("phone", Str, "Phone number"),
    ("description", Str, "Free-form description"),
    ("created_at", Date, "When the user was created"),
    ("updated_at", Date, "When the user last changed"),
];

const DEVICE_STANDARD: &[(&str, AttrType, &str)] = &[
    ("id", Str, "Stable unique id, assigned by Cohort"),
    ("hostname", Str, "Host name the device reports"),
    ("display_name", Str, "Name shown in user interfaces"),
    ("os_family", Str, "macos, windows, linux, ios or android"),
    ("os_version", Str, "Operating system version"),
    ("architecture", Str, "CPU architecture, e.g. arm64, x86_64"),
    ("serial_number", Str, "Hardware serial number"),
    (
        "agent_version",
        Str,
        "Version of the Cohort agent on the device",
    ),
    ("last_contact", Date, "When the device last checked in"),
    (
        "disk_encryption",
        Boolean,
        "Whether the system disk is encrypted",
    ),
    (
        "mdm_enrolled",
        Boolean,
        "Whether the device is enrolled in MDM",
    ),
    ("created_at", Date, "When the device was created"),
    ("updated_at", Date, "When the device last changed"),
];

fn standard(kind: SubjectKind) -> &'static [(&'static str, AttrType, &'static str)] {
    match kind {
        SubjectKind::User => USER_STANDARD,
        SubjectKind::Device => DEVICE_STANDARD,
    }
}

/// The type of a standard attribute, if `name` is one.
pub fn standard_type(kind: SubjectKind, name: &str) -> Option<AttrType> {
    standard(kind)
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, t, _)| *t)
}

fn def_key(kind: SubjectKind, name: &str) -> Vec<u8> {
    [kind.as_str().as_bytes(), &[0], name.as_bytes()].concat()
}

fn usage_key(kind: SubjectKind, name: &str, id: &[u8]) -> Vec<u8> {
    [kind.as_str().as_bytes(), &[0], name.as_bytes(), &[0], id].concat()
}

fn validate_attr_name(name: &str) -> Result<(), DomainError> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "name",
            "must start with a lowercase letter and contain only lowercase letters, digits and '_' (at most 64)",
        ))
    }
}

/// Checks a string for length and control characters.
pub fn check_string(field: &str, s: &str, max: usize) -> Result<(), DomainError> {
    if s.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Parses a date or date-time into its canonical text: `YYYY-MM-DD` for
/// dates, RFC 3339 in UTC with microseconds for date-times.
pub fn normalize_date(s: &str) -> Option<String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.format("%Y-%m-%d").to_string());
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    })
}

/// Checks one raw JSON value against a type.
pub fn parse_value(field: &str, ty: AttrType, raw: &Value) -> Result<AttrValue, DomainError> {
    let wrong = |what: &str| DomainError::invalid(field, format!("must be {what}"));
    match (ty, raw) {
        (AttrType::String, Value::String(s)) => {
            check_string(field, s, MAX_STRING_LEN)?;
            Ok(AttrValue::String(s.clone()))
        }
        (AttrType::String, _) => Err(wrong("a string")),
        (AttrType::Number, Value::Number(n)) => n
            .as_f64()
            .map(AttrValue::Number)
            .ok_or_else(|| wrong("a number")),
        (AttrType::Number, _) => Err(wrong("a number")),
        (AttrType::Boolean, Value::Bool(b)) => Ok(AttrValue::Bool(*b)),
        (AttrType::Boolean, _) => Err(wrong("true or false")),
        (AttrType::Date, Value::String(s)) => normalize_date(s)
            .map(AttrValue::String)
            .ok_or_else(|| wrong("a date (YYYY-MM-DD) or an RFC 3339 date-time")),
        (AttrType::Date, _) => Err(wrong("a date string (YYYY-MM-DD) or an RFC 3339 date-time")),
        (AttrType::StringList, Value::Array(items)) => {
            if items.len() > MAX_LIST_LEN {
                return Err(DomainError::invalid(
                    field,
                    format!("must have at most {MAX_LIST_LEN} items"),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => {
                        check_string(&format!("{field}[{i}]"), s, MAX_STRING_LEN)?;
                        Ok(s.clone())
                    }
                    _ => Err(DomainError::invalid(
                        format!("{field}[{i}]"),
                        "must be a string",
                    )),
                })
                .collect::<Result<_, _>>()
                .map(AttrValue::StringList)
        }
        (AttrType::StringList, _) => Err(wrong("a list of strings")),
    }
}

/// Validates a subject's custom attributes against the declared schema.
/// A `null` value means "not set" and is dropped.
pub(crate) fn validate_custom(
    txn: &WriteTxn<'_>,
    kind: SubjectKind,
    raw: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, AttrValue>, DomainError> {
    if raw.len() > MAX_CUSTOM_PER_SUBJECT {
        return Err(DomainError::invalid(
            "custom_attributes",
            format!(
                "at most {MAX_CUSTOM_PER_SUBJECT} custom attributes per {}",
                kind.as_str()
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        if value.is_null() {
            continue;
        }
        let field = format!("custom_attributes.{name}");
        let def: Attribute = txn.get_json(ATTRIBUTE_DEFS, &def_key(kind, name))?.ok_or_else(|| {
            DomainError::invalid(
                &field,
                format!(
                    "unknown custom attribute; declare it first with POST /api/v1/attributes (subject {})",
                    kind.as_str()
                ),
            )
        })?;
        out.insert(name.clone(), parse_value(&field, def.attr_type, value)?);
    }
    Ok(out)
}

/// Keeps the usage index in step with a subject's custom attributes.
pub(crate) fn track_usage(
    txn: &mut WriteTxn<'_>,
    kind: SubjectKind,
    id: &[u8],
    before: Option<&BTreeMap<String, AttrValue>>,
    after: Option<&BTreeMap<String, AttrValue>>,
) {
    for name in before.into_iter().flat_map(|m| m.keys()) {
        if after.is_none_or(|a| !a.contains_key(name)) {
            txn.delete(ATTRIBUTE_USAGE, &usage_key(kind, name, id));
        }
    }
    for name in after.into_iter().flat_map(|m| m.keys()) {
        if before.is_none_or(|b| !b.contains_key(name)) {
            txn.put(ATTRIBUTE_USAGE, &usage_key(kind, name, id), Vec::new());
        }
    }
}

/// The standard attributes of one kind of subject, which every directory
/// has: what a rule evaluator is tested against without a server.
pub fn standard_schema(kind: SubjectKind) -> Vec<Attribute> {
    standard(kind)
        .iter()
        .map(|(name, ty, desc)| Attribute {
            name: name.to_string(),
            subject: kind,
            attr_type: *ty,
            standard: true,
            description: Some(desc.to_string()),
            created_at: None,
        })
        .collect()
}

/// The schema of one kind of subject: standard attributes, then custom ones
/// by name. For the rule engine, which checks rules against it.
pub fn schema(
    store: &cohort_storage::Store,
    kind: SubjectKind,
) -> Result<Vec<Attribute>, DomainError> {
    let mut out = standard_schema(kind);
    for entry in store.scan(
        ATTRIBUTE_DEFS,
        &[kind.as_str().as_bytes(), &[0]].concat(),
        None,
        false,
    ) {
        let (_, v) = entry?;
        out.push(cohort_storage::decode_json(ATTRIBUTE_DEFS, &v)?);
    }
    Ok(out)
}

impl Directory {
    /// The full schema (standard, then custom attributes by name), optionally
    /// for one kind of subject.
    pub fn list_attributes(
        &self,
        _: &Read,
        kind: Option<SubjectKind>,
    ) -> Result<Vec<Attribute>, DomainError> {
        let kinds: &[SubjectKind] = match kind {
            Some(SubjectKind::User) => &[SubjectKind::User],
            Some(SubjectKind::Device) => &[SubjectKind::Device],
            None => &[SubjectKind::User, SubjectKind::Device],
        };
        let mut out = Vec::new();
        for &k in kinds {
            out.extend(schema(&self.store, k)?);
        }
        Ok(out)
    }

    /// One attribute, standard or custom.
    pub fn get_attribute(
        &self,
        _: &Read,
        kind: SubjectKind,
        name: &str,
    ) -> Result<Attribute, DomainError> {
        if let Some((n, ty, desc)) = standard(kind).iter().find(|(n, ..)| *n == name) {
            return Ok(Attribute {
                name: n.to_string(),
                subject: kind,
                attr_type: *ty,
                standard: true,
                description: Some(desc.to_string()),
                created_at: None,
            });
        }
        self.store
            .get_json(ATTRIBUTE_DEFS, &def_key(kind, name))?
            .ok_or_else(|| DomainError::not_found("attribute", format!("{}/{name}", kind.as_str())))
    }

    /// The type of attribute `name` for `kind`, standard or custom.
    pub fn attribute_type(
        &self,
        kind: SubjectKind,
        name: &str,
    ) -> Result<Option<AttrType>, DomainError> {
        if let Some(t) = standard_type(kind, name) {
            return Ok(Some(t));
        }
        Ok(self
            .store
            .get_json::<Attribute>(ATTRIBUTE_DEFS, &def_key(kind, name))?
            .map(|a| a.attr_type))
    }

    /// Declares a custom attribute.
    pub async fn create_attribute(
        &self,
        cap: &ManageDirectory<'_>,
        input: NewAttribute,
    ) -> Result<Attribute, DomainError> {
        validate_attr_name(&input.name)?;
        if standard_type(input.subject, &input.name).is_some() {
            return Err(DomainError::Conflict {
                code: "attribute_exists",
                field: Some("name".into()),
                message: format!(
                    "{:?} is a standard {} attribute",
                    input.name,
                    input.subject.as_str()
                ),
            });
        }
        if let Some(d) = &input.description {
            check_string("description", d, 1024)?;
        }
        let now = self.clock.now();
        let attr = Attribute {
            name: input.name,
            subject: input.subject,
            attr_type: input.attr_type,
            standard: false,
            description: input.description,
            created_at: Some(now),
        };
        let key = def_key(attr.subject, &attr.name);
        super::commit(&self.store, |txn| {
            if txn.contains(ATTRIBUTE_DEFS, &key)? {
                return Err(DomainError::Conflict {
                    code: "attribute_exists",
                    field: Some("name".into()),
                    message: format!(
                        "custom {} attribute {:?} already exists",
                        attr.subject.as_str(),
                        attr.name
                    ),
                });
            }
            txn.put_json(ATTRIBUTE_DEFS, &key, &attr)?;
            audit::record(
                txn,
                now,
                cap.actor(),
                attr_record("attribute.create", &attr, None, Some(&attr)),
            )?;
            Ok(attr.clone())
        })
        .await
    }

    /// Changes a custom attribute's description.
    pub async fn update_attribute(
        &self,
        cap: &ManageDirectory<'_>,
        kind: SubjectKind,
        name: &str,
        update: AttributeUpdate,
    ) -> Result<Attribute, DomainError> {
        if let Some(d) = &update.description {
            check_string("description", d, 1024)?;
        }
        let now = self.clock.now();
        let key = def_key(kind, name);
        super::commit(&self.store, |txn| {
            let before: Attribute = txn
                .get_json(ATTRIBUTE_DEFS, &key)?
                .ok_or_else(|| missing_custom(kind, name))?;
            let mut after = before.clone();
            after.description = update.description.clone();
            txn.put_json(ATTRIBUTE_DEFS, &key, &after)?;
            audit::record(
                txn,
                now,
                cap.actor(),
                attr_record("attribute.update", &after, Some(&before), Some(&after)),
            )?;
            Ok(after)
        })
        .await
    }

    /// Removes a custom attribute that no subject uses any more.
    pub async fn delete_attribute(
        &self,
        cap: &ManageDirectory<'_>,
        kind: SubjectKind,
        name: &str,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let key = def_key(kind, name);
        super::commit(&self.store, |txn| {
            let before: Attribute = txn
                .get_json(ATTRIBUTE_DEFS, &key)?
                .ok_or_else(|| missing_custom(kind, name))?;
            let users = txn.scan_prefix(ATTRIBUTE_USAGE, &[&key[..], &[0]].concat())?;
            if !users.is_empty() {
                return Err(DomainError::Conflict {
                    code: "attribute_in_use",
                    field: None,
                    message: format!(
                        "{} {}(s) still have a value for {name:?}; remove those values first",
                        users.len(),
                        kind.as_str()
                    ),
                });
            }
            txn.delete(ATTRIBUTE_DEFS, &key);
            audit::record(
                txn,
                now,
                cap.actor(),
                attr_record("attribute.delete", &before, Some(&before), None),
            )?;
            Ok(())
        })
        .await
    }
}

fn missing_custom(kind: SubjectKind, name: &str) -> DomainError {
    if standard_type(kind, name).is_some() {
        DomainError::Conflict {
            code: "attribute_is_standard",
            field: None,
            message: format!("{name:?} is a standard attribute and cannot be changed"),
        }
    } else {
        DomainError::not_found("attribute", format!("{}/{name}", kind.as_str()))
    }
}

fn attr_record<'a>(
    action: &'a str,
    attr: &Attribute,
    before: Option<&Attribute>,
    after: Option<&Attribute>,
) -> Record<'a> {
    Record {
        action,
        resource_type: "attribute",
        resource_id: format!("{}/{}", attr.subject.as_str(), attr.name),
        changes: audit::diff(before, after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_against_their_type() {
        assert_eq!(
            parse_value("f", AttrType::Number, &json!(3)).unwrap(),
            AttrValue::Number(3.0)
        );
        assert!(parse_value("f", AttrType::Number, &json!("3")).is_err());
        assert_eq!(
            parse_value("f", AttrType::Date, &json!("2026-02-01T10:00:00+01:00")).unwrap(),
            AttrValue::String("2026-02-01T09:00:00.000000Z".into())
        );
        assert!(parse_value("f", AttrType::Date, &json!("2026-02-30")).is_err());
        let err = parse_value("f", AttrType::StringList, &json!(["a", 1])).unwrap_err();
        assert!(matches!(err, DomainError::Invalid { ref field, .. } if field == "f[1]"));
    }

    #[test]
    fn names_are_restricted() {
        assert!(validate_attr_name("cost_level2").is_ok());
        assert!(validate_attr_name("Cost").is_err());
        assert!(validate_attr_name("2x").is_err());
        assert!(validate_attr_name("").is_err());
    }
}
