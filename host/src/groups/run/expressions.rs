//! Evaluating a stage's CEL expressions in the host: one scope per subject
//! for every expression of its kind, split over threads for large runs, the
//! outcomes kept as bits that the evaluator then reads as synthetic inputs.

use std::collections::HashMap;

use uuid::Uuid;

use super::super::subjects::Loaded;
use super::outcome::{Outcome, PartValues};
use super::{Bits, Run, other};
use crate::directory::{AttrType, SubjectKind};
use crate::expression::{Bindings, Related};
use cohort_storage::Reader;

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

impl<R: Reader> Run<'_, R> {
    /// Evaluates the expressions that stage `stage` reads, over the
    /// subjects of their kind: one scope per subject for all of them.
    pub(super) fn run_expressions(&mut self, stage: usize, out: &mut Outcome) {
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
                super::super::plan::parallelism()
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
}
