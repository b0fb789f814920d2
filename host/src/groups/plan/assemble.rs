//! Laying a plan out before anything is compiled: the targets in dependency
//! order, each in the first stage after every target it refers to, its
//! cross-subject conditions as rules of their own in the related kind (an
//! earlier stage), its CEL expressions pulled out for the host to evaluate,
//! and the rule texts grouped by (stage, kind, evaluator). Nothing here calls
//! an evaluator, so the layout can be tested on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::super::model::Group;
use super::super::rule::{Cond, Reference, expression_attribute, related_attribute};
use super::graph::dependency_order;
use super::parsed::Parsed;
use super::reads::Reads;
use super::{ExpressionDef, RelatedDef, Unit, other_kind, slot};
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::expression::Expression;

/// One rule of a bucket: what it stands for, its text, what it reads.
type BucketRule = (Unit, String, Option<BTreeSet<String>>);

/// A plan before compilation: units grouped by (stage, kind, evaluator),
/// with their rule texts.
pub(super) struct Draft {
    pub(super) groups: HashMap<Uuid, Arc<Group>>,
    pub(super) order: Vec<Uuid>,
    pub(super) stage_of: HashMap<Uuid, usize>,
    pub(super) related: Vec<RelatedDef>,
    pub(super) related_stage: Vec<usize>,
    pub(super) expressions: Vec<ExpressionDef>,
    pub(super) direct: Vec<(Unit, usize)>,
    pub(super) parsed: HashMap<Uuid, Parsed>,
    pub(super) buckets: BTreeMap<(usize, usize, String), Vec<BucketRule>>,
    pub(super) group_reads: HashMap<Uuid, Reads>,
    pub(super) dependents: HashMap<Uuid, Vec<Uuid>>,
    pub(super) has_related: [bool; 2],
    pub(super) failed: BTreeMap<Uuid, String>,
}

