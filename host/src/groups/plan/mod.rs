//! Turning groups into compiled evaluation programs.
//!
//! A plan covers a set of *target* groups (all dynamic groups for a
//! recompute, one group for a preview or an explanation). Groups the targets
//! refer to but that are not targets are inputs: their stored memberships are
//! read. Targets are split into stages so that a group is evaluated only after
//! every target group it refers to; each stage holds one compiled rule set
//! per (subject kind, evaluator), so one plugin call evaluates many rules over
//! many subjects.
//!
//! `parsed` reads a group's rules, `graph` orders the targets by their
//! references, `assemble` lays out the stages, `compile` hands each stage's
//! rules to their evaluator, and `reads` indexes what the targets read, so
//! that a change finds the groups it can affect.

mod assemble;
mod compile;
mod graph;
mod parsed;
mod reads;

pub use graph::{find_cycle, longest_chain};
pub use parsed::Parsed;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::model::Group;
use super::rule::{ExpressionContext, Quantifier};
use crate::directory::{AttrType, Attribute, SubjectKind};
use crate::error::DomainError;
use crate::expression::{self, Expression};
use crate::plugins::{Registry, RuleSession};
use assemble::assemble;
use compile::compile;
use reads::Readers;

/// What one compiled rule stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// The rule of a group.
    Rule(Uuid),
    /// The exclusion rule of a group.
    Exclusion(Uuid),
    /// A cross-subject condition, evaluated on the related subjects.
    Related(usize),
}

/// A cross-subject condition of some target group.
#[derive(Clone, Debug)]
pub struct RelatedDef {
    /// The group whose rule has the condition.
    pub owner: Uuid,
    /// Where the condition is: `rule/conditions/2/devices`.
    pub field: String,
    /// How their results combine.
    pub quantifier: Quantifier,
}

fn slot(kind: SubjectKind) -> usize {
    match kind {
        SubjectKind::User => 0,
        SubjectKind::Device => 1,
    }
}

/// One compiled rule set.
pub struct Program {
    /// Whose attributes the batch carries.
    pub kind: SubjectKind,
    /// The compiled rules: one instance per thread that evaluates them (the
    /// first one for small runs).
    pub sessions: Vec<RuleSession>,
    /// What each rule stands for, by position.
    pub units: Vec<Unit>,
    /// Plain attributes to put in the batch, with their types.
    pub attributes: Vec<(String, AttrType)>,
    /// Groups whose membership the rules read.
    pub members: Vec<Uuid>,
    /// Cross-subject outcomes the rules read.
    pub related: Vec<usize>,
    /// Expression outcomes the rules read.
    pub expressions: Vec<usize>,
}

/// A CEL expression of some target group, evaluated by the host over the
/// subjects of its kind; the evaluator reads its outcome as a synthetic
/// attribute.
#[derive(Clone, Debug)]
pub struct ExpressionDef {
    /// The group whose rule has it.
    pub owner: Uuid,
    /// Where it is: `rule/conditions/1/expression`.
    pub field: String,
    /// The compiled expression. Its kind is the kind of the subjects it is
    /// evaluated over (the related kind, inside a condition on related
    /// subjects).
    pub expr: Arc<Expression>,
    /// Inside a condition on related subjects.
    pub nested: bool,
    /// The stage whose programs read it.
    pub stage: usize,
    /// The compiled rule that reads it.
    pub consumer: Unit,
    /// The subject's attributes it reads, with their types.
    pub attributes: Vec<(String, AttrType)>,
    /// The related subjects' attributes it reads, with their types.
    pub related_attributes: Vec<(String, AttrType)>,
}

/// A compiled plan.
pub struct Plan {
    /// The target groups, by id.
    pub groups: HashMap<Uuid, Arc<Group>>,
    /// Targets in dependency order.
    pub order: Vec<Uuid>,
    /// Programs per stage.
    pub stages: Vec<Vec<Program>>,
    /// Cross-subject conditions, by number.
    pub related: Vec<RelatedDef>,
    /// Stage of each cross-subject condition's related rule.
    pub related_stage: Vec<usize>,
    /// CEL expressions, by number.
    pub expressions: Vec<ExpressionDef>,
    /// Rules that are a single expression, with it: the expression's
    /// outcome is the rule's, and no evaluator is called for them.
    pub direct: Vec<(Unit, usize)>,
    /// Evaluates the expressions.
    pub runtime: Arc<expression::Runtime>,
    /// Group names, for expressions that read `.groups`.
    pub group_names: Arc<HashMap<Uuid, String>>,
    /// Targets that refer to each target (directly).
    pub dependents: HashMap<Uuid, Vec<Uuid>>,
    /// Whether targets of a kind have conditions on related subjects: then a
    /// change to a related subject matters to them.
    pub has_related: [bool; 2],
    /// Targets that could not be compiled, with the reason; they are left
    /// out, and their memberships stay as they are.
    pub failed: BTreeMap<Uuid, String>,
    /// Targets per stage, in dependency order.
    pub by_stage: Vec<Vec<Uuid>>,
    /// What each target reads (including through related subjects),
    /// inverted per kind, so that a change finds the groups it matters to
    /// without testing all of them.
    readers: [Readers; 2],
}

