//! A rule evaluator to adapt: a group whose `rule` is
//! `{"evaluator": "my-rules", "text": "department == \"Engineering\""}`
//! has the subjects for which the text holds.
//!
//! The language is one comparison per rule: `<attribute> == "<text>"` or
//! `<attribute> != "<text>"`. A text list matches `==` when any item is
//! equal. A subject without the attribute matches neither: the contract
//! (`rules.wit`, "Missing attributes") says a missing attribute never
//! satisfies a condition, not even a negative one.
//!
//! The host compiles a group's rules once, keeps the compiled form, and then
//! sends subjects in batches, so do the work of reading a rule in `compile`
//! and keep `evaluate` to comparisons.

use cohort_sdk::rules::{
    BatchView, CompileError, EvaluateError, EvaluateOptions, Evaluation, EvaluatorInfo, Matches,
    RuleEvaluator, RuleProblem, RuleSource, ValueRef,
};
use cohort_sdk::{AttributeDef, AttributeType, SubjectKind};

/// The evaluator.
pub struct MyRules;

/// One compiled rule.
pub struct Rule {
    attribute: String,
    equal: bool,
    text: String,
}

/// Reads `<attribute> == "<text>"` or `<attribute> != "<text>"`; the error
/// is `(column, message)`, the column 1-based.
fn parse(text: &str) -> Result<Rule, (usize, String)> {
    let (at, equal, op) = match (text.find("=="), text.find("!=")) {
        (Some(i), None) => (i, true, "=="),
        (None, Some(i)) => (i, false, "!="),
        _ => {
            return Err((
                1,
                "write one comparison: attribute == \"text\" or attribute != \"text\"".into(),
            ));
        }
    };
    let attribute = text[..at].trim();
    if attribute.is_empty() || attribute.contains(char::is_whitespace) {
        return Err((1, "name one attribute before the operator".into()));
    }
    let rest = &text[at + op.len()..];
    let value = rest.trim();
    let column = at + op.len() + (rest.len() - rest.trim_start().len()) + 1;
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains('"'))
        .ok_or((column, "the value must be one \"quoted\" text".to_string()))?;
    Ok(Rule {
        attribute: attribute.to_string(),
        equal,
        text: inner.to_string(),
    })
}

fn noun(kind: SubjectKind) -> &'static str {
    match kind {
        SubjectKind::User => "user",
        SubjectKind::Device => "device",
    }
}

impl RuleEvaluator for MyRules {
    type Rules = Vec<Rule>;

    fn describe() -> EvaluatorInfo {
        EvaluatorInfo {
            display_name: "Equals".into(),
            language: "equals".into(),
            description: "One comparison per rule: attribute == \"text\" or attribute != \"text\"."
                .into(),
        }
    }

    // Report every problem of every rule at once, so an admin fixes them in
    // one pass.
    fn compile(
        kind: SubjectKind,
        schema: &[AttributeDef],
        rules: &[RuleSource],
    ) -> Result<Vec<Rule>, CompileError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut problems = Vec::new();
        for (i, source) in rules.iter().enumerate() {
            let problem = |column: usize, message: String| RuleProblem {
                rule: i as u32,
                at: format!("1:{column}"),
                message,
            };
            match parse(&source.text) {
                Err((column, message)) => problems.push(problem(column, message)),
                Ok(rule) => {
                    let known = schema
                        .iter()
                        .find(|a| a.name == rule.attribute && a.kind == kind);
                    match known {
                        None => problems.push(problem(
                            1,
                            format!("no {} attribute is called {:?}", noun(kind), rule.attribute),
                        )),
                        Some(def)
                            if !matches!(
                                def.type_,
                                AttributeType::Text | AttributeType::TextList
                            ) =>
                        {
                            problems.push(problem(
                                1,
                                format!(
                                    "{} is not text; this language compares text",
                                    rule.attribute
                                ),
                            ));
                        }
                        Some(_) => compiled.push(rule),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(compiled)
        } else {
            Err(CompileError::Invalid(problems))
        }
    }

    fn len(rules: &Vec<Rule>) -> u32 {
        rules.len() as u32
    }

    fn evaluate(
        rules: &Vec<Rule>,
        batch: &BatchView<'_>,
        _options: &EvaluateOptions,
    ) -> Result<Evaluation, EvaluateError> {
        let mut matches = Matches::new(rules.len(), batch.len());
        for (r, rule) in rules.iter().enumerate() {
            // An attribute no subject in the batch has is absent from it.
            let index = batch.attribute_index(&rule.attribute);
            for s in 0..batch.len() {
                let Some(a) = index else { continue };
                let subject = batch.subject(s);
                if !subject.has(a) {
                    continue;
                }
                let found = subject.values(a).any(|v| v == ValueRef::Text(&rule.text));
                if found == rule.equal {
                    matches.set(r, s);
                }
            }
        }
        Ok(matches.into_evaluation())
    }
}

cohort_sdk::export_rule_evaluator!(MyRules);

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::rules::{BatchBuilder, Input};

    fn schema() -> Vec<AttributeDef> {
        vec![
            AttributeDef {
                name: "department".into(),
                kind: SubjectKind::User,
                type_: AttributeType::Text,
                custom: false,
            },
            AttributeDef {
                name: "hired_at".into(),
                kind: SubjectKind::User,
                type_: AttributeType::Timestamp,
                custom: false,
            },
        ]
    }

    fn rules(texts: &[&str]) -> Vec<RuleSource> {
        texts
            .iter()
            .map(|t| RuleSource {
                text: (*t).to_string(),
            })
            .collect()
    }

    #[test]
    fn equal_and_not_equal() {
        let compiled = MyRules::compile(
            SubjectKind::User,
            &schema(),
            &rules(&[
                r#"department == "Engineering""#,
                r#"department != "Engineering""#,
            ]),
        )
        .unwrap();
        let mut builder = BatchBuilder::new(SubjectKind::User);
        builder
            .push(&[("department", Input::Text("Engineering"))])
            .push(&[("department", Input::Text("Sales"))])
            .push(&[]);
        let batch = builder.build();
        let view = BatchView::new(&batch).unwrap();
        let options = EvaluateOptions {
            now_millis: 0,
            explain: false,
        };
        let evaluation = MyRules::evaluate(&compiled, &view, &options).unwrap();
        let matches = Matches::from_evaluation(&evaluation);
        assert!(matches.get(0, 0) && !matches.get(0, 1) && !matches.get(0, 2));
        // The third subject has no department: neither rule holds for it.
        assert!(!matches.get(1, 0) && matches.get(1, 1) && !matches.get(1, 2));
    }

    #[test]
    fn every_problem_is_reported_with_its_rule() {
        let Err(CompileError::Invalid(problems)) = MyRules::compile(
            SubjectKind::User,
            &schema(),
            &rules(&["department = x", r#"titel == "x""#, r#"hired_at == "x""#]),
        ) else {
            panic!("the rules compiled");
        };
        let rules: Vec<u32> = problems.iter().map(|p| p.rule).collect();
        assert_eq!(rules, [0, 1, 2]);
        assert!(problems[1].message.contains("titel"), "{problems:?}");
    }

    #[test]
    fn the_value_must_be_quoted() {
        let err = parse("department == Engineering").err().unwrap();
        assert_eq!(err.0, 15);
    }
}
