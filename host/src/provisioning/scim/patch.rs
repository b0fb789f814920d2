//! SCIM PATCH (RFC 7644 §3.5.2), applied to a resource's SCIM JSON; the
//! result is then read back like a PUT body, so a PATCH is validated
//! exactly like a replace. Accepts what Okta and Entra ID send: operation
//! names in any case, no-path operations with an object value, filters in
//! paths (`emails[type eq "work"].value`), and booleans as strings.

use serde_json::{Map, Value};

use super::ScimError;
use super::filter::{self, AttrPath, Filter};
use super::resource::USER;
use crate::limits::MAX_FILTER_BYTES;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Add,
    Remove,
    Replace,
}

/// A PATCH path: an attribute, optionally a filter on its values, and a
/// sub-attribute.
struct Path {
    attr: AttrPath,
    filter: Option<Filter>,
    sub: Option<String>,
}

/// The extensions a path may name as a whole.
const EXTENSIONS: [&str; 2] = [super::resource::ENTERPRISE, super::resource::COHORT];

fn parse_path(raw: &str) -> Result<Path, ScimError> {
    // A path is at most a filter and two names; the filter's own limits
    // apply inside the brackets.
    if raw.len() > MAX_FILTER_BYTES {
        return Err(ScimError::invalid_path(format!(
            "the path is {} bytes long; {MAX_FILTER_BYTES} is the limit",
            raw.len()
        )));
    }
    let bad = || ScimError::invalid_path(format!("{raw:?} is not a valid path"));
    if let Some(ext) = EXTENSIONS.iter().find(|e| e.eq_ignore_ascii_case(raw)) {
        // The whole extension object: a member of the resource named by
        // its URN.
        return Ok(Path {
            attr: AttrPath {
                urn: None,
                attr: ext.to_string(),
                sub: None,
            },
            filter: None,
            sub: None,
        });
    }
    if let Some(open) = raw.find('[') {
        let close = raw.rfind(']').ok_or_else(bad)?;
        // A `]` before the first `[` (`a]b[c`) closes nothing.
        if close < open {
            return Err(bad());
        }
        let attr = filter::parse_path(&raw[..open]).ok_or_else(bad)?;
        let inner = filter::parse(&raw[open + 1..close])
            .map_err(|e| ScimError::invalid_path(format!("{raw:?}: {e}")))?;
        let rest = &raw[close + 1..];
        let sub = match rest.strip_prefix('.') {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            None if rest.is_empty() => None,
            _ => return Err(bad()),
        };
        return Ok(Path {
            attr,
            filter: Some(inner),
            sub,
        });
    }
    let attr = filter::parse_path(raw).ok_or_else(bad)?;
    Ok(Path {
        sub: attr.sub.clone(),
        attr: AttrPath { sub: None, ..attr },
        filter: None,
    })
}

/// The object a path's URN points into, created when asked to.
fn target<'a>(
    resource: &'a mut Map<String, Value>,
    urn: &Option<String>,
) -> &'a mut Map<String, Value> {
    match urn {
        Some(u) if !u.eq_ignore_ascii_case(USER) => {
            let key = resource
                .keys()
                .find(|k| k.eq_ignore_ascii_case(u))
                .cloned()
                .unwrap_or_else(|| u.clone());
            let entry = resource
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            entry.as_object_mut().expect("made an object")
        }
        _ => resource,
    }
}

