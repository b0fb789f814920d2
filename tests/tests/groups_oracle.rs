//! A property test: random directories and random rules, and every
//! membership the server decides must be the one the reference evaluator
//! (`cohort_tests::oracle`, which shares no code with the engine) decides.
//!
//! The rules use every attribute operator on every attribute type (absolute
//! dates only), `ignore_case`, `any` blocks, exclusions, `member_of` /
//! `not_member_of`, related conditions with each quantifier, state scoping,
//! exemptions, manual members (static groups, some turned dynamic), review
//! mode, and the CEL subset of `oracle::cel`. A case is built from a seed
//! and three sizes, so proptest shrinks a failure to fewer subjects and
//! groups and prints the seed.

#![allow(
    clippy::unwrap_used,
    reason = "test code, helpers included: a panic is a test failure"
)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use cohort_tests::oracle::cel::Var;
use cohort_tests::oracle::{self, Cel, Expressions, Kind};
use cohort_tests::{Api, Rng, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// An attribute the generator writes and tests: its name, its type, the
/// values subjects get, and the values conditions compare with.
struct Attr {
    name: &'static str,
    ty: &'static str,
    values: fn() -> Vec<Value>,
    probes: fn() -> Vec<Value>,
}

fn strings(xs: &[&str]) -> Vec<Value> {
    xs.iter().map(|x| json!(x)).collect()
}

const USER_ATTRS: &[Attr] = &[
    Attr {
        name: "department",
        ty: "string",
        values: || strings(&["Engineering", "engineering", "Sales", "Design"]),
        probes: || {
            strings(&[
                "Engineering",
                "Sales",
                "Eng",
                "ing",
                "sign",
                "^[Ee]n",
                "(?:Sal|Des)",
            ])
        },
    },
    Attr {
        name: "location",
        ty: "string",
        values: || strings(&["Berlin", "berlin", "Denver", "Zürich"]),
        probes: || strings(&["Berlin", "BERLIN", "Den", "er", "ZÜRICH", "^B", "r.i"]),
    },
    Attr {
        name: "skills",
        ty: "string_list",
        values: || {
            vec![
                json!(["rust"]),
                json!(["rust", "Go"]),
                json!(["python", "RUST"]),
                json!([]),
            ]
        },
        probes: || strings(&["rust", "go", "py", "st", "^R", "o$"]),
    },
    Attr {
        name: "level",
        ty: "number",
        values: || vec![json!(1), json!(2.5), json!(3), json!(10)],
        probes: || vec![json!(1), json!(2.5), json!("3"), json!(5)],
    },
    Attr {
        name: "start_date",
        ty: "date",
        values: || strings(&["2026-01-31", "2026-01-31T12:00:00Z", "2025-06-01"]),
        probes: || strings(&["2026-01-31", "2026-01-31T12:00:00Z", "2025-12-31"]),
    },
];

const DEVICE_ATTRS: &[Attr] = &[
    Attr {
        name: "os_family",
        ty: "string",
        values: || strings(&["macos", "windows", "linux"]),
        probes: || strings(&["macos", "MacOS", "win", "ux", "^(mac|lin)"]),
    },
    Attr {
        name: "os_version",
        ty: "string",
        values: || strings(&["15.1", "14.0", "10"]),
        probes: || strings(&["15.1", "1", ".0", "^1[45]"]),
    },
    Attr {
        name: "disk_encryption",
        ty: "boolean",
        values: || vec![json!(true), json!(false)],
        probes: || vec![json!(true), json!(false), json!("true")],
    },
    Attr {
        name: "purchased",
        ty: "date",
        values: || strings(&["2026-01-31T00:00:00Z", "2026-03-01T08:00:00Z"]),
        probes: || strings(&["2026-01-31", "2026-02-15T00:00:00Z"]),
    },
];

/// The custom attributes among them: (name, subject, type).
const CUSTOM: &[(&str, &str, &str)] = &[
    ("skills", "user", "string_list"),
    ("level", "user", "number"),
    ("start_date", "user", "date"),
    ("purchased", "device", "date"),
];

fn attrs(kind: Kind) -> &'static [Attr] {
    match kind {
        Kind::User => USER_ATTRS,
        Kind::Device => DEVICE_ATTRS,
    }
}

fn other(kind: Kind) -> Kind {
    match kind {
        Kind::User => Kind::Device,
        Kind::Device => Kind::User,
    }
}

