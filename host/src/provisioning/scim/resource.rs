//! Cohort users as SCIM User resources, and back. The mapping is the one
//! in docs/scim.md; everything SCIM says that Cohort has no field for is
//! refused or ignored as documented there, never silently half-applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ScimError;
use super::filter::member;
use crate::directory::{User, UserInput, UserState};

/// The core User schema.
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The enterprise extension.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Cohort's extension: custom attributes.
pub const COHORT: &str = "urn:cohort:params:scim:schemas:extension:2.0:User";
/// List responses.
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PATCH requests.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Errors.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// What SCIM keeps about a user that the directory has no field for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    /// The client's own id for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// `manager.value` as the client sent it, when it names no Cohort user
    /// (Okta often sends its own id): returned as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Written through SCIM: rendered as the client shaped it, rather than
    /// with Cohort's defaults.
    #[serde(default)]
    pub managed: bool,
    /// `name.formatted` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// For `emails`, `phoneNumbers` and `addresses`: the sub-attributes
    /// other than the value (`type`, `primary`, `display`) of the item
    /// Cohort took, as sent, so they come back as sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shapes: BTreeMap<String, Map<String, Value>>,
}

/// The multi-valued attributes Cohort keeps one value of, and that value's
/// sub-attribute.
const SHAPED: [(&str, &str); 3] = [
    ("emails", "value"),
    ("phoneNumbers", "value"),
    ("addresses", "locality"),
];

/// One item of a multi-valued attribute: the value, shaped as the client
/// sent it, or as Cohort's one `work`, primary value.
fn item(extra: Option<&Extra>, attr: &str, sub: &str, value: &str) -> Value {
    let mut m = match extra.filter(|e| e.managed) {
        Some(e) => e.shapes.get(attr).cloned().unwrap_or_default(),
        None => {
            let mut m = Map::new();
            m.insert("type".into(), json!("work"));
            m.insert("primary".into(), json!(true));
            m
        }
    };
    m.insert(sub.into(), json!(value));
    Value::Array(vec![Value::Object(m)])
}

/// A user as a SCIM resource.
pub fn to_scim(user: &User, extra: Option<&Extra>, base: &str) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([USER]));
    out.insert("id".into(), json!(user.id.to_string()));
    if let Some(e) = extra.and_then(|e| e.external_id.as_ref()) {
        out.insert("externalId".into(), json!(e));
    }
    out.insert("userName".into(), json!(user.username));
    let mut name = Map::new();
    if let Some(v) = &user.first_name {
        name.insert("givenName".into(), json!(v));
    }
    if let Some(v) = &user.last_name {
        name.insert("familyName".into(), json!(v));
    }
    match extra.filter(|e| e.managed) {
        Some(e) => {
            if let Some(f) = &e.formatted {
                name.insert("formatted".into(), json!(f));
            }
        }
        None => {
            let formatted: Vec<&str> = [&user.first_name, &user.last_name]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            if !formatted.is_empty() {
                name.insert("formatted".into(), json!(formatted.join(" ")));
            }
        }
    }
    if !name.is_empty() {
        out.insert("name".into(), Value::Object(name));
    }
    let optional = [
        ("displayName", &user.display_name),
        ("title", &user.job_title),
        ("userType", &user.employee_type),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    out.insert("active".into(), json!(user.state == UserState::Active));
    out.insert("emails".into(), item(extra, "emails", "value", &user.email));
    if let Some(p) = &user.phone {
        out.insert(
            "phoneNumbers".into(),
            item(extra, "phoneNumbers", "value", p),
        );
    }
    if let Some(l) = &user.location {
        out.insert("addresses".into(), item(extra, "addresses", "locality", l));
    }
    let mut ent = Map::new();
    let enterprise = [
        ("employeeNumber", &user.employee_id),
        ("department", &user.department),
        ("costCenter", &user.cost_center),
        ("organization", &user.company),
    ];
    for (k, v) in enterprise {
        if let Some(v) = v {
            ent.insert(k.into(), json!(v));
        }
    }
    if let Some(m) = user.manager_id {
        ent.insert(
            "manager".into(),
            json!({"value": m.to_string(), "$ref": format!("{base}/Users/{m}")}),
        );
    } else if let Some(m) = extra.and_then(|e| e.manager.as_ref()) {
        ent.insert("manager".into(), json!({"value": m}));
    }
    if !ent.is_empty() {
        out.insert(ENTERPRISE.into(), Value::Object(ent));
    }
    if !user.custom_attributes.is_empty() {
        out.insert(
            COHORT.into(),
            serde_json::to_value(&user.custom_attributes).unwrap_or_default(),
        );
    }
    // The extensions this resource has, as RFC 7643 §3 asks.
    let mut schemas = vec![json!(USER)];
    for ext in [ENTERPRISE, COHORT] {
        if out.contains_key(ext) {
            schemas.push(json!(ext));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": user.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": user.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": format!("{base}/Users/{}", user.id),
            "version": etag(user.version),
        }),
    );
    Value::Object(out)
}

