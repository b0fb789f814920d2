//! CEL expression micro-benchmark:
//!
//!     cargo bench -p cohort --bench cel
//!
//! - compile time per rule (parse, check against the schema, instrument);
//! - evaluations per second on one core, for a few typical rules, each
//!   evaluated over BENCH_SUBJECTS (default 100,000) users with one scope
//!   per user, as a recompute does.

// A benchmark measures real elapsed time, and drives a server that keeps real time.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use chrono::Utc;
use cohort::directory::{AttrRef, AttrType, Attribute, SubjectKind};
use cohort::expression::{Bindings, Environment, Expression, Related, Runtime};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Person {
    department: String,
    location: String,
    email: String,
    title: String,
}

impl Related for Person {
    fn attribute(&self, name: &str) -> Option<AttrRef<'_>> {
        Some(AttrRef::Text(match name {
            "department" => &self.department,
            "location" => &self.location,
            "email" => &self.email,
            "job_title" => &self.title,
            _ => return None,
        }))
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_SUBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let attr = |name: &str| Attribute {
        name: name.into(),
        subject: SubjectKind::User,
        attr_type: AttrType::String,
        standard: true,
        description: None,
        created_at: None,
    };
    let users: Vec<Attribute> = ["department", "location", "email", "job_title"]
        .into_iter()
        .map(attr)
        .collect();
    let none = |_: &str| None;
    let env = Environment {
        kind: SubjectKind::User,
        users: &users,
        devices: &[],
        group: &none,
        related_only: false,
    };

    let sources: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "user.department == 'Dept{}' && user.location in ['City{}', 'City{}'] \
                 && user.job_title.startsWith('Senior')",
                i % 50,
                i % 20,
                (i + 1) % 20
            )
        })
        .collect();
    let t = Instant::now();
    let compiled: Vec<Expression> = sources
        .iter()
        .map(|s| Expression::compile(s, &env).expect("compiles"))
        .collect();
    let per_rule = t.elapsed().as_secs_f64() * 1e6 / compiled.len() as f64;
    println!(
        "compile: {per_rule:.0} µs per rule ({} rules)",
        compiled.len()
    );

    let people: Vec<Person> = (0..n)
        .map(|i| Person {
            department: format!("Dept{}", i % 50),
            location: format!("City{}", i % 20),
            email: format!("user{i}@d{}.example", i % 1000),
            title: if i % 3 == 0 {
                "Senior Engineer"
            } else {
                "Engineer"
            }
            .into(),
        })
        .collect();
    let runtime = Runtime::new();
    let attributes: Vec<(String, AttrType)> = users
        .iter()
        .map(|a| (a.name.clone(), a.attr_type))
        .collect();
    for (label, source) in [
        ("equality", "user.department == 'Dept3'"),
        (
            "three-part && (as above)",
            "user.department == 'Dept3' && user.location in ['City1', 'City2'] \
             && user.job_title.startsWith('Senior')",
        ),
        ("endsWith", "user.email.endsWith('@d7.example')"),
        (
            "lowerAscii + matches",
            "user.email.lowerAscii().matches('^user[0-9]+@d1[0-9]\\\\.example$')",
        ),
    ] {
        let e = Expression::compile(source, &env).expect("compiles");
        let now = Utc::now();
        let t = Instant::now();
        let mut hits = 0usize;
        for p in &people {
            let b = Bindings {
                kind: SubjectKind::User,
                subject: p,
                attributes: &attributes,
                groups: None,
                related: None,
                related_attributes: &[],
                in_groups: Vec::new(),
                now,
            };
            let scope = runtime.scope(&b);
            if scope.evaluate(&e) == Ok(true) {
                hits += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{label:<28} {:>9.0} evaluations/s on one core, scope included ({hits} matches)",
            n as f64 / secs
        );
        // Many expressions over one scope: the cost of the scope is shared.
        let t = Instant::now();
        let b = Bindings {
            kind: SubjectKind::User,
            subject: &people[3],
            attributes: &attributes,
            groups: None,
            related: None,
            related_attributes: &[],
            in_groups: Vec::new(),
            now,
        };
        let scope = runtime.scope(&b);
        for _ in 0..n {
            let _ = scope.evaluate(&e);
        }
        println!(
            "{:<28} {:>9.0} evaluations/s on one core, one scope",
            "",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
}
