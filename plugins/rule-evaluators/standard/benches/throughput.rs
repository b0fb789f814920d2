//! Throughput of the standard evaluator natively: the anchor index against
//! testing every rule against every subject, on rule sets shaped like
//! dynamic-group rules (mostly `equals` / `in`, some prefixes and suffixes,
//! a few unanchored). It checks that both paths agree before it prints their
//! figures, so a fast wrong index cannot pass for an improvement.
//!
//! Run with `cargo bench --manifest-path plugins/Cargo.toml -p rule-evaluator-standard
//! --target-dir target/plugins-native`. The sandboxed evaluator is measured
//! against this native one by the host's `plugins` benchmark.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark: a failure should stop it loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures real elapsed time"
)]

// The schema and the generator are the unit tests'; the benchmark does not
// use all of the generator.
#[allow(dead_code)]
#[path = "../src/engine/fixtures.rs"]
mod fixtures;

use std::time::Instant;

use cohort_sdk::SubjectKind;
use cohort_sdk::rules::{BatchBuilder, BatchView, EvaluateOptions, Evaluation, Input, RuleSource};
use fixtures::{Rng, schema};
use rule_evaluator_standard::engine::RuleSet;

/// Evaluation options: a fixed `now`, no explanations.
const OPTIONS: EvaluateOptions = EvaluateOptions {
    now_millis: 1_000 * 86_400_000,
    explain: false,
};

/// The attribute values of the benchmark.
struct Vocabulary {
    departments: Vec<String>,
    locations: Vec<String>,
    cost_centers: Vec<String>,
    skills: Vec<String>,
    /// Job titles start with a seniority, then a role.
    seniorities: Vec<String>,
    roles: Vec<String>,
}

impl Vocabulary {
    fn new() -> Vocabulary {
        let names = |prefix: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{prefix} {i}")).collect()
        };
        let words = |w: &[&str]| -> Vec<String> { w.iter().map(|w| w.to_string()).collect() };
        Vocabulary {
            departments: names("Department", 40),
            locations: names("City", 60),
            cost_centers: names("CC", 200),
            skills: names("skill", 30),
            seniorities: words(&[
                "Senior",
                "Junior",
                "Staff",
                "Principal",
                "Lead",
                "Associate",
                "Chief",
                "Head of",
                "Intern",
                "Sr.",
            ]),
            roles: words(&[
                "Engineer",
                "Analyst",
                "Designer",
                "Manager",
                "Accountant",
                "Recruiter",
                "Scientist",
                "Consultant",
                "Architect",
                "Writer",
            ]),
        }
    }

    /// `subjects` random subjects with every attribute, in host-sized
    /// batches, with e-mail addresses at `domains` domains
    /// `corp<k>.example`.
    fn batches(
        &self,
        subjects: usize,
        batch: usize,
        domains: usize,
    ) -> Vec<cohort_sdk::rules::SubjectBatch> {
        let mut rng = Rng(42);
        // Job titles come from their own generator, so the other values
        // are the same as before job titles existed.
        let mut titles = Rng(43);
        let pick = |rng: &mut Rng, items: &'_ [String]| items[rng.below(items.len())].clone();
        (0..subjects / batch)
            .map(|b| {
                let mut builder = BatchBuilder::new(SubjectKind::User);
                for i in 0..batch {
                    let email = format!("user{}@corp{}.example", b * batch + i, rng.below(domains));
                    let texts = [
                        pick(&mut rng, &self.departments),
                        pick(&mut rng, &self.locations),
                        pick(&mut rng, &self.cost_centers),
                        format!(
                            "{} {}, team {}",
                            pick(&mut titles, &self.seniorities),
                            pick(&mut titles, &self.roles),
                            titles.below(50)
                        ),
                    ];
                    let skills: Vec<String> = (0..rng.below(4))
                        .map(|_| pick(&mut rng, &self.skills))
                        .collect();
                    let skills: Vec<&str> = skills.iter().map(String::as_str).collect();
                    builder.push(&[
                        ("department", Input::Text(&texts[0])),
                        ("location", Input::Text(&texts[1])),
                        ("cost_center", Input::Text(&texts[2])),
                        ("job_title", Input::Text(&texts[3])),
                        ("email", Input::Text(&email)),
                        ("level", Input::Number(rng.below(10) as f64)),
                        ("skills", Input::List(&skills)),
                    ]);
                }
                builder.build()
            })
            .collect()
    }
}

