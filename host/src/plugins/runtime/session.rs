//! Compiled rules living in their evaluator's instance: the one exception to
//! "one instance per call", since compiled rules are state by design. A
//! session's results are checked against the contract (bitmap size, indices)
//! before the host believes them, and a failed call poisons the session.

use std::sync::Arc;

use parking_lot::Mutex;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::Runtime;
use super::call::Opaque;
use super::load::{LoadedPlugin, WorldPre};
use crate::plugins::bindings::rule_evaluator::RuleEvaluator;
use crate::plugins::bindings::{rules, types};
use crate::plugins::footprint::Footprint;
use crate::plugins::limits::PluginError;
use crate::plugins::manifest::World;
use crate::plugins::sandbox::Sandbox;

impl Runtime {
    /// Compile rules with a rule-evaluator plugin. The session keeps the
    /// instance (and the compiled rules) for later batches.
    pub fn compile_rules(
        self: &Arc<Self>,
        plugin: Arc<LoadedPlugin>,
        kind: types::SubjectKind,
        schema: &[types::AttributeDef],
        sources: &[rules::RuleSource],
    ) -> Result<Result<RuleSession, rules::CompileError>, PluginError> {
        let WorldPre::Rules(pre) = &plugin.pre else {
            return Err(plugin.wrong_world(World::RuleEvaluator));
        };
        let input = schema.footprint() + sources.footprint();
        if input > self.limits.input_bytes {
            return Err(PluginError::InputTooLarge {
                size: input,
                limit: self.limits.input_bytes,
            });
        }
        let mut store = self.new_store(&plugin);
        self.begin(&mut store, "compile");
        let result = (|| {
            let inst = pre.instantiate(&mut store)?;
            let compiled = inst
                .cohort_plugin_rules()
                .call_compile(&mut store, kind, schema, sources)?;
            Ok((inst, compiled))
        })();
        let (inst, compiled) = match self.settle(&plugin, &store, result.map(Opaque), |_| Ok(())) {
            Ok(Opaque(v)) => v,
            Err(e) => return Err(e),
        };
        Ok(compiled.map(|rules| RuleSession {
            runtime: Arc::clone(self),
            plugin,
            inner: Mutex::new(SessionInner {
                store,
                instance: inst,
                rules,
                poisoned: false,
            }),
            count: sources.len() as u32,
        }))
    }
}

/// Compiled rules living in their evaluator's instance.
pub struct RuleSession {
    runtime: Arc<Runtime>,
    plugin: Arc<LoadedPlugin>,
    inner: Mutex<SessionInner>,
    count: u32,
}

struct SessionInner {
    store: Store<Sandbox>,
    instance: RuleEvaluator,
    rules: ResourceAny,
    /// After a trap the instance's state is unknown; it is never entered again.
    poisoned: bool,
}

impl RuleSession {
    /// Evaluate a batch. The result is checked against the contract (bitmap
    /// size, indices) before it is returned. After a failed call the session
    /// refuses further batches: compile the rules again.
    pub fn evaluate(
        &self,
        batch: &rules::SubjectBatch,
        options: rules::EvaluateOptions,
    ) -> Result<Result<rules::Evaluation, rules::EvaluateError>, PluginError> {
        let runtime = &*self.runtime;
        let input = batch.footprint();
        if input > runtime.limits.input_bytes {
            return Err(PluginError::InputTooLarge {
                size: input,
                limit: runtime.limits.input_bytes,
            });
        }
        let mut inner = self.inner.lock();
        if inner.poisoned {
            return Err(PluginError::Trap {
                plugin: self.plugin.manifest.name.clone(),
                message: "an earlier call on these compiled rules failed; compile them again"
                    .into(),
            });
        }
        let SessionInner {
            store,
            instance,
            rules: handle,
            ..
        } = &mut *inner;
        runtime.begin(store, "evaluate");
        let result = instance.cohort_plugin_rules().rule_set().call_evaluate(
            &mut *store,
            *handle,
            batch,
            options,
        );
        let subjects = batch.row_offsets.len().saturating_sub(1);
        let count = self.count;
        let result = runtime.settle(&self.plugin, store, result, |r| match r {
            Ok(evaluation) => check_evaluation(evaluation, count, subjects),
            Err(_) => Ok(()),
        });
        if result.is_err() {
            inner.poisoned = true;
        }
        result
    }

    /// Number of rules compiled.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no rules were compiled.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

fn check_evaluation(e: &rules::Evaluation, rules: u32, subjects: usize) -> Result<(), String> {
    let words = subjects.div_ceil(64);
    if e.words_per_rule as usize != words {
        return Err(format!(
            "words-per-rule is {}, expected {words} for {subjects} subjects",
            e.words_per_rule
        ));
    }
    if e.matches.len() != words * rules as usize {
        return Err(format!(
            "the match bitmap has {} words, expected {}",
            e.matches.len(),
            words * rules as usize
        ));
    }
    if !subjects.is_multiple_of(64) && words > 0 {
        let tail_mask = !0u64 << (subjects % 64);
        for r in 0..rules as usize {
            if e.matches[r * words + words - 1] & tail_mask != 0 {
                return Err(format!(
                    "rule {r} matches subjects past the end of the batch"
                ));
            }
        }
    }
    let bad = |rule: u32, subject: u32| rule >= rules || subject as usize >= subjects;
    if let Some(x) = e.explanations.iter().find(|x| bad(x.rule, x.subject)) {
        return Err(format!(
            "an explanation refers to rule {} / subject {}, out of range",
            x.rule, x.subject
        ));
    }
    if let Some(x) = e.errors.iter().find(|x| bad(x.rule, x.subject)) {
        return Err(format!(
            "an error refers to rule {} / subject {}, out of range",
            x.rule, x.subject
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(words_per_rule: u32, matches: Vec<u64>) -> rules::Evaluation {
        rules::Evaluation {
            matches,
            words_per_rule,
            explanations: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn a_result_of_the_contracted_shape_is_accepted() {
        // 2 rules × 70 subjects: 2 words each, the last word using 6 bits.
        assert_eq!(
            check_evaluation(&evaluation(2, vec![u64::MAX, 0b11_1111, 0, 1]), 2, 70),
            Ok(())
        );
        assert_eq!(check_evaluation(&evaluation(0, vec![]), 3, 0), Ok(()));
        assert_eq!(
            check_evaluation(&evaluation(1, vec![u64::MAX]), 1, 64),
            Ok(())
        );
    }

    #[test]
    fn a_result_of_the_wrong_shape_is_refused_saying_why() {
        let err = check_evaluation(&evaluation(1, vec![0, 0]), 2, 70).unwrap_err();
        assert!(err.contains("words-per-rule is 1, expected 2"), "{err}");
        let err = check_evaluation(&evaluation(2, vec![0, 0, 0]), 2, 70).unwrap_err();
        assert!(err.contains("has 3 words, expected 4"), "{err}");
        let err = check_evaluation(&evaluation(2, vec![0, 0, 0, 1 << 6]), 2, 70).unwrap_err();
        assert!(
            err.contains("rule 1 matches subjects past the end"),
            "{err}"
        );
        let mut e = evaluation(1, vec![0]);
        e.errors.push(rules::SubjectError {
            rule: 0,
            subject: 10,
            message: "x".into(),
        });
        let err = check_evaluation(&e, 1, 10).unwrap_err();
        assert!(err.contains("rule 0 / subject 10, out of range"), "{err}");
    }
}
