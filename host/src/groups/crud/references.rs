//! What a dynamic group's rule may refer to, checked when it is saved: the
//! referenced groups exist and hold the right kind of subjects, no cycle of
//! references forms, the longest chain stays within the limit, and no rule
//! stops finding a group by name because it was renamed. The checks over
//! what is already loaded are pure functions, tested on their own.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::super::Groups;
use super::super::layout::REFERENCED_BY;
use super::super::model::Group;
use super::super::plan::{self, Parsed, find_cycle};
use super::super::rule::{Cond, ExpressionContext, Reference};
use crate::directory::SubjectKind;
use crate::error::DomainError;
use crate::limits::MAX_REFERENCE_DEPTH;
use cohort_storage::Reader;

/// The reference edges of every dynamic group, with `group` as it will be.
fn reference_graph(
    all: &[Arc<Group>],
    group: &Group,
    parsed: &Parsed,
    ctx: &ExpressionContext,
) -> HashMap<Uuid, Vec<Uuid>> {
    let mut edges = HashMap::new();
    for g in all.iter().filter(|g| g.id != group.id && g.is_dynamic()) {
        if let Ok(p) = Parsed::of(g, ctx) {
            edges.insert(
                g.id,
                p.references(g.subject).iter().map(|r| r.group).collect(),
            );
        }
    }
    edges.insert(
        group.id,
        parsed
            .references(group.subject)
            .iter()
            .map(|r| r.group)
            .collect(),
    );
    edges
}

/// The key of a membership condition, as the admin wrote it.
fn member_key(negate: bool) -> &'static str {
    if negate { "not_member_of" } else { "member_of" }
}

