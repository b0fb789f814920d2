//! Every source of membership and every exclusion, decided on hand-made
//! facts: each test states the situation and the membership it must give,
//! with the reason (the source) the change records.

use chrono::{Duration, TimeZone};

use super::super::super::model::{Exemption, Suggestion};
use super::*;

/// Positions on the side: past one word, so both words are exercised.
const N: usize = 70;
/// A position in the second word.
const HIGH: usize = 66;

fn bits(on: &[usize]) -> Bits {
    let mut b = Bits::zeros(N);
    for p in on {
        b.set(*p, true);
    }
    b
}

fn all_but(off: &[usize]) -> Bits {
    let mut b = Bits::ones(N);
    for p in off {
        b.set(*p, false);
    }
    b
}

/// One group's situation; every subject affected and admitted unless said.
struct Case {
    ids: Vec<Uuid>,
    now: DateTime<Utc>,
    rule: Bits,
    exclusion: Bits,
    admitted: Bits,
    affected: Bits,
    current: Current,
    stored: Stored,
    review: bool,
    mode: Mode,
    /// Subjects the rule could not be evaluated for in this run.
    errors: Vec<usize>,
}

impl Case {
    fn new() -> Case {
        Case {
            ids: (0..N).map(|_| Uuid::now_v7()).collect(),
            now: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
            rule: bits(&[]),
            exclusion: bits(&[]),
            admitted: Bits::ones(N),
            affected: Bits::ones(N),
            current: Current::new(N),
            stored: Stored::default(),
            review: false,
            mode: Mode::Apply,
            errors: Vec::new(),
        }
    }

    fn member(mut self, p: usize, source: Source) -> Case {
        self.current.note(p, source);
        self
    }

    fn manual(mut self, p: usize) -> Case {
        self.stored.manual.insert(self.ids[p]);
        self
    }

    fn exempt(mut self, p: usize, kind: ExemptionKind, expires_at: Option<DateTime<Utc>>) -> Case {
        self.stored.exemptions.insert(
            self.ids[p],
            Exemption {
                subject_id: self.ids[p],
                kind,
                reason: None,
                expires_at,
                created_by: "test".into(),
                created_at: self.now - Duration::days(1),
            },
        );
        self
    }

    fn suggested(mut self, p: usize, action: SuggestionAction) -> Case {
        self.stored.suggestions.insert(
            self.ids[p],
            Suggestion {
                subject_id: self.ids[p],
                action,
                since: self.now - Duration::days(1),
                dismissed: false,
            },
        );
        self
    }

    fn decide(&self) -> Decided<'_> {
        let index: HashMap<Uuid, usize> = self
            .ids
            .iter()
            .enumerate()
            .map(|(p, id)| (*id, p))
            .collect();
        let mut result = GroupResult::default();
        for p in &self.errors {
            result
                .errors
                .insert(self.ids[*p], format!("no value at {p}"));
        }
        let facts = Facts {
            len: N,
            rule: &self.rule,
            exclusion: &self.exclusion,
            admitted: &self.admitted,
            affected: &self.affected,
            current: &self.current,
            stored: &self.stored,
            review: self.review,
            mode: self.mode,
            now: self.now,
            id_of: &|p| self.ids[p],
            pos_of: &|s| index.get(s).copied(),
        };
        let finals = memberships(&facts, &mut result);
        Decided {
            case: self,
            finals,
            result,
        }
    }
}

struct Decided<'a> {
    case: &'a Case,
    finals: Bits,
    result: GroupResult,
}

impl Decided<'_> {
    fn is_member(&self, p: usize) -> bool {
        self.finals.get(p)
    }

    /// The recorded change of position `p`: (before, after), if any.
    fn change(&self, p: usize) -> Option<(Option<Source>, Option<Source>)> {
        let id = self.case.ids[p];
        let found: Vec<_> = self
            .result
            .changes
            .iter()
            .filter(|c| c.subject == id)
            .collect();
        assert!(found.len() <= 1, "one change per subject: {found:?}");
        found.first().map(|c| (c.before, c.after))
    }

    fn suggestion(&self, p: usize) -> Option<(Option<SuggestionAction>, Option<SuggestionAction>)> {
        let id = self.case.ids[p];
        self.result
            .suggestions
            .iter()
            .find(|s| s.subject == id)
            .map(|s| (s.before.as_ref().map(|b| b.action), s.after))
    }
}

#[test]
fn the_rule_makes_members_by_rule() {
    let mut case = Case::new();
    case.rule = bits(&[3, HIGH]);
    let d = case.decide();
    assert!(d.is_member(3) && d.is_member(HIGH));
    assert!(!d.is_member(4));
    assert_eq!(d.change(3), Some((None, Some(Source::Rule))));
    assert_eq!(d.change(HIGH), Some((None, Some(Source::Rule))));
    assert_eq!(d.change(4), None);
    assert_eq!(d.result.changes.len(), 2);
    let c = &d.result.changes[0];
    assert!(c.rule_match && !c.excluded);
}

