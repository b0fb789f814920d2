//! Running a plan over a universe of subjects: stage by stage, build the
//! batches (plain attributes plus the synthetic inputs computed by the host),
//! call the evaluators, and decide each affected subject's membership from
//! the rule, the exclusion, exemptions, manual membership, state scoping and
//! review mode.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::keys::{ERRORS, EXEMPTIONS, MANUAL, MEMBERS, SUGGESTIONS, pair};
use super::model::{
    Exemption, ExemptionKind, Group, Membership, Source, Suggestion, SuggestionAction,
};
use super::plan::{Plan, Program, Unit};
use super::rule::{member_attribute, related_attribute};
use super::universe::{Reader, Side, Universe};
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::plugins::batch::{BatchBuilder, wit_kind};
use crate::plugins::bindings::rules::{ConditionOutcome, EvaluateError, EvaluateOptions};

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
    /// What the rules give, review mode or not (previews, explanations).
    Preview,
}

/// A membership decision for one affected subject of one group.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The subject.
    pub subject: Uuid,
    /// The membership it should have.
    pub member: Option<Source>,
    /// A review-mode suggestion, when the rule disagrees with the membership.
    pub suggestion: Option<SuggestionAction>,
    /// The rule matched (before exclusion and scoping).
    pub rule_match: bool,
    /// The exclusion matched.
    pub excluded: bool,
}

/// What a group's stored state says about the affected subjects.
#[derive(Default)]
pub struct Stored {
    /// Current memberships.
    pub members: HashMap<Uuid, Membership>,
    /// Manual members.
    pub manual: HashSet<Uuid>,
    /// Exemptions.
    pub exemptions: HashMap<Uuid, Exemption>,
    /// Suggestions (review mode).
    pub suggestions: HashMap<Uuid, Suggestion>,
    /// Subjects in evaluation error.
    pub errors: HashSet<Uuid>,
}

impl Stored {
    /// Reads a group's state for the affected subjects of `side`.
    pub fn load(r: &impl Reader, group: &Uuid, side: &Side) -> Result<Stored, DomainError> {
        let mut out = Stored::default();
        let affected = side.affected_count();
        if side.complete || affected > SCAN_ABOVE {
            let g = group.as_bytes();
            for (k, v) in r.scan(MEMBERS, g)? {
                if let Some(s) = crate::directory::keys::uuid_at(&k, 16) {
                    out.members
                        .insert(s, cohort_storage::decode_json(MEMBERS, &v)?);
                }
            }
            for (k, _) in r.scan(MANUAL, g)? {
                if let Some(s) = crate::directory::keys::uuid_at(&k, 16) {
                    out.manual.insert(s);
                }
            }
            for (k, v) in r.scan(EXEMPTIONS, g)? {
                if let Some(s) = crate::directory::keys::uuid_at(&k, 16) {
                    out.exemptions
                        .insert(s, cohort_storage::decode_json(EXEMPTIONS, &v)?);
                }
            }
            for (k, v) in r.scan(SUGGESTIONS, g)? {
                if let Some(s) = crate::directory::keys::uuid_at(&k, 16) {
                    out.suggestions
                        .insert(s, cohort_storage::decode_json(SUGGESTIONS, &v)?);
                }
            }
            for (k, _) in r.scan(ERRORS, g)? {
                if let Some(s) = crate::directory::keys::uuid_at(&k, 16) {
                    out.errors.insert(s);
                }
            }
        } else {
            for (i, s) in side.subjects.iter().enumerate() {
                if !side.affected[i] {
                    continue;
                }
                let id = s.id();
                let key = pair(group, &id);
                if let Some(m) = r.get_json(MEMBERS, &key)? {
                    out.members.insert(id, m);
                }
                if r.get(MANUAL, &key)?.is_some() {
                    out.manual.insert(id);
                }
                if let Some(e) = r.get_json(EXEMPTIONS, &key)? {
                    out.exemptions.insert(id, e);
                }
                if let Some(s) = r.get_json(SUGGESTIONS, &key)? {
                    out.suggestions.insert(id, s);
                }
                if r.get(ERRORS, &key)?.is_some() {
                    out.errors.insert(id);
                }
            }
        }
        Ok(out)
    }
}

/// One group's results.
#[derive(Default)]
pub struct GroupResult {
    /// Decisions for the affected subjects, in universe order.
    pub decisions: Vec<Decision>,
    /// Stored state read for the decisions.
    pub stored: Stored,
    /// Subjects the evaluator could not evaluate, with the message.
    pub errors: HashMap<Uuid, String>,
    /// Why the group could not be evaluated at all.
    pub failure: Option<String>,
}

/// One condition's outcome for one subject, when explaining.
pub struct Explained {
    /// What the compiled rule stands for.
    pub unit: Unit,
    /// The subject (on the unit's side).
    pub subject: Uuid,
    /// The evaluator's outcome.
    pub outcome: ConditionOutcome,
}

