//! The reference graph between groups (an edge from a group to each group
//! its rules refer to): the order targets are evaluated in, and the cycle
//! and chain-length checks made when a rule is saved. Pure functions over
//! ids, so that they can be tested without rules or an evaluator.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use crate::error::DomainError;

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

/// Orders `ids` so that each comes after every id it refers to (`refs`),
/// depth-first and otherwise in the order of `ids`. A cycle is refused with
/// an error naming a group on it. Iterative (an explicit stack of nodes
/// with their remaining references), since reference chains come from
/// admins' rules.
pub(super) fn dependency_order(
    ids: &[Uuid],
    refs: impl Fn(&Uuid) -> Vec<Uuid>,
) -> Result<Vec<Uuid>, DomainError> {
    let mut order = Vec::new();
    // 1: on the current path, 2: done.
    let mut state: HashMap<Uuid, u8> = HashMap::new();
    for id in ids {
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
    Ok(order)
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

    #[test]
    fn a_cycle_is_found_from_any_group_on_it_and_only_there() {
        // a → b → c → a, and d → a outside the cycle.
        let (ids, mut edges) = chain(3);
        edges.insert(ids[2], vec![ids[0]]);
        let d = Uuid::now_v7();
        edges.insert(d, vec![ids[0]]);
        assert_eq!(
            find_cycle(&edges, ids[1]),
            Some(vec![ids[1], ids[2], ids[0], ids[1]])
        );
        assert_eq!(find_cycle(&edges, d), None);
    }

    /// `refs` of a graph given as edges.
    fn refs_of(edges: &HashMap<Uuid, Vec<Uuid>>) -> impl Fn(&Uuid) -> Vec<Uuid> + '_ {
        |id| edges.get(id).cloned().unwrap_or_default()
    }

    #[test]
    fn the_order_puts_every_group_after_the_groups_it_refers_to() {
        // A diamond (top → left, right → bottom), plus a group on its own;
        // listed so that the ids' order is the wrong one.
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let [top, left, right, bottom, alone] = [ids[0], ids[1], ids[2], ids[3], ids[4]];
        let edges: HashMap<Uuid, Vec<Uuid>> = [
            (top, vec![left, right]),
            (left, vec![bottom]),
            (right, vec![bottom]),
        ]
        .into_iter()
        .collect();
        let order = dependency_order(&[top, alone, right, left, bottom], refs_of(&edges))
            .expect("no cycle");
        assert_eq!(order.len(), 5);
        let at = |g: Uuid| order.iter().position(|o| *o == g).expect("ordered");
        for (from, tos) in &edges {
            for to in tos {
                assert!(at(*to) < at(*from), "{to} before {from}: {order:?}");
            }
        }
        // Depth-first from the first id, then the next ones in their order.
        assert_eq!(order, [bottom, left, right, top, alone]);
    }

    #[test]
    fn the_order_refuses_a_cycle_naming_a_group_on_it() {
        let (ids, mut edges) = chain(3);
        edges.insert(ids[2], vec![ids[1]]);
        let err = dependency_order(&ids, refs_of(&edges)).expect_err("a cycle");
        match err {
            DomainError::InvalidRule { field, message } => {
                assert_eq!(field, "rule");
                assert_eq!(
                    message,
                    format!("group {} is part of a reference cycle", ids[1])
                );
            }
            other => panic!("{other:?}"),
        }
        // A group referring to itself is a cycle too.
        let g = Uuid::now_v7();
        let selfish: HashMap<Uuid, Vec<Uuid>> = [(g, vec![g])].into_iter().collect();
        assert!(dependency_order(&[g], refs_of(&selfish)).is_err());
    }
}