#[test]
fn a_member_the_rule_no_longer_matches_leaves() {
    let case = Case::new().member(3, Source::Rule).member(4, Source::Rule);
    let mut case = case;
    case.rule = bits(&[4]);
    let d = case.decide();
    assert!(!d.is_member(3) && d.is_member(4));
    assert_eq!(d.change(3), Some((Some(Source::Rule), None)));
    // An unchanged membership is not reported.
    assert_eq!(d.change(4), None);
}

#[test]
fn the_exclusion_wins_over_the_rule() {
    let mut case = Case::new().member(4, Source::Rule);
    case.rule = bits(&[3, 4, HIGH]);
    case.exclusion = bits(&[4, HIGH]);
    let d = case.decide();
    assert!(d.is_member(3));
    assert!(!d.is_member(4) && !d.is_member(HIGH));
    assert_eq!(d.change(4), Some((Some(Source::Rule), None)));
    assert_eq!(d.change(HIGH), None);
    let c = d.result.changes.iter().find(|c| c.subject == case.ids[4]);
    assert!(c.is_some_and(|c| c.rule_match && c.excluded));
}

#[test]
fn member_states_scope_the_rule() {
    let mut case = Case::new().member(3, Source::Rule);
    case.rule = bits(&[3, 5]);
    case.admitted = all_but(&[3, 5]);
    let d = case.decide();
    assert!(!d.is_member(3) && !d.is_member(5));
    assert_eq!(d.change(3), Some((Some(Source::Rule), None)));
    assert_eq!(d.change(5), None);
}

#[test]
fn a_subject_in_error_counts_as_not_matching_and_only_new_errors_are_kept() {
    let mut case = Case::new().member(3, Source::Rule);
    case.rule = bits(&[3, 5, 7]);
    case.errors = vec![3, 5];
    case.stored.errors.insert(case.ids[5]);
    case.stored.errors.insert(case.ids[6]);
    let d = case.decide();
    assert!(!d.is_member(3) && !d.is_member(5));
    assert!(d.is_member(7));
    assert_eq!(d.change(3), Some((Some(Source::Rule), None)));
    // 5 was already stored in error: nothing new to write for it.
    let kept: Vec<Uuid> = d.result.errors.keys().copied().collect();
    assert_eq!(kept, [case.ids[3]]);
    // 6 evaluated without error this time.
    assert_eq!(d.result.errors_cleared, [case.ids[6]]);
}

#[test]
fn a_manual_member_stays_whatever_the_rule_and_states_say() {
    let mut case = Case::new().manual(3).manual(4).manual(5);
    case.rule = bits(&[4]);
    case.exclusion = bits(&[5]);
    case.admitted = all_but(&[3]);
    let d = case.decide();
    for p in [3, 4, 5] {
        assert!(d.is_member(p), "{p}");
        assert_eq!(d.change(p), Some((None, Some(Source::Manual))), "{p}");
    }
}

fn always_exempt_3_and_4_with_4_manual() -> Case {
    Case::new()
        .exempt(3, ExemptionKind::Always, None)
        .exempt(4, ExemptionKind::Always, None)
        .manual(4)
}

#[test]
fn an_always_exemption_makes_a_member_despite_rule_and_exclusion() {
    let mut case = always_exempt_3_and_4_with_4_manual();
    case.rule = bits(&[3]);
    case.exclusion = bits(&[3]);
    let d = case.decide();
    assert!(d.is_member(3) && d.is_member(4));
    assert_eq!(d.change(3), Some((None, Some(Source::Exemption))));
    // The exemption, not the manual membership, is the reason.
    assert_eq!(d.change(4), Some((None, Some(Source::Exemption))));
}

#[test]
fn an_always_exemption_needs_a_state_the_group_admits() {
    let mut case = always_exempt_3_and_4_with_4_manual();
    case.admitted = all_but(&[3, 4]);
    let d = case.decide();
    assert!(!d.is_member(3));
    assert_eq!(d.change(3), None);
    // A manual membership still counts.
    assert_eq!(d.change(4), Some((None, Some(Source::Manual))));
}

#[test]
fn a_never_exemption_wins_over_everything() {
    let mut case = Case::new()
        .member(3, Source::Manual)
        .manual(3)
        .exempt(3, ExemptionKind::Never, None)
        .exempt(4, ExemptionKind::Never, None);
    case.rule = bits(&[3, 4]);
    let d = case.decide();
    assert!(!d.is_member(3) && !d.is_member(4));
    assert_eq!(d.change(3), Some((Some(Source::Manual), None)));
    assert_eq!(d.change(4), None);
    let c = d.result.changes.iter().find(|c| c.subject == case.ids[3]);
    assert!(c.is_some_and(|c| c.rule_match && !c.excluded));
}

