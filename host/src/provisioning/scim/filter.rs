//! SCIM filters and attribute paths (RFC 7644 §3.4.2.2, §3.5.2), parsed
//! into a tree and evaluated over a resource's SCIM JSON. Attribute names
//! are case-insensitive; string comparisons are too, except for the
//! attributes the schema marks case-exact (`id`, `externalId`).
//!
//! Parsing, evaluating and dropping a filter recurse once per level of
//! nesting and once per `and`/`or` link, so the parser refuses filters
//! longer than [`MAX_FILTER_BYTES`], nested deeper than
//! [`MAX_FILTER_DEPTH`] or with more than [`MAX_FILTER_TERMS`] comparisons,
//! each checked before it recurses any further.

use serde_json::Value;

use crate::limits::{MAX_FILTER_BYTES, MAX_FILTER_DEPTH, MAX_FILTER_TERMS};

/// An attribute path: `userName`, `name.givenName`, or with a schema URN
/// prefix, `urn:…:enterprise:2.0:User:department`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrPath {
    /// The schema URN, when given.
    pub urn: Option<String>,
    /// The attribute.
    pub attr: String,
    /// Its sub-attribute.
    pub sub: Option<String>,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater or equal
    Ge,
    /// less than
    Lt,
    /// less or equal
    Le,
}

