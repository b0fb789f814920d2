//! List queries over users and devices: which attributes to filter on, how to
//! sort. Filtering reads attributes through [`Subject`], the same accessor
//! group rules will use, so "department = Sales" means one thing everywhere.

use super::Directory;
use super::attributes::{AttrType, AttrValue, SubjectKind, normalize_date};
use crate::error::DomainError;

/// An attribute value borrowed from its subject: reading it allocates
/// nothing, which matters when the rule engine reads every attribute of every
/// subject in a full recompute.
#[derive(Clone, Copy, Debug)]
pub enum AttrRef<'a> {
    /// Text (also custom dates, as written: `YYYY-MM-DD` or RFC 3339).
    Text(&'a str),
    /// An id.
    Id(uuid::Uuid),
    /// A point in time (standard date attributes).
    Time(chrono::DateTime<chrono::Utc>),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A list of strings.
    List(&'a [String]),
}

impl<'a> From<&'a AttrValue> for AttrRef<'a> {
    fn from(v: &'a AttrValue) -> Self {
        match v {
            AttrValue::String(s) => AttrRef::Text(s),
            AttrValue::Number(n) => AttrRef::Number(*n),
            AttrValue::Bool(b) => AttrRef::Bool(*b),
            AttrValue::StringList(l) => AttrRef::List(l),
        }
    }
}

impl AttrRef<'_> {
    /// The owned value, as the API shows it (times in RFC 3339 with
    /// microseconds, in UTC).
    pub fn to_value(self) -> AttrValue {
        match self {
            AttrRef::Text(s) => AttrValue::String(s.to_string()),
            AttrRef::Id(id) => AttrValue::String(id.to_string()),
            AttrRef::Time(t) => {
                AttrValue::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            }
            AttrRef::Number(n) => AttrValue::Number(n),
            AttrRef::Bool(b) => AttrValue::Bool(b),
            AttrRef::List(l) => AttrValue::StringList(l.to_vec()),
        }
    }
}

/// An optional text field as an attribute.
pub(crate) fn text(v: &Option<String>) -> Option<AttrRef<'_>> {
    v.as_deref().map(AttrRef::Text)
}

/// Anything whose attributes can be read by name.
pub trait Subject {
    /// The value of attribute `name` (standard or custom), borrowed, or
    /// `None` when the subject has no value for it.
    fn attribute_ref(&self, name: &str) -> Option<AttrRef<'_>>;

    /// The value of attribute `name`, owned.
    fn attribute(&self, name: &str) -> Option<AttrValue> {
        self.attribute_ref(name).map(AttrRef::to_value)
    }
}

/// `attribute=value` from a query string. Several values for one attribute
/// match any of them; several attributes must all match.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The attribute.
    pub name: String,
    /// Accepted values, normalized for the attribute's type.
    pub values: Vec<AttrValue>,
    /// Usernames, emails and hostnames compare case-insensitively, as
    /// their indexes do.
    pub fold_case: bool,
}

/// A parsed list request.
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// The sort key; always one that an index serves.
    pub sort: &'static str,
    /// Descending order.
    pub descending: bool,
    /// All must match.
    pub filters: Vec<Filter>,
}

impl ListQuery {
    /// True when `subject` passes every filter.
    pub fn matches(&self, subject: &impl Subject) -> bool {
        self.filters.iter().all(|f| {
            let Some(actual) = subject.attribute(&f.name) else {
                return false;
            };
            f.values.iter().any(|want| match f.name.as_str() {
                // Identities compare by their keys, as their indexes do.
                "username" => identity_matches(&actual, want, super::layout::username),
                "email" => identity_matches(&actual, want, super::layout::email),
                _ => value_matches(&actual, want, f.fold_case),
            })
        })
    }

    /// A filter's single value, when the query has exactly one for `name`.
    pub fn exact(&self, name: &str) -> Option<&str> {
        let f = self.filters.iter().find(|f| f.name == name)?;
        match f.values.as_slice() {
            [AttrValue::String(s)] => Some(s),
            _ => None,
        }
    }

