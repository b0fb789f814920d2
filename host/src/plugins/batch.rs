//! Building the rule evaluator's batch layout: every string of a batch goes
//! into one text arena and subjects are rows of small fixed-size cells, so
//! crossing into the plugin costs a few bulk copies instead of one
//! allocation per string.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveTime};

use super::bindings::rules::{Cell, CellValue, Span, SubjectBatch};
use super::bindings::types::{self, SubjectKind};
use crate::directory::{self, AttrRef, AttrType, AttrValue, Attribute};

/// Builds a [`SubjectBatch`] one subject at a time.
pub struct BatchBuilder {
    batch: SubjectBatch,
    index: HashMap<String, u32>,
    row: Vec<Cell>,
}

impl BatchBuilder {
    /// An empty batch of `kind` subjects.
    pub fn new(kind: SubjectKind) -> Self {
        BatchBuilder {
            batch: SubjectBatch {
                kind,
                attributes: Vec::new(),
                text: String::new(),
                row_offsets: vec![0],
                cells: Vec::new(),
            },
            index: HashMap::new(),
            row: Vec::new(),
        }
    }

    fn attribute(&mut self, name: &str) -> u32 {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.batch.attributes.len() as u32;
        self.batch.attributes.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    fn push(&mut self, name: &str, value: CellValue) {
        let attribute = self.attribute(name);
        self.row.push(Cell { attribute, value });
    }

    /// Add a text value (call repeatedly for a list).
    pub fn push_text(&mut self, name: &str, s: &str) {
        let offset = self.batch.text.len() as u32;
        self.batch.text.push_str(s);
        self.push(
            name,
            CellValue::Text(Span {
                offset,
                len: s.len() as u32,
            }),
        );
    }

    /// Add a number.
    pub fn push_number(&mut self, name: &str, n: f64) {
        self.push(name, CellValue::Number(n));
    }

    /// Add a boolean.
    pub fn push_bool(&mut self, name: &str, b: bool) {
        self.push(name, CellValue::Boolean(b));
    }

    /// Add a timestamp in milliseconds since the epoch.
    pub fn push_timestamp(&mut self, name: &str, millis: i64) {
        self.push(name, CellValue::Timestamp(millis));
    }

    /// Add a directory attribute value of type `ty`. Dates that do not parse
    /// are left out, which rules treat like a missing attribute.
    pub fn push_value(&mut self, name: &str, ty: AttrType, value: &AttrValue) {
        self.push_ref(name, ty, AttrRef::from(value));
    }

    /// Add a borrowed attribute value of type `ty`, without allocating.
    pub fn push_ref(&mut self, name: &str, ty: AttrType, value: AttrRef<'_>) {
        match (ty, value) {
            (_, AttrRef::Time(t)) => self.push_timestamp(name, t.timestamp_millis()),
            (AttrType::Date, AttrRef::Text(s)) => {
                if let Some(ms) = date_millis(s) {
                    self.push_timestamp(name, ms);
                }
            }
            (_, AttrRef::Text(s)) => self.push_text(name, s),
            (_, AttrRef::Id(id)) => {
                let mut buf = uuid::Uuid::encode_buffer();
                self.push_text(name, id.hyphenated().encode_lower(&mut buf));
            }
            (_, AttrRef::Number(n)) => self.push_number(name, n),
            (_, AttrRef::Bool(b)) => self.push_bool(name, b),
            (_, AttrRef::List(items)) => {
                for item in items {
                    self.push_text(name, item);
                }
            }
        }
    }

    /// Close the current subject.
    pub fn finish_subject(&mut self) {
        // Stable: list elements keep their order.
        self.row.sort_by_key(|c| c.attribute);
        self.batch.cells.append(&mut self.row);
        self.batch.row_offsets.push(self.batch.cells.len() as u32);
    }

    /// Number of finished subjects.
    pub fn len(&self) -> usize {
        self.batch.row_offsets.len() - 1
    }

    /// Whether no subject was finished yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The finished batch.
    pub fn build(self) -> SubjectBatch {
        self.batch
    }
}

/// Milliseconds since the epoch for `2026-01-31` or an RFC 3339 time.
pub fn date_millis(s: &str) -> Option<i64> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_time(NaiveTime::MIN).and_utc().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The contract's name for a subject kind.
pub fn wit_kind(kind: directory::SubjectKind) -> SubjectKind {
    match kind {
        directory::SubjectKind::User => SubjectKind::User,
        directory::SubjectKind::Device => SubjectKind::Device,
    }
}

/// The contract's name for an attribute type.
pub fn wit_type(t: AttrType) -> types::AttributeType {
    match t {
        AttrType::String => types::AttributeType::Text,
        AttrType::Number => types::AttributeType::Number,
        AttrType::Boolean => types::AttributeType::Boolean,
        AttrType::Date => types::AttributeType::Timestamp,
        AttrType::StringList => types::AttributeType::TextList,
    }
}

/// The schema handed to a rule evaluator's `compile`.
pub fn attribute_defs(
    kind: directory::SubjectKind,
    attributes: &[Attribute],
) -> Vec<types::AttributeDef> {
    attributes
        .iter()
        .map(|a| types::AttributeDef {
            name: a.name.clone(),
            kind: wit_kind(kind),
            type_: wit_type(a.attr_type),
            custom: !a.standard,
        })
        .collect()
}

/// Sample subjects (attribute name → JSON value, typed by `attributes`) as a
/// batch: what an admin tries a rule evaluator on (`POST
/// /api/v1/plugins/{name}/evaluate`) and what an author's test case gives
/// (`cohort plugin test`). A null is a missing attribute; a name
/// `attributes` lacks is refused, naming `subjects[i].name`.
pub fn sample_batch(
    kind: directory::SubjectKind,
    attributes: &[Attribute],
    subjects: &[std::collections::BTreeMap<String, serde_json::Value>],
) -> Result<super::bindings::rules::SubjectBatch, crate::error::DomainError> {
    let mut batch = BatchBuilder::new(wit_kind(kind));
    for (i, subject) in subjects.iter().enumerate() {
        for (attr, raw) in subject {
            let field = format!("subjects[{i}].{attr}");
            let Some(def) = attributes.iter().find(|a| &a.name == attr) else {
                return Err(crate::error::DomainError::invalid(
                    field,
                    format!("unknown attribute {attr:?}"),
                ));
            };
            if raw.is_null() {
                continue;
            }
            let value = directory::parse_value(&field, def.attr_type, raw)?;
            batch.push_value(attr, def.attr_type, &value);
        }
        batch.finish_subject();
    }
    Ok(batch.build())
}

/// For each of `rules` rules, the indices of the `subjects` subjects its
/// bitmap in `evaluation` marks.
pub fn matching(
    evaluation: &super::bindings::rules::Evaluation,
    rules: usize,
    subjects: usize,
) -> Vec<Vec<u32>> {
    let words = evaluation.words_per_rule as usize;
    (0..rules)
        .map(|r| {
            (0..subjects)
                .filter(|s| {
                    evaluation
                        .matches
                        .get(r * words + s / 64)
                        .is_some_and(|w| w & (1 << (s % 64)) != 0)
                })
                .map(|s| s as u32)
                .collect()
        })
        .collect()
}
