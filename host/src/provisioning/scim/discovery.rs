//! SCIM discovery (RFC 7644 §4, RFC 7643 §5–7): what this server supports,
//! stated exactly. Clients (Okta, Entra ID, compliance checkers) read these
//! documents and rely on them, so nothing is advertised that is not built:
//! and the Cohort extension only with the custom attributes that exist.

use serde_json::{Value, json};

use super::MAX_RESULTS;
use super::resource::{COHORT, ENTERPRISE, USER};
use crate::directory::AttrType;

fn attr(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name, "type": ty, "multiValued": false, "description": description,
        "required": false, "caseExact": false, "mutability": "readWrite",
        "returned": "default", "uniqueness": "none",
    })
}

fn with(mut a: Value, k: &str, v: Value) -> Value {
    a[k] = v;
    a
}

fn multi(name: &str, description: &str, subs: Vec<Value>) -> Value {
    with(
        with(
            attr(name, "complex", description),
            "multiValued",
            json!(true),
        ),
        "subAttributes",
        json!(subs),
    )
}

fn read_only(a: Value) -> Value {
    with(a, "mutability", json!("readOnly"))
}

/// Cohort keeps one value of each: the primary one, else the `work` one,
/// else the first. Its label and flag come back as sent.
fn typed_value(kind: &str) -> Vec<Value> {
    vec![
        attr("value", "string", &format!("The {kind}.")),
        attr("type", "string", "A label: work, home, other."),
        attr("primary", "boolean", "Whether this is the primary value."),
    ]
}