/// Checks each group `parsed` refers to, by the position of the reference:
/// it is not `group` itself, it exists among `by_id` (the stored groups),
/// and it holds the kind of subjects the condition tests.
fn check_targets(
    group: &Group,
    parsed: &Parsed,
    by_id: &HashMap<Uuid, &Arc<Group>>,
) -> Result<(), DomainError> {
    for (field, model) in [("rule", &parsed.rule), ("exclusion", &parsed.exclusion)] {
        let Some(model) = model else { continue };
        for (at, cond) in model.conditions() {
            let refs: Vec<(String, Reference)> = match cond {
                Cond::Member { group: g, negate } => vec![(
                    format!("{field}{at}/{}", member_key(*negate)),
                    Reference {
                        group: *g,
                        kind: group.subject,
                    },
                )],
                Cond::Related { kind, rule, .. } => {
                    let key = if *kind == SubjectKind::Device {
                        "devices"
                    } else {
                        "users"
                    };
                    rule.conditions()
                        .filter_map(|(nat, c)| match c {
                            Cond::Member { group: g, negate } => Some((
                                format!("{field}{at}/{key}{nat}/{}", member_key(*negate)),
                                Reference {
                                    group: *g,
                                    kind: *kind,
                                },
                            )),
                            _ => None,
                        })
                        .collect()
                }
                Cond::Expr {
                    at: expr_at,
                    compiled: Some(e),
                    ..
                } => e
                    .reads()
                    .in_groups
                    .iter()
                    .map(|g| {
                        (
                            format!("{field}{expr_at}"),
                            Reference {
                                group: *g,
                                kind: e.kind(),
                            },
                        )
                    })
                    .collect(),
                Cond::Attr { .. } | Cond::Expr { .. } => Vec::new(),
            };
            for (path, reference) in refs {
                if reference.group == group.id {
                    return Err(DomainError::invalid_rule(
                        path,
                        format!("the group {:?} cannot refer to itself", group.name),
                    ));
                }
                let Some(target) = by_id.get(&reference.group) else {
                    return Err(DomainError::invalid_rule(
                        path,
                        format!("no group with id {}", reference.group),
                    ));
                };
                if target.subject != reference.kind {
                    return Err(DomainError::invalid_rule(
                        path,
                        format!(
                            "group {:?} holds {}s; here a {} group is needed",
                            target.name,
                            target.subject.as_str(),
                            reference.kind.as_str()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks the reference graph with `group` as it will be (`edges`): no
/// cycle through `group`, spelled with the groups' names, and no chain of
/// references through it longer than the limit.
fn check_graph(
    group: &Group,
    by_id: &HashMap<Uuid, &Arc<Group>>,
    edges: &HashMap<Uuid, Vec<Uuid>>,
) -> Result<(), DomainError> {
    if let Some(cycle) = find_cycle(edges, group.id) {
        let name = |id: &Uuid| {
            if *id == group.id {
                group.name.clone()
            } else {
                by_id
                    .get(id)
                    .map_or_else(|| id.to_string(), |g| g.name.clone())
            }
        };
        let spelled: Vec<String> = cycle.iter().map(|id| format!("{:?}", name(id))).collect();
        return Err(DomainError::invalid_rule(
            "rule",
            format!(
                "this rule would form a cycle of group references: {}",
                spelled.join(" → ")
            ),
        ));
    }
    // The longest chain through this group: what it refers to, and
    // what refers to it.
    let mut reverse: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (from, tos) in edges {
        for to in tos {
            reverse.entry(*to).or_default().push(*from);
        }
    }
    let chain = plan::longest_chain(edges, group.id) + plan::longest_chain(&reverse, group.id);
    if chain > MAX_REFERENCE_DEPTH {
        return Err(DomainError::Limit {
            code: "too_deep",
            field: "rule".into(),
            message: format!(
                "this rule would make a chain of {chain} group references \
                 (a group that refers to a group that refers to …); \
                 the limit is {MAX_REFERENCE_DEPTH}"
            ),
        });
    }
    Ok(())
}

impl Groups {
    /// Checks what a dynamic group's rule refers to: the groups exist, hold
    /// the right kind of subjects, and no cycle forms.
    pub(super) fn check_references(
        &self,
        r: &impl Reader,
        group: &Group,
        parsed: &Parsed,
    ) -> Result<(), DomainError> {
        let all = self.all_groups(r)?;
        let by_id: HashMap<Uuid, &Arc<Group>> = all.iter().map(|g| (g.id, g)).collect();
        check_targets(group, parsed, &by_id)?;
        let ctx = self.expression_context(&self.schema()?, &all);
        let edges = reference_graph(&all, group, parsed, &ctx);
        check_graph(group, &by_id, &edges)
    }

    /// Groups that refer to `id`, directly or through others.
    pub(super) fn dependents(&self, r: &impl Reader, id: &Uuid) -> Result<Vec<Uuid>, DomainError> {
        let mut out = Vec::new();
        let mut queue = vec![*id];
        let mut seen = BTreeSet::new();
        while let Some(g) = queue.pop() {
            for (k, _) in r.scan(REFERENCED_BY, g.as_bytes())? {
                if let Some(d) = crate::id_pair::second(&k)
                    && seen.insert(d)
                {
                    out.push(d);
                    queue.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Refuses to rename `group` while an expression names it in
    /// `in_group('…')`: the expression would no longer find it.
    pub(super) fn check_not_named(
        &self,
        r: &impl Reader,
        group: &Group,
    ) -> Result<(), DomainError> {
        let referrers = self.dependents(r, &group.id)?;
        if referrers.is_empty() {
            return Ok(());
        }
        let all = self.all_groups(r)?;
        let ctx = self.expression_context(&self.schema()?, &all);
        let mut naming = Vec::new();
        for g in all.iter().filter(|g| referrers.contains(&g.id)) {
            let Ok(p) = Parsed::of(g, &ctx) else { continue };
            let names_it = [&p.rule, &p.exclusion]
                .into_iter()
                .flatten()
                .flat_map(|m| m.expressions())
                .any(|c| {
                    matches!(c, Cond::Expr { compiled: Some(e), .. } if e.names_group(&group.id))
                });
            if names_it {
                naming.push(format!("{:?}", g.name));
            }
        }
        if naming.is_empty() {
            return Ok(());
        }
        Err(DomainError::Conflict {
            code: "group_in_use",
            field: Some("name".into()),
            message: format!(
                "the rules of {} name this group in in_group({:?}); change them first, or \
                 write the group's id ({}) there, which survives renames",
                naming.join(", "),
                group.name,
                group.id
            ),
        })
    }
}

#[cfg(test)]
#[path = "references_tests.rs"]
mod tests;
