//! Turning groups into compiled evaluation programs.
//!
//! A plan covers a set of *target* groups (all dynamic groups for a
//! recompute, one group for a preview or an explanation). Groups the targets
//! refer to but that are not targets are inputs: their stored memberships are
//! read. Targets are split into stages so that a group is evaluated only after
//! every target group it refers to; each stage holds one compiled rule set
//! per (subject kind, evaluator), so one plugin call evaluates many rules over
//! many subjects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use super::model::Group;
use super::rule::{
    Cond, ExpressionContext, Quantifier, RuleModel, expression_attribute, member_attribute,
    related_attribute,
};
use crate::directory::{AttrType, Attribute, SubjectKind};
use crate::error::DomainError;
use crate::expression::{self, Expression};
use crate::plugins::batch::{attribute_defs, wit_kind};
use crate::plugins::bindings::rules::{CompileError, RuleSource};
use crate::plugins::bindings::types::{AttributeDef, AttributeType};
use crate::plugins::{PluginError, Registry, RuleSession, World};

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

/// A parsed group rule, with what it reads and refers to.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The rule; `None` for an opaque rule in another evaluator's language.
    pub rule: Option<RuleModel>,
    /// The exclusion rule, likewise.
    pub exclusion: Option<RuleModel>,
}

impl Parsed {
    /// Parses a dynamic group's rules and compiles their CEL expressions. A
    /// rule given as a JSON string is passed to its evaluator verbatim.
    pub fn of(group: &Group, ctx: &ExpressionContext) -> Result<Parsed, DomainError> {
        let parse = |v: &Option<serde_json::Value>,
                     field: &str|
         -> Result<Option<RuleModel>, DomainError> {
            match v {
                Some(serde_json::Value::String(_)) | None => Ok(None),
                Some(v) => {
                    let mut model = RuleModel::parse(v, group.subject, field)?;
                    model.bind(group.subject, field, ctx)?;
                    Ok(Some(model))
                }
            }
        };
        Ok(Parsed {
            rule: parse(&group.rule, "rule")?,
            exclusion: parse(&group.exclusion, "exclusion")?,
        })
    }

    fn models(&self) -> impl Iterator<Item = &RuleModel> {
        self.rule.iter().chain(self.exclusion.iter())
    }

    /// The groups the rules refer to.
    pub fn references(&self, kind: SubjectKind) -> BTreeSet<super::rule::Reference> {
        self.models().flat_map(|m| m.references(kind)).collect()
    }
}

/// Attributes read by rules, per kind; `None` means every attribute (an
/// opaque rule may read anything).
#[derive(Clone, Debug, Default)]
pub struct Reads {
    /// Per kind (user, device).
    pub by_kind: [Option<BTreeSet<String>>; 2],
}

fn slot(kind: SubjectKind) -> usize {
    match kind {
        SubjectKind::User => 0,
        SubjectKind::Device => 1,
    }
}

impl Reads {
    fn all() -> Self {
        Reads {
            by_kind: [Some(BTreeSet::new()), Some(BTreeSet::new())],
        }
    }

