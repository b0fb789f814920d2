//! A rule evaluator that misbehaves on purpose. Each rule's text names a
//! behaviour, run during `evaluate`:
//!
//! - `ok`: matches every subject (the control case);
//! - `loop`: spins forever;
//! - `alloc`: allocates until memory runs out;
//! - `trap-at:N`: matches subjects until subject N, then traps;
//! - `trap-compile`: traps in `compile` instead;
//! - `http:URL`: sends a GET to URL and reports the outcome as a subject error;
//! - `big-output`: returns explanations far past any output cap;
//! - `log-flood`: logs a megabyte of lines, then matches everything;
//! - `env`: reports what `std::env` and `std::fs` can see.

use cohort_sdk::host::{self, Method};
use cohort_sdk::rules::{
    BatchView, CompileError, ConditionOutcome, EvaluateError, EvaluateOptions, Evaluation,
    EvaluatorInfo, Matches, RuleEvaluator, RuleProblem, RuleSource, SubjectError,
};
use cohort_sdk::{AttributeDef, SubjectKind};

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Hostile;

impl RuleEvaluator for Hostile {
    type Rules = Vec<String>;

    fn describe() -> EvaluatorInfo {
        EvaluatorInfo {
            display_name: "Hostile".into(),
            language: "behaviour".into(),
            description: "Misbehaves on purpose.".into(),
        }
    }

    fn compile(
        _kind: SubjectKind,
        _schema: &[AttributeDef],
        rules: &[RuleSource],
    ) -> Result<Vec<String>, CompileError> {
        let problems: Vec<RuleProblem> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.text.is_empty())
            .map(|(i, _)| RuleProblem {
                rule: i as u32,
                at: String::new(),
                message: "empty behaviour".into(),
            })
            .collect();
        if rules.iter().any(|r| r.text == "trap-compile") {
            panic!("hostile plugin traps while compiling");
        }
        if problems.is_empty() {
            Ok(rules.iter().map(|r| r.text.clone()).collect())
        } else {
            Err(CompileError::Invalid(problems))
        }
    }

    fn len(rules: &Vec<String>) -> u32 {
        rules.len() as u32
    }

    fn evaluate(
        rules: &Vec<String>,
        batch: &BatchView<'_>,
        _options: &EvaluateOptions,
    ) -> Result<Evaluation, EvaluateError> {
        let mut matches = Matches::new(rules.len(), batch.len());
        let mut errors = Vec::new();
        let mut explanations = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            match rule.as_str() {
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        // Reserve without touching: grows linear memory as
                        // fast as possible, so the memory cap (not the CPU
                        // budget) is what stops it.
                        let mut chunk = Vec::with_capacity(4 << 20);
                        chunk.push(1u8);
                        hoard.push(chunk);
                        std::hint::black_box(&hoard);
                    }
                }
                "big-output" => {
                    for i in 0..30_000u32 {
                        explanations.push(ConditionOutcome {
                            rule: r as u32,
                            subject: 0,
                            at: format!("/padding/{i}"),
                            matched: true,
                            detail: "x".repeat(100),
                        });
                    }
                }
                "log-flood" => {
                    let line = "y".repeat(1_000);
                    for i in 0..1_000 {
                        host::info(&line, &[("i", &i.to_string())]);
                    }
                    (0..batch.len()).for_each(|s| matches.set(r, s));
                }
                "env" => {
                    let home = std::env::var_os("HOME");
                    let file = std::fs::read("/etc/passwd").map(|s| s.len());
                    errors.push(SubjectError {
                        rule: r as u32,
                        subject: 0,
                        message: format!("home={home:?} file={file:?}"),
                    });
                }
                "ok" => (0..batch.len()).for_each(|s| matches.set(r, s)),
                other => {
                    if let Some(n) = other.strip_prefix("trap-at:") {
                        let n: usize = n.parse().unwrap_or(0);
                        for s in 0..batch.len() {
                            if s == n {
                                panic!("hostile plugin traps at subject {s}");
                            }
                            matches.set(r, s);
                        }
                    } else if let Some(url) = other.strip_prefix("http:") {
                        let outcome = host::send(&host::request(Method::Get, url));
                        let message = match outcome {
                            Ok(resp) => format!("status {}", resp.status),
                            Err(e) => format!("{e:?}"),
                        };
                        errors.push(SubjectError {
                            rule: r as u32,
                            subject: 0,
                            message,
                        });
                    }
                }
            }
        }
        let mut evaluation = matches.into_evaluation();
        evaluation.errors = errors;
        evaluation.explanations = explanations;
        Ok(evaluation)
    }
}

cohort_sdk::export_rule_evaluator!(Hostile);
