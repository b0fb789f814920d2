//! The static types the checker infers, and the relations between them
//! (comparable, orderable, joined) that decide which operators apply.
//!
//! They mirror CEL's own types plus the few Cohort adds for the subject of a
//! rule, its related subjects and its groups, so that a field selected on them
//! can be checked against the schema.

use crate::directory::{AttrType, SubjectKind};

/// A static type.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `uint`
    Uint,
    /// `double`; number attributes have it.
    Double,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `null`
    Null,
    /// `timestamp`; date attributes and `now` have it.
    Timestamp,
    /// `duration`
    Duration,
    /// `list(T)`
    List(Box<Type>),
    /// `map(K, V)`
    Map(Box<Type>, Box<Type>),
    /// The subject of the rule: its attributes plus `groups` and its related
    /// subjects.
    Subject(SubjectKind),
    /// A related subject (an element of `user.devices` / `device.users`): its
    /// attributes only.
    Related(SubjectKind),
    /// An element of `.groups`: `id` and `name`.
    Group,
    /// A type value, from `type(x)`.
    Meta,
    /// Unknown until evaluated.
    Dyn,
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Int => f.write_str("int"),
            Type::Uint => f.write_str("uint"),
            Type::Double => f.write_str("double"),
            Type::String => f.write_str("string"),
            Type::Bytes => f.write_str("bytes"),
            Type::Null => f.write_str("null"),
            Type::Timestamp => f.write_str("timestamp"),
            Type::Duration => f.write_str("duration"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Map(k, v) => write!(f, "map({k}, {v})"),
            Type::Subject(k) | Type::Related(k) => f.write_str(k.as_str()),
            Type::Group => f.write_str("group"),
            Type::Meta => f.write_str("type"),
            Type::Dyn => f.write_str("dyn"),
        }
    }
}

impl Type {
    pub(super) fn of_attribute(t: AttrType) -> Type {
        match t {
            AttrType::String => Type::String,
            AttrType::Number => Type::Double,
            AttrType::Boolean => Type::Bool,
            AttrType::Date => Type::Timestamp,
            AttrType::StringList => Type::List(Box::new(Type::String)),
        }
    }

    pub(super) fn is_dyn(&self) -> bool {
        *self == Type::Dyn
    }

    pub(super) fn is_number(&self) -> bool {
        matches!(self, Type::Int | Type::Uint | Type::Double)
    }

    /// Whether values of the two types can be compared with `==`: CEL
    /// compares numbers across their types, and anything with `null`.
    pub(super) fn comparable(&self, other: &Type) -> bool {
        if self.is_dyn() || other.is_dyn() || *self == Type::Null || *other == Type::Null {
            return true;
        }
        if self.is_number() && other.is_number() {
            return true;
        }
        match (self, other) {
            (Type::List(a), Type::List(b)) => a.comparable(b),
            (Type::Map(ka, va), Type::Map(kb, vb)) => ka.comparable(kb) && va.comparable(vb),
            (Type::Subject(a) | Type::Related(a), Type::Subject(b) | Type::Related(b)) => a == b,
            _ => self == other,
        }
    }

    /// Whether `<` and friends apply between the two types.
    pub(super) fn orderable(&self, other: &Type) -> bool {
        if self.is_dyn() || other.is_dyn() {
            return true;
        }
        if self.is_number() && other.is_number() {
            return true;
        }
        self == other
            && matches!(
                self,
                Type::String | Type::Bytes | Type::Bool | Type::Timestamp | Type::Duration
            )
    }

    /// One type for two branches or list elements: the same one, or `dyn`.
    pub(super) fn join(&self, other: &Type) -> Type {
        if self == other {
            self.clone()
        } else if *self == Type::Null {
            other.clone()
        } else if *other == Type::Null {
            self.clone()
        } else {
            Type::Dyn
        }
    }
}