pub(super) fn assemble(
    groups: &HashMap<Uuid, Arc<Group>>,
    parsed: &HashMap<Uuid, Parsed>,
    failed: BTreeMap<Uuid, String>,
) -> Result<Draft, DomainError> {
    // Dependency order among targets (depth-first, stable by id).
    let mut ids: Vec<Uuid> = groups.keys().copied().collect();
    ids.sort();
    let refs = |id: &Uuid| -> Vec<Uuid> {
        let g = &groups[id];
        parsed[id]
            .references(g.subject)
            .into_iter()
            .map(|r| r.group)
            .filter(|r| groups.contains_key(r))
            .collect()
    };
    let order = dependency_order(&ids, refs)?;
    let mut stage_of: HashMap<Uuid, usize> = HashMap::new();
    let mut related = Vec::new();
    let mut related_stage = Vec::new();
    let mut expressions: Vec<ExpressionDef> = Vec::new();
    let mut direct: Vec<(Unit, usize)> = Vec::new();
    let mut buckets: BTreeMap<_, Vec<_>> = BTreeMap::new();
    let mut has_related = [false; 2];
    let after = |refs: &BTreeSet<Reference>, stage_of: &HashMap<Uuid, usize>| {
        refs.iter()
            .filter_map(|r| stage_of.get(&r.group).map(|s| s + 1))
            .max()
            .unwrap_or(0)
    };
    let mut group_reads: HashMap<Uuid, Reads> = HashMap::new();
    for id in &order {
        let g = &groups[id];
        let p = &parsed[id];
        let mut stage = 0;
        let mut own_reads = Reads::all();
        // Cross-subject conditions first: each is a rule of its own in the
        // related kind, evaluated in an earlier stage than the owner.
        let mut texts: Vec<(Unit, String, Option<BTreeSet<String>>)> = Vec::new();
        let mut related_units = Vec::new();
        let mut top_exprs: Vec<usize> = Vec::new();
        for (field, model, raw) in [
            ("rule", &p.rule, &g.rule),
            ("exclusion", &p.exclusion, &g.exclusion),
        ] {
            let Some(raw) = raw else { continue };
            let unit = if field == "rule" {
                Unit::Rule(*id)
            } else {
                Unit::Exclusion(*id)
            };
            match model {
                None => {
                    let text = raw.as_str().unwrap_or_default().to_string();
                    own_reads.add(g.subject, None);
                    texts.push((unit, text, None));
                }
                Some(model) if model.single_expression().is_some() => {
                    // Nothing for an evaluator to do: the expression's
                    // outcome is the rule's.
                    let (own, related_reads) = model.reads();
                    own_reads.add(g.subject, Some(&own));
                    let (expr_at, e) = model.single_expression().expect("checked");
                    if e.reads().reads_related {
                        own_reads.add(other_kind(g.subject), Some(&related_reads));
                        has_related[slot(g.subject)] = true;
                    }
                    top_exprs.push(expressions.len());
                    direct.push((unit, expressions.len()));
                    expressions.push(expression_def(
                        *id,
                        format!("{field}{expr_at}"),
                        e,
                        false,
                        unit,
                    ));
                }
                Some(model) => {
                    let (own, _) = model.reads();
                    own_reads.add(g.subject, Some(&own));
                    let mut own_exprs = Vec::new();
                    let text = model.to_evaluator_text(|at, cond| {
                        if let Cond::Expr {
                            at: expr_at,
                            compiled: Some(e),
                            ..
                        } = cond
                        {
                            own_exprs.push(expressions.len());
                            expressions.push(expression_def(
                                *id,
                                format!("{field}{expr_at}"),
                                e,
                                false,
                                unit,
                            ));
                            return expression_attribute(expressions.len() - 1);
                        }
                        let Cond::Related {
                            kind,
                            quantifier,
                            rule,
                        } = cond
                        else {
                            unreachable!("only related conditions and expressions are handed out")
                        };
                        let n = related.len();
                        let key = if *kind == SubjectKind::Device {
                            "devices"
                        } else {
                            "users"
                        };
                        let rel_field = format!("{field}{at}/{key}");
                        related.push(RelatedDef {
                            owner: *id,
                            field: rel_field.clone(),
                            quantifier: *quantifier,
                        });
                        let rel_refs = rule.references(*kind);
                        let rel_stage = after(&rel_refs, &stage_of);
                        related_stage.push(rel_stage);
                        let rel_reads = rule.reads().0;
                        own_reads.add(*kind, Some(&rel_reads));
                        has_related[slot(g.subject)] = true;
                        let text = rule.to_evaluator_text(|_, nested| {
                            let Cond::Expr {
                                at: expr_at,
                                compiled: Some(e),
                                ..
                            } = nested
                            else {
                                unreachable!("no nested conditions on related subjects")
                            };
                            let mut def = expression_def(
                                *id,
                                format!("{rel_field}{expr_at}"),
                                e,
                                true,
                                Unit::Related(n),
                            );
                            def.stage = rel_stage;
                            expressions.push(def);
                            expression_attribute(expressions.len() - 1)
                        });
                        related_units.push((rel_stage, *kind, Unit::Related(n), text, rel_reads));
                        related_attribute(n)
                    });
                    if model.expression_reads_related() {
                        own_reads.add(other_kind(g.subject), Some(&model.reads().1));
                        has_related[slot(g.subject)] = true;
                    }
                    top_exprs.extend(own_exprs);
                    texts.push((unit, text, Some(own)));
                }
            }
        }
        group_reads.insert(*id, own_reads);
        stage = stage.max(after(&p.references(g.subject), &stage_of));
        for (rs, ..) in &related_units {
            stage = stage.max(rs + 1);
        }
        stage_of.insert(*id, stage);
        for n in top_exprs {
            expressions[n].stage = stage;
        }
        for (rs, kind, unit, text, rel_reads) in related_units {
            buckets
                .entry((rs, slot(kind), g.evaluator.clone()))
                .or_default()
                .push((unit, text, Some(rel_reads)));
        }
        for (unit, text, r) in texts {
            buckets
                .entry((stage, slot(g.subject), g.evaluator.clone()))
                .or_default()
                .push((unit, text, r));
        }
    }
    let mut dependents: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for id in &order {
        for r in refs(id) {
            dependents.entry(r).or_default().push(*id);
        }
    }
    Ok(Draft {
        groups: groups.clone(),
        order,
        stage_of,
        related,
        related_stage,
        expressions,
        direct,
        parsed: parsed.clone(),
        buckets,
        group_reads,
        dependents,
        has_related,
        failed,
    })
}

fn expression_def(
    owner: Uuid,
    field: String,
    e: &Arc<Expression>,
    nested: bool,
    consumer: Unit,
) -> ExpressionDef {
    ExpressionDef {
        owner,
        field,
        expr: Arc::clone(e),
        nested,
        stage: 0,
        consumer,
        attributes: Vec::new(),
        related_attributes: Vec::new(),
    }
}

/// The group a unit belongs to, and the field prefix of its positions.
pub(super) fn unit_owner(draft: &Draft, unit: Unit) -> (Uuid, String) {
    match unit {
        Unit::Rule(g) => (g, "rule".into()),
        Unit::Exclusion(g) => (g, "exclusion".into()),
        Unit::Related(n) => (draft.related[n].owner, draft.related[n].field.clone()),
    }
}

#[cfg(test)]
#[path = "assemble_tests.rs"]
mod tests;
