//! Property tests for every parser of outside input: whatever the input,
//! each returns a value or a typed error and never panics or overflows its
//! stack; input past a limit is refused with an error that names the limit.
//!
//! Each property runs [`CASES`] generated cases in the normal `cargo test`,
//! drawn from alphabets that favour the characters each grammar cares about
//! (brackets, quotes, keywords), so that deep and malformed inputs come up
//! often. The `regression_*` tests are the attacks found while hardening,
//! kept as fixed cases: 10,000 nested brackets, parentheses and `not (`,
//! huge numbers, invalid UTF-8 and very long strings.
//!
//! The tests run on the test harness's threads, whose 2 MiB stacks match a
//! Tokio worker's: an input that overflows here would abort the server.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::expression::plain::{self, PlainError};
use crate::groups::rule::RuleModel;
use crate::plugins::Manifest;
use crate::provisioning::scim::{filter, patch};

/// Generated cases per property: enough to find the shallow bugs on every
/// run, few enough to keep the suite fast.
const CASES: u32 = 256;

/// How deep the regression cases nest: far past every limit.
const DEEP: usize = 10_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Shrinking a failure is useful; thousands of shrink steps are not.
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

/// Strings made of the given pieces, so that grammar-significant tokens
/// (`(`, `not`, `"`) are common rather than one in a million.
fn made_of(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(pieces), 0..max).prop_map(|v| v.concat())
}

const FILTER_PIECES: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "\"",
    "\\",
    " ",
    "not ",
    " and ",
    " or ",
    "userName",
    "emails",
    "name.givenName",
    "urn:ietf:params:scim:schemas:core:2.0:User:",
    " eq ",
    " co ",
    " pr",
    " gt ",
    "\"x\"",
    "true",
    "null",
    "1e999999",
    "12345678901234567890",
    "-0.5",
    "é",
    "\u{fffd}",
    ".",
    ":",
    "type",
];

const CEL_PIECES: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "!",
    "-",
    "'",
    "\"",
    "'''",
    "r'",
    "\\",
    " ",
    "&&",
    "||",
    "==",
    "+",
    "*",
    "?",
    ":",
    ",",
    ".",
    "true",
    "1",
    "1e999999",
    "12345678901234567890",
    "18446744073709551616u",
    "size",
    "x",
    "[1,2].all(x, ",
    "has(",
    "'a'",
    "\n",
    "é",
];

const TOML_PIECES: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "=",
    ".",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "#",
    "\n",
    " ",
    ",",
    "name",
    "version",
    "world",
    "config",
    "[[config]]",
    "\"x\"",
    "1",
    "1e999999",
    "12345678901234567890",
    "true",
    "\\",
    "é",
];

/// What a lossy decoder puts in place of invalid UTF-8.
const REPLACEMENT: char = '\u{fffd}';

const QUERY_PIECES: &[&str] = &[
    "%FF", "%C3", "%A9", "%", "%2", "%00", "+", "&", "=", "a", "filter", "é", "%E2%82", "%ZZ",
];

/// A JSON value of bounded size with every kind of node, nesting included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "conditions",
            "any",
            "attribute",
            "member_of",
            "devices",
            "expression",
            "quantifier",
            "department",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "conditions",
                    "any",
                    "attribute",
                    "operator",
                    "values",
                    "member_of",
                    "not_member_of",
                    "devices",
                    "expression",
                    "quantifier",
                    "op",
                    "path",
                    "value",
                ]),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "a", "userName": "ada", "active": true,
        "name": {"givenName": "Ada"},
        "emails": [{"value": "ada@example.com", "type": "work"}],
    })
}

fn patch_body(path: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": path, "value": "x"}],
    })
}

fn nested(open: &str, middle: &str, close: &str, n: usize) -> String {
    format!("{}{middle}{}", open.repeat(n), close.repeat(n))
}

