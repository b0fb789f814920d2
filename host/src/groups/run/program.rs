//! Calling an evaluator: building the batches of one compiled program
//! (plain attributes plus the synthetic inputs the host computed), spreading
//! the calls over the program's instances, and turning the matches,
//! per-subject errors and explanations it returns into rule bits.

use super::super::plan::Program;
use super::super::rule::{expression_attribute, member_attribute, related_attribute};
use super::outcome::{Explained, Outcome};
use super::{Bits, PAIRS_PER_CALL, Run};
use crate::error::DomainError;
use crate::plugins::batch::{BatchBuilder, wit_kind};
use crate::plugins::bindings::rules::{EvaluateError, EvaluateOptions};
use cohort_storage::Reader;

impl<R: Reader> Run<'_, R> {
    pub(super) fn run_program(
        &mut self,
        program: &Program,
        out: &mut Outcome,
    ) -> Result<(), DomainError> {
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
}
