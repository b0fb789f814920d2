//! SCIM Bulk (RFC 7644 §3.7): many operations in one request, each run as
//! it would be on its own (its own transaction), in order. Later operations
//! may refer to resources created earlier in the request as
//! `bulkId:<id>`. `failOnErrors` stops the run after that many errors.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::filter::member;
use super::{Kind, Scim, ScimError};
use crate::auth::Provision;

/// Most operations in one request; advertised in `ServiceProviderConfig`.
pub use crate::limits::MAX_BULK_OPERATIONS as MAX_OPERATIONS;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// Replaces `bulkId:<id>` strings with the ids created so far. Returns the
/// first reference that has no id yet. Recursive, but over a body whose
/// depth was checked against [`crate::limits::MAX_JSON_DEPTH`] when it was
/// read.
fn resolve(v: &mut Value, ids: &HashMap<String, String>) -> Result<(), String> {
    match v {
        Value::String(s) => {
            if let Some(r) = s.strip_prefix("bulkId:") {
                *s = ids.get(r).cloned().ok_or_else(|| r.to_string())?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| resolve(x, ids)),
        Value::Object(o) => o.values_mut().try_for_each(|x| resolve(x, ids)),
        _ => Ok(()),
    }
}

fn resolve_path(path: &str, ids: &HashMap<String, String>) -> Result<String, String> {
    match path.split_once("bulkId:") {
        Some((head, r)) => ids
            .get(r)
            .map(|id| format!("{head}{id}"))
            .ok_or_else(|| r.to_string()),
        None => Ok(path.to_string()),
    }
}

impl Scim {
    /// Runs a BulkRequest.
    pub async fn bulk(&self, cap: &Provision<'_>, body: &Value) -> Result<Value, ScimError> {
        let schemas_ok = member(body, "schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|x| x == BULK_REQUEST));
        if !schemas_ok {
            return Err(ScimError::invalid_syntax(format!(
                "a Bulk request has schemas [\"{BULK_REQUEST}\"]"
            )));
        }
        let ops = member(body, "Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| ScimError::invalid_syntax("a Bulk request has an Operations array"))?;
        if ops.len() > MAX_OPERATIONS {
            return Err(ScimError {
                status: 413,
                scim_type: Some("tooMany"),
                detail: format!(
                    "{} operations; at most {MAX_OPERATIONS} per request",
                    ops.len()
                ),
            });
        }
        let fail_on = member(body, "failOnErrors")
            .and_then(Value::as_u64)
            .map(|n| n.max(1) as usize);
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut results = Vec::with_capacity(ops.len());
        let mut errors = 0;
        for (i, op) in ops.iter().enumerate() {
            if fail_on.is_some_and(|n| errors >= n) {
                break;
            }
            let method = member(op, "method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_uppercase();
            let bulk_id = member(op, "bulkId")
                .and_then(Value::as_str)
                .map(String::from);
            let outcome = self
                .bulk_one(cap, i, &method, op, bulk_id.as_deref(), &ids)
                .await;
            let mut result = json!({"method": method});
            if let Some(b) = &bulk_id {
                result["bulkId"] = json!(b);
            }
            match outcome {
                Ok((status, resource)) => {
                    if let Some(r) = &resource {
                        if let Some(loc) = r["meta"]["location"].as_str() {
                            result["location"] = json!(loc);
                        }
                        if let Some(v) = r["meta"]["version"].as_str() {
                            result["version"] = json!(v);
                        }
                        if let (Some(b), Some(id)) = (&bulk_id, r["id"].as_str()) {
                            ids.insert(b.clone(), id.to_string());
                        }
                    }
                    result["status"] = json!(status.to_string());
                }
                Err(e) => {
                    errors += 1;
                    result["status"] = json!(e.status.to_string());
                    result["response"] = e.body();
                }
            }
            results.push(result);
        }
        Ok(json!({"schemas": [BULK_RESPONSE], "Operations": results}))
    }

    async fn bulk_one(
        &self,
        cap: &Provision<'_>,
        i: usize,
        method: &str,
        op: &Value,
        bulk_id: Option<&str>,
        ids: &HashMap<String, String>,
    ) -> Result<(u16, Option<Value>), ScimError> {
        let unresolved = |r: String| {
            ScimError::invalid_value(format!(
                "Operations[{i}]: bulkId:{r} has not been created (yet)"
            ))
        };
        let path = member(op, "path")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_syntax(format!("Operations[{i}] has no path")))?;
        let path = resolve_path(path, ids).map_err(unresolved)?;
        let mut data = member(op, "data").cloned().unwrap_or(Value::Null);
        resolve(&mut data, ids).map_err(unresolved)?;
        let version = member(op, "version").and_then(Value::as_str);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let not_bulk = || {
            ScimError::invalid_syntax(format!(
                "Operations[{i}]: {method} {path} is not a bulk operation this server runs"
            ))
        };
        let (kind, id) = match segments.as_slice() {
            [k] => (Kind::parse(k).ok_or_else(not_bulk)?, None),
            [k, id] => (Kind::parse(k).ok_or_else(not_bulk)?, Some(*id)),
            _ => return Err(not_bulk()),
        };
        match (method, id) {
            ("POST", None) => {
                if bulk_id.is_none() {
                    return Err(ScimError::invalid_syntax(format!(
                        "Operations[{i}]: a POST needs a bulkId"
                    )));
                }
                let (r, _) = self.create(cap, kind, &data).await?;
                Ok((201, Some(r)))
            }
            ("PUT", Some(id)) => {
                let (r, _) = self.replace(cap, kind, id, &data, version).await?;
                Ok((200, Some(r)))
            }
            ("PATCH", Some(id)) => {
                let (r, _) = self.patch(cap, kind, id, &data, version).await?;
                Ok((200, Some(r)))
            }
            ("DELETE", Some(id)) => {
                self.delete(cap, kind, id, version).await?;
                Ok((204, None))
            }
            _ => Err(not_bulk()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_ids_resolve_in_data_and_paths() {
        let ids: HashMap<String, String> = [("u1".to_string(), "abc".to_string())].into();
        let mut v = json!({"members": [{"value": "bulkId:u1"}, {"value": "other"}]});
        resolve(&mut v, &ids).unwrap();
        assert_eq!(
            v,
            json!({"members": [{"value": "abc"}, {"value": "other"}]})
        );
        assert_eq!(
            resolve_path("/Users/bulkId:u1", &ids).unwrap(),
            "/Users/abc"
        );
        let mut missing = json!("bulkId:u2");
        assert_eq!(resolve(&mut missing, &ids), Err("u2".to_string()));
    }
}
