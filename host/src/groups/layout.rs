//! The groups' key layout; each keyspace serves the query named beside it.

use cohort_storage::Keyspace;

/// group id → `Group` JSON.
pub(super) const GROUPS: Keyspace = Keyspace::new("groups");
/// subject kind ++ 0 ++ lowercased name → group id. Unique names.
pub(super) const GROUP_NAMES: Keyspace = Keyspace::new("group_names");
/// group id ++ subject id → `Membership` JSON. The members of a group.
pub(super) const MEMBERS: Keyspace = Keyspace::new("group_members");
/// subject id ++ group id → (). The groups of a subject.
pub(super) const SUBJECT_GROUPS: Keyspace = Keyspace::new("subject_groups");
/// group id ++ subject id → (). Members added by hand.
pub(super) const MANUAL: Keyspace = Keyspace::new("group_manual");
/// group id ++ subject id → `Exemption` JSON.
pub(super) const EXEMPTIONS: Keyspace = Keyspace::new("group_exemptions");
/// group id ++ subject id → `Suggestion` JSON (review mode).
pub(super) const SUGGESTIONS: Keyspace = Keyspace::new("group_suggestions");
/// group id → `GroupStatus` JSON.
pub(super) const STATUS: Keyspace = Keyspace::new("group_status");
/// referenced group id ++ referencing group id → (). Who refers to a group,
/// so that deleting a referenced group is refused without a scan.
pub(super) const REFERENCED_BY: Keyspace = Keyspace::new("group_referenced_by");
/// group id ++ subject id → error message. Subjects the evaluator could not
/// evaluate; they count as not matching until they can be.
pub(super) const ERRORS: Keyspace = Keyspace::new("group_errors");

pub(super) use crate::id_pair::key as pair;

/// The unique-name key.
pub(super) fn name_key(kind: crate::directory::SubjectKind, name: &str) -> Vec<u8> {
    [
        kind.as_str().as_bytes(),
        &[0],
        name.to_lowercase().as_bytes(),
    ]
    .concat()
}
/// run id → `RecomputeRun` JSON. Full recomputes, newest last.
pub(super) const RUNS: Keyspace = Keyspace::new("group_recomputes");