/// A weak ETag for a version.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// What a SCIM User body asks for.
pub struct Incoming {
    /// The directory fields.
    pub input: UserInput,
    /// `active`, when given.
    pub active: Option<bool>,
    /// The extra SCIM data.
    pub extra: Extra,
    /// A password, when given.
    pub password: Option<String>,
}

fn text(v: Option<&Value>, field: &str) -> Result<Option<String>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{field} must be a string, not {other}"
        ))),
    }
}

/// A boolean, also as the strings `"True"` / `"False"` Entra ID sends.
pub fn boolean(v: &Value, field: &str) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::invalid_value(format!(
            "{field} must be true or false, not {other}"
        ))),
    }
}

/// The item of a multi-valued attribute Cohort takes: the primary one, else
/// the `work` one, else the first.
fn chosen(v: Option<&Value>) -> Option<&Value> {
    let items = v?.as_array()?;
    items
        .iter()
        .find(|i| member(i, "primary").is_some_and(|p| p == &json!(true)))
        .or_else(|| {
            items.iter().find(|i| {
                member(i, "type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("work"))
            })
        })
        .or_else(|| items.first())
}

/// That item's `sub`.
fn primary<'a>(v: Option<&'a Value>, sub: &str) -> Option<&'a Value> {
    member(chosen(v)?, sub)
}

