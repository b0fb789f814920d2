//! What an import run is made of, as stored and as the API shows it: the
//! admin's input and its policies, the run with its state and counts, and
//! the changes a plan is made of. Kept apart from the code that reads,
//! plans and writes so that the shapes the API and the store depend on are
//! in one place.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// How records find their user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    /// The email, case-insensitively.
    Email,
    /// The employee id.
    EmployeeId,
}

/// What becomes of records with no user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewUsers {
    /// Created staged, to be activated by an admin.
    Staged,
    /// Created active.
    Active,
}

/// What becomes of users whose record changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Changed {
    /// Their attributes follow the source.
    Update,
    /// They are left alone.
    Ignore,
}

/// What becomes of users this source imported before and no longer lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Nothing.
    Ignore,
    /// Suspended.
    Suspend,
}

/// What to import and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    /// The id or name of a `directory-importer` plugin instance.
    pub instance: String,
    /// How records find their user (default `email`).
    #[serde(default = "default_match")]
    pub match_on: MatchOn,
    /// Default `staged`.
    #[serde(default = "default_new")]
    pub new_users: NewUsers,
    /// Default `update`.
    #[serde(default = "default_changed")]
    pub changed: Changed,
    /// Default `ignore`.
    #[serde(default = "default_missing")]
    pub missing: Missing,
    /// The share of the directory (0–1) a run may update or suspend
    /// without an admin's approval. Default 0.1.
    #[serde(default = "default_share")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub max_change_share: f64,
    /// Plan only: nothing is written.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_match() -> MatchOn {
    MatchOn::Email
}
fn default_new() -> NewUsers {
    NewUsers::Staged
}
fn default_changed() -> Changed {
    Changed::Update
}
fn default_missing() -> Missing {
    Missing::Ignore
}
fn default_share() -> f64 {
    0.1
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ImportRunState)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Reading the source, planning or writing.
    Running,
    /// Done (a dry run: planned).
    Completed,
    /// Stopped by the brake; approve to apply its plan.
    AwaitingApproval,
    /// Could not read the source, or was interrupted.
    Failed,
}

/// Counts of a run: planned for a dry run or a run awaiting approval,
/// done otherwise.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ImportCounts)]
pub struct Counts {
    /// User records read.
    pub records: usize,
    /// Users created.
    pub created: usize,
    /// Users updated.
    pub updated: usize,
    /// Users suspended.
    pub suspended: usize,
    /// Records with nothing to change.
    pub unchanged: usize,
    /// Records or changes that failed.
    pub errors: usize,
    /// Devices created.
    #[serde(default)]
    pub devices_created: usize,
    /// Devices updated.
    #[serde(default)]
    pub devices_updated: usize,
}

/// A record that could not be imported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordError {
    /// The source's id, when known.
    pub external_id: Option<String>,
    /// Why.
    pub message: String,
}

/// Why the brake stopped a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Brake {
    /// Updates and suspensions planned.
    pub changes: usize,
    /// Users in the directory.
    pub directory_size: usize,
    /// The share allowed.
    pub max_change_share: f64,
}

/// An import run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportRun {
    /// Stable id.
    pub id: Uuid,
    /// What was asked.
    pub input: ImportInput,
    /// The instance, resolved.
    pub instance_id: String,
    /// Where it is.
    pub state: RunState,
    /// Counts.
    pub counts: Counts,
    /// Problems with records (at most 1000 kept).
    pub errors: Vec<RecordError>,
    /// Why the run failed.
    pub failure: Option<String>,
    /// Why the brake stopped it.
    pub brake: Option<Brake>,
    /// Who started it.
    pub started_by: String,
    /// Who approved it, when the brake stopped it.
    pub approved_by: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The number of the host running it (`/readyz` shows each host's). A
    /// run whose host stopped is marked failed by the host that runs the
    /// scheduled work. Absent on runs recorded before hosts had numbers.
    #[serde(default)]
    pub host: Option<u32>,
}

/// One planned change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ImportChange)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Change {
    /// A new user.
    Create {
        /// The source's id.
        external_id: String,
        /// The user's attributes.
        #[schema(value_type = Object)]
        attributes: BTreeMap<String, Value>,
    },
    /// An existing user's attributes.
    Update {
        /// The source's id.
        external_id: String,
        /// The user.
        user_id: Uuid,
        /// The version planned against; a user changed since is an error.
        version: u64,
        /// Field → [before, after].
        #[schema(value_type = Object)]
        fields: BTreeMap<String, (Value, Value)>,
    },
    /// A user the source no longer lists.
    Suspend {
        /// The source's id.
        external_id: String,
        /// The user.
        user_id: Uuid,
        /// The version planned against.
        version: u64,
    },
    /// A new device, bound to its owner when the record names one.
    CreateDevice {
        /// The source's id.
        external_id: String,
        /// The device's attributes.
        #[schema(value_type = Object)]
        attributes: BTreeMap<String, Value>,
        /// The owner's email or username.
        owner: Option<String>,
    },
    /// An existing device's attributes.
    UpdateDevice {
        /// The source's id.
        external_id: String,
        /// The device.
        device_id: Uuid,
        /// The version planned against.
        version: u64,
        /// Field → [before, after].
        #[schema(value_type = Object)]
        fields: BTreeMap<String, (Value, Value)>,
        /// The owner's email or username.
        owner: Option<String>,
    },
    /// A matched device with nothing to change: linked, and bound to its
    /// owner if it is not yet. Not listed in plans.
    LinkDevice {
        /// The source's id.
        external_id: String,
        /// The device.
        device_id: Uuid,
        /// The owner's email or username.
        owner: Option<String>,
    },
    /// A matched user with nothing to change, linked to the record for
    /// later runs (an empty `external_id`: already linked). Not listed in
    /// plans; counted as unchanged.
    Link {
        /// The source's id.
        external_id: String,
        /// The user.
        user_id: Uuid,
    },
}

/// A page of planned changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangePage {
    /// The changes, in order.
    pub items: Vec<Change>,
    /// All planned changes.
    pub total: usize,
}

/// Adds a plan's changes to the counts, as planned: links are the records
/// with nothing to change.
impl Counts {
    /// What a run has counted before it writes (records read, unchanged,
    /// per-record errors), with the write counts at zero for the writes,
    /// real or rehearsed, to count.
    pub(super) fn before_writes(&self) -> Counts {
        Counts {
            records: self.records,
            unchanged: self.unchanged,
            errors: self.errors,
            ..Counts::default()
        }
    }
}

pub(super) fn count_plan(counts: &mut Counts, plan: &[Change]) {
    for c in plan {
        match c {
            Change::Create { .. } => counts.created += 1,
            Change::Update { .. } => counts.updated += 1,
            Change::Suspend { .. } => counts.suspended += 1,
            Change::CreateDevice { .. } => counts.devices_created += 1,
            Change::UpdateDevice { .. } => counts.devices_updated += 1,
            Change::Link { .. } | Change::LinkDevice { .. } => counts.unchanged += 1,
        }
    }
}
