//! Unit tests of the checker on its own: parsed expressions are checked
//! against a small fixed schema, without compiling them into an
//! [`crate::expression::Expression`], so that each test shows what the checker
//! accepts, what it refuses, and where it places the refusal.

use uuid::Uuid;

use super::functions::{parse_duration, signature};
use super::{Checked, Type, check};
use crate::directory::{AttrType, SubjectKind};
use crate::expression::tests::attr;
use crate::expression::{Environment, Problem, parse};

const STAFF: Uuid = Uuid::from_u128(42);

/// Checks `source` as a user rule (which must be a bool) against users with
/// `department` (string), `level` (number), `skills` (list) and `end_date`
/// (date), devices with `os_family`, and one group, `staff`.
fn run(source: &str, expect_bool: bool) -> Result<Checked, Vec<Problem>> {
    let users = vec![
        attr("department", SubjectKind::User, AttrType::String),
        attr("level", SubjectKind::User, AttrType::Number),
        attr("skills", SubjectKind::User, AttrType::StringList),
        attr("end_date", SubjectKind::User, AttrType::Date),
    ];
    let devices = vec![attr("os_family", SubjectKind::Device, AttrType::String)];
    let group = |name: &str| (name == "staff").then_some(STAFF);
    let env = Environment {
        kind: SubjectKind::User,
        users: &users,
        devices: &devices,
        group: &group,
        related_only: false,
    };
    let (expr, info) = parse(source).expect("the test sources parse");
    let offset_of = |id: u64| info.offset_for(id).map_or(0, |(start, _)| start as usize);
    check(&expr, &env, source, &offset_of, expect_bool)
}

fn accepted(source: &str) -> Checked {
    match run(source, true) {
        Ok(c) => c,
        Err(p) => panic!("`{source}` was refused: {p:?}"),
    }
}

