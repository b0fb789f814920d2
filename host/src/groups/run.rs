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

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::layout::{ERRORS, EXEMPTIONS, MANUAL, SUGGESTIONS, pair};
use super::model::{Exemption, ExemptionKind, Group, Source, Suggestion, SuggestionAction};
use super::plan::{Plan, Program, Unit};
use super::replica::Memberships;
use super::rule::{expression_attribute, member_attribute, related_attribute};
use super::subjects::{Loaded, Reader};
use super::universe::{Side, Universe};
use crate::directory::layout::uuid_at;
use crate::directory::{AttrType, SubjectKind, UserState};
use crate::error::DomainError;
use crate::expression::{Bindings, Related};
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
    /// What the rules give, review mode or not (previews, explanations);
    /// also lists the members and the rule's verdicts.
    Preview,
}

/// A bitset over universe positions.
#[derive(Clone, Debug, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    fn zeros(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn ones(n: usize) -> Bits {
        let mut b = Bits(vec![!0; n.div_ceil(64)]);
        if !n.is_multiple_of(64)
            && let Some(last) = b.0.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        b
    }

    /// Whether position `i` is set.
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    fn set(&mut self, i: usize, v: bool) {
        let w = &mut self.0[i / 64];
        if v {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }

    fn ones_iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// A membership change to write.
#[derive(Clone, Debug)]
pub struct MemberChange {
    /// The subject.
    pub subject: Uuid,
    /// Its membership before.
    pub before: Option<Source>,
    /// Its membership after.
    pub after: Option<Source>,
    /// The rule matched (before exclusion and scoping).
    pub rule_match: bool,
    /// The exclusion matched.
    pub excluded: bool,
}

/// A suggestion to create, replace or drop.
#[derive(Clone, Debug)]
pub struct SuggestionChange {
    /// The subject.
    pub subject: Uuid,
    /// The stored suggestion, if any.
    pub before: Option<Suggestion>,
    /// The suggestion the rule makes now, if any.
    pub after: Option<SuggestionAction>,
}

/// What a group's stored state says about the affected subjects, besides
/// the members (which come from the replica).
#[derive(Default)]
pub struct Stored {
    /// Manual members.
    pub manual: HashSet<Uuid>,
    /// Exemptions.
    pub exemptions: HashMap<Uuid, Exemption>,
    /// Suggestions (review mode).
    pub suggestions: HashMap<Uuid, Suggestion>,
    /// Subjects in evaluation error.
    pub errors: HashSet<Uuid>,
}

fn subject_of(k: &[u8]) -> Option<Uuid> {
    uuid_at(k, 16)
}

impl Stored {
    /// Every group's stored state, each keyspace read with one scan: for
    /// runs over the whole directory, where a scan per group and keyspace
    /// would cost more than the evaluation.
    pub fn load_all(r: &impl Reader) -> Result<HashMap<Uuid, Stored>, DomainError> {
        // Members come from the replica; the rest is small.
        let mut out: HashMap<Uuid, Stored> = HashMap::new();
        let ids = |k: &[u8]| Some((uuid_at(k, 0)?, uuid_at(k, 16)?));
        r.for_each(MANUAL, b"", &mut |k, _| {
            if let Some((g, s)) = ids(k) {
                out.entry(g).or_default().manual.insert(s);
            }
            Ok(())
        })?;
        r.for_each(EXEMPTIONS, b"", &mut |k, v| {
            if let Some((g, s)) = ids(k) {
                out.entry(g)
                    .or_default()
                    .exemptions
                    .insert(s, cohort_storage::decode_json(EXEMPTIONS, v)?);
            }
            Ok(())
        })?;
        r.for_each(SUGGESTIONS, b"", &mut |k, v| {
            if let Some((g, s)) = ids(k) {
                out.entry(g)
                    .or_default()
                    .suggestions
                    .insert(s, cohort_storage::decode_json(SUGGESTIONS, v)?);
            }
            Ok(())
        })?;
        r.for_each(ERRORS, b"", &mut |k, _| {
            if let Some((g, s)) = ids(k) {
                out.entry(g).or_default().errors.insert(s);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads a group's state, except its members, for the affected subjects
    /// of `side`.
    pub fn load(
        r: &impl Reader,
        m: &dyn Memberships,
        group: &Uuid,
        side: &Side,
    ) -> Result<Stored, DomainError> {
        let mut out = Stored::default();
        let affected = side.affected_count();
        if side.complete || affected > SCAN_ABOVE {
            let g = group.as_bytes();
            r.for_each(MANUAL, g, &mut |k, _| {
                out.manual.extend(subject_of(k));
                Ok(())
            })?;
            r.for_each(EXEMPTIONS, g, &mut |k, v| {
                if let Some(s) = subject_of(k) {
                    out.exemptions
                        .insert(s, cohort_storage::decode_json(EXEMPTIONS, v)?);
                }
                Ok(())
            })?;
            r.for_each(SUGGESTIONS, g, &mut |k, v| {
                if let Some(s) = subject_of(k) {
                    out.suggestions
                        .insert(s, cohort_storage::decode_json(SUGGESTIONS, v)?);
                }
                Ok(())
            })?;
            r.for_each(ERRORS, g, &mut |k, _| {
                out.errors.extend(subject_of(k));
                Ok(())
            })?;
        } else {
            for (i, s) in side.subjects.iter().enumerate() {
                if !side.affected[i] {
                    continue;
                }
                let id = s.id();
                if !m.may_have_state(group, &id) {
                    continue;
                }
                let key = pair(group, &id);
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
    /// Membership changes against the stored state.
    pub changes: Vec<MemberChange>,
    /// Suggestion changes (review mode, or suggestions to drop).
    pub suggestions: Vec<SuggestionChange>,
    /// Subjects the evaluator could not evaluate in this run, with the message.
    pub errors: HashMap<Uuid, String>,
    /// Affected subjects whose stored error state no longer holds.
    pub errors_cleared: Vec<Uuid>,
    /// Why the group could not be evaluated at all.
    pub failure: Option<String>,
    /// In preview mode: the members the decisions give, among the affected.
    pub members: Vec<Uuid>,
    /// In preview mode: the stored members among the affected.
    pub current: Vec<Uuid>,
    /// In preview mode: subjects the rule matched, and the exclusion matched.
    pub verdicts: HashMap<Uuid, (bool, bool)>,
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
    /// A program failed in a way that leaves its session unusable.
    pub poisoned: bool,
    /// Per expression: subject → the value of each part of its top-level
    /// `&&` / `||` chain (when explaining).
    pub expression_parts: HashMap<usize, HashMap<Uuid, PartValues>>,
}

/// What one thread's share of an expression batch produced.
#[derive(Default)]
struct Partial {
    /// Per expression, over all positions (this thread's set).
    bits: HashMap<usize, Bits>,
    /// `(expression, position, message)`.
    errors: Vec<(usize, usize, String)>,
    /// `(expression, position, part values)`, when explaining.
    parts: Vec<(usize, usize, PartValues)>,
}

/// The values of an expression's parts for one subject: true / false, or
/// why it could not be evaluated.
pub type PartValues = Vec<Result<bool, String>>;

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
    deadline: Option<std::time::Instant>,
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
    pub fn deadline(mut self, deadline: Option<std::time::Instant>) -> Self {
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

    fn run_program(&mut self, program: &Program, out: &mut Outcome) -> Result<(), DomainError> {
        let side = self.universe.side(program.kind);
        let n = side.subjects.len();
        let n_subjects = n;
        if n == 0 {
            return Ok(());
        }
        // Synthetic inputs, resolved once per program. They are sent only
        // where they hold; rules test them with `exists`.
        let members: Vec<(String, Bits)> = program
            .members
            .iter()
            .map(|g| (member_attribute(g), self.member_bits(g, program.kind)))
            .collect();
        let related: Vec<(String, Bits)> = program
            .related
            .iter()
            .map(|r| {
                let bits = self
                    .combined
                    .get(r)
                    .cloned()
                    .unwrap_or_else(|| Bits::zeros(n));
                (related_attribute(*r), bits)
            })
            .chain(program.expressions.iter().map(|n| {
                let bits = self
                    .expression_bits
                    .get(n)
                    .cloned()
                    .unwrap_or_else(|| Bits::zeros(n_subjects));
                (expression_attribute(*n), bits)
            }))
            .collect();
        // A multiple of 64, so each call's bitmap words land on whole words.
        let per_call = (PAIRS_PER_CALL / program.units.len().max(1)).clamp(64, 4096) / 64 * 64;
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(per_call)
            .map(|start| (start, (start + per_call).min(n)))
            .collect();
        let options = EvaluateOptions {
            now_millis: self.now.timestamp_millis(),
            explain: self.explain,
        };
        let build = |start: usize, end: usize| {
            let mut batch = BatchBuilder::new(wit_kind(program.kind));
            for pos in start..end {
                let subject = &side.subjects[pos];
                for (name, ty) in &program.attributes {
                    if let Some(v) = subject.attribute(name) {
                        batch.push_ref(name, *ty, v);
                    }
                }
                for (name, bits) in members.iter().chain(&related) {
                    if bits.get(pos) {
                        batch.push_bool(name, true);
                    }
                }
                batch.finish_subject();
            }
            batch.build()
        };
        type Evaluated = Result<
            Result<crate::plugins::bindings::rules::Evaluation, EvaluateError>,
            crate::plugins::PluginError,
        >;
        let evaluate_all = |session: &crate::plugins::RuleSession,
                            mine: Vec<(usize, usize)>|
         -> Vec<(usize, Evaluated)> {
            let mut done = Vec::with_capacity(mine.len());
            for (start, end) in mine {
                let r = session.evaluate(&build(start, end), options);
                let failed = !matches!(r, Ok(Ok(_)));
                done.push((start, r));
                if failed {
                    break;
                }
            }
            done
        };
        let threads = program.sessions.len().min(chunks.len()).max(1);
        let mut results: Vec<(usize, Evaluated)> = if threads > 1 {
            std::thread::scope(|scope| {
                let handles: Vec<_> = program.sessions[..threads]
                    .iter()
                    .enumerate()
                    .map(|(t, session)| {
                        let mine: Vec<(usize, usize)> =
                            chunks.iter().copied().skip(t).step_by(threads).collect();
                        let evaluate_all = &evaluate_all;
                        scope.spawn(move || evaluate_all(session, mine))
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("an evaluation thread panicked"))
                    .collect()
            })
        } else {
            evaluate_all(&program.sessions[0], chunks.clone())
        };
        results.sort_by_key(|(start, _)| *start);
        for (start, evaluated) in results {
            let failure = match evaluated {
                Ok(Ok(eval)) => {
                    let words = eval.words_per_rule as usize;
                    let first = start / 64;
                    // Only rules that matched something get bits: a rule
                    // without any reads as matching nothing.
                    for (r, unit) in program.units.iter().enumerate() {
                        let words_of_r = &eval.matches[r * words..(r + 1) * words];
                        if words_of_r.iter().all(|w| *w == 0) {
                            continue;
                        }
                        self.rule_bits
                            .entry(*unit)
                            .or_insert_with(|| Bits::zeros(n))
                            .0[first..first + words]
                            .copy_from_slice(words_of_r);
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
        }
        Ok(())
    }

    /// Evaluates the expressions that stage `stage` reads, over the
    /// subjects of their kind: one scope per subject for all of them.
    fn run_expressions(&mut self, stage: usize, out: &mut Outcome) {
        let plan = self.plan;
        for kind in [SubjectKind::User, SubjectKind::Device] {
            let defs: Vec<usize> = plan
                .expressions
                .iter()
                .enumerate()
                .filter(|(_, d)| {
                    d.stage == stage
                        && d.expr.kind() == kind
                        && self.only.as_ref().is_none_or(|o| o.contains(&d.owner))
                })
                .map(|(n, _)| n)
                .collect();
            if defs.is_empty() {
                continue;
            }
            let side = self.universe.side(kind);
            let related_side = self.universe.side(other(kind));
            let n = side.subjects.len();
            let mut attributes: Vec<(String, AttrType)> = Vec::new();
            let mut related_attributes: Vec<(String, AttrType)> = Vec::new();
            let (mut reads_groups, mut reads_related) = (false, false);
            let mut in_groups: Vec<Uuid> = Vec::new();
            for &d in &defs {
                let def = &plan.expressions[d];
                attributes.extend(def.attributes.iter().cloned());
                related_attributes.extend(def.related_attributes.iter().cloned());
                let reads = def.expr.reads();
                reads_groups |= reads.reads_groups && !def.nested;
                reads_related |= reads.reads_related && !def.nested;
                in_groups.extend(reads.in_groups.iter().copied());
            }
            attributes.sort_by(|a, b| a.0.cmp(&b.0));
            attributes.dedup_by(|a, b| a.0 == b.0);
            related_attributes.sort_by(|a, b| a.0.cmp(&b.0));
            related_attributes.dedup_by(|a, b| a.0 == b.0);
            in_groups.sort();
            in_groups.dedup();
            let in_group_bits: Vec<(Uuid, Bits)> = in_groups
                .iter()
                .map(|g| (*g, self.member_bits(g, kind)))
                .collect();
            // Read up front: the membership view is not shared across threads.
            let groups_by_position: Option<Vec<Vec<Uuid>>> = reads_groups.then(|| {
                side.subjects
                    .iter()
                    .map(|s| self.memberships.groups_of(&s.id()))
                    .collect()
            });
            let now = self.now;
            let explain = self.explain;
            // An anchored expression is tried only on subjects whose values
            // lead to it (explanations try all).
            let index = crate::expression::Index::new(
                defs.iter().map(|&d| (d, &*plan.expressions[d].expr)),
                !explain,
            );
            // Each thread fills bits over its own positions; they are OR'd.
            let deadline = self.deadline;
            let evaluate = |range: std::ops::Range<usize>| {
                let _deadline = crate::expression::deadline_guard(deadline);
                let mut partial = Partial {
                    bits: defs.iter().map(|d| (*d, Bits::zeros(n))).collect(),
                    ..Partial::default()
                };
                let mut candidates: Vec<usize> = Vec::new();
                for p in range {
                    let subject: &Loaded = &side.subjects[p];
                    index.candidates(subject, &mut candidates);
                    if candidates.is_empty() {
                        continue;
                    }
                    if crate::expression::past_deadline() {
                        for &d in &candidates {
                            partial
                                .errors
                                .push((d, p, crate::expression::LATE.to_string()));
                        }
                        break;
                    }
                    let groups = groups_by_position.as_ref().map(|all| {
                        all[p]
                            .iter()
                            .filter_map(|g| plan.group_names.get(g).map(|name| (*g, name.as_str())))
                            .collect()
                    });
                    let related = reads_related.then(|| {
                        side.related
                            .get(p)
                            .into_iter()
                            .flatten()
                            .map(|j| &*related_side.subjects[*j] as &dyn Related)
                            .collect()
                    });
                    let bindings = Bindings {
                        kind,
                        subject,
                        attributes: &attributes,
                        groups,
                        related,
                        related_attributes: &related_attributes,
                        in_groups: in_group_bits
                            .iter()
                            .filter(|(_, b)| b.get(p))
                            .map(|(g, _)| *g)
                            .collect(),
                        now,
                    };
                    let scope = plan.runtime.scope(&bindings);
                    for &d in &candidates {
                        let expr = &plan.expressions[d].expr;
                        if explain && side.affected[p] {
                            let parts = scope
                                .evaluate_parts(expr)
                                .into_iter()
                                .map(|r| r.map_err(|e| e.message))
                                .collect();
                            partial.parts.push((d, p, parts));
                        }
                        match scope.evaluate(expr) {
                            Ok(true) => partial.bits.get_mut(&d).expect("inserted").set(p, true),
                            Ok(false) => {}
                            // As with conditions, a missing attribute never
                            // matches, and is not an error to report.
                            Err(e) if e.missing_attribute => {}
                            Err(e) => partial.errors.push((d, p, e.message)),
                        }
                    }
                }
                partial
            };
            let threads = if n >= 2048 {
                super::plan::parallelism()
            } else {
                1
            };
            let partials: Vec<Partial> = if threads > 1 {
                let per = n.div_ceil(threads);
                std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let evaluate = &evaluate;
                            scope.spawn(move || evaluate(t * per..((t + 1) * per).min(n)))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("an expression thread panicked"))
                        .collect()
                })
            } else {
                vec![evaluate(0..n)]
            };
            let mut bits: HashMap<usize, Bits> =
                defs.iter().map(|d| (*d, Bits::zeros(n))).collect();
            for partial in partials {
                for (d, b) in partial.bits {
                    let into = bits.get_mut(&d).expect("inserted");
                    for (w, x) in into.0.iter_mut().zip(b.0) {
                        *w |= x;
                    }
                }
                for (d, p, parts) in partial.parts {
                    let id = side.subjects[p].id();
                    out.expression_parts.entry(d).or_default().insert(id, parts);
                }
                for (d, p, message) in partial.errors {
                    let def = &plan.expressions[d];
                    let id = side.subjects[p].id();
                    out.groups
                        .entry(def.owner)
                        .or_default()
                        .errors
                        .entry(id)
                        .or_insert_with(|| format!("{}: {message}", def.field));
                }
            }
            self.expression_bits.extend(bits);
        }
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

    fn admitted(&mut self, group: &Group, side: &Side) -> Bits {
        let n = side.subjects.len();
        if group.subject != SubjectKind::User {
            return Bits::ones(n);
        }
        self.admitted
            .entry(group.member_states.clone())
            .or_insert_with(|| {
                let mut b = Bits::zeros(n);
                for (i, s) in side.subjects.iter().enumerate() {
                    if group.admits(s.state()) {
                        b.set(i, true);
                    }
                }
                b
            })
            .clone()
    }

    /// For a run over a few subjects: whether `group` has nothing to decide
    /// (the rule matches none of them, none is a member, and none has an
    /// exemption, manual membership, suggestion or error there). Most groups
    /// are like that for any one subject, and skipping them keeps a change
    /// cheap.
    fn nothing_to_decide(&self, id: &Uuid, side: &Side, out: &Outcome) -> bool {
        let Some(touched) = &self.touched else {
            return false;
        };
        if !few(side) {
            return false;
        }
        let matched = self
            .rule_bits
            .get(&Unit::Rule(*id))
            .is_some_and(|b| b.0.iter().any(|w| *w != 0));
        let failed_or_errors = out
            .groups
            .get(id)
            .is_some_and(|r| r.failure.is_some() || !r.errors.is_empty());
        !matched && !failed_or_errors && !touched.contains(id)
    }

    fn decide(&mut self, id: &Uuid, out: &mut Outcome) -> Result<(), DomainError> {
        let group: &Group = &self.plan.groups[id];
        let side = self.universe.side(group.subject);
        let n = side.subjects.len();
        if self.mode == Mode::Apply && self.nothing_to_decide(id, side, out) {
            // Nothing changes: groups that refer to this one read its
            // stored members (see `member_bits`).
            self.rule_bits.remove(&Unit::Rule(*id));
            self.rule_bits.remove(&Unit::Exclusion(*id));
            return Ok(());
        }
        let stored = match self.prefetched.as_mut() {
            Some(all) => all.remove(id).unwrap_or_default(),
            None => Stored::load(self.reader, self.memberships, id, side)?,
        };
        let affected = self.affected_bits(group.subject);
        let pos_of = |s: &Uuid| side.index.get(s).copied();
        // Stored members as bits; sources other than the rule by position.
        let mut stored_bits = Bits::zeros(n);
        let mut stored_rule = Bits::zeros(n);
        let mut other_source: HashMap<usize, Source> = HashMap::new();
        let mut note = |p: usize, source: Source| {
            stored_bits.set(p, true);
            if source == Source::Rule {
                stored_rule.set(p, true);
            } else {
                other_source.insert(p, source);
            }
        };
        if side.complete || side.affected_count() > SCAN_ABOVE {
            self.memberships.for_each_member(id, &mut |s, source| {
                if let Some(p) = pos_of(s) {
                    note(p, source);
                }
            });
        } else {
            for (p, s) in side.subjects.iter().enumerate() {
                if side.affected[p]
                    && let Some(source) = self.memberships.member(id, &s.id())
                {
                    note(p, source);
                }
            }
        }
        let stored_source = |p: usize| -> Option<Source> {
            stored_bits
                .get(p)
                .then(|| other_source.get(&p).copied().unwrap_or(Source::Rule))
        };
        let result = out.groups.entry(*id).or_default();
        if result.failure.is_some() {
            // Leave memberships as they are when the rule could not run.
            self.decided.insert(*id, stored_bits);
            return Ok(());
        }
        let rule = self
            .rule_bits
            .remove(&Unit::Rule(*id))
            .unwrap_or_else(|| Bits::zeros(n));
        let excl = self
            .rule_bits
            .remove(&Unit::Exclusion(*id))
            .unwrap_or_else(|| Bits::zeros(n));
        let admitted = self.admitted(group, side);
        let result = out.groups.entry(*id).or_default();
        let errors: HashSet<Uuid> = result.errors.keys().copied().collect();
        let mut by_rule = Bits::zeros(n);
        for w in 0..by_rule.0.len() {
            by_rule.0[w] = rule.0[w] & !excl.0[w] & admitted.0[w] & affected.0[w];
        }
        // Subjects in error count as not matching.
        for s in &errors {
            if let Some(p) = pos_of(s) {
                by_rule.set(p, false);
            }
        }
        let review = group.review && self.mode == Mode::Apply;
        let mut finals = if review {
            stored_rule.clone()
        } else {
            by_rule.clone()
        };
        // The few subjects an exemption or a manual membership decides.
        let mut special: HashMap<usize, Option<Source>> = HashMap::new();
        for s in stored.exemptions.keys().chain(stored.manual.iter()) {
            let Some(p) = pos_of(s) else { continue };
            if !affected.get(p) || special.contains_key(&p) {
                continue;
            }
            let exemption = stored
                .exemptions
                .get(s)
                .filter(|e| e.active(self.now))
                .map(|e| e.kind);
            match exemption {
                Some(ExemptionKind::Never) => {
                    special.insert(p, None);
                }
                Some(ExemptionKind::Always) if admitted.get(p) => {
                    special.insert(p, Some(Source::Exemption));
                }
                _ if stored.manual.contains(s) => {
                    special.insert(p, Some(Source::Manual));
                }
                _ => {}
            }
        }
        for (p, d) in &special {
            finals.set(*p, d.is_some());
        }
        // Unaffected positions keep what is stored.
        for w in 0..finals.0.len() {
            finals.0[w] = (finals.0[w] & affected.0[w]) | (stored_bits.0[w] & !affected.0[w]);
        }
        let mut diff = Bits::zeros(n);
        for w in 0..finals.0.len() {
            diff.0[w] = (finals.0[w] ^ stored_bits.0[w]) & affected.0[w];
        }
        let mut positions: Vec<usize> = diff.ones_iter().collect();
        // Overridden subjects, and members whose source may change without
        // their membership changing (an exemption that ended, say).
        positions.extend(special.keys().copied());
        positions.extend(other_source.keys().copied().filter(|p| affected.get(*p)));
        positions.sort_unstable();
        positions.dedup();
        for p in positions {
            let sid = side.subjects[p].id();
            let after = match special.get(&p) {
                Some(d) => *d,
                None => finals.get(p).then_some(Source::Rule),
            };
            let before = stored_source(p);
            if before == after {
                continue;
            }
            result.changes.push(MemberChange {
                subject: sid,
                before,
                after,
                rule_match: rule.get(p),
                excluded: excl.get(p),
            });
        }
        // Review suggestions: where the rule disagrees with the rule-sourced
        // membership, for subjects no exemption or manual membership decides.
        let mut wanted: HashMap<Uuid, SuggestionAction> = HashMap::new();
        if review {
            let mut disagree = Bits::zeros(n);
            for w in 0..disagree.0.len() {
                disagree.0[w] = (by_rule.0[w] ^ stored_rule.0[w]) & affected.0[w];
            }
            for p in disagree.ones_iter() {
                if special.contains_key(&p) {
                    continue;
                }
                let action = if by_rule.get(p) {
                    SuggestionAction::Add
                } else {
                    SuggestionAction::Remove
                };
                wanted.insert(side.subjects[p].id(), action);
            }
        }
        for (sid, action) in &wanted {
            match stored.suggestions.get(sid) {
                Some(s) if s.action == *action => {}
                before => result.suggestions.push(SuggestionChange {
                    subject: *sid,
                    before: before.cloned(),
                    after: Some(*action),
                }),
            }
        }
        for (sid, s) in &stored.suggestions {
            let in_scope = pos_of(sid).is_some_and(|p| affected.get(p));
            if in_scope && !wanted.contains_key(sid) {
                result.suggestions.push(SuggestionChange {
                    subject: *sid,
                    before: Some(s.clone()),
                    after: None,
                });
            }
        }
        for sid in &stored.errors {
            let in_scope = pos_of(sid).is_some_and(|p| affected.get(p));
            if in_scope && !errors.contains(sid) {
                result.errors_cleared.push(*sid);
            }
        }
        // Errors count for decided subjects; only new ones are written.
        let apply = self.mode == Mode::Apply;
        result.errors.retain(|s, _| {
            pos_of(s).is_some_and(|p| affected.get(p)) && !(apply && stored.errors.contains(s))
        });
        if self.mode == Mode::Preview {
            for p in affected.ones_iter() {
                let sid = side.subjects[p].id();
                if finals.get(p) {
                    result.members.push(sid);
                }
                if stored_source(p).is_some() {
                    result.current.push(sid);
                }
                result.verdicts.insert(sid, (rule.get(p), excl.get(p)));
            }
        }
        self.decided.insert(*id, finals);
        Ok(())
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
