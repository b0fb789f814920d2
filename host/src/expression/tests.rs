use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::directory::{AttrRef, AttrType, Attribute, SubjectKind};

/// A custom attribute; the other modules' tests of expressions use it too.
pub(crate) fn attr(name: &str, subject: SubjectKind, t: AttrType) -> Attribute {
    Attribute {
        name: name.into(),
        subject,
        attr_type: t,
        standard: false,
        description: None,
        created_at: None,
    }
}

fn schema() -> (Vec<Attribute>, Vec<Attribute>) {
    use AttrType::*;
    use SubjectKind::*;
    let users = vec![
        attr("email", User, String),
        attr("department", User, String),
        attr("location", User, String),
        attr("state", User, String),
        attr("employee_type", User, String),
        attr("level", User, Number),
        attr("end_date", User, Date),
        attr("skills", User, StringList),
        attr("remote", User, Boolean),
    ];
    let devices = vec![
        attr("os_family", Device, String),
        attr("last_contact", Device, Date),
        attr("disk_encryption", Device, Boolean),
    ];
    (users, devices)
}

const ENGINEERING: Uuid = Uuid::from_u128(7);

fn compile(kind: SubjectKind, source: &str) -> Result<Expression, Vec<Problem>> {
    let (users, devices) = schema();
    let group = |name: &str| (name.eq_ignore_ascii_case("engineering")).then_some(ENGINEERING);
    let env = Environment {
        kind,
        users: &users,
        devices: &devices,
        group: &group,
        related_only: false,
    };
    Expression::compile(source, &env)
}

fn user(source: &str) -> Result<Expression, Vec<Problem>> {
    compile(SubjectKind::User, source)
}

fn problems(source: &str) -> Vec<Problem> {
    user(source).expect_err(source)
}

struct Fake(BTreeMap<&'static str, Val>);

enum Val {
    Text(&'static str),
    Number(f64),
    Bool(bool),
    List(Vec<std::string::String>),
    Time(chrono::DateTime<Utc>),
}

impl Related for Fake {
    fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        Some(match self.0.get(name)? {
            Val::Text(s) => AttrRef::Text(s),
            Val::Number(n) => AttrRef::Number(*n),
            Val::Bool(b) => AttrRef::Bool(*b),
            Val::List(l) => AttrRef::List(l),
            Val::Time(t) => AttrRef::Time(*t),
        })
    }
}

fn alice() -> Fake {
    Fake(BTreeMap::from([
        ("email", Val::Text("alice@example.com")),
        ("department", Val::Text("Engineering")),
        ("location", Val::Text("Denver")),
        ("state", Val::Text("active")),
        ("employee_type", Val::Text("contractor")),
        ("level", Val::Number(3.0)),
        ("end_date", Val::Text("2026-06-30")),
        ("skills", Val::List(vec!["rust".into(), "go".into()])),
    ]))
}

fn mac() -> Fake {
    Fake(BTreeMap::from([
        ("os_family", Val::Text("macos")),
        (
            "last_contact",
            Val::Time(Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap()),
        ),
        ("disk_encryption", Val::Bool(true)),
    ]))
}

fn eval_user(
    source: &str,
    subject: &Fake,
    devices: &[&Fake],
    in_groups: Vec<Uuid>,
) -> Result<bool, EvalError> {
    let expr = user(source).unwrap_or_else(|p| panic!("{source}: {p:?}"));
    let (users, devices_schema) = schema();
    let attrs: Vec<(std::string::String, AttrType)> = users
        .iter()
        .map(|a| (a.name.clone(), a.attr_type))
        .collect();
    let related_attrs: Vec<(std::string::String, AttrType)> = devices_schema
        .iter()
        .map(|a| (a.name.clone(), a.attr_type))
        .collect();
    let runtime = Runtime::new();
    let bindings = Bindings {
        kind: SubjectKind::User,
        subject,
        attributes: &attrs,
        groups: Some(vec![(ENGINEERING, "Engineering")]),
        related: Some(devices.iter().map(|d| *d as &dyn Related).collect()),
        related_attributes: &related_attrs,
        in_groups,
        now: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
    };
    let scope = runtime.scope(&bindings);
    scope.evaluate(&expr)
}

#[test]
fn documented_examples_hold() {
    let a = alice();
    let m = mac();
    assert_eq!(
        eval_user(
            "user.department == 'Engineering' && user.location in ['Denver', 'Boulder'] \
             && user.devices.exists(d, d.os_family == 'macos')",
            &a,
            &[&m],
            vec![]
        ),
        Ok(true)
    );
    assert_eq!(
        eval_user(
            "user.employee_type == 'contractor' && user.end_date < now",
            &a,
            &[],
            vec![]
        ),
        Ok(true)
    );
    assert_eq!(
        eval_user("now - user.end_date > duration('720h')", &a, &[], vec![]),
        Ok(true)
    );
    assert_eq!(
        eval_user("in_group('Engineering')", &a, &[], vec![ENGINEERING]),
        Ok(true)
    );
    assert_eq!(
        eval_user("in_group('engineering')", &a, &[], vec![]),
        Ok(false)
    );
    assert_eq!(
        eval_user(
            "user.groups.exists(g, g.name == 'Engineering')",
            &a,
            &[],
            vec![]
        ),
        Ok(true)
    );
    assert_eq!(
        eval_user(
            "user.email.equalsIgnoreCase('ALICE@example.com')",
            &a,
            &[],
            vec![]
        ),
        Ok(true)
    );
    assert_eq!(
        eval_user("'rust' in user.skills", &a, &[], vec![]),
        Ok(true)
    );
    assert_eq!(eval_user("user.level >= 3.0", &a, &[], vec![]), Ok(true));
    // Numbers compare across int and double.
    assert_eq!(
        eval_user("user.level >= 3 && user.level < 4", &a, &[], vec![]),
        Ok(true)
    );
}

#[test]
fn a_missing_attribute_is_not_a_match_and_not_an_error_to_report() {
    let a = alice();
    let e = eval_user("user.remote == true", &a, &[], vec![]).unwrap_err();
    assert!(e.missing_attribute, "{e:?}");
    assert_eq!(
        eval_user("has(user.remote) && user.remote", &a, &[], vec![]),
        Ok(false)
    );
}

#[test]
fn unknown_attributes_are_named_with_a_suggestion() {
    let p = problems("user.departmnt == 'x'");
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].line, p[0].column), (1, 6));
    assert!(p[0].message.contains("`departmnt`"), "{}", p[0].message);
    assert!(
        p[0].message.contains("did you mean `department`"),
        "{}",
        p[0].message
    );
    assert!(p[0].excerpt.ends_with("\n     ^"), "{:?}", p[0].excerpt);
    let p = problems("user.devices.exists(d, d.os == 'macos')");
    assert!(p[0].message.contains("related device"), "{}", p[0].message);
}