/// Everything a run produced.
#[derive(Default)]
pub struct Outcome {
    /// Per target group.
    pub groups: HashMap<Uuid, GroupResult>,
    /// Per-condition outcomes, when explaining.
    pub explanations: Vec<Explained>,
    /// Per cross-subject condition: related subject → whether it matched
    /// (when explaining).
    pub nested: HashMap<usize, HashMap<Uuid, bool>>,
    /// Per cross-subject condition: owner subject → combined result (when
    /// explaining).
    pub related: HashMap<usize, HashMap<Uuid, bool>>,
    /// A program failed in a way that leaves its session unusable.
    pub poisoned: bool,
}

/// Inputs and state of one run.
pub struct Run<'a, R: Reader> {
    reader: &'a R,
    plan: &'a Plan,
    universe: &'a Universe,
    now: DateTime<Utc>,
    mode: Mode,
    explain: bool,
    /// Decided memberships of targets, per group: position → member.
    decided: HashMap<Uuid, Vec<bool>>,
    /// Stored memberships of non-target groups read as inputs.
    inputs: HashMap<Uuid, HashSet<Uuid>>,
    /// Combined cross-subject outcomes, per owner-side position.
    combined: HashMap<usize, Vec<bool>>,
    rule_bits: HashMap<Unit, Vec<bool>>,
}

impl<'a, R: Reader> Run<'a, R> {
    /// Prepares a run.
    pub fn new(
        reader: &'a R,
        plan: &'a Plan,
        universe: &'a Universe,
        now: DateTime<Utc>,
        mode: Mode,
        explain: bool,
    ) -> Self {
        Run {
            reader,
            plan,
            universe,
            now,
            mode,
            explain,
            decided: HashMap::new(),
            inputs: HashMap::new(),
            combined: HashMap::new(),
            rule_bits: HashMap::new(),
        }
    }

    /// Runs every stage.
    pub fn run(mut self) -> Result<Outcome, DomainError> {
        let mut out = Outcome::default();
        for (stage, programs) in self.plan.stages.iter().enumerate() {
            for program in programs {
                self.run_program(program, &mut out)?;
            }
            self.combine_related(stage, &mut out);
            let in_stage: Vec<Uuid> = self
                .plan
                .order
                .iter()
                .filter(|g| self.plan.stage_of.get(g) == Some(&stage))
                .copied()
                .collect();
            for g in in_stage {
                self.decide(&g, &mut out)?;
            }
        }
        Ok(out)
    }

    fn member_input(
        &mut self,
        group: &Uuid,
        kind: SubjectKind,
        pos: usize,
    ) -> Result<bool, DomainError> {
        let side = self.universe.side(kind);
        if side.affected[pos]
            && let Some(bits) = self.decided.get(group)
        {
            return Ok(bits[pos]);
        }
        if !self.inputs.contains_key(group) {
            let mut set = HashSet::new();
            if side.complete || side.subjects.len() > SCAN_ABOVE {
                for (k, _) in self.reader.scan(MEMBERS, group.as_bytes())? {
                    if let Some(s) = crate::directory::keys::uuid_at(&k, 16) {
                        set.insert(s);
                    }
                }
            } else {
                for s in &side.subjects {
                    if self.reader.get(MEMBERS, &pair(group, &s.id()))?.is_some() {
                        set.insert(s.id());
                    }
                }
            }
            self.inputs.insert(*group, set);
        }
        Ok(self.inputs[group].contains(&side.subjects[pos].id()))
    }

