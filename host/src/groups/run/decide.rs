//! Deciding one group's memberships from what is known about it: the
//! verdicts of its rule and exclusion, which subjects its member states
//! admit, its exemptions (which lapse at their expiry), its manual members,
//! review mode, and the members it has now. Nothing here reads a store, so
//! every source of membership and every exclusion can be tested on its own
//! (see `decide_tests.rs`); [`super::facts`] gathers the inputs.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::super::model::{ExemptionKind, Source, SuggestionAction};
use super::outcome::{GroupResult, MemberChange, SuggestionChange};
use super::stored::Stored;
use super::{Bits, Mode};

/// A group's stored members as bits, with the source of those not there by
/// rule (few: manual members and exemptions).
pub(super) struct Current {
    /// Every stored member.
    pub(super) bits: Bits,
    /// Members by rule.
    rule: Bits,
    /// Members by another source, by position.
    other: HashMap<usize, Source>,
}

impl Current {
    /// No members over `n` positions.
    pub(super) fn new(n: usize) -> Current {
        Current {
            bits: Bits::zeros(n),
            rule: Bits::zeros(n),
            other: HashMap::new(),
        }
    }

    /// Position `p` is a member, by `source`.
    pub(super) fn note(&mut self, p: usize, source: Source) {
        self.bits.set(p, true);
        if source == Source::Rule {
            self.rule.set(p, true);
        } else {
            self.other.insert(p, source);
        }
    }

    /// Whether position `p` is a member, and by what.
    fn source(&self, p: usize) -> Option<Source> {
        self.bits
            .get(p)
            .then(|| self.other.get(&p).copied().unwrap_or(Source::Rule))
    }
}

/// Everything one group's decision reads, over the positions of its side.
pub(super) struct Facts<'a> {
    /// Positions on the side.
    pub(super) len: usize,
    /// Where the rule matched.
    pub(super) rule: &'a Bits,
    /// Where the exclusion matched.
    pub(super) exclusion: &'a Bits,
    /// Where the group's member states admit the subject.
    pub(super) admitted: &'a Bits,
    /// The positions this run decides; the others keep what is stored.
    pub(super) affected: &'a Bits,
    /// The stored members.
    pub(super) current: &'a Current,
    /// Manual members, exemptions, suggestions and errors, as stored.
    pub(super) stored: &'a Stored,
    /// The group's review setting (it counts only when applying).
    pub(super) review: bool,
    /// Applying or previewing.
    pub(super) mode: Mode,
    /// When exemptions are judged.
    pub(super) now: DateTime<Utc>,
    /// A position's subject.
    pub(super) id_of: &'a dyn Fn(usize) -> Uuid,
    /// A subject's position, if it is on the side.
    pub(super) pos_of: &'a dyn Fn(&Uuid) -> Option<usize>,
}