fn meta(id: &str, name: &str, description: &str, attributes: Vec<Value>, base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id, "name": name, "description": description,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// The SCIM type of a custom attribute.
fn custom(name: &str, ty: AttrType) -> Value {
    let (scim, multi) = match ty {
        AttrType::String => ("string", false),
        AttrType::Number => ("decimal", false),
        AttrType::Boolean => ("boolean", false),
        AttrType::Date => ("dateTime", false),
        AttrType::StringList => ("string", true),
    };
    with(
        attr(
            name,
            scim,
            "A custom attribute declared in /api/v1/attributes.",
        ),
        "multiValued",
        json!(multi),
    )
}

/// The User, enterprise extension and (when custom attributes are
/// declared) Cohort extension schemas. `password` is only in the User
/// schema when the server accepts passwords.
pub fn schemas(base: &str, accept_passwords: bool, customs: &[(String, AttrType)]) -> Vec<Value> {
    let mut user = vec![
        with(
            with(
                with(
                    attr(
                        "userName",
                        "string",
                        "Unique login name; Cohort's username.",
                    ),
                    "required",
                    json!(true),
                ),
                "uniqueness",
                json!("server"),
            ),
            "caseExact",
            json!(false),
        ),
        with(
            attr("name", "complex", "The user's name."),
            "subAttributes",
            json!([
                attr(
                    "formatted",
                    "string",
                    "The full name, as sent (or given and family name)."
                ),
                attr("givenName", "string", "Given name; Cohort's first_name."),
                attr("familyName", "string", "Family name; Cohort's last_name."),
            ]),
        ),
        attr("displayName", "string", "Cohort's display_name."),
        attr("title", "string", "Cohort's job_title."),
        attr("userType", "string", "Cohort's employee_type."),
        // Required because Cohort has no "neither": it cannot be removed.
        // A create without it makes an active user.
        with(
            attr(
                "active",
                "boolean",
                "true: active. false: suspended (a staged user stays staged). Cannot be removed.",
            ),
            "required",
            json!(true),
        ),
        with(
            with(
                attr(
                    "password",
                    "string",
                    "Set as the local password (argon2id); never returned.",
                ),
                "returned",
                json!("never"),
            ),
            "mutability",
            json!("writeOnly"),
        ),
        with(
            multi(
                "emails",
                "Email addresses; the primary one is Cohort's email, which every user has (a userName that is an email address will do).",
                {
                    let mut subs = typed_value("email address");
                    subs[0]["required"] = json!(true);
                    subs
                },
            ),
            "required",
            json!(true),
        ),
        multi(
            "phoneNumbers",
            "Phone numbers; the primary one is Cohort's phone.",
            typed_value("phone number"),
        ),
        multi(
            "addresses",
            "Addresses; the primary one's locality is Cohort's location.",
            vec![
                attr("locality", "string", "City or locality."),
                attr("type", "string", "A label: work, home, other."),
                attr("primary", "boolean", "Whether this is the primary address."),
            ],
        ),
    ];
    if !accept_passwords {
        user.retain(|a| a["name"] != "password");
    }
    let enterprise = vec![
        attr("employeeNumber", "string", "Cohort's employee_id."),
        attr("costCenter", "string", "Cohort's cost_center."),
        attr("organization", "string", "Cohort's company."),
        attr("department", "string", "Cohort's department."),
        with(
            attr(
                "manager",
                "complex",
                "The user's manager: a Cohort user id, or the userName or externalId of a user, which becomes Cohort's manager_id; any other value is kept and returned as sent.",
            ),
            "subAttributes",
            json!([
                attr("value", "string", "The manager's id."),
                read_only(attr("$ref", "reference", "The manager's URI.")),
            ]),
        ),
    ];
    let mut out = vec![
        meta(USER, "User", "User account", user, base),
        meta(
            ENTERPRISE,
            "EnterpriseUser",
            "Enterprise user",
            enterprise,
            base,
        ),
    ];
    let group = vec![
        with(
            with(
                attr(
                    "displayName",
                    "string",
                    "The group's name, unique among user groups.",
                ),
                "required",
                json!(true),
            ),
            "uniqueness",
            json!("server"),
        ),
        multi(
            "members",
            "The users in the group, by id.",
            vec![
                with(
                    with(
                        attr("value", "string", "The user's id."),
                        "mutability",
                        json!("immutable"),
                    ),
                    "required",
                    json!(true),
                ),
                with(
                    with(
                        attr("$ref", "reference", "The user's URI."),
                        "referenceTypes",
                        json!(["User"]),
                    ),
                    "mutability",
                    json!("immutable"),
                ),
                with(
                    with(
                        attr("type", "string", "User: groups hold users only."),
                        "canonicalValues",
                        json!(["User"]),
                    ),
                    "mutability",
                    json!("immutable"),
                ),
            ],
        ),
    ];
    out.push(meta(
        super::groups::GROUP,
        "Group",
        "A static user group",
        group,
        base,
    ));
    if !customs.is_empty() {
        out.push(meta(
            COHORT,
            "CohortUser",
            "Cohort's custom attributes, by name, as declared in /api/v1/attributes",
            customs.iter().map(|(n, t)| custom(n, *t)).collect(),
            base,
        ));
    }
    out
}

/// The resource types. The Cohort extension is listed when custom
/// attributes are declared.
pub fn resource_types(base: &str, customs: bool) -> Vec<Value> {
    let mut extensions = vec![json!({"schema": ENTERPRISE, "required": false})];
    if customs {
        extensions.push(json!({"schema": COHORT, "required": false}));
    }
    vec![
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User", "name": "User", "endpoint": "/Users",
        "description": "People in the directory",
        "schema": USER,
        "schemaExtensions": extensions,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "Static user groups (dynamic groups follow their rules and are not provisioned)",
            "schema": super::groups::GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// The service provider configuration.
pub fn service_provider_config(base: &str, accept_passwords: bool, max_payload: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/cohort-directory/cohort/blob/main/docs/scim.md",
        "patch": {"supported": true},
        "bulk": {"supported": true, "maxOperations": super::bulk::MAX_OPERATIONS, "maxPayloadSize": max_payload},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": accept_passwords},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "An API key with the scim role, as Authorization: Bearer <key>",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}