    fn run_program(&mut self, program: &Program, out: &mut Outcome) -> Result<(), DomainError> {
        let side = self.universe.side(program.kind);
        let n = side.subjects.len();
        for unit in &program.units {
            self.rule_bits.insert(*unit, vec![false; n]);
        }
        if n == 0 {
            return Ok(());
        }
        let member_names: Vec<String> = program.members.iter().map(member_attribute).collect();
        let related_names: Vec<String> = program
            .related
            .iter()
            .map(|r| related_attribute(*r))
            .collect();
        let per_call = (PAIRS_PER_CALL / program.units.len().max(1)).clamp(16, 4096);
        let mut start = 0;
        while start < n {
            let end = (start + per_call).min(n);
            let mut batch = BatchBuilder::new(wit_kind(program.kind));
            for pos in start..end {
                let subject = &side.subjects[pos];
                for (name, ty) in &program.attributes {
                    if let Some(v) = subject.attribute(name) {
                        batch.push_value(name, *ty, &v);
                    }
                }
                for (g, name) in program.members.iter().zip(&member_names) {
                    let m = self.member_input(g, program.kind, pos)?;
                    batch.push_bool(name, m);
                }
                for (r, name) in program.related.iter().zip(&related_names) {
                    let v = self.combined.get(r).is_some_and(|c| c[pos]);
                    batch.push_bool(name, v);
                }
                batch.finish_subject();
            }
            let batch = batch.build();
            let options = EvaluateOptions {
                now_millis: self.now.timestamp_millis(),
                explain: self.explain,
            };
            let failure = match program.session.evaluate(&batch, options) {
                Ok(Ok(eval)) => {
                    let words = eval.words_per_rule as usize;
                    for (r, unit) in program.units.iter().enumerate() {
                        let bits = self.rule_bits.get_mut(unit).expect("inserted above");
                        for (i, bit) in bits[start..end].iter_mut().enumerate() {
                            *bit = eval.matches[r * words + i / 64] >> (i % 64) & 1 == 1;
                        }
                    }
                    for e in eval.errors {
                        let Some(unit) = program.units.get(e.rule as usize) else {
                            continue;
                        };
                        let subject = side.subjects[start + e.subject as usize].id();
                        let owner = self.owner(*unit);
                        let result = out.groups.entry(owner).or_default();
                        result.errors.entry(subject).or_insert(e.message);
                    }
                    for x in eval.explanations {
                        let Some(unit) = program.units.get(x.rule as usize) else {
                            continue;
                        };
                        out.explanations.push(Explained {
                            unit: *unit,
                            subject: side.subjects[start + x.subject as usize].id(),
                            outcome: x,
                        });
                    }
                    None
                }
                Ok(Err(EvaluateError::InvalidBatch(m) | EvaluateError::Other(m))) => {
                    Some(format!("the evaluator refused a batch: {m}"))
                }
                Err(e) => {
                    out.poisoned = true;
                    Some(e.to_string())
                }
            };
            if let Some(reason) = failure {
                tracing::warn!(reason = %reason, "rule evaluation failed; memberships left as they are");
                for unit in &program.units {
                    let owner = self.owner(*unit);
                    out.groups.entry(owner).or_default().failure = Some(reason.clone());
                }
                return Ok(());
            }
            start = end;
        }
        Ok(())
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
            let combined: Vec<bool> = (0..side.subjects.len())
                .map(|i| {
                    def.quantifier.combine(
                        side.related[i]
                            .iter()
                            .map(|j| nested.get(*j).copied().unwrap_or(false)),
                    )
                })
                .collect();
            if self.explain {
                let report = out.related.entry(n).or_default();
                for (i, v) in combined.iter().enumerate() {
                    report.insert(side.subjects[i].id(), *v);
                }
                let related_side = self.universe.side(other(owner_kind));
                let report = out.nested.entry(n).or_default();
                for (j, v) in nested.iter().enumerate() {
                    report.insert(related_side.subjects[j].id(), *v);
                }
            }
            self.combined.insert(n, combined);
        }
    }

    fn decide(&mut self, id: &Uuid, out: &mut Outcome) -> Result<(), DomainError> {
        let group: &Group = &self.plan.groups[id];
        let side = self.universe.side(group.subject);
        let result = out.groups.entry(*id).or_default();
        result.stored = Stored::load(self.reader, id, side)?;
        let failed = result.failure.is_some();
        let rule = self.rule_bits.get(&Unit::Rule(*id));
        let excl = self.rule_bits.get(&Unit::Exclusion(*id));
        let mut bits = vec![false; side.subjects.len()];
        for (pos, subject) in side.subjects.iter().enumerate() {
            if !side.affected[pos] {
                continue;
            }
            let sid = subject.id();
            let stored = &result.stored;
            let current = stored.members.get(&sid);
            if failed {
                // Leave memberships as they are when the rule could not run.
                bits[pos] = current.is_some();
                continue;
            }
            let rule_match = rule.is_some_and(|b| b[pos]);
            let excluded = excl.is_some_and(|b| b[pos]);
            let admitted = group.admits(subject.state());
            let by_rule = rule_match && !excluded && admitted;
            let exemption = stored
                .exemptions
                .get(&sid)
                .filter(|e| e.active(self.now))
                .map(|e| e.kind);
            let manual = stored.manual.contains(&sid);
            let mut suggestion = None;
            let member = match exemption {
                Some(ExemptionKind::Never) => None,
                Some(ExemptionKind::Always) if admitted => Some(Source::Exemption),
                _ if manual => Some(Source::Manual),
                _ if group.review && self.mode == Mode::Apply => {
                    let has = current.is_some_and(|m| m.source == Source::Rule);
                    if by_rule != has {
                        suggestion = Some(if by_rule {
                            SuggestionAction::Add
                        } else {
                            SuggestionAction::Remove
                        });
                    }
                    has.then_some(Source::Rule)
                }
                _ => by_rule.then_some(Source::Rule),
            };
            bits[pos] = member.is_some();
            result.decisions.push(Decision {
                subject: sid,
                member,
                suggestion,
                rule_match,
                excluded,
            });
        }
        self.decided.insert(*id, bits);
        Ok(())
    }
}

fn other(kind: SubjectKind) -> SubjectKind {
    match kind {
        SubjectKind::User => SubjectKind::Device,
        SubjectKind::Device => SubjectKind::User,
    }
}
