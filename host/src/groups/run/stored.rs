//! Reading what a group's stored state says about the subjects a run
//! decides (manual members, exemptions, suggestions, evaluation errors), by
//! scan or by lookup depending on how many subjects that is. Members are not
//! read here: they come from the replica.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::super::layout::{ERRORS, EXEMPTIONS, MANUAL, SUGGESTIONS, pair};
use super::super::model::{Exemption, Suggestion};
use super::super::replica::Memberships;
use super::super::universe::Side;
use super::SCAN_ABOVE;
use crate::error::DomainError;
use crate::id_pair;
use cohort_storage::Reader;

/// What a group's stored state says about the affected subjects, besides
/// the members (which come from the replica).
#[derive(Default)]
pub struct Stored {
    /// Manual members.
    pub manual: HashSet<Uuid>,
    /// Exemptions.
    pub exemptions: HashMap<Uuid, Exemption>,
    /// Suggestions (review mode).
    pub suggestions: HashMap<Uuid, Suggestion>,
    /// Subjects in evaluation error.
    pub errors: HashSet<Uuid>,
}

fn subject_of(k: &[u8]) -> Option<Uuid> {
    id_pair::second(k)
}

impl Stored {
    /// Every group's stored state, each keyspace read with one scan: for
    /// runs over the whole directory, where a scan per group and keyspace
    /// would cost more than the evaluation.
    pub fn load_all(r: &impl Reader) -> Result<HashMap<Uuid, Stored>, DomainError> {
        // Members come from the replica; the rest is small.
        let mut out: HashMap<Uuid, Stored> = HashMap::new();
        let ids = id_pair::split;
        r.for_each(MANUAL, b"", |k, _| {
            if let Some((g, s)) = ids(k) {
                out.entry(g).or_default().manual.insert(s);
            }
            Ok::<_, DomainError>(())
        })?;
        r.for_each(EXEMPTIONS, b"", |k, v| {
            if let Some((g, s)) = ids(k) {
                out.entry(g)
                    .or_default()
                    .exemptions
                    .insert(s, cohort_storage::decode_json(EXEMPTIONS, v)?);
            }
            Ok::<_, DomainError>(())
        })?;
        r.for_each(SUGGESTIONS, b"", |k, v| {
            if let Some((g, s)) = ids(k) {
                out.entry(g)
                    .or_default()
                    .suggestions
                    .insert(s, cohort_storage::decode_json(SUGGESTIONS, v)?);
            }
            Ok::<_, DomainError>(())
        })?;
        r.for_each(ERRORS, b"", |k, _| {
            if let Some((g, s)) = ids(k) {
                out.entry(g).or_default().errors.insert(s);
            }
            Ok::<_, DomainError>(())
        })?;
        Ok(out)
    }

    /// Reads a group's state, except its members, for the affected subjects
    /// of `side`.
    pub fn load(
        r: &impl Reader,
        m: &dyn Memberships,
        group: &Uuid,
        side: &Side,
    ) -> Result<Stored, DomainError> {
        let mut out = Stored::default();
        let affected = side.affected_count();
        if side.complete || affected > SCAN_ABOVE {
            let g = group.as_bytes();
            r.for_each(MANUAL, g, |k, _| {
                out.manual.extend(subject_of(k));
                Ok::<_, DomainError>(())
            })?;
            r.for_each(EXEMPTIONS, g, |k, v| {
                if let Some(s) = subject_of(k) {
                    out.exemptions
                        .insert(s, cohort_storage::decode_json(EXEMPTIONS, v)?);
                }
                Ok::<_, DomainError>(())
            })?;
            r.for_each(SUGGESTIONS, g, |k, v| {
                if let Some(s) = subject_of(k) {
                    out.suggestions
                        .insert(s, cohort_storage::decode_json(SUGGESTIONS, v)?);
                }
                Ok::<_, DomainError>(())
            })?;
            r.for_each(ERRORS, g, |k, _| {
                out.errors.extend(subject_of(k));
                Ok::<_, DomainError>(())
            })?;
        } else {
            for (i, s) in side.subjects.iter().enumerate() {
                if !side.affected[i] {
                    continue;
                }
                let id = s.id();
                if !m.may_have_state(group, &id) {
                    continue;
                }
                let key = pair(group, &id);
                if r.get(MANUAL, &key)?.is_some() {
                    out.manual.insert(id);
                }
                if let Some(e) = r.get_json(EXEMPTIONS, &key)? {
                    out.exemptions.insert(id, e);
                }
                if let Some(s) = r.get_json(SUGGESTIONS, &key)? {
                    out.suggestions.insert(id, s);
                }
                if r.get(ERRORS, &key)?.is_some() {
                    out.errors.insert(id);
                }
            }
        }
        Ok(out)
    }
}