#[test]
fn parse_errors_have_line_column_and_caret() {
    let p = problems("user.department == 'a' &&\n  && true");
    assert_eq!(p[0].line, 2, "{p:?}");
    assert!(p[0].excerpt.contains('^'));
}

#[test]
fn static_type_errors_are_refused() {
    for (source, needle) in [
        ("user.level == 'three'", "never equal"),
        ("user.department > 3", "cannot be ordered"),
        ("user.skills.startsWith('r')", "startsWith"),
        ("user.skills.contains('rust')", "x in list"),
        ("user.department", "must be a bool"),
        ("size(user.remote) > 1", "size"),
        ("user.email.matches('[a-')", "invalid regular expression"),
        ("duration('30 days') < duration('1h')", "is not a duration"),
        ("frobnicate(user.email)", "unknown function"),
        ("usr.email == 'a'", "did you mean `user`"),
        ("in_group('Nobody')", "no user group is named"),
        ("device.os_family == 'macos'", "unknown variable `device`"),
    ] {
        let p = problems(source);
        assert!(
            p.iter().any(|p| p.message.contains(needle)),
            "{source}: wanted {needle:?} in {p:?}"
        );
    }
}

#[test]
fn reads_are_known_for_incremental_recompute() {
    let e =
        user("user.department == 'x' && user.devices.exists(d, d.os_family == 'macos')").unwrap();
    let r = e.reads();
    assert_eq!(r.own.iter().collect::<Vec<_>>(), ["department"]);
    assert_eq!(r.related.iter().collect::<Vec<_>>(), ["os_family"]);
    assert!(r.reads_related && !r.reads_groups);
    let e = user("in_group('Engineering') || user.groups.size() > 2").unwrap();
    assert!(e.reads().reads_groups);
    assert_eq!(
        e.reads().in_groups.iter().collect::<Vec<_>>(),
        [&ENGINEERING]
    );
}

#[test]
fn the_top_level_chain_is_split_into_parts() {
    let e = user("user.department == 'Engineering' && (user.location == 'Denver' || user.location == 'Boulder') && size(user.skills) > 1").unwrap();
    assert_eq!(e.chain(), Chain::And);
    let texts: Vec<&str> = e.parts().iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "user.department == 'Engineering'",
            "user.location == 'Denver' || user.location == 'Boulder'",
            "size(user.skills) > 1"
        ]
    );
}