/// Random attributes for a new or changed subject; some left missing.
fn attributes(rng: &mut Rng, kind: Kind) -> Value {
    let mut out = json!({});
    for a in attrs(kind) {
        if a.name == "os_family" || !rng.chance(4) {
            let v = rng.pick(&(a.values)());
            if CUSTOM
                .iter()
                .any(|(n, k, _)| *n == a.name && *k == kind.name())
            {
                out["custom_attributes"][a.name] = v;
            } else {
                out[a.name] = v;
            }
        } else if CUSTOM.iter().any(|(n, _, _)| *n == a.name) {
            out["custom_attributes"][a.name] = Value::Null;
        } else {
            out[a.name] = Value::Null;
        }
    }
    out
}

/// The groups made so far in a case: (id, name, kind).
type Made = Vec<(String, String, Kind)>;

fn attribute_condition(rng: &mut Rng, kind: Kind) -> Value {
    let a = &attrs(kind)[rng.below(attrs(kind).len())];
    let ops: Vec<&str> = match a.ty {
        "string" | "string_list" => {
            "equals in not_equals not_in starts_with ends_with contains \
             not_contains matches exists not_exists"
        }
        "number" | "date" => "equals not_equals less_than greater_than exists not_exists",
        _ => "equals not_equals exists not_exists",
    }
    .split_whitespace()
    .collect();
    let op = rng.pick(&ops);
    let mut c = json!({"attribute": a.name, "operator": op});
    if !op.ends_with("exists") {
        let probes = (a.probes)();
        // Patterns only where they are patterns; plain text elsewhere.
        let fits = |p: &Value| {
            let s = p.as_str().unwrap_or("");
            let pattern = s.contains(['^', '$', '(', '.', '[']);
            a.ty == "number" || a.ty == "boolean" || a.ty == "date" || pattern == (op == "matches")
        };
        let probes: Vec<Value> = probes.into_iter().filter(fits).collect();
        let n = if op.ends_with("_than") {
            1
        } else {
            1 + rng.below(2)
        };
        c["values"] = Value::Array((0..n).map(|_| rng.pick(&probes)).collect());
        if a.ty.starts_with("string") && rng.chance(3) {
            c["ignore_case"] = json!(true);
        }
    }
    c
}

fn text_attr(rng: &mut Rng, kind: Kind) -> (String, Vec<String>) {
    let a = match kind {
        Kind::User => rng.pick(&["department", "location"]),
        Kind::Device => rng.pick(&["os_family", "os_version"]),
    };
    let values = USER_ATTRS
        .iter()
        .chain(DEVICE_ATTRS)
        .find(|x| x.name == a)
        .map(|x| (x.values)())
        .unwrap_or_default();
    let values = values
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    (a.to_string(), values)
}

/// A random expression of the subset, about `kind` (`Var::Each` reads the
/// related subject inside a macro). Inside a related condition (`nested`)
/// an expression sees the related subject's attributes only.
fn expression(rng: &mut Rng, kind: Kind, made: &Made, depth: usize, var: Var, nested: bool) -> Cel {
    let atom_kind = if var == Var::Each { other(kind) } else { kind };
    let choice = match (depth, nested) {
        (0, _) => rng.below(5),
        (_, true) => rng.below(8),
        _ => rng.below(11),
    };
    let (attr, values) = text_attr(rng, atom_kind);
    let value = rng.pick(&values);
    match choice {
        0 => Cel::Eq(var, attr, value),
        1 => Cel::Ne(var, attr, value),
        2 => Cel::In(var, attr, vec![value, rng.pick(&values)]),
        3 => Cel::StartsWith(var, attr, value.chars().take(2).collect()),
        4 => Cel::Has(var, attr),
        5 => Cel::and(
            expression(rng, kind, made, depth - 1, var, nested),
            expression(rng, kind, made, depth - 1, var, nested),
        ),
        6 => Cel::or(
            expression(rng, kind, made, depth - 1, var, nested),
            expression(rng, kind, made, depth - 1, var, nested),
        ),
        7 => Cel::negate(expression(rng, kind, made, depth - 1, var, nested)),
        8 if var == Var::Subject => Cel::exists(expression(rng, kind, made, 0, Var::Each, false)),
        9 if var == Var::Subject => Cel::all(expression(rng, kind, made, 0, Var::Each, false)),
        10 if var == Var::Subject => {
            let same: Vec<&(String, String, Kind)> = made.iter().filter(|g| g.2 == kind).collect();
            if same.is_empty() {
                Cel::AnyRelated
            } else {
                Cel::InGroup(rng.pick(&same).1.clone())
            }
        }
        _ => Cel::AnyRelated,
    }
}

