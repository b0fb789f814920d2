//! Which attributes each target's rules read, per kind, inverted into an
//! index, so that a change to a subject finds the groups it can affect
//! without testing every group.

use std::collections::{BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use super::{Plan, slot};
use crate::directory::SubjectKind;

/// Attributes read by rules, per kind; `None` means every attribute (an
/// opaque rule may read anything).
#[derive(Clone, Debug, Default)]
pub struct Reads {
    /// Per kind (user, device).
    pub by_kind: [Option<BTreeSet<String>>; 2],
}

impl Reads {
    pub(super) fn all() -> Self {
        Reads {
            by_kind: [Some(BTreeSet::new()), Some(BTreeSet::new())],
        }
    }

    pub(super) fn add(&mut self, kind: SubjectKind, attrs: Option<&BTreeSet<String>>) {
        let entry = &mut self.by_kind[slot(kind)];
        match (entry.as_mut(), attrs) {
            (Some(set), Some(a)) => set.extend(a.iter().cloned()),
            (Some(_), None) => *entry = None,
            (None, _) => {}
        }
    }
}

/// The targets that read a kind's attributes.
#[derive(Debug, Default)]
pub(super) struct Readers {
    /// Attribute → the targets that read it.
    by_attribute: HashMap<String, Vec<Uuid>>,
    /// Targets that may read any attribute (opaque rules).
    any: Vec<Uuid>,
}

impl Readers {
    pub(super) fn index(group_reads: &HashMap<Uuid, Reads>, kind: SubjectKind) -> Readers {
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
}
