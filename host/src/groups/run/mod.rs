//! Running a plan over a universe of subjects: stage by stage, build the
//! batches (plain attributes plus the synthetic inputs computed by the host),
//! call the evaluators, and decide each affected subject's membership from
//! the rule, the exclusion, exemptions, manual membership, state scoping and
//! review mode.
//!
//! Decisions are made on bitsets over the universe's positions, a word of
//! 64 subjects at a time; only the few subjects with an exemption, a manual
//! membership or a non-rule membership are looked at one by one. A run
//! reports changes against the stored state, not every decision, so a full
//! recompute of an unchanged directory writes nothing and allocates little.
//!
//! `expressions` (CEL, in the host) and `program` (the evaluator plugins)
//! produce the rules' verdicts; `facts` gathers what a group's decision
//! reads, `stored` among it, and `decide` makes the decision; `outcome` is
//! what the run hands back.

mod bits;
mod decide;
mod expressions;
mod facts;
mod outcome;
mod program;
mod stored;

pub use bits::Bits;
pub use outcome::{Explained, GroupResult, Outcome, PartValues};
pub use stored::Stored;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::plan::{Plan, Unit};
use super::replica::Memberships;
use super::universe::{Side, Universe};
use crate::directory::{SubjectKind, UserState};
use crate::error::DomainError;
use cohort_storage::Reader;

/// Pairs (subjects × rules) per evaluator call: small enough to stay well
/// inside a call's CPU budget even for rules the evaluator cannot index.
const PAIRS_PER_CALL: usize = 200_000;
/// Above this many affected subjects, a group's stored state is read with
/// one scan instead of a lookup per subject.
const SCAN_ABOVE: usize = 512;

/// How decisions are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// For writing: review-mode groups keep their members and suggest.
    Apply,
    /// What the rules give, review mode or not (previews, explanations);
    /// also lists the members and the rule's verdicts.
    Preview,
}

/// Inputs and state of one run.
pub struct Run<'a, R: Reader> {
    reader: &'a R,
    memberships: &'a dyn Memberships,
    plan: &'a Plan,
    universe: &'a Universe,
    now: DateTime<Utc>,
    mode: Mode,
    explain: bool,
    /// Decided memberships of targets (stored ones at unaffected positions).
    decided: HashMap<Uuid, Bits>,
    /// Combined cross-subject outcomes, per owner-side position.
    combined: HashMap<usize, Bits>,
    /// Expression outcomes, per position of the expression's side.
    expression_bits: HashMap<usize, Bits>,
    /// Per compiled rule: which positions it matched.
    rule_bits: HashMap<Unit, Bits>,
    /// Positions admitted by a set of user states, per set.
    admitted: HashMap<Vec<UserState>, Bits>,
    /// Every group's stored state, read up front when the run covers the
    /// whole directory and many groups.
    prefetched: Option<HashMap<Uuid, Stored>>,
    /// Affected positions per side (users, devices).
    affected: [Option<Bits>; 2],
    /// Decide only these groups (the others cannot change); all when `None`.
    only: Option<HashSet<Uuid>>,
    /// For a run over a few subjects: the groups where one of them is a
    /// member or may have state (see [`Memberships::groups_touching`]).
    touched: Option<HashSet<Uuid>>,
    /// When evaluation must stop (previews and explanations, which any
    /// reader may ask for); never for the unattended runs.
    deadline: Option<crate::clock::Deadline>,
}

impl<'a, R: Reader> Run<'a, R> {
    /// Prepares a run.
    pub fn new(
        reader: &'a R,
        memberships: &'a dyn Memberships,
        plan: &'a Plan,
        universe: &'a Universe,
        now: DateTime<Utc>,
        mode: Mode,
        explain: bool,
    ) -> Self {
        Run {
            reader,
            memberships,
            plan,
            universe,
            now,
            mode,
            explain,
            decided: HashMap::new(),
            combined: HashMap::new(),
            expression_bits: HashMap::new(),
            rule_bits: HashMap::new(),
            admitted: HashMap::new(),
            prefetched: None,
            affected: [None, None],
            only: None,
            touched: None,
            deadline: None,
        }
    }