/// The existing key matching `name` case-insensitively, or `name`.
fn key_in(map: &Map<String, Value>, name: &str) -> String {
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

fn apply_one(
    resource: &mut Map<String, Value>,
    kind: Kind,
    path: &Path,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let obj = target(resource, &path.attr.urn);
    let key = key_in(obj, &path.attr.attr);
    match (&path.filter, &path.sub) {
        (None, None) => match kind {
            // Entra ID removes group members with a value list rather than
            // a filter: remove those items, not the whole attribute.
            Kind::Remove if matches!(value, Some(Value::Array(_))) => {
                let gone = value.and_then(Value::as_array).cloned().unwrap_or_default();
                let same = |a: &Value, b: &Value| match (
                    filter::member(a, "value"),
                    filter::member(b, "value"),
                ) {
                    (Some(x), Some(y)) => x == y,
                    _ => a == b,
                };
                if let Some(Value::Array(items)) = obj.get_mut(&key) {
                    items.retain(|i| !gone.iter().any(|g| same(i, g)));
                }
            }
            Kind::Remove => {
                obj.remove(&key);
            }
            Kind::Add => {
                let v = value.cloned().unwrap_or(Value::Null);
                match (obj.get_mut(&key), v) {
                    (Some(Value::Array(existing)), Value::Array(new)) => {
                        for item in new {
                            if !existing.contains(&item) {
                                existing.push(item);
                            }
                        }
                    }
                    (Some(Value::Object(existing)), Value::Object(new)) => {
                        for (k, v) in new {
                            let k = key_in(existing, &k);
                            existing.insert(k, v);
                        }
                    }
                    (_, v) => {
                        obj.insert(key, v);
                    }
                }
            }
            Kind::Replace => {
                let v = value.cloned().unwrap_or(Value::Null);
                match (obj.get_mut(&key), v) {
                    // Replacing a complex attribute replaces the sub-attributes given.
                    (Some(Value::Object(existing)), Value::Object(new)) => {
                        for (k, v) in new {
                            let k = key_in(existing, &k);
                            existing.insert(k, v);
                        }
                    }
                    (_, v) => {
                        obj.insert(key, v);
                    }
                }
            }
        },
        (None, Some(sub)) => {
            let entry = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(inner) => {
                    let k = key_in(inner, sub);
                    if kind == Kind::Remove {
                        inner.remove(&k);
                    } else {
                        inner.insert(k, value.cloned().unwrap_or(Value::Null));
                    }
                }
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        if let Value::Object(inner) = item {
                            let k = key_in(inner, sub);
                            if kind == Kind::Remove {
                                inner.remove(&k);
                            } else {
                                inner.insert(k, value.cloned().unwrap_or(Value::Null));
                            }
                        }
                    }
                }
                other => {
                    *other = Value::Null;
                }
            }
        }
        (Some(f), sub) => {
            let entry = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            if !entry.is_array() {
                *entry = Value::Array(Vec::new());
            }
            let items = entry.as_array_mut().expect("made an array");
            let matching: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| filter::matches(f, i))
                .map(|(n, _)| n)
                .collect();
            match (kind, sub) {
                (Kind::Remove, None) => {
                    if matching.is_empty() {
                        return Err(ScimError::no_target(
                            "the filter in the path matches no value",
                        ));
                    }
                    let mut n = 0;
                    items.retain(|_| {
                        let keep = !matching.contains(&n);
                        n += 1;
                        keep
                    });
                }
                (Kind::Remove, Some(sub)) => {
                    for n in matching {
                        if let Value::Object(inner) = &mut items[n] {
                            let k = key_in(inner, sub);
                            inner.remove(&k);
                        }
                    }
                }
                (_, None) => {
                    let v = value.cloned().unwrap_or(Value::Null);
                    if matching.is_empty() {
                        items.push(v);
                    } else {
                        for n in matching {
                            items[n] = v.clone();
                        }
                    }
                }
                (_, Some(sub)) => {
                    let v = value.cloned().unwrap_or(Value::Null);
                    if matching.is_empty() {
                        // Entra ID replaces `emails[type eq "work"].value`
                        // on users that have none of that type yet: create
                        // it from the filter's equality.
                        let mut item = Map::new();
                        if let Filter::Compare(p, filter::Op::Eq, want) = f {
                            item.insert(p.attr.clone(), want.clone());
                        }
                        item.insert(sub.clone(), v);
                        items.push(Value::Object(item));
                    } else {
                        for n in matching {
                            if let Value::Object(inner) = &mut items[n] {
                                let k = key_in(inner, sub);
                                inner.insert(k, v.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Applies a PatchOp body to `resource` (a SCIM JSON object).
pub fn apply(resource: &mut Value, body: &Value) -> Result<(), ScimError> {
    let schemas_ok = filter::member(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|x| x == super::resource::PATCH_OP));
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!(
            "a PATCH body has schemas [\"{}\"]",
            super::resource::PATCH_OP
        )));
    }
    let ops = filter::member(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PATCH body has an Operations array"))?;
    let map = resource
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_syntax("not an object"))?;
    for (i, op) in ops.iter().enumerate() {
        let name = filter::member(op, "op")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_syntax(format!("Operations[{i}] has no op")))?;
        let kind = match name.to_ascii_lowercase().as_str() {
            "add" => Kind::Add,
            "remove" => Kind::Remove,
            "replace" => Kind::Replace,
            other => {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}].op {other:?} is not add, remove or replace"
                )));
            }
        };
        let value = filter::member(op, "value");
        match filter::member(op, "path").and_then(Value::as_str) {
            Some(raw) => {
                if kind != Kind::Remove && value.is_none() {
                    return Err(ScimError::invalid_value(format!(
                        "Operations[{i}] needs a value"
                    )));
                }
                let path = parse_path(raw)?;
                if matches!(
                    path.attr.attr.to_ascii_lowercase().as_str(),
                    "id" | "meta" | "schemas"
                ) {
                    return Err(ScimError::mutability(format!("{raw} cannot be changed")));
                }
                apply_one(map, kind, &path, value)?;
            }
            None => {
                if kind == Kind::Remove {
                    return Err(ScimError::no_target(format!(
                        "Operations[{i}]: remove needs a path"
                    )));
                }
                let Some(Value::Object(fields)) = value else {
                    return Err(ScimError::invalid_value(format!(
                        "Operations[{i}]: without a path, the value is an object of attributes"
                    )));
                };
                for (k, v) in fields {
                    if k.to_ascii_lowercase().starts_with("urn:") && v.is_object() {
                        // A whole extension object: its members one by one.
                        for (ek, ev) in v.as_object().expect("checked") {
                            let path = Path {
                                attr: AttrPath {
                                    urn: Some(k.clone()),
                                    attr: ek.clone(),
                                    sub: None,
                                },
                                filter: None,
                                sub: None,
                            };
                            apply_one(map, kind, &path, Some(ev))?;
                        }
                        continue;
                    }
                    let path = parse_path(k)?;
                    apply_one(map, kind, &path, Some(v))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(resource: Value, ops: Value) -> Result<Value, ScimError> {
        let mut r = resource;
        apply(
            &mut r,
            &json!({"schemas": [super::super::resource::PATCH_OP], "Operations": ops}),
        )?;
        Ok(r)
    }

    /// A `]` before the first `[` is a bad path, not a panic (found by the
    /// hostile-input property test).
    #[test]
    fn a_bracket_closed_before_it_opens_is_refused() {
        for path in ["emails]x[type eq \"work\"", "a]b[c", "]["] {
            let err = patch(
                json!({"userName": "a"}),
                json!([{"op": "replace", "path": path, "value": 1}]),
            )
            .unwrap_err();
            assert_eq!(err.status, 400, "{path}");
        }
    }

    #[test]
    fn okta_and_entra_operations_apply() {
        let user = json!({"userName": "a", "active": true, "name": {"givenName": "A"},
                          "emails": [{"value": "a@x.example", "type": "work", "primary": true}]});
        // Okta: no path, an object.
        let r = patch(
            user.clone(),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .unwrap();
        assert_eq!(r["active"], false);
        // Entra: capitalised op, a path, a string boolean (read later).
        let r = patch(
            user.clone(),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .unwrap();
        assert_eq!(r["active"], "False");
        // Filtered paths.
        let r = patch(user.clone(), json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x.example"}])).unwrap();
        assert_eq!(r["emails"][0]["value"], "b@x.example");
        let r = patch(user.clone(), json!([{"op": "add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555"}])).unwrap();
        assert_eq!(
            r["phoneNumbers"][0],
            json!({"type": "work", "value": "+1 555"})
        );
        // Sub-attributes and extensions.
        let r = patch(user.clone(), json!([
            {"op": "replace", "path": "name.familyName", "value": "B"},
            {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Ops"},
            {"op": "remove", "path": "name.givenName"}])).unwrap();
        assert_eq!(r["name"], json!({"familyName": "B"}));
        assert_eq!(
            r["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "Ops"
        );
    }

    #[test]
    fn bad_operations_are_scim_errors() {
        let user = json!({"userName": "a"});
        let e = patch(user.clone(), json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e = patch(
            user.clone(),
            json!([{"op": "replace", "path": "emails[type eq", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        let e = patch(
            user.clone(),
            json!([{"op": "move", "path": "a", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidSyntax"));
        let e = patch(user, json!([{"op": "replace", "path": "id", "value": "x"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("mutability"));
    }
}