/// Reads a SCIM User body.
pub fn from_scim(body: &Value) -> Result<Incoming, ScimError> {
    if !body.is_object() {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    }
    let username = text(member(body, "userName"), "userName")?
        .ok_or_else(|| ScimError::invalid_value("userName is required"))?;
    let email = match text(primary(member(body, "emails"), "value"), "emails.value")? {
        Some(e) => e,
        None if username.contains('@') => username.clone(),
        None => {
            return Err(ScimError::invalid_value(
                "an email is required: send emails, or a userName that is an email address",
            ));
        }
    };
    let name = member(body, "name");
    let ext = member(body, ENTERPRISE);
    let manager = match ext.and_then(|e| member(e, "manager")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(m) => member(m, "value").and_then(Value::as_str).map(String::from),
    }
    .filter(|m| !m.trim().is_empty());
    let custom_attributes: BTreeMap<String, Value> = match member(body, COHORT) {
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("schemas"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(Value::Null) | None => BTreeMap::new(),
        Some(_) => {
            return Err(ScimError::invalid_value(format!(
                "{COHORT} must be an object of custom attributes"
            )));
        }
    };
    let input = UserInput {
        username,
        email,
        state: None,
        first_name: text(name.and_then(|n| member(n, "givenName")), "name.givenName")?,
        last_name: text(
            name.and_then(|n| member(n, "familyName")),
            "name.familyName",
        )?,
        display_name: text(member(body, "displayName"), "displayName")?,
        job_title: text(member(body, "title"), "title")?,
        employee_type: text(member(body, "userType"), "userType")?,
        phone: text(
            primary(member(body, "phoneNumbers"), "value"),
            "phoneNumbers.value",
        )?,
        location: text(
            primary(member(body, "addresses"), "locality"),
            "addresses.locality",
        )?,
        department: text(ext.and_then(|e| member(e, "department")), "department")?,
        employee_id: text(
            ext.and_then(|e| member(e, "employeeNumber")),
            "employeeNumber",
        )?,
        cost_center: text(ext.and_then(|e| member(e, "costCenter")), "costCenter")?,
        company: text(ext.and_then(|e| member(e, "organization")), "organization")?,
        // Resolved by the service, which can look users up.
        manager_id: None,
        description: None,
        custom_attributes,
    };
    let active = match member(body, "active") {
        None | Some(Value::Null) => None,
        Some(v) => Some(boolean(v, "active")?),
    };
    Ok(Incoming {
        input,
        active,
        extra: Extra {
            external_id: text(member(body, "externalId"), "externalId")?,
            manager,
            managed: true,
            formatted: text(name.and_then(|n| member(n, "formatted")), "name.formatted")?,
            shapes: SHAPED
                .iter()
                .filter_map(|(attr, sub)| {
                    let Some(Value::Object(m)) = chosen(member(body, attr)) else {
                        return None;
                    };
                    let rest: Map<String, Value> = m
                        .iter()
                        .filter(|(k, _)| !k.eq_ignore_ascii_case(sub))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    Some((attr.to_string(), rest))
                })
                .collect(),
        },
        password: text(member(body, "password"), "password")?,
    })
}

/// Keeps only `attributes` (plus what is always returned), or drops
/// `excluded` (RFC 7644 §3.9). Names may carry a schema URN and a
/// sub-attribute.
pub fn project(resource: Value, attributes: &[String], excluded: &[String]) -> Value {
    let Value::Object(map) = resource else {
        return resource;
    };
    const ALWAYS: [&str; 3] = ["id", "schemas", "meta"];
    let split = |a: &str| -> (Option<String>, String, Option<String>) {
        let p = super::filter::parse_path(a);
        match p {
            Some(p) => {
                let urn = p.urn.filter(|u| !u.eq_ignore_ascii_case(USER));
                (urn, p.attr, p.sub)
            }
            None => (None, a.to_string(), None),
        }
    };
    if !attributes.is_empty() {
        let wanted: Vec<_> = attributes.iter().map(|a| split(a)).collect();
        let mut out = Map::new();
        for (k, v) in map {
            if ALWAYS.contains(&k.as_str()) {
                out.insert(k, v);
                continue;
            }
            if k.to_ascii_lowercase().starts_with("urn:") {
                // An extension: keep the attributes asked for in it.
                let inner: Vec<&(Option<String>, String, Option<String>)> = wanted
                    .iter()
                    .filter(|(u, _, _)| u.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(&k)))
                    .collect();
                let whole = wanted
                    .iter()
                    .any(|(u, a, _)| u.is_none() && a.eq_ignore_ascii_case(&k));
                if whole {
                    out.insert(k, v);
                } else if !inner.is_empty()
                    && let Value::Object(ext) = v
                {
                    let kept: Map<String, Value> = ext
                        .into_iter()
                        .filter(|(ek, _)| inner.iter().any(|(_, a, _)| a.eq_ignore_ascii_case(ek)))
                        .collect();
                    out.insert(k, Value::Object(kept));
                }
                continue;
            }
            let asked: Vec<_> = wanted
                .iter()
                .filter(|(u, a, _)| u.is_none() && a.eq_ignore_ascii_case(&k))
                .collect();
            if asked.is_empty() {
                continue;
            }
            if asked.iter().any(|(_, _, s)| s.is_none()) {
                out.insert(k, v);
                continue;
            }
            let subs: Vec<&str> = asked.iter().filter_map(|(_, _, s)| s.as_deref()).collect();
            let keep = |o: Map<String, Value>| -> Map<String, Value> {
                o.into_iter()
                    .filter(|(sk, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(sk)))
                    .collect()
            };
            let v = match v {
                Value::Object(o) => Value::Object(keep(o)),
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|i| match i {
                            Value::Object(o) => Value::Object(keep(o)),
                            other => other,
                        })
                        .collect(),
                ),
                other => other,
            };
            out.insert(k, v);
        }
        return Value::Object(out);
    }
    let dropped: Vec<_> = excluded.iter().map(|a| split(a)).collect();
    let mut out = Map::new();
    for (k, v) in map {
        if ALWAYS.contains(&k.as_str()) {
            out.insert(k, v);
            continue;
        }
        let whole = dropped
            .iter()
            .any(|(u, a, s)| u.is_none() && s.is_none() && a.eq_ignore_ascii_case(&k));
        if whole {
            continue;
        }
        let v = match v {
            Value::Object(mut o) => {
                let is_ext = k.to_ascii_lowercase().starts_with("urn:");
                o.retain(|sk, _| {
                    !dropped.iter().any(|(u, a, s)| {
                        if is_ext {
                            u.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(&k))
                                && a.eq_ignore_ascii_case(sk)
                        } else {
                            u.is_none()
                                && a.eq_ignore_ascii_case(&k)
                                && s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sk))
                        }
                    })
                });
                Value::Object(o)
            }
            other => other,
        };
        out.insert(k, v);
    }
    Value::Object(out)
}