impl Plan {
    /// The groups whose stored memberships a run of this plan reads;
    /// `None` when an expression reads `.groups`, which may be any group.
    pub fn memberships_read(&self) -> Option<BTreeSet<Uuid>> {
        let mut out: BTreeSet<Uuid> = self.groups.keys().copied().collect();
        for program in self.stages.iter().flatten() {
            out.extend(program.members.iter().copied());
        }
        for def in &self.expressions {
            if def.expr.reads().reads_groups {
                return None;
            }
            out.extend(def.expr.reads().in_groups.iter().copied());
        }
        Some(out)
    }

    /// Whether targets of `kind` test their related subjects.
    pub fn has_related(&self, kind: SubjectKind) -> bool {
        self.has_related[slot(kind)]
    }
}

/// Instances per program for runs over the whole directory: one per core,
/// up to four.
pub fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The attribute schema per kind, as the plan compiles against it.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    /// Users' attributes, then devices'.
    pub by_kind: [Vec<Attribute>; 2],
}

impl Schema {
    /// The attributes of `kind`.
    pub fn of(&self, kind: SubjectKind) -> &[Attribute] {
        &self.by_kind[slot(kind)]
    }

    /// Name → type for `kind`.
    pub fn types(&self, kind: SubjectKind) -> BTreeMap<String, AttrType> {
        self.of(kind)
            .iter()
            .map(|a| (a.name.clone(), a.attr_type))
            .collect()
    }
}

/// Finds a cycle through `start` in the reference graph, as a list of group
/// Builds and compiles a plan for `targets`. Every target must be a
/// dynamic group; the reference graph must be acyclic (checked when rules
/// are saved). With `strict`, the first target that does not compile fails
/// the whole plan with an error naming the position; otherwise such targets
/// are recorded in `failed` and left out. Each program is compiled into
/// `copies` instances, so that many threads can evaluate it.
pub fn build(
    registry: &Registry,
    schema: &Schema,
    ctx: &ExpressionContext,
    targets: Vec<Arc<Group>>,
    strict: bool,
    copies: usize,
) -> Result<Plan, DomainError> {
    let mut failed = BTreeMap::new();
    let mut parsed: HashMap<Uuid, Parsed> = HashMap::new();
    let mut groups: HashMap<Uuid, Arc<Group>> = HashMap::new();
    for g in targets {
        match Parsed::of(&g, ctx) {
            Ok(p) => {
                parsed.insert(g.id, p);
                groups.insert(g.id, g);
            }
            Err(e) if !strict => {
                failed.insert(g.id, e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        let plan = assemble(&groups, &parsed, failed.clone())?;
        match compile(registry, schema, ctx, plan, strict, copies.max(1))? {
            Ok(plan) => return Ok(plan),
            Err((group, reason)) => {
                // Drop the failing group (and, next round, what depends on it).
                failed.insert(group, reason);
                groups.remove(&group);
                parsed.remove(&group);
                let dependents: Vec<Uuid> = parsed
                    .iter()
                    .filter(|(_, p)| {
                        p.references(SubjectKind::User)
                            .iter()
                            .chain(p.references(SubjectKind::Device).iter())
                            .any(|r| r.group == group)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for d in dependents {
                    failed.insert(
                        d,
                        format!("it refers to group {group}, which cannot be evaluated"),
                    );
                    groups.remove(&d);
                    parsed.remove(&d);
                }
            }
        }
    }
}

fn other_kind(kind: SubjectKind) -> SubjectKind {
    match kind {
        SubjectKind::User => SubjectKind::Device,
        SubjectKind::Device => SubjectKind::User,
    }
}