/// Decides the group's memberships at the affected positions and records in
/// `result` what changes against the stored state: memberships (with their
/// source), review suggestions, and errors cleared or new. `result.errors`
/// holds, on entry, the subjects the rule could not be evaluated for in this
/// run. Returns the members after the run (stored ones at unaffected
/// positions), which the groups referring to this one read.
pub(super) fn memberships(f: &Facts<'_>, result: &mut GroupResult) -> Bits {
    let n = f.len;
    let (rule, excl, admitted, affected) = (f.rule, f.exclusion, f.admitted, f.affected);
    let (stored, current, pos_of) = (f.stored, f.current, f.pos_of);
    let errors: HashSet<Uuid> = result.errors.keys().copied().collect();
    let mut by_rule = Bits::zeros(n);
    for w in 0..by_rule.0.len() {
        by_rule.0[w] = rule.0[w] & !excl.0[w] & admitted.0[w] & affected.0[w];
    }
    // Subjects in error count as not matching.
    for s in &errors {
        if let Some(p) = pos_of(s) {
            by_rule.set(p, false);
        }
    }
    let review = f.review && f.mode == Mode::Apply;
    let mut finals = if review {
        current.rule.clone()
    } else {
        by_rule.clone()
    };
    // The few subjects an exemption or a manual membership decides.
    let mut special: HashMap<usize, Option<Source>> = HashMap::new();
    for s in stored.exemptions.keys().chain(stored.manual.iter()) {
        let Some(p) = pos_of(s) else { continue };
        if !affected.get(p) || special.contains_key(&p) {
            continue;
        }
        let exemption = stored
            .exemptions
            .get(s)
            .filter(|e| e.active(f.now))
            .map(|e| e.kind);
        match exemption {
            Some(ExemptionKind::Never) => {
                special.insert(p, None);
            }
            Some(ExemptionKind::Always) if admitted.get(p) => {
                special.insert(p, Some(Source::Exemption));
            }
            _ if stored.manual.contains(s) => {
                special.insert(p, Some(Source::Manual));
            }
            _ => {}
        }
    }
    for (p, d) in &special {
        finals.set(*p, d.is_some());
    }
    // Unaffected positions keep what is stored.
    let stored_bits = &current.bits;
    for w in 0..finals.0.len() {
        finals.0[w] = (finals.0[w] & affected.0[w]) | (stored_bits.0[w] & !affected.0[w]);
    }
    let mut diff = Bits::zeros(n);
    for w in 0..finals.0.len() {
        diff.0[w] = (finals.0[w] ^ stored_bits.0[w]) & affected.0[w];
    }
    let mut positions: Vec<usize> = diff.ones_iter().collect();
    // Overridden subjects, and members whose source may change without
    // their membership changing (an exemption that ended, say).
    positions.extend(special.keys().copied());
    positions.extend(current.other.keys().copied().filter(|p| affected.get(*p)));
    positions.sort_unstable();
    positions.dedup();
    for p in positions {
        let sid = (f.id_of)(p);
        let after = match special.get(&p) {
            Some(d) => *d,
            None => finals.get(p).then_some(Source::Rule),
        };
        let before = current.source(p);
        if before == after {
            continue;
        }
        result.changes.push(MemberChange {
            subject: sid,
            before,
            after,
            rule_match: rule.get(p),
            excluded: excl.get(p),
        });
    }
    // Review suggestions: where the rule disagrees with the rule-sourced
    // membership, for subjects no exemption or manual membership decides.
    let mut wanted: HashMap<Uuid, SuggestionAction> = HashMap::new();
    if review {
        let mut disagree = Bits::zeros(n);
        for w in 0..disagree.0.len() {
            disagree.0[w] = (by_rule.0[w] ^ current.rule.0[w]) & affected.0[w];
        }
        for p in disagree.ones_iter() {
            if special.contains_key(&p) {
                continue;
            }
            let action = if by_rule.get(p) {
                SuggestionAction::Add
            } else {
                SuggestionAction::Remove
            };
            wanted.insert((f.id_of)(p), action);
        }
    }
    for (sid, action) in &wanted {
        match stored.suggestions.get(sid) {
            Some(s) if s.action == *action => {}
            before => result.suggestions.push(SuggestionChange {
                subject: *sid,
                before: before.cloned(),
                after: Some(*action),
            }),
        }
    }
    for (sid, s) in &stored.suggestions {
        let in_scope = pos_of(sid).is_some_and(|p| affected.get(p));
        if in_scope && !wanted.contains_key(sid) {
            result.suggestions.push(SuggestionChange {
                subject: *sid,
                before: Some(s.clone()),
                after: None,
            });
        }
    }
    for sid in &stored.errors {
        let in_scope = pos_of(sid).is_some_and(|p| affected.get(p));
        if in_scope && !errors.contains(sid) {
            result.errors_cleared.push(*sid);
        }
    }
    // Errors count for decided subjects; only new ones are written.
    let apply = f.mode == Mode::Apply;
    result.errors.retain(|s, _| {
        pos_of(s).is_some_and(|p| affected.get(p)) && !(apply && stored.errors.contains(s))
    });
    if f.mode == Mode::Preview {
        for p in affected.ones_iter() {
            let sid = (f.id_of)(p);
            if finals.get(p) {
                result.members.push(sid);
            }
            if current.source(p).is_some() {
                result.current.push(sid);
            }
            result.verdicts.insert(sid, (rule.get(p), excl.get(p)));
        }
    }
    finals
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
