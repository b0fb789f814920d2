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

mod strict;

/// Decodes `bytes` as `T`, refusing documents nested deeper than
/// [`crate::limits::MAX_JSON_DEPTH`]. The text is parsed first (refusing
/// duplicate keys), then decoded strictly: a struct only from an object.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    check_depth(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::de::DeserializeSeed::deserialize(Document, &mut de).and_then(|v| {
        // Trailing characters after the document are a syntax error.
        de.end().map(|()| v)
    });
    let value = parsed.map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            DecodeError::Syntax {
                position: format!("line {} column {}", e.line(), e.column()),
                message: strip_position(&e.to_string()),
            }
        } else {
            // A duplicate key; the message names it.
            let message = strip_position(&e.to_string());
            let field = message
                .strip_prefix("duplicate field `")
                .and_then(|rest| rest.split('`').next())
                .unwrap_or_default()
                .to_string();
            DecodeError::Shape { field, message }
        }
    })?;
    from_value(value)
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

/// Decodes an already-parsed document as `T`, a struct only from an object.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(strict::Strict(value)).map_err(|e| shape_or_syntax(e, false))
}

/// Parses any JSON document into a [`Value`], refusing an object with the
/// same key twice (which a `Value` would silently collapse to the last one,
/// where decoding straight into a struct refuses it).
struct Document;

impl<'de> serde::de::DeserializeSeed<'de> for Document {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Document {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Document)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
            }
            let value = map.next_value_seed(Document)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
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
    fn a_struct_is_decoded_only_from_an_object() {
        // serde would take the fields in order from an array.
        assert_eq!(field(from_slice(br#"["a"]"#)), "");
        assert_eq!(
            field(from_slice(br#"{"name": "a", "inner": [1]}"#)),
            "inner"
        );
        assert_eq!(field(from_slice(br#"{"name": "a", "name": "b"}"#)), "name");
        let doc: Doc = from_slice(br#"{"name": "a", "inner": {"n": 1}, "map": {"k": 2}}"#).unwrap();
        assert_eq!(doc.name, "a");
        assert_eq!(doc.map["k"], 2);
        assert!(matches!(
            from_value::<Doc>(json!([["a"]])),
            Err(DecodeError::Shape { .. })
        ));
        // Lists, options, enums and maps still decode as before.
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum Kind {
            User,
            Other(u32),
        }
        let v: (Vec<Option<u8>>, Kind, Kind, BTreeMap<u64, bool>) =
            from_slice(br#"[[1, null], "user", {"other": 7}, {"3": true}]"#).unwrap();
        assert_eq!(
            v,
            (
                vec![Some(1), None],
                Kind::User,
                Kind::Other(7),
                BTreeMap::from([(3, true)])
            )
        );
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
