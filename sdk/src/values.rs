//! Conveniences for building attribute values and records.

use crate::{Attribute, DirectoryRecord, SubjectKind, Value};

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Number(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::TextList(v)
    }
}

impl Attribute {
    /// An attribute named `name` with `value`.
    pub fn new(name: impl Into<String>, value: impl Into<Value>) -> Self {
        Attribute {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl DirectoryRecord {
    /// A user record with the source's id and no attributes yet.
    pub fn user(external_id: impl Into<String>) -> Self {
        DirectoryRecord {
            kind: SubjectKind::User,
            external_id: external_id.into(),
            attributes: Vec::new(),
        }
    }

    /// A device record with the source's id and no attributes yet.
    pub fn device(external_id: impl Into<String>) -> Self {
        DirectoryRecord {
            kind: SubjectKind::Device,
            external_id: external_id.into(),
            attributes: Vec::new(),
        }
    }

    /// Add an attribute.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.push(Attribute::new(name, value));
        self
    }

    /// Add an attribute only when the source had a value for it; sources
    /// often send `null` for empty fields, and an absent attribute is what
    /// Cohort expects then.
    pub fn with_opt<V: Into<Value>>(self, name: impl Into<String>, value: Option<V>) -> Self {
        match value {
            Some(v) => self.with(name, v),
            None => self,
        }
    }

    /// The value of attribute `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }
}
