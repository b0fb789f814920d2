//! What the unit tests and the benchmark (`benches/throughput.rs`, which
//! includes this file) both need: the schema their rules are written
//! against, and a small deterministic generator, so that a failing random
//! case reproduces without a dependency.

use cohort_sdk::{AttributeDef, AttributeType, SubjectKind};

/// Users with text, text-list, number and date attributes; `cost_center`
/// is the one custom attribute.
pub fn schema() -> Vec<AttributeDef> {
    let def = |name: &str, t| AttributeDef {
        name: name.into(),
        kind: SubjectKind::User,
        type_: t,
        custom: name == "cost_center",
    };
    vec![
        def("department", AttributeType::Text),
        def("cost_center", AttributeType::Text),
        def("skills", AttributeType::TextList),
        def("level", AttributeType::Number),
        def("start_date", AttributeType::Timestamp),
        def("email", AttributeType::Text),
        def("location", AttributeType::Text),
        def("job_title", AttributeType::Text),
    ]
}

/// A small deterministic generator (SplitMix64), so failures reproduce
/// without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}