/// The message of a CEL error, whichever stage refused it.
fn cel_message(e: PlainError) -> String {
    match e {
        PlainError::Syntax(p) | PlainError::Check(p) => p
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
        PlainError::Eval(m) | PlainError::Unsupported(m) => m,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_scim_filters_parse_or_fail_cleanly(src in made_of(FILTER_PIECES, 400)) {
        match filter::parse(&src) {
            Ok(f) => {
                // Evaluating walks the tree the parser allowed.
                let _ = filter::matches(&f, &user());
            }
            Err(e) => prop_assert!(e.position >= 1 && e.position <= src.chars().count() + 1, "{e}"),
        }
    }

    #[test]
    fn hostile_scim_patch_paths_apply_or_fail_cleanly(path in made_of(FILTER_PIECES, 200)) {
        let mut resource = user();
        if let Err(e) = patch::apply(&mut resource, &patch_body(&path)) {
            prop_assert_eq!(e.status, 400, "{}", e);
        }
    }

    #[test]
    fn hostile_scim_patch_bodies_apply_or_fail_cleanly(body in json_value()) {
        let mut resource = user();
        if let Err(e) = patch::apply(&mut resource, &body) {
            prop_assert_eq!(e.status, 400, "{}", e);
        }
    }

    #[test]
    fn hostile_rules_parse_or_fail_with_a_position(rule in json_value()) {
        for kind in [SubjectKind::User, SubjectKind::Device] {
            match RuleModel::parse(&rule, kind, "rule") {
                Ok(m) => {
                    let _ = m.reads();
                }
                Err(DomainError::InvalidRule { field, .. }) | Err(DomainError::Limit { field, .. }) => {
                    prop_assert!(field.starts_with("rule"), "{field}");
                }
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_cel_compiles_or_fails_cleanly(src in made_of(CEL_PIECES, 300)) {
        // Parse, check and evaluate: every stage a rule goes through.
        let _ = plain::evaluate(&src, &[], true);
        let _ = plain::evaluate(&src, &[], false);
    }

    #[test]
    fn hostile_json_bodies_decode_or_fail_cleanly(text in made_of(&[
        "[", "]", "{", "}", "\"", "\\", ":", ",", "1e999999", "12345678901234567890", "-", "null",
        "\"k\"", " ", "\u{fffd}",
    ], 600)) {
        match crate::json::from_slice::<Value>(text.as_bytes()) {
            Ok(v) => prop_assert!(json_depth(v.to_string().as_bytes(), MAX_JSON_DEPTH).is_ok()),
            Err(crate::json::DecodeError::TooDeep { limit, .. }) => prop_assert_eq!(limit, MAX_JSON_DEPTH),
            Err(_) => {}
        }
    }

    #[test]
    fn hostile_json_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = crate::json::from_slice::<Value>(&bytes);
    }

    #[test]
    fn hostile_query_strings_are_checked_cleanly(q in made_of(QUERY_PIECES, 80), path in made_of(QUERY_PIECES, 10)) {
        let checked = crate::api::extract::check_target(&format!("/api/v1/{path}"), Some(&q));
        // A query the check accepts is one the standard decoder reads
        // without replacing anything.
        if checked.is_ok() {
            let pairs = crate::api::extract::query_pairs(Some(&q)).expect("decodes");
            let replaced = pairs.iter().any(|(k, v)| k.contains(REPLACEMENT) || v.contains(REPLACEMENT));
            prop_assert!(!replaced, "{:?}", pairs);
        }
    }

    #[test]
    fn hostile_manifests_parse_or_fail_cleanly(text in made_of(TOML_PIECES, 300)) {
        if let Err(e) = Manifest::from_toml(&text) {
            prop_assert!(matches!(e, DomainError::Invalid { .. } | DomainError::Limit { .. }), "{e:?}");
        }
    }

    #[test]
    fn hostile_csv_cells_never_start_a_formula(s in "\\PC{0,20}|[=+\\-@\t\r].{0,20}|[ \t\n\u{a0}\u{3000}]{1,3}[=+\\-@＝].{0,20}") {
        let out = crate::csv::cell(&s);
        prop_assert!(!out.starts_with(['=', '+', '-', '@', '\t', '\r']), "{out:?}");
        // Reading the cell back (RFC 4180) gives the value, behind a quote
        // when it was neutralised.
        let read = match out.strip_prefix('"').and_then(|o| o.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => out.to_string(),
        };
        let formula = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];
        let neutralised = s.starts_with(formula)
            || s.trim_start_matches(|c: char| c.is_whitespace() || c.is_control()).starts_with(formula);
        // Not even behind leading whitespace, which trimming importers drop.
        let trimmed = read.trim_start_matches(|c: char| c.is_whitespace() || c.is_control());
        prop_assert!(!trimmed.starts_with(formula), "{read:?}");
        prop_assert_eq!(read, if neutralised { format!("'{s}") } else { s.clone() });
    }
}

#[test]
fn regression_hostile_deep_scim_filters_name_the_limit() {
    let too_deep = |src: &str| {
        let e = filter::parse(src).expect_err(src.get(..40).unwrap_or(src));
        assert!(
            e.message
                .contains(&format!("{MAX_FILTER_DEPTH} is the limit"))
                || e.message
                    .contains(&format!("{MAX_FILTER_BYTES} is the limit")),
            "{e}"
        );
    };
    too_deep(&nested("(", "userName eq \"x\"", ")", DEEP));
    too_deep(&nested("not (", "title pr", ")", DEEP));
    too_deep(&nested("emails[", "type eq \"work\"", "]", DEEP));
    too_deep(&nested("(", "userName eq \"x\"", ")", MAX_FILTER_DEPTH + 1));
    too_deep(&"(".repeat(DEEP));
    assert!(filter::parse(&nested("(", "userName eq \"x\"", ")", MAX_FILTER_DEPTH)).is_ok());
    let chain = vec!["title pr"; DEEP].join(" and ");
    assert!(filter::parse(&chain).is_err());
    let e = filter::parse(&vec!["title pr"; MAX_FILTER_TERMS + 1].join(" and ")).unwrap_err();
    assert!(
        e.message
            .contains(&format!("{MAX_FILTER_TERMS} is the limit")),
        "{e}"
    );
    // Huge numbers are values that do not parse, not panics.
    assert!(filter::parse("meta.version eq 1e999999").is_err());
    assert!(filter::parse("meta.version gt 12345678901234567890").is_ok());
    let long = format!("userName eq \"{}\"", "a".repeat(1 << 20));
    assert!(
        filter::parse(&long)
            .unwrap_err()
            .message
            .contains("the limit")
    );
}

#[test]
fn regression_hostile_deep_patch_paths_are_invalid_paths() {
    for path in [
        format!(
            "emails[{}].value",
            nested("(", "type eq \"work\"", ")", DEEP)
        ),
        format!("emails[{}].value", nested("not (", "type pr", ")", 40)),
        format!("emails[{}]", nested("emails[", "type pr", "]", DEEP)),
        format!("{}]", "emails[".repeat(DEEP)),
        "x".repeat(1 << 20),
    ] {
        let mut resource = user();
        let e = patch::apply(&mut resource, &patch_body(&path)).unwrap_err();
        assert_eq!((e.status, e.scim_type), (400, Some("invalidPath")), "{e}");
        assert_eq!(resource, user(), "nothing applied");
    }
}

#[test]
fn regression_hostile_deep_json_is_refused_before_parsing() {
    for text in [
        "[".repeat(DEEP),
        nested("{\"a\":", "1", "}", DEEP),
        nested("[", "1", "]", MAX_JSON_DEPTH + 1),
    ] {
        match crate::json::from_slice::<Value>(text.as_bytes()) {
            Err(crate::json::DecodeError::TooDeep { limit, .. }) => {
                assert_eq!(limit, MAX_JSON_DEPTH)
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        crate::json::from_slice::<Value>(nested("[", "1", "]", MAX_JSON_DEPTH).as_bytes()).is_ok()
    );
    // Huge numbers are syntax errors, not infinities or panics.
    for n in ["1e999999", "-1e999999"] {
        assert!(matches!(
            crate::json::from_slice::<Value>(n.as_bytes()),
            Err(crate::json::DecodeError::Syntax { .. })
        ));
    }
    let big: Value = crate::json::from_slice(b"123456789012345678901234567890").unwrap();
    assert!(big.is_f64());
    // Invalid UTF-8 inside a string.
    assert!(crate::json::from_slice::<Value>(b"\"\xff\xfe\"").is_err());
}

#[test]
fn regression_hostile_deep_rules_are_refused() {
    // The rule language nests one level; deeper JSON is a typed error.
    let mut deep = json!({"conditions": [{"attribute": "department", "operator": "exists"}]});
    for _ in 0..60 {
        deep = json!({"conditions": [{"devices": deep}]});
    }
    let e = RuleModel::parse(&deep, SubjectKind::User, "rule").unwrap_err();
    assert!(
        matches!(&e, DomainError::InvalidRule { field, .. } if field.starts_with("rule/conditions/0/devices")),
        "{e}"
    );
    let mut any = json!({"attribute": "department", "operator": "exists"});
    for _ in 0..60 {
        any = json!({"any": [{"conditions": [any]}]});
    }
    assert!(RuleModel::parse(&any, SubjectKind::User, "rule").is_err());
    let many = json!({"conditions": vec![json!({"attribute": "department", "operator": "exists"}); MAX_RULE_CONDITIONS + 1]});
    match RuleModel::parse(&many, SubjectKind::User, "rule") {
        Err(DomainError::Limit { code, message, .. }) => {
            assert_eq!(code, "too_many");
            assert!(
                message.contains(&MAX_RULE_CONDITIONS.to_string()),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn regression_hostile_deep_cel_names_the_limit() {
    for src in [
        nested("(", "true", ")", DEEP),
        nested("[", "1", "]", DEEP),
        nested("{1: ", "1", "}", 100),
        format!("{}true", "!".repeat(DEEP)),
        format!("{}1 == 1", "-".repeat(MAX_EXPRESSION_DEPTH + 1)),
        nested("size(", "'x'", ")", MAX_EXPRESSION_DEPTH + 1),
    ] {
        let e = plain::evaluate(&src, &[], true).unwrap_err();
        let message = cel_message(e);
        assert!(
            message.contains(&format!("the limit is {MAX_EXPRESSION_DEPTH}"))
                || message.contains(&format!("the limit is {MAX_EXPRESSION_BYTES}")),
            "{message}"
        );
    }
    let chain = vec!["1"; 3000].join(" + ");
    assert!(plain::evaluate(&format!("{chain} > 0"), &[], true).is_err());
    let long = format!("'{}' == ''", "a".repeat(1 << 20));
    assert!(cel_message(plain::evaluate(&long, &[], true).unwrap_err()).contains("limit"));
    // Huge numbers are errors, not panics.
    for src in [
        "1e999999 > 0.0",
        "12345678901234567890 > 0",
        "-9223372036854775809 < 0",
    ] {
        let _ = plain::evaluate(src, &[], true);
    }
    // Within the limit still works.
    assert!(matches!(
        plain::evaluate(
            &nested("(", "true", ")", MAX_EXPRESSION_DEPTH - 2),
            &[],
            true
        ),
        Ok(plain::Plain::Bool(true))
    ));
}

#[test]
fn regression_hostile_query_strings_name_the_parameter() {
    use crate::api::extract::check_target;
    let e = check_target("/scim/v2/Users", Some("filter=userName%20eq%20%22%FF%22")).unwrap_err();
    assert_eq!(e.field(), Some("filter"));
    let e = check_target("/api/v1/users", Some(&format!("{}=1", "%FF".repeat(DEEP)))).unwrap_err();
    assert!(e.field().is_some_and(|f| f.starts_with('\u{fffd}')));
    assert!(check_target("/api/v1/users", Some(&"a=b&".repeat(DEEP))).is_ok());
    assert!(
        check_target("/api/v1/users", Some("%")).is_ok(),
        "a lone % is kept as is"
    );
}

#[test]
fn regression_hostile_manifests_name_the_limit() {
    for text in [
        format!("name = {}", "[".repeat(DEEP)),
        format!("name = {}", "{a = ".repeat(DEEP)),
        format!("{} = 1", vec!["k"; DEEP].join(".")),
        format!("[{}]", vec!["k"; 100].join(".")),
        format!("description = '{}'", "a".repeat(MAX_MANIFEST_BYTES)),
    ] {
        match Manifest::from_toml(&text) {
            Err(DomainError::Limit { code, message, .. }) => {
                assert!(["too_deep", "too_long"].contains(&code));
                assert!(message.contains("the limit is"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    let ok = "name = 'x'\nversion = '1.0.0'\nworld = 'rule-evaluator'\ndescription = 'a.b.c'\nallowed_hosts = ['api.example.com']\n\n[[config]]\nname = 'token'\nkind = 'secret'\n";
    assert!(Manifest::from_toml(ok).is_ok());
}