    /// Tag for cursors, so a cursor only resumes the query that made it.
    pub fn cursor_tag(&self, kind: SubjectKind) -> String {
        format!(
            "{}:{}:{}",
            kind.as_str(),
            self.sort,
            if self.descending { "desc" } else { "asc" }
        )
    }
}

fn identity_matches(actual: &AttrValue, want: &AttrValue, key: fn(&str) -> Vec<u8>) -> bool {
    match (actual, want) {
        (AttrValue::String(a), AttrValue::String(w)) => key(a) == key(w),
        (a, w) => a == w,
    }
}

fn value_matches(actual: &AttrValue, want: &AttrValue, fold_case: bool) -> bool {
    match (actual, want) {
        (AttrValue::String(a), AttrValue::String(w)) if fold_case => {
            a.to_lowercase() == w.to_lowercase()
        }
        (AttrValue::StringList(items), AttrValue::String(w)) => items.iter().any(|i| i == w),
        (a, w) => a == w,
    }
}

/// Attributes whose unique or lookup index is case-insensitive.
const FOLDED: &[&str] = &["username", "email", "hostname"];

/// Query parameters that are not attribute filters.
const RESERVED: &[&str] = &["limit", "cursor", "sort"];

impl Directory {
    /// Parses `sort` and filter parameters for a list of `kind`. `sorts` are
    /// the keys an index serves for this kind; the first is the default.
    pub(crate) fn parse_list_query(
        &self,
        kind: SubjectKind,
        sorts: &[&'static str],
        params: &[(String, String)],
    ) -> Result<ListQuery, DomainError> {
        let mut query = ListQuery {
            sort: sorts[0],
            descending: false,
            filters: Vec::new(),
        };
        for (name, value) in params {
            if name == "sort" {
                let (desc, key) = match value.strip_prefix('-') {
                    Some(k) => (true, k),
                    None => (false, value.as_str()),
                };
                query.sort = sorts.iter().find(|s| **s == key).copied().ok_or_else(|| {
                    DomainError::bad_query(
                        "sort",
                        format!(
                            "must be one of {} (prefix with '-' for descending)",
                            sorts.join(", ")
                        ),
                    )
                })?;
                query.descending = desc;
                continue;
            }
            if RESERVED.contains(&name.as_str()) {
                continue;
            }
            let ty = self.attribute_type(kind, name)?.ok_or_else(|| {
                DomainError::bad_query(
                    name.clone(),
                    format!(
                        "unknown {} attribute; GET /api/v1/attributes lists them",
                        kind.as_str()
                    ),
                )
            })?;
            let parsed = parse_filter_value(name, ty, value)?;
            match query.filters.iter_mut().find(|f| &f.name == name) {
                Some(f) => f.values.push(parsed),
                None => query.filters.push(Filter {
                    name: name.clone(),
                    values: vec![parsed],
                    fold_case: FOLDED.contains(&name.as_str()),
                }),
            }
        }
        Ok(query)
    }
}

fn parse_filter_value(name: &str, ty: AttrType, raw: &str) -> Result<AttrValue, DomainError> {
    match ty {
        AttrType::String | AttrType::StringList => Ok(AttrValue::String(raw.to_string())),
        AttrType::Number => raw
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(AttrValue::Number)
            .ok_or_else(|| DomainError::bad_query(name, "must be a number")),
        AttrType::Boolean => match raw {
            "true" => Ok(AttrValue::Bool(true)),
            "false" => Ok(AttrValue::Bool(false)),
            _ => Err(DomainError::bad_query(name, "must be true or false")),
        },
        AttrType::Date => normalize_date(raw).map(AttrValue::String).ok_or_else(|| {
            DomainError::bad_query(name, "must be a date (YYYY-MM-DD) or an RFC 3339 date-time")
        }),
    }
}
