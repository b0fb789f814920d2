//! Gathering what one group's decision reads: its stored state, its current
//! members as bits, the verdicts of its rule and exclusion, and which
//! subjects its member states admit; and skipping, in a run over a few
//! subjects, the groups that cannot change. The decision itself is
//! [`super::decide::memberships`], which reads no store, so that it can be
//! tested on its own.

use uuid::Uuid;

use super::super::model::Group;
use super::super::plan::Unit;
use super::super::universe::Side;
use super::decide::{self, Current, Facts};
use super::outcome::Outcome;
use super::stored::Stored;
use super::{Bits, Mode, Run, SCAN_ABOVE, few};
use crate::directory::SubjectKind;
use crate::error::DomainError;
use cohort_storage::Reader;

impl<R: Reader> Run<'_, R> {
    fn admitted(&mut self, group: &Group, side: &Side) -> Bits {
        let n = side.subjects.len();
        if group.subject != SubjectKind::User {
            return Bits::ones(n);
        }
        self.admitted
            .entry(group.member_states.clone())
            .or_insert_with(|| {
                let mut b = Bits::zeros(n);
                for (i, s) in side.subjects.iter().enumerate() {
                    if group.admits(s.state()) {
                        b.set(i, true);
                    }
                }
                b
            })
            .clone()
    }

    /// For a run over a few subjects: whether `group` has nothing to decide
    /// (the rule matches none of them, none is a member, and none has an
    /// exemption, manual membership, suggestion or error there). Most groups
    /// are like that for any one subject, and skipping them keeps a change
    /// cheap.
    fn nothing_to_decide(&self, id: &Uuid, side: &Side, out: &Outcome) -> bool {
        let Some(touched) = &self.touched else {
            return false;
        };
        if !few(side) {
            return false;
        }
        let matched = self
            .rule_bits
            .get(&Unit::Rule(*id))
            .is_some_and(|b| b.0.iter().any(|w| *w != 0));
        let failed_or_errors = out
            .groups
            .get(id)
            .is_some_and(|r| r.failure.is_some() || !r.errors.is_empty());
        !matched && !failed_or_errors && !touched.contains(id)
    }

    /// The stored members of `group` at `side`'s positions: every one when
    /// the run covers many subjects, else the affected ones, looked up.
    fn current(&self, group: &Uuid, side: &Side) -> Current {
        let mut current = Current::new(side.subjects.len());
        if side.complete || side.affected_count() > SCAN_ABOVE {
            self.memberships.for_each_member(group, &mut |s, source| {
                if let Some(&p) = side.index.get(s) {
                    current.note(p, source);
                }
            });
        } else {
            // Context subjects (the related subjects of the affected ones)
            // keep their stored membership below, and groups that refer to
            // this one read it from `decided`: note theirs too.
            for (p, s) in side.subjects.iter().enumerate() {
                if let Some(source) = self.memberships.member(group, &s.id()) {
                    current.note(p, source);
                }
            }
        }
        current
    }

    pub(super) fn decide(&mut self, id: &Uuid, out: &mut Outcome) -> Result<(), DomainError> {
        let group: &Group = &self.plan.groups[id];
        let side = self.universe.side(group.subject);
        let n = side.subjects.len();
        if self.mode == Mode::Apply && self.nothing_to_decide(id, side, out) {
            // Nothing changes: groups that refer to this one read its
            // stored members (see `member_bits`).
            self.rule_bits.remove(&Unit::Rule(*id));
            self.rule_bits.remove(&Unit::Exclusion(*id));
            return Ok(());
        }
        let stored = match self.prefetched.as_mut() {
            Some(all) => all.remove(id).unwrap_or_default(),
            None => Stored::load(self.reader, self.memberships, id, side)?,
        };
        let affected = self.affected_bits(group.subject);
        let current = self.current(id, side);
        if out.groups.entry(*id).or_default().failure.is_some() {
            // Leave memberships as they are when the rule could not run.
            self.decided.insert(*id, current.bits);
            return Ok(());
        }
        let rule = self
            .rule_bits
            .remove(&Unit::Rule(*id))
            .unwrap_or_else(|| Bits::zeros(n));
        let exclusion = self
            .rule_bits
            .remove(&Unit::Exclusion(*id))
            .unwrap_or_else(|| Bits::zeros(n));
        let admitted = self.admitted(group, side);
        let facts = Facts {
            len: n,
            rule: &rule,
            exclusion: &exclusion,
            admitted: &admitted,
            affected: &affected,
            current: &current,
            stored: &stored,
            review: group.review,
            mode: self.mode,
            now: self.now,
            id_of: &|p| side.subjects[p].id(),
            pos_of: &|s| side.index.get(s).copied(),
        };
        let finals = decide::memberships(&facts, out.groups.entry(*id).or_default());
        self.decided.insert(*id, finals);
        Ok(())
    }
}
