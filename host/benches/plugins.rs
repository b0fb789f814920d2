//! Plugin runtime benchmarks. Run after `plugins/build`:
//!
//!     cargo bench -p cohort --bench plugins
//!
//! Prints: instantiation time from `InstancePre` with the pooling allocator;
//! per-call overhead on a fresh instance and on a reused one; and rule
//! evaluation throughput (subject × rule pairs per second) for 1,000 rules
//! over 100,000 subjects, in the sandbox and with the same engine compiled
//! natively, on the same data in the same run.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark code: a failure aborts the run, which is what it should do"
)]
// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort::clock::SystemClock;
use cohort::config::PluginsConfig;
use cohort::plugins::bindings::rules as host_rules;
use cohort::plugins::bindings::types as host_types;
use cohort::plugins::{Limits, LoadedPlugin, Manifest, Runtime};

const RULES: usize = 1_000;
const SUBJECTS: usize = 100_000;
const BATCH: usize = 1_000;

fn load(rt: &Runtime, name: &str) -> Arc<LoadedPlugin> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    let wasm = std::fs::read(dir.join(format!("{name}.wasm")))
        .unwrap_or_else(|e| panic!("{name}.wasm: {e}; run plugins/build first"));
    let manifest =
        Manifest::from_toml(&std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap())
            .unwrap();
    Arc::new(rt.load(manifest, &wasm).unwrap())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn timed(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn report(label: &str, mut samples: Vec<Duration>) {
    println!(
        "{label:<44} median {:>8.2} µs   p99 {:>8.2} µs   (n={})",
        percentile(&mut samples, 0.5).as_secs_f64() * 1e6,
        percentile(&mut samples, 0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}

/// A small deterministic generator, so both sides see identical data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Support",
    "Legal",
    "People",
    "Design",
];
const TITLES: &[&str] = &[
    "Senior Engineer",
    "Engineer",
    "Manager",
    "Senior Manager",
    "Director",
    "Analyst",
];
const LOCATIONS: &[&str] = &[
    "Denver", "Boulder", "Berlin", "London", "Paris", "Tokyo", "Austin", "Remote",
];
const SKILLS: &[&str] = &[
    "rust",
    "go",
    "python",
    "sql",
    "excel",
    "negotiation",
    "design",
];

struct Person {
    department: &'static str,
    title: &'static str,
    location: &'static str,
    email: String,
    level: f64,
    start_ms: i64,
    skills: Vec<&'static str>,
}

fn people() -> Vec<Person> {
    let mut rng = Lcg(42);
    (0..SUBJECTS)
        .map(|i| Person {
            department: rng.pick(DEPARTMENTS),
            title: rng.pick(TITLES),
            location: rng.pick(LOCATIONS),
            email: format!("user{i}@corp{}.example", rng.next() % 10),
            level: (rng.next() % 10) as f64,
            start_ms: 1_500_000_000_000 + (rng.next() % 300_000_000) as i64 * 1000,
            skills: (0..(rng.next() % 3)).map(|_| rng.pick(SKILLS)).collect(),
        })
        .collect()
}

/// Rule `r`, a mix of the condition shapes real group rules use.
fn rule(r: usize) -> String {
    let dept = DEPARTMENTS[r % DEPARTMENTS.len()];
    let loc = |k: usize| LOCATIONS[(r + k) % LOCATIONS.len()];
    match r % 5 {
        0 => format!(r#"{{"conditions":[{{"attribute":"department","operator":"equals","values":["{dept}"]}}]}}"#),
        1 => format!(
            r#"{{"conditions":[{{"attribute":"title","operator":"starts_with","values":["Senior"]}},{{"attribute":"level","operator":"greater_than","values":[{}]}}]}}"#,
            r % 9
        ),
        2 => format!(
            r#"{{"conditions":[{{"attribute":"location","operator":"in","values":["{}","{}","{}"]}},{{"attribute":"department","operator":"not_equals","values":["{dept}"]}}]}}"#,
            loc(0), loc(1), loc(2)
        ),
        3 => format!(
            r#"{{"conditions":[{{"attribute":"email","operator":"ends_with","values":["@CORP{}.EXAMPLE"],"ignore_case":true}}]}}"#,
            r % 10
        ),
        _ => r#"{"any":[{"conditions":[{"attribute":"skills","operator":"contains","values":["rust"]},{"attribute":"start_date","operator":"less_than","values":["now-365d"]}]},{"conditions":[{"attribute":"level","operator":"greater_than","values":[8]}]}]}"#.to_owned(),
    }
}

const SCHEMA: &[(&str, u8)] = &[
    ("department", 0),
    ("title", 0),
    ("location", 0),
    ("email", 0),
    ("level", 1),
    ("start_date", 2),
    ("skills", 3),
];

fn host_batch(people: &[Person]) -> host_rules::SubjectBatch {
    let mut b = cohort::plugins::batch::BatchBuilder::new(host_types::SubjectKind::User);
    for p in people {
        b.push_text("department", p.department);
        b.push_text("title", p.title);
        b.push_text("location", p.location);
        b.push_text("email", &p.email);
        b.push_number("level", p.level);
        b.push_timestamp("start_date", p.start_ms);
        for s in &p.skills {
            b.push_text("skills", s);
        }
        b.finish_subject();
    }
    b.build()
}

fn native_batch(people: &[Person]) -> cohort_sdk::rules::SubjectBatch {
    use cohort_sdk::rules::{BatchBuilder, Input};
    let mut b = BatchBuilder::new(cohort_sdk::SubjectKind::User);
    for p in people {
        b.push(&[
            ("department", Input::Text(p.department)),
            ("title", Input::Text(p.title)),
            ("location", Input::Text(p.location)),
            ("email", Input::Text(&p.email)),
            ("level", Input::Number(p.level)),
            ("start_date", Input::Timestamp(p.start_ms)),
            ("skills", Input::List(&p.skills)),
        ]);
    }
    b.build()
}

fn main() {
    let rt = std::sync::Arc::new(
        Runtime::new(
            Limits::from_config(&PluginsConfig {
                // One batch of 1,000 × 1,000 pairs takes tens of milliseconds.
                cpu_ms: 60_000,
                wall_ms: 120_000,
                ..Default::default()
            }),
            None,
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    let standard = load(&rt, "rules-standard");
    let importer = load(&rt, "echo-importer");

    println!("== instantiation and call overhead");
    for _ in 0..200 {
        rt.instantiate_only(&standard).unwrap();
    }
    report(
        "instantiate rules-standard (pooled)",
        timed(5_000, || rt.instantiate_only(&standard).unwrap()),
    );
    report(
        "instantiate echo-importer (pooled)",
        timed(5_000, || rt.instantiate_only(&importer).unwrap()),
    );
    report(
        "call describe, fresh instance per call",
        timed(5_000, || {
            rt.importer_describe(&importer).unwrap();
        }),
    );
    let schema: Vec<host_types::AttributeDef> = SCHEMA
        .iter()
        .map(|(name, t)| host_types::AttributeDef {
            name: (*name).into(),
            kind: host_types::SubjectKind::User,
            type_: match t {
                0 => host_types::AttributeType::Text,
                1 => host_types::AttributeType::Number,
                2 => host_types::AttributeType::Timestamp,
                _ => host_types::AttributeType::TextList,
            },
            custom: false,
        })
        .collect();
    let one = [host_rules::RuleSource { text: rule(0) }];
    let session = rt
        .compile_rules(
            standard.clone(),
            host_types::SubjectKind::User,
            &schema,
            &one,
        )
        .unwrap()
        .unwrap();
    let empty = cohort::plugins::batch::BatchBuilder::new(host_types::SubjectKind::User).build();
    let options = host_rules::EvaluateOptions {
        now_millis: 1_800_000_000_000,
        explain: false,
    };
    report(
        "call evaluate(empty batch), reused instance",
        timed(20_000, || {
            session.evaluate(&empty, options).unwrap().unwrap();
        }),
    );

    if std::env::var("COHORT_BENCH").as_deref() == Ok("overhead") {
        return;
    }
    println!("\n== rule evaluation: {RULES} rules x {SUBJECTS} subjects, batches of {BATCH}");
    let people = people();
    let texts: Vec<String> = (0..RULES).map(rule).collect();
    let sources: Vec<host_rules::RuleSource> = texts
        .iter()
        .map(|t| host_rules::RuleSource { text: t.clone() })
        .collect();
    let host_batches: Vec<_> = people.chunks(BATCH).map(host_batch).collect();
    let native_batches: Vec<_> = people.chunks(BATCH).map(native_batch).collect();

    let t = Instant::now();
    let session = rt
        .compile_rules(
            standard.clone(),
            host_types::SubjectKind::User,
            &schema,
            &sources,
        )
        .unwrap()
        .unwrap();
    let compile_wasm = t.elapsed();
    let t = Instant::now();
    let mut wasm_matches = 0u64;
    for b in &host_batches {
        let e = session.evaluate(b, options).unwrap().unwrap();
        wasm_matches += e.matches.iter().map(|w| w.count_ones() as u64).sum::<u64>();
    }
    let wasm = t.elapsed();

    let native_schema: Vec<cohort_sdk::AttributeDef> = schema
        .iter()
        .map(|d| cohort_sdk::AttributeDef {
            name: d.name.clone(),
            kind: cohort_sdk::SubjectKind::User,
            type_: match d.type_ {
                host_types::AttributeType::Text => cohort_sdk::AttributeType::Text,
                host_types::AttributeType::Number => cohort_sdk::AttributeType::Number,
                host_types::AttributeType::Boolean => cohort_sdk::AttributeType::Boolean,
                host_types::AttributeType::Timestamp => cohort_sdk::AttributeType::Timestamp,
                host_types::AttributeType::TextList => cohort_sdk::AttributeType::TextList,
            },
            custom: false,
        })
        .collect();
    let native_sources: Vec<cohort_sdk::rules::RuleSource> = texts
        .iter()
        .map(|t| cohort_sdk::rules::RuleSource { text: t.clone() })
        .collect();
    let native_options = cohort_sdk::rules::EvaluateOptions {
        now_millis: options.now_millis,
        explain: false,
    };
    let t = Instant::now();
    let native_rules = rule_evaluator_standard::engine::RuleSet::compile(
        cohort_sdk::SubjectKind::User,
        &native_schema,
        &native_sources,
    )
    .unwrap();
    let compile_native = t.elapsed();
    let t = Instant::now();
    let mut native_matches = 0u64;
    for b in &native_batches {
        let view = cohort_sdk::rules::BatchView::new(b).unwrap();
        let e = native_rules.evaluate(&view, &native_options);
        native_matches += e.matches.iter().map(|w| w.count_ones() as u64).sum::<u64>();
    }
    let native = t.elapsed();
    assert_eq!(
        wasm_matches, native_matches,
        "sandboxed and native results differ"
    );

    let pairs = (RULES * SUBJECTS) as f64;
    println!(
        "compile {RULES} rules: wasm {:.1} ms, native {:.1} ms",
        compile_wasm.as_secs_f64() * 1e3,
        compile_native.as_secs_f64() * 1e3
    );
    println!("matches: {wasm_matches} (identical in both)");
    println!(
        "wasm   {:>8.2} s   {:>8.1} M pairs/s",
        wasm.as_secs_f64(),
        pairs / wasm.as_secs_f64() / 1e6
    );
    println!(
        "native {:>8.2} s   {:>8.1} M pairs/s",
        native.as_secs_f64(),
        pairs / native.as_secs_f64() / 1e6
    );
    println!(
        "wasm / native time: {:.2}x",
        wasm.as_secs_f64() / native.as_secs_f64()
    );
}