    fn add(&mut self, kind: SubjectKind, attrs: Option<&BTreeSet<String>>) {
        let entry = &mut self.by_kind[slot(kind)];
        match (entry.as_mut(), attrs) {
            (Some(set), Some(a)) => set.extend(a.iter().cloned()),
            (Some(_), None) => *entry = None,
            (None, _) => {}
        }
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

/// The targets that read a kind's attributes.
#[derive(Debug, Default)]
struct Readers {
    /// Attribute → the targets that read it.
    by_attribute: HashMap<String, Vec<Uuid>>,
    /// Targets that may read any attribute (opaque rules).
    any: Vec<Uuid>,
}

impl Readers {
    fn index(group_reads: &HashMap<Uuid, Reads>, kind: SubjectKind) -> Readers {
        let mut out = Readers::default();
        for (id, reads) in group_reads {
            match &reads.by_kind[slot(kind)] {
                None => out.any.push(*id),
                Some(attrs) => {
                    for a in attrs {
                        out.by_attribute.entry(a.clone()).or_default().push(*id);
                    }
                }
            }
        }
        out
    }
}

impl Plan {
    /// The targets a change to `attrs` of a `kind` subject can affect: those
    /// whose rules (or conditions on related subjects) read one of them, all
    /// user groups when a user's state changed (state scoping), and every
    /// group that depends on those.
    pub fn affected_by(&self, kind: SubjectKind, attrs: &BTreeSet<String>) -> HashSet<Uuid> {
        let readers = &self.readers[slot(kind)];
        let mut out: HashSet<Uuid> = readers.any.iter().copied().collect();
        for a in attrs {
            out.extend(readers.by_attribute.get(a).into_iter().flatten());
        }
        if kind == SubjectKind::User && attrs.contains("state") {
            out.extend(
                self.groups
                    .values()
                    .filter(|g| g.subject == SubjectKind::User)
                    .map(|g| g.id),
            );
        }
        let mut queue: Vec<Uuid> = out.iter().copied().collect();
        while let Some(g) = queue.pop() {
            for d in self.dependents.get(&g).into_iter().flatten() {
                if out.insert(*d) {
                    queue.push(*d);
                }
            }
        }
        out
    }

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
/// ids from `start` back to `start`. Iterative: the graph comes from
/// admins' rules and a chain of references may be long.
pub fn find_cycle(edges: &HashMap<Uuid, Vec<Uuid>>, start: Uuid) -> Option<Vec<Uuid>> {
    let next_of = |node: &Uuid| edges.get(node).map_or(&[][..], Vec::as_slice);
    let mut seen = BTreeSet::new();
    // The path so far, each node with the index of its next edge to try.
    let mut path: Vec<(Uuid, usize)> = vec![(start, 0)];
    while let Some((node, i)) = path.last_mut() {
        let Some(next) = next_of(node).get(*i).copied() else {
            path.pop();
            continue;
        };
        *i += 1;
        if next == start {
            let mut cycle: Vec<Uuid> = path.iter().map(|(n, _)| *n).collect();
            cycle.push(start);
            return Some(cycle);
        }
        if seen.insert(next) {
            path.push((next, 0));
        }
    }
    None
}

/// The number of links in the longest chain of references that starts at
/// `start`. The graph must be acyclic ([`find_cycle`] first). Iterative,
/// for the same reason as [`find_cycle`].
pub fn longest_chain(edges: &HashMap<Uuid, Vec<Uuid>>, start: Uuid) -> usize {
    let next_of = |node: &Uuid| edges.get(node).map_or(&[][..], Vec::as_slice);
    let mut longest: HashMap<Uuid, usize> = HashMap::new();
    let mut stack: Vec<(Uuid, bool)> = vec![(start, false)];
    while let Some((node, expanded)) = stack.pop() {
        if longest.contains_key(&node) {
            continue;
        }
        if expanded {
            let n = next_of(&node)
                .iter()
                .map(|c| longest.get(c).map_or(0, |l| l + 1))
                .max()
                .unwrap_or(0);
            longest.insert(node, n);
        } else {
            stack.push((node, true));
            for c in next_of(&node) {
                if !longest.contains_key(c) {
                    stack.push((*c, false));
                }
            }
        }
    }
    longest.get(&start).copied().unwrap_or(0)
}

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

/// One rule of a bucket: what it stands for, its text, what it reads.
type BucketRule = (Unit, String, Option<BTreeSet<String>>);

/// A plan before compilation: units grouped by (stage, kind, evaluator),
/// with their rule texts.
struct Draft {
    groups: HashMap<Uuid, Arc<Group>>,
    order: Vec<Uuid>,
    stage_of: HashMap<Uuid, usize>,
    related: Vec<RelatedDef>,
    related_stage: Vec<usize>,
    expressions: Vec<ExpressionDef>,
    direct: Vec<(Unit, usize)>,
    parsed: HashMap<Uuid, Parsed>,
    buckets: BTreeMap<(usize, usize, String), Vec<BucketRule>>,
    group_reads: HashMap<Uuid, Reads>,
    dependents: HashMap<Uuid, Vec<Uuid>>,
    has_related: [bool; 2],
    failed: BTreeMap<Uuid, String>,
}

fn assemble(
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
    let mut order = Vec::new();
    // 1: on the current path, 2: done. Iterative (an explicit stack of
    // nodes with their remaining references), since reference chains come
    // from admins' rules.
    let mut state: HashMap<Uuid, u8> = HashMap::new();
    for id in &ids {
        if state.contains_key(id) {
            continue;
        }
        state.insert(*id, 1);
        let mut stack: Vec<(Uuid, std::vec::IntoIter<Uuid>)> = vec![(*id, refs(id).into_iter())];
        while let Some((node, rest)) = stack.last_mut() {
            match rest.next() {
                Some(r) => match state.get(&r) {
                    Some(2) => {}
                    Some(_) => {
                        return Err(DomainError::invalid_rule(
                            "rule",
                            format!("group {r} is part of a reference cycle"),
                        ));
                    }
                    None => {
                        state.insert(r, 1);
                        stack.push((r, refs(&r).into_iter()));
                    }
                },
                None => {
                    let done = *node;
                    state.insert(done, 2);
                    order.push(done);
                    stack.pop();
                }
            }
        }
    }
    let mut stage_of: HashMap<Uuid, usize> = HashMap::new();
    let mut related = Vec::new();
    let mut related_stage = Vec::new();
    let mut expressions: Vec<ExpressionDef> = Vec::new();
    let mut direct: Vec<(Unit, usize)> = Vec::new();
    let mut buckets: BTreeMap<_, Vec<_>> = BTreeMap::new();
    let mut has_related = [false; 2];
    let after = |refs: &BTreeSet<super::rule::Reference>, stage_of: &HashMap<Uuid, usize>| {
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

fn other_kind(kind: SubjectKind) -> SubjectKind {
    match kind {
        SubjectKind::User => SubjectKind::Device,
        SubjectKind::Device => SubjectKind::User,
    }
}

fn kind_of(slot: usize) -> SubjectKind {
    if slot == 0 {
        SubjectKind::User
    } else {
        SubjectKind::Device
    }
}

/// The group a unit belongs to, and the field prefix of its positions.
fn unit_owner(draft: &Draft, unit: Unit) -> (Uuid, String) {
    match unit {
        Unit::Rule(g) => (g, "rule".into()),
        Unit::Exclusion(g) => (g, "exclusion".into()),
        Unit::Related(n) => (draft.related[n].owner, draft.related[n].field.clone()),
    }
}

/// Compiles every bucket. `Ok(Err((group, reason)))` names a target that
/// failed when not strict.
fn compile(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain 0 → 1 → … → n-1 of references.
    fn chain(n: usize) -> (Vec<Uuid>, HashMap<Uuid, Vec<Uuid>>) {
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let edges = ids.windows(2).map(|w| (w[0], vec![w[1]])).collect();
        (ids, edges)
    }

    #[test]
    fn graph_walks_survive_long_chains() {
        // Deep enough to overflow any thread's stack if walked recursively.
        let (ids, mut edges) = chain(200_000);
        assert_eq!(find_cycle(&edges, ids[0]), None);
        assert_eq!(longest_chain(&edges, ids[0]), ids.len() - 1);
        assert_eq!(longest_chain(&edges, ids[10]), ids.len() - 11);
        edges.insert(ids[ids.len() - 1], vec![ids[0]]);
        let cycle = find_cycle(&edges, ids[0]).expect("a cycle");
        assert_eq!(cycle.len(), ids.len() + 1);
        assert_eq!((cycle[0], cycle[cycle.len() - 1]), (ids[0], ids[0]));
    }

    #[test]
    fn longest_chain_takes_the_longest_branch() {
        let (ids, mut edges) = chain(5);
        let side = Uuid::now_v7();
        edges.entry(ids[0]).or_default().push(side);
        assert_eq!(longest_chain(&edges, ids[0]), 4);
        assert_eq!(longest_chain(&edges, side), 0);
        assert_eq!(find_cycle(&edges, side), None);
    }
}