/// Time every-rule and indexed evaluation of `rules` over `batches`,
/// check they agree and print the throughput. Each is timed 3 times and
/// the fastest run counts, as the machine may be busy with other work.
fn bench(label: &str, rules: &[String], batches: &[cohort_sdk::rules::SubjectBatch]) {
    let sources: Vec<RuleSource> = rules
        .iter()
        .map(|text| RuleSource { text: text.clone() })
        .collect();
    let set = RuleSet::compile(SubjectKind::User, &schema(), &sources)
        .unwrap_or_else(|p| panic!("{p:?}"));
    let time = |f: &dyn Fn(&BatchView<'_>) -> Evaluation| {
        let mut best = f64::INFINITY;
        let mut evaluations = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            evaluations = batches
                .iter()
                .map(|b| f(&BatchView::new(b).unwrap()))
                .collect();
            best = best.min(start.elapsed().as_secs_f64());
        }
        (best, evaluations)
    };
    let (every_s, every) = time(&|b| set.evaluate_every_rule(b, &OPTIONS));
    let (indexed_s, indexed) = time(&|b| set.evaluate(b, &OPTIONS));
    let mut matched = 0;
    for (i, e) in indexed.iter().zip(&every) {
        assert_eq!(i.matches, e.matches);
        matched += e.matches.iter().map(|w| w.count_ones() as u64).sum::<u64>();
    }
    let subjects: usize = batches
        .iter()
        .map(|b| BatchView::new(b).unwrap().len())
        .sum();
    let pairs = (set.len() * subjects) as f64;
    println!(
        "{label}: {} rules ({} unanchored) x {subjects} subjects, {matched} matches: \
         every rule {every_s:.3} s ({:.1} M pairs/s), indexed {indexed_s:.3} s \
         ({:.1} M pairs/s), {:.1}x",
        set.len(),
        set.unanchored_rules(),
        pairs / every_s / 1e6,
        pairs / indexed_s / 1e6,
        every_s / indexed_s
    );
}

fn main() {
    const RULES: usize = 1_000;
    const SUBJECTS: usize = 20_000;
    const BATCH: usize = 1_000;
    let vocabulary = Vocabulary::new();
    println!("batches of {BATCH} subjects");
    let batches = vocabulary.batches(SUBJECTS, BATCH, 10);
    // 20 shapes: one of them unanchored; 18: all anchored.
    for shapes in [20, 18] {
        let rules: Vec<String> = (0..RULES)
            .map(|r| bench_rule(r, shapes, &vocabulary))
            .collect();
        bench(&format!("{shapes} shapes"), &rules, &batches);
    }
    // Rules anchored by prefixes and suffixes, among others.
    let batches = vocabulary.batches(SUBJECTS, BATCH, 1_000);
    let rules: Vec<String> = (0..700).map(|r| mixed_rule(r, &vocabulary)).collect();
    bench("mix", &rules, &batches);
}