/// The single problem found in `source`.
fn refused(source: &str) -> Problem {
    let problems = run(source, true)
        .err()
        .unwrap_or_else(|| panic!("`{source}` was accepted"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.into_iter().next().expect("one problem")
}

/// Asserts that `p` says `text`.
fn says(p: &Problem, text: &str) {
    assert!(p.message.contains(text), "{}", p.message);
}

/// Asserts that `source` is refused at the first `at` and says `text`.
fn refused_at(source: &str, at: &str, text: &str) {
    let p = refused(source);
    assert_eq!(p.column, column_of(source, at), "{source}: {}", p.message);
    says(&p, text);
}

/// The 1-based column of the first occurrence of `needle` in `source`.
fn column_of(source: &str, needle: &str) -> usize {
    source.find(needle).expect("needle in source") + 1
}

#[test]
fn a_comparison_of_an_attribute_with_its_own_type_is_accepted_and_reads_it() {
    let c = accepted(r#"user.department == "Sales" && user.level >= 3"#);
    assert_eq!(
        c.reads.own.iter().map(String::as_str).collect::<Vec<_>>(),
        ["department", "level"]
    );
    assert!(!c.reads.reads_groups);
    assert!(!c.reads.reads_related);
    assert!(c.groups.is_empty());
}

#[test]
fn a_misspelt_attribute_is_refused_at_the_field_with_a_suggestion() {
    let source = r#"user.departmnet == "Sales""#;
    refused_at(
        source,
        "departmnet",
        "unknown attribute `departmnet` of user",
    );
    let p = refused(source);
    assert_eq!(p.line, 1);
    says(&p, "did you mean `department`?");
}

#[test]
fn an_attribute_indexed_with_a_literal_name_is_checked_like_a_field() {
    refused_at(r#"user["levl"] > 1"#, r#""levl""#, "did you mean `level`?");
    assert_eq!(
        accepted(r#"user["level"] > 1"#)
            .reads
            .own
            .into_iter()
            .collect::<Vec<_>>(),
        ["level"]
    );
}

#[test]
fn a_number_compared_with_a_string_is_refused_naming_both_types() {
    let p = refused(r#"user.level == "3""#);
    says(&p, "a double is never equal to a string");
}

#[test]
fn numbers_of_different_types_compare_but_do_not_add() {
    accepted("user.level == 3");
    let p = refused("user.level + 1 > 2.0");
    says(&p, "`+` does not apply to a double and a int");
    says(&p, "convert one side");
}

#[test]
fn a_rule_that_is_not_a_bool_is_refused_only_when_a_bool_is_expected() {
    let p = refused("user.level");
    says(&p, "must be a bool");
    assert!(p.message.ends_with("it is a double"), "{}", p.message);
    assert!(run("user.level", false).is_ok());
}

#[test]
fn an_unknown_variable_is_refused_with_the_variables_in_scope_suggested() {
    refused_at(
        "usr.level > 1",
        "usr",
        "unknown variable `usr`; did you mean `user`?",
    );
    let p = refused("device.os_family == 'linux'");
    says(&p, "a user group's rule reads `user`");
}

#[test]
fn in_group_resolves_a_known_group_and_refuses_an_unknown_one_at_its_argument() {
    let c = accepted(r#"in_group("staff")"#);
    assert_eq!(c.groups.get("staff"), Some(&STAFF));
    assert!(c.reads.in_groups.contains(&STAFF));

    refused_at(
        r#"in_group("stuff")"#,
        r#""stuff""#,
        "no user group is named `stuff`",
    );

    // A selection is placed at its dot.
    refused_at("in_group(user.department)", ".department", "string literal");
}

#[test]
fn comprehension_variables_take_the_element_type_and_leave_scope_after() {
    accepted(r#"user.skills.exists(s, s.startsWith("rust"))"#);
    let p = refused("user.skills.exists(s, s > 1)");
    says(&p, "a string cannot be ordered against a int");
    let p = refused("user.skills.exists(s, true) && s == 'x'");
    says(&p, "unknown variable `s`");
}

#[test]
fn related_subjects_carry_attributes_only() {
    let c = accepted(r#"user.devices.exists(d, d.os_family == "linux")"#);
    assert!(c.reads.reads_related);
    assert!(c.reads.related.contains("os_family"));

    refused_at(
        "user.devices.exists(d, d.groups.size() > 0)",
        "groups",
        "related devices carry their attributes only",
    );
}

#[test]
fn the_whole_subject_as_a_value_reads_everything() {
    let c = accepted("user == user");
    assert_eq!(c.reads.own.len(), 4);
    assert!(c.reads.reads_groups && c.reads.reads_related);
    assert!(c.reads.related.contains("os_family"));
}

#[test]
fn literal_regexes_timestamps_and_durations_are_checked_where_written() {
    refused_at(
        r#"user.department.matches("(")"#,
        r#""(""#,
        "invalid regular expression",
    );
    refused_at(
        r#"user.end_date < timestamp("tomorrow")"#,
        r#""tomorrow""#,
        "is not an RFC 3339 time",
    );

    accepted(r#"user.end_date - now < duration("720h")"#);
    let p = refused(r#"user.end_date - now < duration("a month")"#);
    says(&p, "is not a duration");
}

#[test]
fn every_problem_is_reported_in_source_order() {
    let source = r#"user.levle > 1 && user.department == 2 && nope"#;
    let problems = run(source, true).err().expect("refused");
    let columns: Vec<usize> = problems.iter().map(|p| p.column).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(columns.windows(2).all(|w| w[0] < w[1]), "{columns:?}");
    assert_eq!(columns[0], column_of(source, "levle"));
    assert_eq!(columns[2], column_of(source, "nope"));
}

#[test]
fn signatures_give_result_types_or_say_what_they_take() {
    use Type::*;
    assert_eq!(signature("size", None, &[String]), Ok(Int));
    assert_eq!(signature("size", Some(&List(Box::new(Int))), &[]), Ok(Int));
    assert_eq!(
        signature("size", None, &[Bool]),
        Err("`size` takes a string, bytes, a list or a map, not (bool)".to_string())
    );
    assert_eq!(
        signature("split", Some(&String), &[String]),
        Ok(List(Box::new(String)))
    );
    assert_eq!(signature("getHours", Some(&Duration), &[]), Ok(Int));
    assert!(signature("getHours", Some(&Duration), &[String]).is_err());
    assert_eq!(signature("dyn", None, &[Bool]), Ok(Dyn));
    let unknown = signature("sise", None, &[String]).expect_err("unknown");
    assert!(unknown.contains("did you mean `size`?"), "{unknown}");
    let contains =
        signature("contains", Some(&List(Box::new(String))), &[String]).expect_err("list");
    assert!(contains.contains("write `x in list`"), "{contains}");
}

#[test]
fn type_relations_follow_cel() {
    use Type::*;
    assert!(Int.comparable(&Double));
    assert!(String.comparable(&Null));
    assert!(!String.comparable(&Int));
    assert!(List(Box::new(Int)).comparable(&List(Box::new(Uint))));
    assert!(Timestamp.orderable(&Timestamp));
    assert!(!Timestamp.orderable(&Duration));
    assert!(!List(Box::new(Int)).orderable(&List(Box::new(Int))));
    assert_eq!(Null.join(&String), String);
    assert_eq!(Int.join(&Double), Dyn);
    assert_eq!(
        Map(Box::new(String), Box::new(List(Box::new(Dyn)))).to_string(),
        "map(string, list(dyn))"
    );
}

#[test]
fn duration_literals() {
    for ok in ["0", "-0", "720h", "1h30m", "1.5s", "100ms", "3µs", "-90m"] {
        assert!(parse_duration(ok), "{ok}");
    }
    for bad in ["", "90", "h", "1d", "1h 30m", "--1h"] {
        assert!(!parse_duration(bad), "{bad}");
    }
}
