//! CEL's official conformance suite, run through Cohort's CEL module.
//!
//! The cases come from npm `@bufbuild/cel-spec` (installed into
//! `tests/npm` by `npm ci --prefix tests/npm`), exported by
//! `tests/npm/cel-conformance.js` for the sections that apply to Cohort's
//! rules. Every case is evaluated through the same parser, limits, metering
//! and runtime as rules. A case without variables is also put through
//! Cohort's checker, which must not refuse a valid expression.
//!
//! A case that fails must be listed, with its reason, in
//! `tests/cel-conformance-known-failures.txt`, under the reason that
//! explains it; a listed case that passes fails the test too, so the list
//! stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use cohort::expression::plain::{Plain, PlainError, evaluate};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases() -> Vec<Value> {
    let npm = root().join("tests/npm");
    assert!(
        npm.join("node_modules/@bufbuild/cel-spec").exists(),
        "the CEL conformance data is not installed: run `npm ci --prefix tests/npm`"
    );
    let out = Command::new("node")
        .arg("cel-conformance.js")
        .current_dir(&npm)
        .output()
        .expect("running node (needed for the CEL conformance data)");
    assert!(
        out.status.success(),
        "exporting the suite failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the exporter prints JSON")
}

/// Each case under the `# reason` line that explains it, so that a reason
/// shared by many cases is written once.
fn known_failures() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("tests/cel-conformance-known-failures.txt"))
        .expect("tests/cel-conformance-known-failures.txt");
    let mut reason: Option<String> = None;
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if let Some(r) = line.strip_prefix('#') {
            assert!(!r.trim().is_empty(), "an empty reason");
            reason = Some(r.trim().to_string());
            continue;
        }
        let r = reason
            .clone()
            .unwrap_or_else(|| panic!("{line} is listed before any `# reason` line"));
        assert!(
            out.insert(line.to_string(), r).is_none(),
            "{line} is listed twice"
        );
    }
    out
}

/// A protobuf-JSON `cel.expr.Value` as a plain value.
fn decode(v: &Value) -> Result<Plain, String> {
    let obj = v.as_object().ok_or("not an object")?;
    let (kind, x) = obj.iter().next().ok_or("empty value")?;
    Ok(match kind.as_str() {
        "nullValue" => Plain::Null,
        "boolValue" => Plain::Bool(x.as_bool().ok_or("bool")?),
        "int64Value" => Plain::Int(number(x)?),
        "uint64Value" => Plain::Uint(number(x)?),
        "doubleValue" => Plain::Double(match x {
            Value::String(s) if s == "NaN" => f64::NAN,
            Value::String(s) if s == "Infinity" => f64::INFINITY,
            Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
            other => other.as_f64().ok_or("double")?,
        }),
        "stringValue" => Plain::String(x.as_str().ok_or("string")?.to_string()),
        "bytesValue" => Plain::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(x.as_str().ok_or("bytes")?)
                .map_err(|e| e.to_string())?,
        ),
        "listValue" => Plain::List(
            x.get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(decode).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default(),
        ),
        "mapValue" => Plain::Map(
            x.get("entries")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|e| Ok((decode(&e["key"])?, decode(&e["value"])?)))
                        .collect::<Result<Vec<_>, String>>()
                })
                .transpose()?
                .unwrap_or_default(),
        ),
        "objectValue" => match x["@type"].as_str() {
            Some("type.googleapis.com/google.protobuf.Duration") => {
                Plain::Duration(duration(x["value"].as_str().ok_or("duration")?)?)
            }
            Some("type.googleapis.com/google.protobuf.Timestamp") => Plain::Timestamp(
                chrono::DateTime::parse_from_rfc3339(x["value"].as_str().ok_or("timestamp")?)
                    .map_err(|e| e.to_string())?,
            ),
            other => return Err(format!("protobuf message {other:?}")),
        },
        "typeValue" => Plain::Other(format!("type {}", x.as_str().unwrap_or_default())),
        other => return Err(format!("value kind {other}")),
    })
}

fn number<T: std::str::FromStr>(x: &Value) -> Result<T, String> {
    match x {
        Value::String(s) => s.parse().map_err(|_| format!("number {s}")),
        other => other
            .to_string()
            .parse()
            .map_err(|_| format!("number {other}")),
    }
}

/// `"123.321456789s"`
fn duration(s: &str) -> Result<chrono::Duration, String> {
    let secs: f64 = s
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("duration {s}"))?;
    let nanos = (secs * 1e9).round() as i64;
    Ok(chrono::Duration::nanoseconds(nanos))
}

fn same(a: &Plain, b: &Plain) -> bool {
    match (a, b) {
        (Plain::Double(x), Plain::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Plain::List(x), Plain::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Plain::Map(x), Plain::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| same(k, k2) && same(v, v2)))
        }
        _ => a == b,
    }
}

/// `Ok(())` when the case passes, else why not.
fn run(case: &Value) -> Result<(), String> {
    let expr = case["expr"].as_str().ok_or("no expr")?;
    if !case["container"].as_str().unwrap_or_default().is_empty() {
        return Err("needs a protobuf container".into());
    }
    let mut variables = Vec::new();
    for (name, b) in case["bindings"].as_object().into_iter().flatten() {
        let v = decode(&b["value"]).map_err(|e| format!("binding {name}: {e}"))?;
        variables.push((name.clone(), v));
    }
    let expect_error = case["error"].as_bool().unwrap_or(false);
    let check = variables.is_empty()
        && !case["typeEnv"].as_bool().unwrap_or(false)
        && !case["disableCheck"].as_bool().unwrap_or(false);
    let got = evaluate(expr, &variables, check);
    match (expect_error, got) {
        (true, Err(_)) => Ok(()),
        (true, Ok(v)) => Err(format!("expected an error, got {v:?}")),
        (false, Err(PlainError::Check(p))) => Err(format!(
            "the checker refused a valid expression: {}",
            p.first().map(|p| p.message.clone()).unwrap_or_default()
        )),
        (false, Err(e)) => Err(format!("{e:?}")),
        (false, Ok(v)) => {
            let want = decode(&case["value"]).map_err(|e| format!("expected value: {e}"))?;
            if same(&v, &want) {
                Ok(())
            } else {
                Err(format!("got {v:?}, expected {want:?}"))
            }
        }
    }
}

#[test]
fn cel_conformance() {
    let cases = cases();
    assert!(
        cases.len() > 500,
        "the suite looks truncated: {}",
        cases.len()
    );
    let known = known_failures();
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stale = Vec::new();
    for case in &cases {
        let path = case["path"].as_str().unwrap_or_default().to_string();
        let section = case["section"].as_str().unwrap_or_default().to_string();
        seen.insert(path.clone());
        let entry = counts.entry(section).or_default();
        match run(case) {
            Ok(()) => {
                entry.0 += 1;
                if known.contains_key(&path) {
                    stale.push(path);
                }
            }
            Err(why) => {
                entry.1 += 1;
                if !known.contains_key(&path) {
                    unexpected.push(format!(
                        "{path}  # {why}  [{}]",
                        case["expr"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
    }
    println!("section        pass  fail");
    for (section, (pass, fail)) in &counts {
        println!("{section:<14} {pass:>4}  {fail:>4}");
    }
    let missing: Vec<&String> = known.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        unexpected.is_empty(),
        "{} cases failed that are not known failures:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        stale.is_empty(),
        "these known failures pass now; remove them from the list:\n{}",
        stale.join("\n")
    );
    assert!(
        missing.is_empty(),
        "these known failures are not in the suite: {missing:?}"
    );
}