/// Rule `r` of the benchmark, of shape `r % shapes`. Shapes 0 to 17 have
/// an `equals` / `in` in every block, as dynamic-group rules mostly do;
/// 18 has an `ends_with`, 19 no anchor.
fn bench_rule(r: usize, shapes: usize, v: &Vocabulary) -> String {
    use serde_json::json;
    let (departments, locations) = (&v.departments, &v.locations);
    let (cost_centers, skills) = (&v.cost_centers, &v.skills);
    let at = |items: &[String], k: usize| items[(r * 7 + k) % items.len()].clone();
    let rule = match r % shapes {
        0..=7 => json!({"conditions": [{"attribute": "department", "operator": "equals",
            "values": [at(departments, 0)], "ignore_case": r.is_multiple_of(2)}]}),
        8..=10 => json!({"conditions": [
            {"attribute": "location", "operator": "in",
             "values": [at(locations, 0), at(locations, 1), at(locations, 2)]},
            {"attribute": "email", "operator": "ends_with",
             "values": [format!("@CORP{}.EXAMPLE", r % 10)], "ignore_case": true}]}),
        11..=12 => json!({"any": [
            {"conditions": [
                {"attribute": "department", "operator": "equals", "values": [at(departments, 0)]},
                {"attribute": "level", "operator": "greater_than", "values": [5]}]},
            {"conditions": [
                {"attribute": "cost_center", "operator": "equals", "values": [at(cost_centers, 0)]}]}]}),
        13..=14 => json!({"conditions": [
            {"attribute": "skills", "operator": "in", "values": [at(skills, 0)]}]}),
        15..=17 => {
            let values: Vec<String> = (0..12).map(|k| at(cost_centers, k)).collect();
            json!({"conditions": [{"attribute": "cost_center", "operator": "in",
                "values": values, "ignore_case": true}]})
        }
        18 => json!({"conditions": [{"attribute": "email", "operator": "ends_with",
            "values": [format!("@corp{}.example", r % 10)]}]}),
        _ => json!({"conditions": [
            {"attribute": "department", "operator": "not_equals", "values": [at(departments, 0)]},
            {"attribute": "level", "operator": "greater_than", "values": [7]}]}),
    };
    rule.to_string()
}

/// Rule `r` of the mixed benchmark: 400 `equals` / `in` rules, 100
/// `ends_with` rules on e-mail domains, 100 `starts_with` rules on job
/// titles, and 100 `contains` rules, which are not anchored.
fn mixed_rule(r: usize, v: &Vocabulary) -> String {
    use serde_json::json;
    let (departments, locations) = (&v.departments, &v.locations);
    let (cost_centers, skills) = (&v.cost_centers, &v.skills);
    let at = |items: &[String], k: usize| items[(r * 7 + k) % items.len()].clone();
    let rule = match r {
        0..=399 => match r % 4 {
            0 => json!({"conditions": [{"attribute": "department", "operator": "equals",
                "values": [at(departments, 0)], "ignore_case": r.is_multiple_of(8)}]}),
            1 => json!({"conditions": [
                {"attribute": "location", "operator": "in",
                 "values": [at(locations, 0), at(locations, 1), at(locations, 2)]},
                {"attribute": "level", "operator": "greater_than", "values": [4]}]}),
            2 => json!({"conditions": [{"attribute": "cost_center", "operator": "equals",
                "values": [at(cost_centers, 0)]}]}),
            _ => json!({"conditions": [{"attribute": "skills", "operator": "in",
                "values": [at(skills, 0), at(skills, 1)]}]}),
        },
        400..=499 => {
            // One or two of the 1,000 domains; every fourth rule ignores
            // case.
            let i = r - 400;
            let mut domains = vec![format!("@corp{}.example", i * 10)];
            if !i.is_multiple_of(2) {
                domains.push(format!("@corp{}.example", i * 10 + 1));
            }
            let ignore_case = i.is_multiple_of(4);
            if ignore_case {
                domains = domains.iter().map(|d| d.to_uppercase()).collect();
            }
            json!({"conditions": [{"attribute": "email", "operator": "ends_with",
                "values": domains, "ignore_case": ignore_case}]})
        }
        500..=599 => {
            // 90 "<seniority> <role>" prefixes and 10 "<seniority>" ones.
            let i = r - 500;
            let seniority = &v.seniorities[i % v.seniorities.len()];
            let prefix = if i < 90 {
                format!("{seniority} {}", v.roles[i / v.seniorities.len()])
            } else {
                seniority.clone()
            };
            let ignore_case = i.is_multiple_of(3);
            let prefix = if ignore_case {
                prefix.to_lowercase()
            } else {
                prefix
            };
            json!({"conditions": [{"attribute": "job_title", "operator": "starts_with",
                "values": [prefix], "ignore_case": ignore_case}]})
        }
        _ => json!({"conditions": [{"attribute": "job_title", "operator": "contains",
            "values": [format!("team {}", r % 50)]}]}),
    };
    rule.to_string()
}
