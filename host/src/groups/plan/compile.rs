//! Compiling a laid-out plan: one rule set per (stage, kind, evaluator)
//! bucket, with the attributes and synthetic inputs its rules read, into as
//! many instances as threads will evaluate it; and reporting what the
//! evaluator refuses at the position the admin wrote it.

use std::collections::BTreeSet;
use std::sync::Arc;

use uuid::Uuid;

use super::super::rule::{
    Cond, ExpressionContext, expression_attribute, member_attribute, related_attribute,
};
use super::assemble::{Draft, unit_owner};
use super::reads::Readers;
use super::{Plan, Program, Schema, Unit};
use crate::directory::{AttrType, SubjectKind};
use crate::error::DomainError;
use crate::expression;
use crate::plugins::batch::{attribute_defs, wit_kind};
use crate::plugins::bindings::rules::{CompileError, RuleSource};
use crate::plugins::bindings::types::{AttributeDef, AttributeType};
use crate::plugins::{PluginError, Registry, World};

fn kind_of(slot: usize) -> SubjectKind {
    if slot == 0 {
        SubjectKind::User
    } else {
        SubjectKind::Device
    }
}

/// Compiles every bucket. `Ok(Err((group, reason)))` names a target that
/// failed when not strict.
pub(super) fn compile(
    registry: &Registry,
    schema: &Schema,
    ctx: &ExpressionContext,
    draft: Draft,
    strict: bool,
    copies: usize,
) -> Result<Result<Plan, (Uuid, String)>, DomainError> {
    let mut stages: Vec<Vec<Program>> = Vec::new();
    for ((stage, kind_slot, evaluator), units) in &draft.buckets {
        let kind = kind_of(*kind_slot);
        let fail = |unit: Unit, field: String, message: String| {
            let (owner, _) = unit_owner(&draft, unit);
            if strict {
                Err(DomainError::invalid_rule(field, message))
            } else {
                Ok(Err((owner, message)))
            }
        };
        let plugin = match registry.callable(evaluator, World::RuleEvaluator) {
            Ok(p) => p,
            Err(e) => {
                let unit = units[0].0;
                if strict {
                    return Err(evaluator_error(e));
                }
                return fail(
                    unit,
                    "evaluator".into(),
                    format!("evaluator {evaluator:?}: {e}"),
                );
            }
        };
        let attributes = schema.of(kind);
        // Plain attributes the bucket reads (all, if any rule is opaque).
        let mut wanted: Option<BTreeSet<String>> = Some(BTreeSet::new());
        let mut members: BTreeSet<Uuid> = BTreeSet::new();
        let mut related_inputs: BTreeSet<usize> = BTreeSet::new();
        let mut expression_inputs: BTreeSet<usize> = BTreeSet::new();
        for (unit, _, reads) in units {
            for (n, def) in draft.expressions.iter().enumerate() {
                if def.consumer == *unit {
                    expression_inputs.insert(n);
                }
            }
            match (wanted.as_mut(), reads) {
                (Some(w), Some(r)) => w.extend(r.iter().cloned()),
                _ => wanted = None,
            }
            let (owner, _) = unit_owner(&draft, *unit);
            if let Some(p) = draft.parsed.get(&owner) {
                for model in p.models() {
                    match unit {
                        Unit::Related(n) => {
                            // The related rule reads memberships in its own kind.
                            for (_, cond) in model.conditions() {
                                if let Cond::Related { rule, .. } = cond {
                                    members.extend(rule.references(kind).iter().map(|r| r.group));
                                }
                            }
                            let _ = n;
                        }
                        _ => {
                            for (_, cond) in model.conditions() {
                                if let Cond::Member { group, .. } = cond {
                                    members.insert(*group);
                                }
                            }
                        }
                    }
                }
            }
            if !matches!(unit, Unit::Related(_)) {
                for (n, def) in draft.related.iter().enumerate() {
                    if def.owner == owner {
                        related_inputs.insert(n);
                    }
                }
            }
        }
        let plain: Vec<(String, AttrType)> = attributes
            .iter()
            .filter(|a| wanted.as_ref().is_none_or(|w| w.contains(&a.name)))
            .map(|a| (a.name.clone(), a.attr_type))
            .collect();
        // The evaluator checks names against the full schema, so unknown
        // attributes are reported; synthetic inputs are added to it.
        let mut defs: Vec<AttributeDef> = attribute_defs(kind, attributes);
        for g in &members {
            defs.push(synthetic_def(kind, member_attribute(g)));
        }
        for n in &related_inputs {
            defs.push(synthetic_def(kind, related_attribute(*n)));
        }
        for n in &expression_inputs {
            defs.push(synthetic_def(kind, expression_attribute(*n)));
        }
        let sources: Vec<RuleSource> = units
            .iter()
            .map(|(_, text, _)| RuleSource { text: text.clone() })
            .collect();
        let session = match registry.runtime().compile_rules(
            Arc::clone(&plugin),
            wit_kind(kind),
            &defs,
            &sources,
        ) {
            Ok(Ok(s)) => s,
            Ok(Err(CompileError::Invalid(problems))) => {
                let Some(first) = problems.first() else {
                    return fail(
                        units[0].0,
                        "rule".into(),
                        "the evaluator refused the rule".into(),
                    );
                };
                let (unit, _, _) = &units[first.rule as usize % units.len()];
                let (_, prefix) = unit_owner(&draft, *unit);
                let message = problems
                    .iter()
                    .filter(|p| p.rule == first.rule)
                    .map(|p| {
                        let (_, pre) = unit_owner(&draft, units[p.rule as usize % units.len()].0);
                        format!("{pre}{}: {}", p.at, p.message)
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return fail(*unit, format!("{prefix}{}", first.at), message);
            }
            Ok(Err(CompileError::Other(m))) => {
                return fail(units[0].0, "rule".into(), m);
            }
            Err(e) => {
                if strict {
                    return Err(evaluator_error(e));
                }
                return fail(units[0].0, "evaluator".into(), e.to_string());
            }
        };
        let mut sessions = vec![session];
        while sessions.len() < copies {
            // Extra instances only speed evaluation up; go without on failure.
            match registry.runtime().compile_rules(
                Arc::clone(&plugin),
                wit_kind(kind),
                &defs,
                &sources,
            ) {
                Ok(Ok(s)) => sessions.push(s),
                _ => break,
            }
        }
        while stages.len() <= *stage {
            stages.push(Vec::new());
        }
        stages[*stage].push(Program {
            kind,
            sessions,
            units: units.iter().map(|(u, ..)| *u).collect(),
            attributes: plain,
            members: members.into_iter().collect(),
            related: related_inputs.into_iter().collect(),
            expressions: expression_inputs.into_iter().collect(),
        });
    }
    // Stages with only expressions have no program, but still run.
    let last = draft
        .stage_of
        .values()
        .chain(draft.expressions.iter().map(|d| &d.stage))
        .max();
    if let Some(&last) = last {
        while stages.len() <= last {
            stages.push(Vec::new());
        }
    }
    let mut by_stage = vec![Vec::new(); stages.len()];
    for id in &draft.order {
        if let Some(&stage) = draft.stage_of.get(id) {
            while by_stage.len() <= stage {
                by_stage.push(Vec::new());
            }
            by_stage[stage].push(*id);
        }
    }
    let readers = [
        Readers::index(&draft.group_reads, SubjectKind::User),
        Readers::index(&draft.group_reads, SubjectKind::Device),
    ];
    let direct = draft.direct;
    let mut expressions = draft.expressions;
    for def in &mut expressions {
        let typed = |kind: SubjectKind, names: &BTreeSet<String>| -> Vec<(String, AttrType)> {
            schema
                .of(kind)
                .iter()
                .filter(|a| names.contains(&a.name))
                .map(|a| (a.name.clone(), a.attr_type))
                .collect()
        };
        let kind = def.expr.kind();
        let other = match kind {
            SubjectKind::User => SubjectKind::Device,
            SubjectKind::Device => SubjectKind::User,
        };
        let reads = def.expr.reads();
        if def.nested {
            // About a related subject: what it reads is that subject's.
            def.attributes = typed(kind, &reads.related);
        } else {
            def.attributes = typed(kind, &reads.own);
            def.related_attributes = typed(other, &reads.related);
        }
    }
    Ok(Ok(Plan {
        direct,
        expressions,
        runtime: Arc::new(expression::Runtime::new()),
        group_names: Arc::new(
            ctx.groups
                .iter()
                .map(|(id, (_, name))| (*id, name.clone()))
                .collect(),
        ),
        by_stage,
        readers,
        groups: draft.groups,
        order: draft.order,
        stages,
        related: draft.related,
        related_stage: draft.related_stage,
        dependents: draft.dependents,
        has_related: draft.has_related,
        failed: draft.failed,
    }))
}

fn synthetic_def(kind: SubjectKind, name: String) -> AttributeDef {
    AttributeDef {
        name,
        kind: wit_kind(kind),
        type_: AttributeType::Boolean,
        custom: false,
    }
}

/// An evaluator that cannot be called is a conflict with the group's
/// settings, not an invalid rule.
fn evaluator_error(e: PluginError) -> DomainError {
    match e {
        PluginError::NotFound(name) => DomainError::Conflict {
            code: "evaluator_not_installed",
            field: Some("evaluator".into()),
            message: format!("no rule-evaluator plugin named {name:?} is installed"),
        },
        PluginError::Disabled(name) => DomainError::Conflict {
            code: "evaluator_disabled",
            field: Some("evaluator".into()),
            message: format!("the rule-evaluator plugin {name:?} is disabled"),
        },
        PluginError::WrongWorld { plugin, actual, .. } => DomainError::Conflict {
            code: "evaluator_wrong_world",
            field: Some("evaluator".into()),
            message: format!("plugin {plugin:?} is a {actual}, not a rule-evaluator"),
        },
        other => DomainError::Plugin(other),
    }
}