#[test]
fn work_is_bounded() {
    let a = alice();
    let e = eval_user(
        "[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, a + b + c + d > 0))))",
        &a,
        &[],
        vec![],
    )
    .unwrap_err();
    assert!(e.message.contains("too much work"), "{e:?}");
    // Doubling a string in a chain of maps is charged for its size.
    let doubling = (0..40).fold("[user.email]".to_string(), |acc, i| {
        format!("{acc}.map(x{i}, x{i} + x{i})")
    });
    let e = eval_user(&format!("size({doubling}[0]) > 0"), &a, &[], vec![]).unwrap_err();
    assert!(e.message.contains("too much work"), "{e:?}");
    assert_eq!(
        eval_user("[1,2,3].exists(x, x == 3)", &a, &[], vec![]),
        Ok(true)
    );
}

#[test]
fn a_passed_deadline_stops_the_evaluation_with_its_own_error() {
    let a = alice();
    let source = "[1,2,3,4,5].map(i, user.email + 'x').size() == 5";
    assert_eq!(eval_user(source, &a, &[], vec![]), Ok(true));
    let past = crate::clock::Deadline::passed();
    let e = with_deadline(Some(past), || eval_user(source, &a, &[], vec![])).unwrap_err();
    assert!(e.message.contains(LATE), "{e:?}");
    assert_eq!(limit_of(&e.message), Some("too_slow"));
    // The deadline is this thread's for the duration only.
    assert_eq!(eval_user(source, &a, &[], vec![]), Ok(true));
}

#[test]
fn budget_errors_name_their_limit() {
    let a = alice();
    let e = eval_user(
        "user.email.replace('', user.email).replace('', user.email).replace('', user.email).size() > 0",
        &a,
        &[],
        vec![],
    )
    .unwrap_err();
    assert!(e.message.contains("per value"), "{e:?}");
    assert_eq!(
        limit_of(&format!("rule/expression: {}", e.message)),
        Some("too_costly")
    );
    assert_eq!(limit_of("the subject has no value for `x`"), None);
}

#[test]
fn size_and_depth_are_limited() {
    let long = format!("user.email == '{}'", "a".repeat(MAX_SOURCE_BYTES));
    assert!(problems(&long)[0].message.contains("limit"));
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert!(user(&deep).is_err());
    let chain = vec!["1"; 1500].join(" + ");
    let p = problems(&format!("{chain} > 0"));
    assert!(
        p[0].message.contains("levels deep") || p[0].message.contains("limit"),
        "{p:?}"
    );
}

#[test]
fn parts_of_macros_and_methods_read_as_written() {
    let e = user(
        "user.devices.exists(d, d.os_family == 'macos') || user.email.endsWith('@example.com')",
    )
    .unwrap();
    assert_eq!(e.chain(), Chain::Or);
    let texts: Vec<&str> = e.parts().iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "user.devices.exists(d, d.os_family == 'macos')",
            "user.email.endsWith('@example.com')"
        ]
    );
}

#[test]
fn anchors_are_found_and_the_index_offers_the_right_expressions() {
    let a = |src: &str| user(src).unwrap().anchors().map(<[Anchor]>::to_vec);
    let exact = |attr: &str, values: &[&str]| Anchor {
        attribute: attr.into(),
        test: AnchorTest::Exact,
        case: Case::Sensitive,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    assert_eq!(
        a("user.department == 'Sales' && user.location in ['Denver', 'Boulder']"),
        Some(vec![exact("department", &["Sales"])])
    );
    assert_eq!(
        a("user.location in ['Denver', 'Boulder'] && size(user.email) > 3"),
        Some(vec![exact("location", &["Denver", "Boulder"])])
    );
    assert_eq!(
        a("(user.location == 'Denver' && user.department == 'Eng') || user.email.endsWith('@x.com')")
            .map(|v| v.len()),
        Some(2)
    );
    assert_eq!(
        a("user.email.lowerAscii() == 'ALICE@x.com'").unwrap()[0].values,
        ["alice@x.com"]
    );
    // Not anchors: an OR with an unanchored side, a negation, a number, a
    // list attribute.
    assert_eq!(
        a("user.department == 'Sales' || size(user.skills) > 1"),
        None
    );
    assert_eq!(a("!(user.department == 'Sales')"), None);
    assert_eq!(a("user.level == 3.0"), None);
    assert_eq!(a("'rust' in user.skills"), None);

    let sources = [
        "user.department == 'Engineering'",
        "user.email.endsWith('@example.com')",
        "user.email.startsWith('bob')",
        "user.location.equalsIgnoreCase('DENVER')",
        "user.department.lowerAscii() in ['sales', 'ops']",
        "size(user.skills) > 1",
    ];
    let compiled: Vec<Expression> = sources.iter().map(|s| user(s).unwrap()).collect();
    let index = Index::new(compiled.iter().enumerate(), true);
    let mut out = Vec::new();
    index.candidates(&alice(), &mut out);
    assert_eq!(out, [0, 1, 3, 5]);
    let all = Index::new(compiled.iter().enumerate(), false);
    all.candidates(&alice(), &mut out);
    assert_eq!(out, [0, 1, 2, 3, 4, 5]);
}