#[test]
fn an_exemption_lapses_at_its_expiry() {
    let now = Case::new().now;
    let mut case = Case::new()
        .member(3, Source::Exemption)
        .exempt(3, ExemptionKind::Always, Some(now - Duration::seconds(1)))
        .member(4, Source::Exemption)
        .exempt(4, ExemptionKind::Always, Some(now))
        .exempt(5, ExemptionKind::Never, Some(now - Duration::hours(1)))
        .exempt(6, ExemptionKind::Always, Some(now + Duration::seconds(1)))
        .exempt(7, ExemptionKind::Never, Some(now + Duration::hours(1)));
    case.rule = bits(&[3, 5, 7]);
    let d = case.decide();
    // Lapsed: the rule decides again, and the reason changes with it.
    assert!(d.is_member(3));
    assert_eq!(
        d.change(3),
        Some((Some(Source::Exemption), Some(Source::Rule)))
    );
    // Expiring at this very instant counts as lapsed.
    assert!(!d.is_member(4));
    assert_eq!(d.change(4), Some((Some(Source::Exemption), None)));
    assert_eq!(d.change(5), Some((None, Some(Source::Rule))));
    // Not yet expired: still in force.
    assert_eq!(d.change(6), Some((None, Some(Source::Exemption))));
    assert!(!d.is_member(7));
    assert_eq!(d.change(7), None);
}

#[test]
fn positions_the_run_does_not_decide_keep_what_is_stored() {
    let mut case = Case::new()
        .member(3, Source::Rule)
        .member(HIGH, Source::Manual)
        .exempt(5, ExemptionKind::Always, None)
        .suggested(6, SuggestionAction::Add);
    case.rule = bits(&[4]);
    case.affected = all_but(&[3, 4, 5, 6, HIGH]);
    case.stored.errors.insert(case.ids[7]);
    case.errors = vec![8];
    case.affected.set(7, false);
    case.affected.set(8, false);
    let d = case.decide();
    assert!(d.is_member(3) && d.is_member(HIGH));
    assert!(!d.is_member(4) && !d.is_member(5));
    assert!(d.result.changes.is_empty(), "{:?}", d.result.changes);
    assert!(d.result.suggestions.is_empty());
    assert!(d.result.errors_cleared.is_empty());
    assert!(d.result.errors.is_empty());
}

#[test]
fn review_mode_keeps_rule_members_and_suggests_instead() {
    let mut case = Case::new()
        .member(3, Source::Rule)
        .suggested(4, SuggestionAction::Add)
        .suggested(5, SuggestionAction::Add)
        .suggested(6, SuggestionAction::Add)
        .manual(7);
    case.review = true;
    case.rule = bits(&[4, 6, 7, HIGH]);
    case.exclusion = bits(&[6]);
    let d = case.decide();
    // Memberships by rule stay as they are.
    assert!(d.is_member(3));
    assert!(!d.is_member(4) && !d.is_member(HIGH));
    assert_eq!(d.change(3), None);
    assert_eq!(d.change(HIGH), None);
    assert_eq!(
        d.suggestion(3),
        Some((None, Some(SuggestionAction::Remove)))
    );
    assert_eq!(
        d.suggestion(HIGH),
        Some((None, Some(SuggestionAction::Add)))
    );
    // The same suggestion again is not rewritten.
    assert_eq!(d.suggestion(4), None);
    // Suggestions the rule no longer makes are dropped (6 is excluded).
    assert_eq!(d.suggestion(5), Some((Some(SuggestionAction::Add), None)));
    assert_eq!(d.suggestion(6), Some((Some(SuggestionAction::Add), None)));
    // A manual membership is applied, not suggested.
    assert_eq!(d.change(7), Some((None, Some(Source::Manual))));
    assert_eq!(d.suggestion(7), None);
    assert_eq!(d.result.suggestions.len(), 4);
}

#[test]
fn a_preview_shows_what_the_rule_gives_even_in_review_mode() {
    let mut case = Case::new().member(3, Source::Rule).manual(5);
    case.review = true;
    case.mode = Mode::Preview;
    case.rule = bits(&[4, 6]);
    case.exclusion = bits(&[6]);
    case.errors = vec![8];
    case.stored.errors.insert(case.ids[8]);
    let d = case.decide();
    assert_eq!(d.change(3), Some((Some(Source::Rule), None)));
    assert_eq!(d.change(4), Some((None, Some(Source::Rule))));
    assert!(d.result.suggestions.is_empty());
    let ids = &case.ids;
    assert_eq!(d.result.members, [ids[4], ids[5]]);
    assert_eq!(d.result.current, [ids[3]]);
    assert_eq!(d.result.verdicts[&ids[4]], (true, false));
    assert_eq!(d.result.verdicts[&ids[6]], (true, true));
    assert_eq!(d.result.verdicts[&ids[3]], (false, false));
    assert_eq!(d.result.verdicts.len(), N);
    // A preview reports every error, stored before or not.
    assert!(d.result.errors.contains_key(&ids[8]));
}
