//! Unit tests of the engine: operators and their edge cases, problems
//! placed by position, and the anchor index checked against testing every
//! rule on random rules and subjects chosen to be awkward (case folding,
//! non-ASCII, empty affixes).

use super::fixtures::{Rng, schema};
use super::index::{AnchorKind, Candidates};
use super::*;
use cohort_sdk::rules::{BatchBuilder, EvaluateOptions, Input, Matches};

fn run(rule: &str, subjects: &[&[(&str, Input<'_>)]]) -> Vec<bool> {
    let set = RuleSet::compile(
        SubjectKind::User,
        &schema(),
        &[RuleSource { text: rule.into() }],
    )
    .unwrap_or_else(|p| panic!("{p:?}"));
    let mut b = BatchBuilder::new(SubjectKind::User);
    for s in subjects {
        b.push(s);
    }
    let batch = b.build();
    let view = BatchView::new(&batch).unwrap();
    let e = set.evaluate(
        &view,
        &EvaluateOptions {
            now_millis: 1_000 * 86_400_000,
            explain: false,
        },
    );
    let m = Matches::from_evaluation(&e);
    (0..subjects.len()).map(|i| m.get(0, i)).collect()
}

fn problems(rule: &str) -> Vec<RuleProblem> {
    RuleSet::compile(
        SubjectKind::User,
        &schema(),
        &[RuleSource { text: rule.into() }],
    )
    .unwrap_err()
}

#[test]
fn missing_attributes_satisfy_nothing_but_not_exists() {
    let r =
        r#"{"conditions":[{"attribute":"cost_center","operator":"not_equals","values":["A"]}]}"#;
    assert_eq!(
        run(r, &[&[("cost_center", Input::Text("B"))], &[]]),
        [true, false]
    );
    let r = r#"{"conditions":[{"attribute":"cost_center","operator":"not_exists"}]}"#;
    assert_eq!(
        run(r, &[&[("cost_center", Input::Text("B"))], &[]]),
        [false, true]
    );
}

#[test]
fn lists_any_for_positive_none_for_negative() {
    let rust: &[&str] = &["go", "rust"];
    let go: &[&str] = &["go"];
    let pos = r#"{"conditions":[{"attribute":"skills","operator":"equals","values":["rust"]}]}"#;
    let neg =
        r#"{"conditions":[{"attribute":"skills","operator":"not_equals","values":["rust"]}]}"#;
    let subjects: &[&[(&str, Input<'_>)]] = &[
        &[("skills", Input::List(rust))],
        &[("skills", Input::List(go))],
    ];
    assert_eq!(run(pos, subjects), [true, false]);
    assert_eq!(run(neg, subjects), [false, true]);
}

#[test]
fn case_is_sensitive_unless_asked() {
    let s: &[&[(&str, Input<'_>)]] = &[&[("email", Input::Text("Ada@Example.COM"))]];
    let r = |ic: bool| {
        format!(
            r#"{{"conditions":[{{"attribute":"email","operator":"ends_with","values":["@example.com"],"ignore_case":{ic}}}]}}"#
        )
    };
    assert_eq!(run(&r(false), s), [false]);
    assert_eq!(run(&r(true), s), [true]);
    // Regex classes keep their meaning with ignore_case.
    let re = r#"{"conditions":[{"attribute":"department","operator":"matches","values":["^\\D+$"],"ignore_case":true}]}"#;
    assert_eq!(
        run(
            re,
            &[
                &[("department", Input::Text("Sales"))],
                &[("department", Input::Text("42"))]
            ]
        ),
        [true, false]
    );
}

#[test]
fn relative_and_absolute_dates() {
    let day = 86_400_000i64;
    let r = r#"{"conditions":[{"attribute":"start_date","operator":"less_than","values":["now-30d"]}]}"#;
    assert_eq!(
        run(
            r,
            &[
                &[("start_date", Input::Timestamp(900 * day))],
                &[("start_date", Input::Timestamp(990 * day))]
            ]
        ),
        [true, false]
    );
    assert_eq!(parse_absolute("1970-01-02"), Some(day));
    assert_eq!(parse_absolute("2024-02-29"), Some(19_782 * day));
    assert_eq!(parse_absolute("2026-02-31"), None);
    assert_eq!(parse_absolute("1970-01-01T00:00:01Z"), Some(1_000));
}

#[test]
fn bad_rules_are_reported_with_their_position_and_never_panic() {
    let p =
        problems(r#"{"conditions":[{"attribute":"level","operator":"contains","values":["1"]}]}"#);
    assert_eq!(p[0].at, "/conditions/0/operator");
    for value in ["now-5é", "now--5d", "now-d", "2026-13-01", "yesterday"] {
        let rule = format!(
            r#"{{"any":[{{"conditions":[{{"attribute":"start_date","operator":"greater_than","values":["{value}"]}}]}}]}}"#
        );
        let p = problems(&rule);
        assert_eq!(p[0].at, "/any/0/conditions/0/values/0", "{value}");
    }
    let p = problems(
        r#"{"conditions":[{"attribute":"department","operator":"matches","values":["("]}]}"#,
    );
    assert!(p[0].message.contains("invalid regular expression"));
    assert_eq!(problems("[]")[0].at, "");
    assert_eq!(problems(r#"{"conditions":[]}"#)[0].at, "/conditions");
}

/// The non-explain options the tests evaluate with.
const OPTIONS: EvaluateOptions = EvaluateOptions {
    now_millis: 1_000 * 86_400_000,
    explain: false,
};

fn compile(rules: &[String]) -> RuleSet {
    let sources: Vec<RuleSource> = rules
        .iter()
        .map(|text| RuleSource { text: text.clone() })
        .collect();
    RuleSet::compile(SubjectKind::User, &schema(), &sources).unwrap_or_else(|p| panic!("{p:?}"))
}

/// Texts whose case-insensitive comparisons are easy to get wrong: case
/// variants, non-ASCII letters, the Kelvin sign (lowercases to ASCII
/// `k`), dotted capital I (lowercases to two chars), Greek final sigma,
/// sharp s, and the empty string.
const WORDS: &[&str] = &[
    "Engineering",
    "engineering",
    "ENGINEERING",
    "Sales",
    "sales",
    "Ärger",
    "ärger",
    "ÄRGER",
    "\u{212A}",
    "k",
    "K",
    "İ",
    "i\u{307}",
    "i",
    "ΣΑΣ",
    "σας",
    "σασ",
    "straße",
    "STRASSE",
    "ẞ",
    "",
    "x",
];

/// Prefixes and suffixes of [`WORDS`] (and of their lowercase and
/// uppercase), including pieces that end inside a character of a word's
/// lowercase (`"i"` of `"İ"`, whose lowercase is `"i\u{307}"`) and the
/// empty string, which every value starts and ends with.
const AFFIXES: &[&str] = &[
    "", "Eng", "eng", "ENG", "ering", "ING", "Sa", "les", "LES", "Är", "är", "ÄR", "ger", "GER",
    "\u{212A}", "k", "K", "i", "I", "\u{307}", "İ", "Σ", "σ", "ς", "ΑΣ", "ας", "str", "STR", "ße",
    "SSE", "sse", "ẞ", "ss", "@", "x",
];

/// Condition values: words, or with `affixes` also [`AFFIXES`].
fn random_values(rng: &mut Rng, affixes: bool) -> Vec<serde_json::Value> {
    // More than 8 distinct values use the condition's hash set.
    let n = if rng.chance(20) {
        9 + rng.below(8)
    } else {
        1 + rng.below(3)
    };
    (0..n)
        .map(|_| {
            if affixes && rng.chance(60) {
                rng.pick(AFFIXES).into()
            } else {
                rng.pick(WORDS).into()
            }
        })
        .collect()
}

/// A subject's text value: a word, or sometimes two words or affixes
/// joined, so that prefixes and suffixes have something to match.
fn random_text(rng: &mut Rng) -> String {
    if rng.chance(70) {
        rng.pick(WORDS).to_owned()
    } else {
        let piece = |rng: &mut Rng| {
            let pieces = if rng.chance(50) { WORDS } else { AFFIXES };
            rng.pick(pieces)
        };
        let (a, b) = (piece(rng), piece(rng));
        let join = rng.pick(&["", "", " ", "@"]);
        format!("{a}{join}{b}")
    }
}

fn random_condition(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    let ignore_case = rng.chance(40);
    match rng.below(12) {
        0..=6 => {
            let attribute = rng.pick(&["department", "cost_center", "skills", "email"]);
            let operator = rng.pick(&[
                "equals",
                "in",
                "equals",
                "in",
                "not_equals",
                "not_in",
                "starts_with",
                "ends_with",
                "contains",
                "not_contains",
            ]);
            json!({"attribute": attribute, "operator": operator,
                   "values": random_values(rng, false), "ignore_case": ignore_case})
        }
        7..=8 => {
            let attribute = rng.pick(&["department", "cost_center", "skills", "email"]);
            let operator = rng.pick(&["starts_with", "ends_with"]);
            json!({"attribute": attribute, "operator": operator,
                   "values": random_values(rng, true), "ignore_case": ignore_case})
        }
        9 => {
            let attribute = rng.pick(&["department", "skills", "level", "location"]);
            let operator = rng.pick(&["exists", "not_exists"]);
            json!({"attribute": attribute, "operator": operator})
        }
        10 => {
            let pattern = rng.pick(&["^s", "ärger", "E", "\\D", "^$"]);
            json!({"attribute": "department", "operator": "matches",
                   "values": [pattern], "ignore_case": ignore_case})
        }
        _ => {
            let operator = rng.pick(&["equals", "in", "not_equals", "less_than", "greater_than"]);
            json!({"attribute": "level", "operator": operator, "values": [rng.below(5)]})
        }
    }
}

fn random_rule(rng: &mut Rng) -> String {
    let block = |rng: &mut Rng| -> Vec<serde_json::Value> {
        (0..1 + rng.below(3))
            .map(|_| random_condition(rng))
            .collect()
    };
    let rule = if rng.chance(50) {
        serde_json::json!({"conditions": block(rng)})
    } else {
        let blocks: Vec<_> = (0..1 + rng.below(3))
            .map(|_| serde_json::json!({"conditions": block(rng)}))
            .collect();
        serde_json::json!({"any": blocks})
    };
    rule.to_string()
}

/// A batch of random subjects. Attributes are often missing, lists are
/// sometimes empty, and `department` is sometimes not text at all, as a
/// faulty host might send.
fn random_batch(rng: &mut Rng) -> cohort_sdk::rules::SubjectBatch {
    let mut b = BatchBuilder::new(SubjectKind::User);
    for _ in 0..rng.below(80) {
        let skills: Vec<String> = (0..rng.below(4)).map(|_| random_text(rng)).collect();
        let skills: Vec<&str> = skills.iter().map(String::as_str).collect();
        let mut texts: Vec<(&str, String)> = Vec::new();
        for attribute in ["department", "cost_center", "email"] {
            if rng.chance(70) {
                texts.push((attribute, random_text(rng)));
            }
        }
        let mut row: Vec<(&str, Input<'_>)> = texts
            .iter()
            .map(|(attribute, text)| (*attribute, Input::Text(text)))
            .collect();
        if rng.chance(5) {
            row.push(("department", Input::Number(1.0)));
        }
        if rng.chance(70) {
            row.push(("skills", Input::List(&skills)));
        }
        if rng.chance(70) {
            row.push(("level", Input::Number(rng.below(5) as f64)));
        }
        b.push(&row);
    }
    b.build()
}

#[test]
fn indexed_evaluation_equals_testing_every_rule() {
    let mut rng = Rng(7);
    let (mut anchored, mut unanchored, mut matched) = (0, 0, 0);
    // Rules with a starts_with / ends_with anchor, and their matches.
    let (mut affix_anchored, mut affix_matched) = (0, 0);
    for round in 0..400 {
        let rules: Vec<String> = (0..1 + rng.below(40))
            .map(|_| random_rule(&mut rng))
            .collect();
        let set = compile(&rules);
        unanchored += set.index.unanchored.len();
        anchored += set.len() - set.index.unanchored.len();
        let batch = random_batch(&mut rng);
        let view = BatchView::new(&batch).unwrap();
        let indexed = set.evaluate(&view, &OPTIONS);
        let every = set.evaluate_every_rule(&view, &OPTIONS);
        assert_eq!(
            indexed.words_per_rule, every.words_per_rule,
            "round {round}"
        );
        assert_eq!(indexed.matches, every.matches, "round {round}: {rules:#?}");
        if round % 4 == 0 {
            // Explaining tests every condition and finds the same matches.
            let explain = EvaluateOptions {
                explain: true,
                ..OPTIONS
            };
            let explained = set.evaluate(&view, &explain);
            assert_eq!(explained.matches, every.matches, "round {round}");
            let conditions: usize = set.rules.iter().flat_map(|r| &r.blocks).map(Vec::len).sum();
            assert_eq!(explained.explanations.len(), conditions * view.len());
        }
        matched += every.matches.iter().map(|w| w.count_ones()).sum::<u32>();
        let m = Matches::from_evaluation(&every);
        for (r, rule) in set.rules.iter().enumerate() {
            let affix = rule
                .anchors()
                .is_some_and(|a| a.iter().any(|(_, kind)| *kind != AnchorKind::Exact));
            if affix {
                affix_anchored += 1;
                affix_matched += (0..view.len()).filter(|&s| m.get(r, s)).count();
            }
        }
    }
    // The generator must exercise both paths and produce matches.
    assert!(
        anchored > 1_000 && unanchored > 1_000 && affix_anchored > 1_000,
        "{anchored} {unanchored} {affix_anchored}"
    );
    assert!(
        matched > 10_000 && affix_matched > 5_000,
        "{matched} {affix_matched}"
    );
}

#[test]
fn each_block_is_anchored_by_its_narrowest_equals_or_in() {
    let set = compile(&[
        // Anchored by department (one value rather than two).
        r#"{"conditions":[
            {"attribute":"skills","operator":"in","values":["go","rust"]},
            {"attribute":"department","operator":"equals","values":["Sales"],"ignore_case":true}]}"#
            .into(),
        // A block without an anchor (not_equals is none): unanchored.
        r#"{"any":[
            {"conditions":[{"attribute":"department","operator":"equals","values":["Sales"]}]},
            {"conditions":[{"attribute":"department","operator":"not_equals","values":["Sales"]}]}]}"#
            .into(),
        // Numbers are not indexed.
        r#"{"conditions":[{"attribute":"level","operator":"equals","values":[3]}]}"#.into(),
    ]);
    assert_eq!(set.index.unanchored, [1, 2]);
    assert_eq!(set.index.groups.len(), 1);
    let group = &set.index.groups[0];
    assert_eq!(
        (group.attribute.as_str(), group.ignore_case),
        ("department", true)
    );
    assert_eq!(offered(&set, "department", "SALES"), [0]);
}

/// The rules the anchor index offers for one text value of `attribute`,
/// ascending.
fn offered(set: &RuleSet, attribute: &str, value: &str) -> Vec<usize> {
    let mut candidates = Candidates::new(set.len());
    candidates.clear();
    for group in set.index.groups.iter().filter(|g| g.attribute == attribute) {
        group.offer(value, &mut String::new(), &mut candidates);
    }
    let mut rules = candidates.rules().to_vec();
    rules.sort_unstable();
    rules
}

#[test]
fn starts_with_and_ends_with_anchor_blocks_without_equals_or_in() {
    let rules: Vec<String> = [
        // 0: a suffix anchor, case-insensitive.
        r#"{"conditions":[{"attribute":"email","operator":"ends_with","values":["@D1.example"],"ignore_case":true}]}"#,
        // 1: a prefix anchor with two prefixes of different lengths.
        r#"{"conditions":[{"attribute":"job_title","operator":"starts_with","values":["Senior","Sr. "]}]}"#,
        // 2: anchored by the equals, not the starts_with.
        r#"{"conditions":[
            {"attribute":"job_title","operator":"starts_with","values":["Lead"]},
            {"attribute":"department","operator":"equals","values":["Sales","Ops"]}]}"#,
        // 3: an empty prefix holds for every value.
        r#"{"conditions":[{"attribute":"job_title","operator":"starts_with","values":[""]}]}"#,
        // 4: contains is no anchor.
        r#"{"conditions":[{"attribute":"job_title","operator":"contains","values":["Senior"]}]}"#,
        // 5: one block anchored by a suffix, the other by an equals.
        r#"{"any":[
            {"conditions":[{"attribute":"skills","operator":"ends_with","values":["script"]}]},
            {"conditions":[{"attribute":"department","operator":"equals","values":["Web"]}]}]}"#,
        // 6: a non-ASCII prefix with ignore_case; the non-empty suffix is
        // preferred to the empty prefix.
        r#"{"conditions":[
            {"attribute":"department","operator":"starts_with","values":[""]},
            {"attribute":"department","operator":"ends_with","values":["ÄRGER"],"ignore_case":true}]}"#,
        // 7: a prefix that ends inside a character of some values.
        r#"{"conditions":[{"attribute":"department","operator":"starts_with","values":["i"],"ignore_case":true}]}"#,
    ]
    .map(String::from)
    .to_vec();
    let set = compile(&rules);
    assert_eq!(set.index.unanchored, [4]);
    assert_eq!(offered(&set, "email", "ada@d1.EXAMPLE"), [0]);
    assert_eq!(offered(&set, "email", "ada@d11.example"), [] as [usize; 0]);
    assert_eq!(offered(&set, "email", "@d1.example"), [0]);
    assert_eq!(offered(&set, "email", "d1.example"), [] as [usize; 0]);
    assert_eq!(offered(&set, "job_title", "Senior Engineer"), [1, 3]);
    assert_eq!(offered(&set, "job_title", "Sr. Engineer"), [1, 3]);
    assert_eq!(offered(&set, "job_title", "senior engineer"), [3]);
    assert_eq!(offered(&set, "job_title", "Lead"), [3]);
    assert_eq!(offered(&set, "job_title", ""), [3]);
    assert_eq!(offered(&set, "department", "Sales"), [2]);
    assert_eq!(offered(&set, "skills", "TypeScript"), [] as [usize; 0]);
    assert_eq!(offered(&set, "skills", "javascript"), [5]);
    assert_eq!(offered(&set, "department", "Web"), [5]);
    assert_eq!(offered(&set, "department", "Großer Ärger"), [6]);
    // "İ" lowercases to "i" and a combining dot: 1 byte is a boundary.
    assert_eq!(offered(&set, "department", "İstanbul"), [7]);
    assert_eq!(offered(&set, "department", "Ärger"), [6]);

    let subjects: [&[(&str, Input<'_>)]; 6] = [
        &[
            ("email", Input::Text("Ada@D1.Example")),
            ("job_title", Input::Text("Senior Engineer")),
        ],
        &[
            ("job_title", Input::Text("Lead Engineer")),
            ("department", Input::Text("Ops")),
        ],
        &[("skills", Input::List(&["Go", "TypeScript"]))],
        &[("skills", Input::List(&["javascript"]))],
        &[("department", Input::Text("İnsan Kaynakları ärger"))],
        &[],
    ];
    let mut b = BatchBuilder::new(SubjectKind::User);
    for s in subjects {
        b.push(s);
    }
    let batch = b.build();
    let view = BatchView::new(&batch).unwrap();
    let indexed = set.evaluate(&view, &OPTIONS);
    assert_eq!(
        indexed.matches,
        set.evaluate_every_rule(&view, &OPTIONS).matches
    );
    let m = Matches::from_evaluation(&indexed);
    let matched = |s: usize| -> Vec<usize> { (0..set.len()).filter(|&r| m.get(r, s)).collect() };
    assert_eq!(matched(0), [0, 1, 3, 4]);
    assert_eq!(matched(1), [2, 3]);
    assert_eq!(matched(2), [] as [usize; 0]);
    assert_eq!(matched(3), [5]);
    assert_eq!(matched(4), [6, 7]);
    assert_eq!(matched(5), [] as [usize; 0]);
}

/// Values whose prefixes and suffixes are awkward to compare without
/// case: besides [`WORDS`], characters whose lowercase is longer or
/// shorter in bytes than they are, or is ASCII.
const AFFIX_WORDS: &[&str] = &[
    "İstanbul",
    "xİ",
    "\u{212A}elvin",
    "ȺȾ",
    "ⱥⱦ",
    "Ǆemal",
    "ǅ",
    "ΣΑΣ ΣΑΣ",
    "ΌΣΟΣ",
    "ẞtraße",
    "ﬀ",
    "ǰ",
    "é",
    "e\u{301}",
    "Ω\u{2126}",
    "@",
];

#[test]
fn affix_anchors_offer_exactly_the_rules_whose_anchor_holds() {
    // Values: the awkward words, alone and in pairs.
    let singles: Vec<String> = WORDS
        .iter()
        .chain(AFFIX_WORDS)
        .map(|w| w.to_string())
        .collect();
    let joins = ["K", "i\u{307}", "Σ", "ǅ", "İ", "ss", "ẞ"];
    let mut values = singles.clone();
    for a in &singles {
        for b in joins {
            values.push(format!("{a}{b}"));
            values.push(format!("{b}{a}"));
        }
    }
    // Operands: every prefix and suffix (on a character boundary) of the
    // words, of their lowercase and of their uppercase.
    let mut operands: Vec<String> = Vec::new();
    for v in singles.iter().cloned().chain(joins.map(String::from)) {
        for v in [v.clone(), v.to_lowercase(), v.to_uppercase()] {
            for (i, _) in v.char_indices().chain([(v.len(), ' ')]) {
                operands.push(v[..i].to_owned());
                operands.push(v[i..].to_owned());
            }
        }
    }
    operands.sort();
    operands.dedup();
    let mut rules = Vec::new();
    for operand in &operands {
        for operator in ["starts_with", "ends_with"] {
            for ignore_case in [false, true] {
                rules.push(
                    serde_json::json!({"conditions": [{"attribute": "department",
                        "operator": operator, "values": [operand],
                        "ignore_case": ignore_case}]})
                    .to_string(),
                );
            }
        }
    }
    let set = compile(&rules);
    assert!(set.index.unanchored.is_empty());
    // The index must offer every rule whose condition holds (missing
    // one would be a wrong result); for these one-value conditions it
    // offers no other rule either.
    let mut holding = 0;
    for value in &values {
        let expected: Vec<usize> = (0..set.len())
            .filter(|&r| set.rules[r].blocks[0][0].test_text(value))
            .collect();
        holding += expected.len();
        assert_eq!(offered(&set, "department", value), expected, "{value:?}");
    }
    assert!(holding > 10_000, "{holding}");
}

#[test]
fn ignore_case_anchors_match_non_ascii_values() {
    let rule = r#"{"conditions":[{"attribute":"department","operator":"equals","values":["Ärger","\u212a"],"ignore_case":true}]}"#;
    let subjects: Vec<[(&str, Input<'_>); 1]> = ["ÄRGER", "ärger", "Arger", "K", "k", "x"]
        .into_iter()
        .map(|d| [("department", Input::Text(d))])
        .collect();
    let subjects: Vec<&[(&str, Input<'_>)]> = subjects.iter().map(|s| &s[..]).collect();
    assert_eq!(run(rule, &subjects), [true, true, false, true, true, false]);
}

#[test]
fn lowercasing_is_idempotent() {
    // With `ignore_case`, `Condition::test_text` lowercases a non-ASCII
    // value and `text_eq` may lowercase it again, while the anchor index
    // lowercases it once. They agree because lowercasing twice is
    // lowercasing once, for every character.
    for c in (0..=char::MAX as u32).filter_map(char::from_u32) {
        let once = c.to_string().to_lowercase();
        assert_eq!(once.to_lowercase(), once, "{c:?}");
    }
}