fn condition(rng: &mut Rng, kind: Kind, made: &Made, cel: &mut Expressions, nested: bool) -> Value {
    let same: Vec<&(String, String, Kind)> = made.iter().filter(|g| g.2 == kind).collect();
    match rng.below(10) {
        0 | 1 if !same.is_empty() => {
            let key = rng.pick(&["member_of", "not_member_of"]);
            json!({ key: rng.pick(&same).0.clone() })
        }
        2 if !nested => {
            let key = match kind {
                Kind::User => "devices",
                Kind::Device => "users",
            };
            let inner = (0..1 + rng.below(2))
                .map(|_| condition(rng, other(kind), made, cel, true))
                .collect::<Vec<_>>();
            json!({ key: {"quantifier": rng.pick(&["any", "all", "none"]), "conditions": inner} })
        }
        3 => {
            let e = expression(rng, kind, made, 2, Var::Subject, nested);
            json!({"expression": cel.add(kind, e)})
        }
        _ => attribute_condition(rng, kind),
    }
}

fn rule(rng: &mut Rng, kind: Kind, made: &Made, cel: &mut Expressions) -> Value {
    // Mostly one condition per block, so that rules match often enough.
    let mut conditions = |rng: &mut Rng| -> Vec<Value> {
        (0..1 + usize::from(rng.chance(3)))
            .map(|_| condition(rng, kind, made, cel, false))
            .collect()
    };
    let mut r = if rng.chance(3) {
        let blocks: Vec<Value> = (0..2 + rng.below(2))
            .map(|_| json!({"conditions": conditions(rng)}))
            .collect();
        json!({ "any": blocks })
    } else {
        json!({"conditions": conditions(rng)})
    };
    if rng.chance(5) {
        let e = expression(rng, kind, made, 1, Var::Subject, false);
        r["expression"] = json!(cel.add(kind, e));
    }
    r
}

/// Deletes what an earlier (perhaps failed) case left.
async fn clean(api: &Api) {
    for _ in 0..10 {
        let groups = api.get("/api/v1/groups?limit=500").await.expect(200).body;
        let mine: Vec<String> = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["built_in"] != true)
            .map(|g| g["id"].as_str().unwrap().to_string())
            .collect();
        if mine.is_empty() {
            break;
        }
        // Referenced groups refuse (409) until those referring to them go.
        for g in mine.iter().rev() {
            api.delete(&format!("/api/v1/groups/{g}")).await;
        }
    }
    for (list, path) in [("users", "/api/v1/users"), ("devices", "/api/v1/devices")] {
        let items = api.get(&format!("{path}?limit=500")).await.expect(200).body;
        for s in items["items"].as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            api.delete(&format!("{path}/{id}")).await.expect(204);
        }
        let left = api.get(path).await.expect(200).body;
        assert_eq!(left["items"], json!([]), "{list} left over");
    }
}

/// How often the generated groups' rules put a subject in, and left one
/// out: both must happen, or the cases test nothing.
#[derive(Default, Clone, Copy)]
struct Tally {
    in_by_rule: usize,
    out: usize,
}

