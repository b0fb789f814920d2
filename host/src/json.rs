//! Decoding JSON input with errors that name the offending field. Used for
//! request bodies and for re-validating a resource after a merge patch, so
//! both report problems the same way.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why input could not be decoded.
#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// Not JSON at all.
    Syntax {
        /// Where the parser stopped, `line L column C`.
        position: String,
        /// The parser's message.
        message: String,
    },
    /// Nested deeper than [`crate::limits::MAX_JSON_DEPTH`]; refused
    /// before parsing, so the parser never recurses that deep.
    TooDeep {
        /// Where the limit was passed, `line L column C`.
        position: String,
        /// The limit.
        limit: usize,
    },
    /// JSON, but not the expected shape.
    Shape {
        /// Dotted path of the offending field (`custom_attributes.level`), or
        /// empty for the document itself.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Decodes `bytes` as `T`, refusing documents nested deeper than
/// [`crate::limits::MAX_JSON_DEPTH`].
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    check_depth(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize(&mut de).map_err(|e| shape_or_syntax(e, true));
    if result.is_ok() {
        // Trailing characters after the document are a syntax error.
        de.end().map_err(|e| DecodeError::Syntax {
            position: format!("line {} column {}", e.line(), e.column()),
            message: strip_position(&e.to_string()),
        })?;
    }
    result
}

/// Refuses a JSON text nested deeper than [`crate::limits::MAX_JSON_DEPTH`].
pub fn check_depth(bytes: &[u8]) -> Result<(), DecodeError> {
    crate::limits::json_depth(bytes, crate::limits::MAX_JSON_DEPTH).map_err(|e| {
        DecodeError::TooDeep {
            position: line_column(bytes, e.offset),
            limit: e.limit,
        }
    })
}

/// `line L column C` (1-based, columns in bytes) of a byte offset, as
/// serde_json reports positions.
fn line_column(bytes: &[u8], offset: usize) -> String {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    format!("line {line} column {column}")
}

/// Decodes an already-parsed document as `T`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| shape_or_syntax(e, false))
}

fn shape_or_syntax(
    e: serde_path_to_error::Error<serde_json::Error>,
    from_text: bool,
) -> DecodeError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if from_text && (inner.is_syntax() || inner.is_eof()) {
        return DecodeError::Syntax {
            position: format!("line {} column {}", inner.line(), inner.column()),
            message: strip_position(&inner.to_string()),
        };
    }
    let message = strip_position(&inner.to_string());
    let mut field = if path == "." { String::new() } else { path };
    // Depending on the input type, an unknown key may fail before the path
    // tracker records it; the name is always in the message.
    if let Some(name) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .filter(|name| field != *name && !field.ends_with(&format!(".{name}")))
    {
        field = if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
    }
    // A missing field is reported at its parent; name the field itself.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        field = if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
    }
    DecodeError::Shape { field, message }
}

/// serde_json appends " at line L column C"; the position is reported apart.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes a
/// key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        map: BTreeMap<String, u32>,
    }

    fn field(r: Result<Doc, DecodeError>) -> String {
        match r.unwrap_err() {
            DecodeError::Shape { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(from_slice(br#"{"name": 5}"#)), "name");
        assert_eq!(field(from_slice(br#"{}"#)), "name");
        assert_eq!(
            field(from_slice(br#"{"name": "a", "inner": {}}"#)),
            "inner.n"
        );
        assert_eq!(field(from_slice(br#"{"name": "a", "nmae": 1}"#)), "nmae");
        assert_eq!(
            field(from_slice(br#"{"name": "a", "inner": {"n": "x"}}"#)),
            "inner.n"
        );
        assert_eq!(
            field(from_slice(br#"{"name": "a", "inner": {"m": 1}}"#)),
            "inner.m"
        );
        assert_eq!(
            field(from_slice(br#"{"name": "a", "map": {"k": "x"}}"#)),
            "map.k"
        );
        assert!(matches!(
            from_slice::<Doc>(br#"{"name": "#),
            Err(DecodeError::Syntax { .. })
        ));
        assert!(matches!(
            from_slice::<Doc>(br#"{"name": "a"} x"#),
            Err(DecodeError::Syntax { .. })
        ));
    }

    #[test]
    fn too_deep_documents_are_refused_before_parsing() {
        let deep = format!("{{\n\"name\": {}", "[".repeat(100_000));
        assert_eq!(
            from_slice::<Value>(deep.as_bytes()),
            Err(DecodeError::TooDeep {
                position: "line 2 column 72".into(),
                limit: crate::limits::MAX_JSON_DEPTH
            })
        );
        let fits = format!(
            "{}{}",
            "[".repeat(crate::limits::MAX_JSON_DEPTH),
            "]".repeat(crate::limits::MAX_JSON_DEPTH)
        );
        assert!(from_slice::<Value>(fits.as_bytes()).is_ok());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }
}