/// A filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `path op value`
    Compare(AttrPath, Op, Value),
    /// `path pr`
    Present(AttrPath),
    /// `a and b`
    And(Box<Filter>, Box<Filter>),
    /// `a or b`
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`
    Not(Box<Filter>),
    /// `emails[type eq "work"]`: some value of the multi-valued attribute
    /// matches the inner filter.
    ValuePath(AttrPath, Box<Filter>),
}

/// A filter that does not parse, with the position.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message} at character {position}")]
pub struct FilterError {
    /// What is wrong.
    pub message: String,
    /// 1-based character position.
    pub position: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push((Tok::LParen, at));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, at));
                i += 1;
            }
            '[' => {
                out.push((Tok::LBracket, at));
                i += 1;
            }
            ']' => {
                out.push((Tok::RBracket, at));
                i += 1;
            }
            '"' => {
                // A JSON string, escapes included.
                let mut j = i + 1;
                let mut escaped = false;
                while j < chars.len() {
                    if escaped {
                        escaped = false;
                    } else if chars[j] == '\\' {
                        escaped = true;
                    } else if chars[j] == '"' {
                        break;
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(FilterError {
                        message: "unterminated string".into(),
                        position: at,
                    });
                }
                let raw: String = chars[i..=j].iter().collect();
                let s: String = serde_json::from_str(&raw).map_err(|_| FilterError {
                    message: "invalid string".into(),
                    position: at,
                })?;
                out.push((Tok::Str(s), at));
                i = j + 1;
            }
            _ => {
                let mut j = i;
                while j < chars.len() && !" \t\n\r()[]\"".contains(chars[j]) {
                    j += 1;
                }
                out.push((Tok::Word(chars[i..j].iter().collect()), at));
                i = j;
            }
        }
    }
    Ok(out)
}

/// Parses an attribute path.
pub fn parse_path(s: &str) -> Option<AttrPath> {
    let (urn, rest) = match s.rfind(':') {
        Some(i) if s[..i].to_ascii_lowercase().starts_with("urn:") => {
            (Some(s[..i].to_string()), &s[i + 1..])
        }
        _ => (None, s),
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, b)) => (a, Some(b.to_string())),
        None => (rest, None),
    };
    let ok = |x: &str| {
        !x.is_empty()
            && x.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
            && x.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    (ok(attr) && sub.as_deref().is_none_or(ok)).then(|| AttrPath {
        urn,
        attr: attr.to_string(),
        sub,
    })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    /// Open `(` and `[` around the current position.
    depth: usize,
    /// Comparisons read so far.
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(_, p)| *p)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            message: message.into(),
            position: self.at(),
        })
    }

    /// Enters one more level of `(` or `[`, unless that passes the limit.
    fn deeper(&mut self) -> Result<(), FilterError> {
        if self.depth >= MAX_FILTER_DEPTH {
            return self.err(format!(
                "the filter nests more than {MAX_FILTER_DEPTH} levels deep; \
                 {MAX_FILTER_DEPTH} is the limit"
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            self.pos += 1;
            if self.peek() != Some(&Tok::LParen) {
                return self.err("expected ( after not");
            }
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.deeper()?;
            self.pos += 1;
            let inner = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected )");
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let Some(Tok::Word(w)) = self.peek().cloned() else {
            return self.err("expected an attribute name");
        };
        let Some(path) = parse_path(&w) else {
            return self.err(format!("{w:?} is not an attribute path"));
        };
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return self.err(format!(
                "the filter has more than {MAX_FILTER_TERMS} comparisons; \
                 {MAX_FILTER_TERMS} is the limit"
            ));
        }
        self.pos += 1;
        if self.peek() == Some(&Tok::LBracket) {
            self.deeper()?;
            self.pos += 1;
            let inner = self.or()?;
            if self.peek() != Some(&Tok::RBracket) {
                return self.err("expected ]");
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let Some(Tok::Word(op)) = self.peek().cloned() else {
            return self.err("expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)");
        };
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => {
                self.pos += 1;
                return Ok(Filter::Present(path));
            }
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => return self.err(format!("unknown operator {other:?}")),
        };
        self.pos += 1;
        let value = match self.peek().cloned() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                n => match serde_json::from_str::<serde_json::Number>(n) {
                    Ok(num) => Value::Number(num),
                    Err(_) => return self.err(format!("{n:?} is not a value; quote strings")),
                },
            },
            _ => return self.err("expected a value"),
        };
        self.pos += 1;
        Ok(Filter::Compare(path, op, value))
    }
}

/// Parses a filter.
pub fn parse(src: &str) -> Result<Filter, FilterError> {
    if src.len() > MAX_FILTER_BYTES {
        return Err(FilterError {
            message: format!(
                "the filter is {} bytes long; {MAX_FILTER_BYTES} is the limit",
                src.len()
            ),
            position: 1,
        });
    }
    let toks = lex(src)?;
    let mut p = Parser {
        end: src.chars().count() + 1,
        toks,
        pos: 0,
        depth: 0,
        terms: 0,
    };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return p.err("unexpected text after the filter");
    }
    Ok(f)
}

/// How an attribute's strings compare.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Folding {
    /// Case-sensitively (`id`, `externalId`).
    Exact,
    /// Case-insensitively.
    Case,
    /// As usernames: one identity, one key (`directory::identity`), so a
    /// filter finds exactly the user a create would collide with.
    Username,
    /// As email addresses, likewise.
    Email,
}

/// How `path` compares; `outer` is the attribute of an enclosing value path
/// (`emails` in `emails[value eq "…"]`).
fn folding(outer: Option<&str>, path: &AttrPath) -> Folding {
    let attr = path.attr.to_ascii_lowercase();
    let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
    match (outer, attr.as_str(), sub.as_deref()) {
        (None, "username", None) => Folding::Username,
        (None, "emails", Some("value")) | (Some("emails"), "value", None) => Folding::Email,
        (_, _, Some("id" | "externalid")) | (_, "id" | "externalid", None) => Folding::Exact,
        _ => Folding::Case,
    }
}

/// The object a path's URN selects: the extension object, or the resource.
fn scope<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    match &path.urn {
        Some(urn) => {
            let map = resource.as_object()?;
            let core = map
                .get("schemas")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .and_then(Value::as_str)
                .unwrap_or_default();
            if urn.eq_ignore_ascii_case(core) {
                Some(resource)
            } else {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(urn))
                    .map(|(_, v)| v)
            }
        }
        None => Some(resource),
    }
}

/// A member of an object, by case-insensitive name.
pub fn member<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Every value at `path` (multi-valued attributes flattened).
pub fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(base) = scope(resource, path).and_then(|s| member(s, &path.attr)) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match base {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    match &path.sub {
        None => items,
        Some(sub) => items
            .into_iter()
            .filter_map(|i| member(i, sub))
            .flat_map(|v| match v {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                v => vec![v],
            })
            .collect(),
    }
}

fn compare(v: &Value, op: Op, want: &Value, folding: Folding) -> bool {
    use std::cmp::Ordering;
    let ord = match (v, want) {
        (Value::String(a), Value::String(b)) => {
            let identity = match folding {
                Folding::Username => {
                    Some(crate::directory::read::username_form as fn(&str) -> Vec<u8>)
                }
                Folding::Email => Some(crate::directory::read::email_form as fn(&str) -> Vec<u8>),
                _ => None,
            };
            if let Some(key) = identity
                && matches!(op, Op::Eq | Op::Ne)
            {
                return (key(a) == key(b)) == (op == Op::Eq);
            }
            let (a, b) = if folding == Folding::Exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                Op::Co => return a.contains(&b),
                Op::Sw => return a.starts_with(&b),
                Op::Ew => return a.ends_with(&b),
                _ => a.cmp(&b),
            }
        }
        (Value::Number(a), Value::Number(b)) => match a.as_f64().partial_cmp(&b.as_f64()) {
            Some(o) => o,
            None => return false,
        },
        (Value::Bool(a), Value::Bool(b)) => {
            return match op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                _ => false,
            };
        }
        (_, Value::Null) => return op == Op::Ne,
        _ => return op == Op::Ne,
    };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Whether `resource` matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    matches_in(filter, resource, None)
}

/// [`matches`] inside the value path of `outer` (lowercase), if any.
fn matches_in(filter: &Filter, resource: &Value, outer: Option<&str>) -> bool {
    match filter {
        Filter::Compare(path, op, want) => {
            let found = values(resource, path);
            let folding = folding(outer, path);
            if found.is_empty() {
                return *op == Op::Ne && !want.is_null();
            }
            if *op == Op::Ne {
                return found.iter().all(|v| compare(v, Op::Ne, want, folding));
            }
            found.iter().any(|v| compare(v, *op, want, folding))
        }
        Filter::Present(path) => values(resource, path).into_iter().any(present),
        Filter::And(a, b) => matches_in(a, resource, outer) && matches_in(b, resource, outer),
        Filter::Or(a, b) => matches_in(a, resource, outer) || matches_in(b, resource, outer),
        Filter::Not(f) => !matches_in(f, resource, outer),
        Filter::ValuePath(path, inner) => {
            let whole = AttrPath {
                sub: None,
                ..path.clone()
            };
            let attr = path.attr.to_ascii_lowercase();
            values(resource, &whole)
                .into_iter()
                .any(|item| matches_in(inner, item, Some(&attr)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "AbC", "userName": "Ada@Example.com", "active": true,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true},
                       {"value": "ada@home.example", "type": "home"}],
            "meta": {"lastModified": "2026-01-02T03:04:05Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Math"},
        })
    }

    fn check(f: &str) -> bool {
        matches(&parse(f).unwrap_or_else(|e| panic!("{f}: {e}")), &user())
    }

    #[test]
    fn the_operators_okta_and_entra_send_work() {
        assert!(
            check(r#"userName eq "ada@example.com""#),
            "userName is case-insensitive"
        );
        assert!(check(r#"USERNAME Eq "ADA@EXAMPLE.COM""#));
        assert!(!check(r#"id eq "abc""#), "id is case-exact");
        assert!(check(r#"id eq "AbC""#));
        assert!(check(r#"userName ne "bob""#));
        assert!(check(r#"name.givenName sw "ad""#));
        assert!(check(r#"name.familyName ew "ACE""#));
        assert!(check(r#"emails.value co "home""#));
        assert!(check(r#"emails[type eq "work" and primary eq true]"#));
        assert!(check(r#"emails[type eq "work"]"#));
        assert!(!check(r#"emails[type eq "other"]"#));
        assert!(check(r#"title pr or active eq true"#));
        assert!(!check(r#"title pr"#));
        assert!(check(r#"not (title pr) and active eq true"#));
        assert!(check(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#));
        assert!(check(r#"meta.lastModified lt "2027-01-01T00:00:00Z""#));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "math""#
        ));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "ada""#
        ));
    }

    #[test]
    fn bad_filters_say_where() {
        let e = parse(r#"userName zz "x""#).unwrap_err();
        assert_eq!(e.position, 10, "{e}");
        assert!(parse(r#"userName eq "x"#).is_err());
        assert!(parse(r#"userName eq x"#).is_err());
        assert!(parse(r#"(userName eq "x""#).is_err());
        assert!(parse(r#"userName eq "x" extra"#).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn nesting_length_and_terms_are_limited() {
        let nested = |n: usize| format!("{}userName eq \"x\"{}", "(".repeat(n), ")".repeat(n));
        assert!(!check(&nested(MAX_FILTER_DEPTH)));
        let e = parse(&nested(MAX_FILTER_DEPTH + 1)).unwrap_err();
        assert_eq!(e.position, MAX_FILTER_DEPTH + 1, "{e}");
        assert!(e.message.contains("32 is the limit"), "{e}");
        let e = parse(&"not (".repeat(1000)).unwrap_err();
        assert!(e.message.contains("levels deep"), "{e}");
        let e = parse(&format!("{}title pr", "emails[".repeat(1000))).unwrap_err();
        assert!(e.message.contains("levels deep"), "{e}");
        let chain = |n: usize| vec!["title pr"; n].join(" or ");
        assert!(parse(&chain(MAX_FILTER_TERMS)).is_ok());
        let e = parse(&chain(MAX_FILTER_TERMS + 1)).unwrap_err();
        assert!(e.message.contains("256 is the limit"), "{e}");
        let e = parse(&format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_BYTES))).unwrap_err();
        assert!(e.message.contains("8192 is the limit"), "{e}");
    }
}