async fn case(
    api: &Api,
    tally: &Cell<Tally>,
    (seed, users, devices, groups): (u64, usize, usize, usize),
) -> Vec<String> {
    clean(api).await;
    let mut rng = Rng::new(seed);
    let mut cel = Expressions::default();
    let mut manual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut user_ids = Vec::new();
    for i in 0..users {
        let mut body = attributes(&mut rng, Kind::User);
        let state = rng.pick(&["active", "active", "suspended", "staged"]);
        body["state"] = json!(if state == "staged" {
            "staged"
        } else {
            "active"
        });
        let id = api.user(&format!("u{i}"), body).await;
        if state == "suspended" {
            api.post(
                &format!("/api/v1/users/{id}/state"),
                json!({"state": state}),
            )
            .await
            .expect(200);
        }
        user_ids.push(id);
    }
    let mut device_ids = Vec::new();
    for i in 0..devices {
        let body = attributes(&mut rng, Kind::Device);
        let os = body["os_family"].as_str().unwrap().to_string();
        device_ids.push(api.device(&format!("d{i}"), &os, body).await);
    }
    for _ in 0..(users + devices) {
        if !user_ids.is_empty() && !device_ids.is_empty() && rng.chance(2) {
            let (u, d) = (rng.pick(&user_ids), rng.pick(&device_ids));
            let r = api.put(&format!("/api/v1/users/{u}/devices/{d}")).await;
            assert!(r.status.is_success(), "{}", r.body);
        }
    }
    let mut made: Made = Vec::new();
    for i in 0..groups {
        let kind = rng.pick(&[Kind::User, Kind::Device]);
        let name = format!("g{i}");
        let subjects = match kind {
            Kind::User => &user_ids,
            Kind::Device => &device_ids,
        };
        let mut body = json!({"name": name, "subject": kind.name(), "type": "dynamic",
                              "rule": rule(&mut rng, kind, &made, &mut cel)});
        let by_hand = rng.chance(6) && !subjects.is_empty();
        if by_hand {
            body = json!({"name": name, "subject": kind.name(), "type": "static"});
        }
        if rng.chance(3) {
            body["exclusion"] = rule(&mut rng, kind, &made, &mut cel);
        }
        if kind == Kind::User && rng.chance(2) {
            let states: Vec<&str> = ["active", "suspended", "staged"]
                .into_iter()
                .filter(|_| rng.chance(2))
                .collect();
            if !states.is_empty() {
                body["member_states"] = json!(states);
            }
        }
        if !by_hand && rng.chance(6) {
            body["review"] = json!(true);
        }
        if by_hand {
            body.as_object_mut().unwrap().remove("exclusion");
        }
        let r = api.post("/api/v1/groups", body.clone()).await;
        assert_eq!(r.status.as_u16(), 201, "{body}: {}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        if by_hand {
            let s = rng.pick(subjects);
            api.post(
                &format!("/api/v1/groups/{id}/members"),
                json!({"subject_id": s}),
            )
            .await;
            manual.entry(id.clone()).or_default().insert(s);
            if rng.chance(2) {
                // Turned dynamic, the hand-added members stay.
                let patch =
                    json!({"type": "dynamic", "rule": rule(&mut rng, kind, &made, &mut cel)});
                let r = api
                    .patch(&format!("/api/v1/groups/{id}"), patch.clone())
                    .await;
                assert_eq!(r.status.as_u16(), 200, "{patch}: {}", r.body);
            }
        } else {
            for _ in 0..rng.below(3) {
                if subjects.is_empty() {
                    break;
                }
                let e = json!({"subject_id": rng.pick(subjects), "kind": rng.pick(&["always", "never"])});
                api.post(&format!("/api/v1/groups/{id}/exemptions"), e)
                    .await
                    .expect(200);
            }
        }
        made.push((id, name, kind));
    }
    let (decided, diff) = oracle::compare(api, &cel, &manual).await;
    if !diff.is_empty() {
        return diff;
    }
    let mut t = tally.get();
    for (id, _, kind) in &made {
        let members = &decided.members[id];
        t.in_by_rule += members.values().filter(|s| **s == "rule").count();
        t.out += match kind {
            Kind::User => users,
            Kind::Device => devices,
        } - members.len();
    }
    tally.set(t);
    // A few changes afterwards, each decided incrementally.
    for _ in 0..3 {
        if user_ids.is_empty() {
            break;
        }
        let u = rng.pick(&user_ids);
        let body = attributes(&mut rng, Kind::User);
        api.patch(&format!("/api/v1/users/{u}"), body)
            .await
            .expect(200);
        let diff = oracle::differences(api, &cel, &manual).await;
        if !diff.is_empty() {
            return diff;
        }
    }
    Vec::new()
}

#[test]
fn random_rules_over_random_directories_match_the_reference() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = Server::start_with_plugins(&[]);
    let api = server.admin();
    rt.block_on(async {
        for (name, subject, ty) in CUSTOM {
            api.post(
                "/api/v1/attributes",
                json!({"name": name, "subject": subject, "type": ty}),
            )
            .await
            .expect(201);
        }
    });
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let sizes = (any::<u64>(), 0..8usize, 0..6usize, 1..7usize);
    let tally = Cell::new(Tally::default());
    // `COHORT_ORACLE_CASE=seed,users,devices,groups` replays one case.
    if let Ok(case_text) = std::env::var("COHORT_ORACLE_CASE") {
        let n: Vec<u64> = case_text
            .split(',')
            .map(|x| x.trim().parse().unwrap())
            .collect();
        let sizes = (n[0], n[1] as usize, n[2] as usize, n[3] as usize);
        let diff = rt.block_on(case(&api, &tally, sizes));
        assert!(diff.is_empty(), "{}", diff.join("\n"));
        return;
    }
    let result = runner.run(&sizes, |sizes| {
        let diff = rt.block_on(case(&api, &tally, sizes));
        if diff.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(diff.join("\n")))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = tally.get();
    assert!(
        t.in_by_rule > 20 && t.out > 20,
        "the random rules decided too little: {} members by rule, {} left out",
        t.in_by_rule,
        t.out
    );
    println!(
        "{} memberships by rule, {} subjects left out",
        t.in_by_rule, t.out
    );
}