    /// Stops evaluating expressions at `deadline`: the subjects left are
    /// reported with [`crate::expression::LATE`] as their error.
    pub fn deadline(mut self, deadline: Option<crate::clock::Deadline>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Decides only `groups`: the others keep their stored memberships,
    /// which the caller knows cannot change.
    pub fn only(mut self, groups: Option<HashSet<Uuid>>) -> Self {
        self.only = groups;
        self
    }

    fn affected_bits(&mut self, kind: SubjectKind) -> Bits {
        let slot = usize::from(kind == SubjectKind::Device);
        let side = self.universe.side(kind);
        self.affected[slot]
            .get_or_insert_with(|| {
                let mut b = Bits::zeros(side.subjects.len());
                for (i, a) in side.affected.iter().enumerate() {
                    b.set(i, *a);
                }
                b
            })
            .clone()
    }

    /// Runs every stage.
    pub fn run(mut self) -> Result<Outcome, DomainError> {
        let mut out = Outcome::default();
        if self.universe.users.complete && self.plan.order.len() > 8 {
            self.prefetched = Some(Stored::load_all(self.reader)?);
        }
        let sides = [&self.universe.users, &self.universe.devices];
        if sides.iter().all(|s| few(s)) {
            let mut touched = HashSet::new();
            for side in sides {
                for (p, s) in side.subjects.iter().enumerate() {
                    if side.affected[p] {
                        self.memberships.groups_touching(&s.id(), &mut |g| {
                            touched.insert(*g);
                        });
                    }
                }
            }
            self.touched = Some(touched);
        }
        for (stage, programs) in self.plan.stages.iter().enumerate() {
            self.run_expressions(stage, &mut out);
            for (unit, n) in &self.plan.direct {
                if self.plan.expressions[*n].stage != stage {
                    continue;
                }
                if let Some(bits) = self.expression_bits.get(n)
                    && bits.0.iter().any(|w| *w != 0)
                {
                    self.rule_bits.insert(*unit, bits.clone());
                }
            }
            for program in programs {
                self.run_program(program, &mut out)?;
            }
            self.combine_related(stage, &mut out);
            let plan = self.plan;
            for g in plan.by_stage.get(stage).into_iter().flatten() {
                if self.only.as_ref().is_none_or(|o| o.contains(g)) {
                    self.decide(g, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Which positions of `kind`'s side are members of `group`: decided in
    /// this run, or as stored.
    fn member_bits(&self, group: &Uuid, kind: SubjectKind) -> Bits {
        if let Some(bits) = self.decided.get(group) {
            return bits.clone();
        }
        let side = self.universe.side(kind);
        let mut bits = Bits::zeros(side.subjects.len());
        if side.complete || side.subjects.len() > SCAN_ABOVE {
            for (s, _) in self.memberships.members_of(group) {
                if let Some(&p) = side.index.get(&s) {
                    bits.set(p, true);
                }
            }
        } else {
            for (p, s) in side.subjects.iter().enumerate() {
                if self.memberships.member(group, &s.id()).is_some() {
                    bits.set(p, true);
                }
            }
        }
        bits
    }

    fn owner(&self, unit: Unit) -> Uuid {
        match unit {
            Unit::Rule(g) | Unit::Exclusion(g) => g,
            Unit::Related(n) => self.plan.related[n].owner,
        }
    }

    fn combine_related(&mut self, stage: usize, out: &mut Outcome) {
        for (n, def) in self.plan.related.iter().enumerate() {
            if self.plan.related_stage[n] != stage {
                continue;
            }
            let nested = self
                .rule_bits
                .get(&Unit::Related(n))
                .cloned()
                .unwrap_or_default();
            let owner_kind = self.plan.groups[&def.owner].subject;
            let side = self.universe.side(owner_kind);
            let mut combined = Bits::zeros(side.subjects.len());
            for i in 0..side.subjects.len() {
                let v = def
                    .quantifier
                    .combine(side.related[i].iter().map(|j| nested.get(*j)));
                combined.set(i, v);
            }
            if self.explain {
                let related_side = self.universe.side(other(owner_kind));
                let report = out.nested.entry(n).or_default();
                for (j, s) in related_side.subjects.iter().enumerate() {
                    report.insert(s.id(), nested.get(j));
                }
            }
            self.combined.insert(n, combined);
        }
    }
}

/// Whether a side is a few subjects around a change, decided one by one,
/// rather than the whole directory or a large part of it.
fn few(side: &Side) -> bool {
    !side.complete && side.affected_count() <= SCAN_ABOVE
}

fn other(kind: SubjectKind) -> SubjectKind {
    match kind {
        SubjectKind::User => SubjectKind::Device,
        SubjectKind::Device => SubjectKind::User,
    }
}
