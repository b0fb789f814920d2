//! The groups' key layout; each keyspace serves the query named beside it.

use cohort_storage::Keyspace;
use uuid::Uuid;

/// group id → `Group` JSON.
pub const GROUPS: Keyspace = Keyspace::new("groups");
/// subject kind ++ 0 ++ lowercased name → group id. Unique names.
pub const GROUP_NAMES: Keyspace = Keyspace::new("group_names");
/// group id ++ subject id → `Membership` JSON. The members of a group.
pub const MEMBERS: Keyspace = Keyspace::new("group_members");
/// subject id ++ group id → (). The groups of a subject.
pub const SUBJECT_GROUPS: Keyspace = Keyspace::new("subject_groups");
/// group id ++ subject id → (). Members added by hand.
pub const MANUAL: Keyspace = Keyspace::new("group_manual");
/// group id ++ subject id → `Exemption` JSON.
pub const EXEMPTIONS: Keyspace = Keyspace::new("group_exemptions");
/// group id ++ subject id → `Suggestion` JSON (review mode).
pub const SUGGESTIONS: Keyspace = Keyspace::new("group_suggestions");
/// group id → `GroupStatus` JSON.
pub const STATUS: Keyspace = Keyspace::new("group_status");
/// referenced group id ++ referencing group id → (). Who refers to a group,
/// so that deleting a referenced group is refused without a scan.
pub const REFERENCED_BY: Keyspace = Keyspace::new("group_referenced_by");
/// group id ++ subject id → error message. Subjects the evaluator could not
/// evaluate; they count as not matching until they can be.
pub const ERRORS: Keyspace = Keyspace::new("group_errors");

/// Two ids as one key.
pub fn pair(a: &Uuid, b: &Uuid) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a.as_bytes());
    k[16..].copy_from_slice(b.as_bytes());
    k
}

/// The unique-name key.
pub fn name_key(kind: crate::directory::SubjectKind, name: &str) -> Vec<u8> {
    [
        kind.as_str().as_bytes(),
        &[0],
        name.to_lowercase().as_bytes(),
    ]
    .concat()
}
/// run id → `RecomputeRun` JSON. Full recomputes, newest last.
pub const RUNS: Keyspace = Keyspace::new("group_recomputes");
