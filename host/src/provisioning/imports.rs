//! Import runs: pulling people from an importer plugin (HR systems, other
//! directories) into the directory, under the admin's policy.
//!
//! A run reads every page from the source, then plans: each record is
//! matched to a user (by the link a previous run of the same source
//! stored, else by email or employee id), and becomes a create, an update
//! (field by field) or nothing; users this source imported before and that
//! are gone from it may be suspended. A dry run stops at the plan. A run
//! whose updates and suspensions would touch more than a share of the
//! directory (10% by default) stops before writing, and waits for an admin
//! to approve the plan it shows: a bad feed cannot wipe out the directory.
//! Every write goes through the directory's own path (validation, audit,
//! incremental group recompute).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cohort_storage::{Committed, Keyspace, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Actor, ManageDirectory, Mutation, Origin};
use crate::clock::Clock;
use crate::directory::layout::{self, DEVICES, USERS, USERS_BY_EMAIL, USERS_BY_USERNAME};
use crate::directory::{Device, DeviceInput, Directory, User, UserInput, UserState};
use crate::error::DomainError;
use crate::plugins::Instances;

/// Run id → `ImportRun` JSON.
const RUNS: Keyspace = Keyspace::new("import_runs");
/// Run id → the planned changes, for dry runs and runs awaiting approval.
const PLANS: Keyspace = Keyspace::new("import_plans");
/// `instance id \0 external id` → user id: who a source's record is.
const LINKS: Keyspace = Keyspace::new("import_links");
/// Schedule id → `Schedule` JSON.
const SCHEDULES: Keyspace = Keyspace::new("import_schedules");

/// Attributes a record may set directly on a user; any other name is a
/// custom attribute.
const STANDARD: [&str; 15] = [
    "username",
    "email",
    "first_name",
    "last_name",
    "display_name",
    "department",
    "job_title",
    "location",
    "employee_type",
    "company",
    "cost_center",
    "employee_id",
    "manager_id",
    "phone",
    "description",
];
/// Attributes a device record may set directly; `owner` (an email or
/// username) binds the device to that user; any other name is a custom
/// attribute.
const DEVICE_STANDARD: [&str; 9] = [
    "hostname",
    "display_name",
    "os_family",
    "os_version",
    "architecture",
    "serial_number",
    "agent_version",
    "disk_encryption",
    "mdm_enrolled",
];
/// Record errors kept on a run.
const MAX_ERRORS: usize = 1000;
/// Writes between two waits for durability.
const BATCH: usize = 500;

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

/// Import runs.
#[derive(Clone)]
pub struct Imports {
    store: Store,
    clock: Arc<dyn Clock>,
    directory: Directory,
    instances: Instances,
}

fn link_key(instance: &str, external: &str) -> Vec<u8> {
    [instance.as_bytes(), &[0], external.as_bytes()].concat()
}

/// Who a run's changes are audited as: the importer instance, under the
/// run's id (which correlates them), from where the run was started or
/// approved.
fn run_actor(instance: &str, run: &ImportRun, from: &Origin) -> Actor {
    Actor::named(
        format!("import:{instance}"),
        Origin {
            request_id: run.id.to_string(),
            ..from.clone()
        },
    )
}

impl Imports {
    /// The service.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        directory: Directory,
        instances: Instances,
    ) -> Imports {
        Imports {
            store,
            clock,
            directory,
            instances,
        }
    }

    /// Starts a run in the background and returns it (running).
    pub async fn start(
        &self,
        cap: &ManageDirectory<'_>,
        input: ImportInput,
    ) -> Result<ImportRun, DomainError> {
        let origin = &cap.actor().origin;
        self.start_as(&cap.actor().name, origin, input).await
    }

    /// Starts a run; its changes are audited with the address and user
    /// agent of the request that started it (none for schedules).
    async fn start_as(
        &self,
        started_by: &str,
        started_from: &Origin,
        input: ImportInput,
    ) -> Result<ImportRun, DomainError> {
        if !(0.0..=1.0).contains(&input.max_change_share) {
            return Err(DomainError::invalid(
                "max_change_share",
                "a share of the directory, from 0 to 1",
            ));
        }
        let instance = self
            .instances
            .list()?
            .into_iter()
            .find(|i| i.id == input.instance || i.name == input.instance)
            .ok_or_else(|| {
                DomainError::invalid(
                    "instance",
                    format!("no plugin instance {:?}", input.instance),
                )
            })?;
        let run = ImportRun {
            id: Uuid::now_v7(),
            input,
            instance_id: instance.id,
            state: RunState::Running,
            counts: Counts::default(),
            errors: Vec::new(),
            failure: None,
            brake: None,
            started_by: started_by.to_string(),
            approved_by: None,
            started_at: self.clock.now(),
            finished_at: None,
            duration_ms: None,
        };
        self.save(&run).await?;
        let this = self.clone();
        let actor = run_actor(&instance.name, &run, started_from);
        let started = run.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let id = started.id;
            let finished = this.execute(started, &actor, t).await;
            if let Err(e) = finished {
                tracing::error!(run = %id, error = %e, "import run failed");
                if let Ok(Some(mut run)) = this.store.get_json::<ImportRun>(RUNS, id.as_bytes()) {
                    run.state = RunState::Failed;
                    run.failure = Some(e.to_string());
                    this.finish(&mut run, t);
                    let _ = this.save(&run).await;
                }
            }
        });
        Ok(run)
    }

    async fn save(&self, run: &ImportRun) -> Result<(), DomainError> {
        self.store
            .write(|txn| txn.put_json(RUNS, run.id.as_bytes(), run))?
            .durable()
            .await?;
        Ok(())
    }

    fn finish(&self, run: &mut ImportRun, t: Instant) {
        run.finished_at = Some(self.clock.now());
        run.duration_ms = Some(t.elapsed().as_millis() as u64);
    }

    /// One run.
    pub fn get(&self, id: &Uuid) -> Result<ImportRun, DomainError> {
        self.store
            .get_json(RUNS, id.as_bytes())?
            .ok_or_else(|| DomainError::not_found("import run", id))
    }

    /// The newest runs first.
    pub fn list(&self, limit: usize) -> Result<Vec<ImportRun>, DomainError> {
        let mut out = Vec::new();
        for entry in self.store.scan(RUNS, b"", None, true) {
            let (_, v) = entry?;
            out.push(cohort_storage::decode_json(RUNS, &v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A page of a run's planned changes (dry runs and runs awaiting
    /// approval).
    pub fn changes(
        &self,
        id: &Uuid,
        offset: usize,
        limit: usize,
    ) -> Result<ChangePage, DomainError> {
        self.get(id)?;
        let plan: Vec<Change> = self
            .store
            .get_json(PLANS, id.as_bytes())?
            .unwrap_or_default();
        let shown: Vec<Change> = plan
            .into_iter()
            .filter(|c| !matches!(c, Change::Link { .. } | Change::LinkDevice { .. }))
            .collect();
        Ok(ChangePage {
            total: shown.len(),
            items: shown.into_iter().skip(offset).take(limit).collect(),
        })
    }

    /// Applies the plan of a run the brake stopped.
    pub async fn approve(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
    ) -> Result<ImportRun, DomainError> {
        let mut run = self.get(id)?;
        if run.state != RunState::AwaitingApproval {
            return Err(DomainError::Conflict {
                code: "not_awaiting_approval",
                field: None,
                message: format!("the run is {:?}, not awaiting approval", run.state),
            });
        }
        let plan: Vec<Change> = self
            .store
            .get_json(PLANS, id.as_bytes())?
            .unwrap_or_default();
        run.state = RunState::Running;
        run.approved_by = Some(cap.actor().name.clone());
        // From planned counts to done counts.
        run.counts.created = 0;
        run.counts.updated = 0;
        run.counts.suspended = 0;
        run.counts.devices_created = 0;
        run.counts.devices_updated = 0;
        self.save(&run).await?;
        let instance_name = self
            .instances
            .list()?
            .into_iter()
            .find(|i| i.id == run.instance_id)
            .map_or_else(|| run.instance_id.clone(), |i| i.name);
        let actor = run_actor(&instance_name, &run, &cap.actor().origin);
        let t = Instant::now();
        self.apply(&mut run, &actor, plan).await?;
        run.state = RunState::Completed;
        self.finish(&mut run, t);
        self.store
            .write(|txn| {
                txn.delete(PLANS, run.id.as_bytes());
                txn.put_json(RUNS, run.id.as_bytes(), &run)
            })?
            .durable()
            .await?;
        Ok(run)
    }

    async fn execute(
        &self,
        mut run: ImportRun,
        actor: &Actor,
        t: Instant,
    ) -> Result<(), DomainError> {
        let instance = run.instance_id.clone();
        let records = match self.read_all(&instance, &mut run).await {
            Ok(r) => r,
            Err(message) => {
                run.state = RunState::Failed;
                run.failure = Some(message);
                self.finish(&mut run, t);
                return self.save(&run).await;
            }
        };
        let plan = self.plan(&run, records)?;
        let size = self.store.scan(USERS, b"", None, false).count()
            + self.store.scan(DEVICES, b"", None, false).count();
        let touches = plan
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Change::Update { .. } | Change::Suspend { .. } | Change::UpdateDevice { .. }
                )
            })
            .count();
        count_plan(&mut run.counts, &plan);
        let braked = size > 0 && touches as f64 > run.input.max_change_share * size as f64;
        if run.input.dry_run || braked {
            if braked && !run.input.dry_run {
                run.state = RunState::AwaitingApproval;
                run.brake = Some(Brake {
                    changes: touches,
                    directory_size: size,
                    max_change_share: run.input.max_change_share,
                });
            } else {
                run.state = RunState::Completed;
            }
            self.finish(&mut run, t);
            self.store
                .write(|txn| {
                    txn.put_json(PLANS, run.id.as_bytes(), &plan)?;
                    txn.put_json(RUNS, run.id.as_bytes(), &run)
                })?
                .durable()
                .await?;
            return Ok(());
        }
        run.counts = Counts {
            records: run.counts.records,
            unchanged: run.counts.unchanged,
            errors: run.counts.errors,
            ..Counts::default()
        };
        self.apply(&mut run, actor, plan).await?;
        run.state = RunState::Completed;
        self.finish(&mut run, t);
        self.save(&run).await
    }

    /// Every page of the source. Rate limits are waited out (up to five
    /// times a page, at most a minute each); other source errors fail the
    /// run.
    async fn read_all(&self, instance: &str, run: &mut ImportRun) -> Result<Vec<Source>, String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut retries = 0;
        loop {
            let instances = self.instances.clone();
            let (id, c) = (instance.to_string(), cursor.clone());
            let page = tokio::task::spawn_blocking(move || instances.preview(&id, c.as_deref()))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let page = match page {
                Ok(p) => p,
                Err(e) if e.retry_after.is_some() && retries < 5 => {
                    retries += 1;
                    let wait = u64::from(e.retry_after.unwrap_or(1)).min(60);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    continue;
                }
                Err(e) => return Err(format!("the source failed ({}): {}", e.kind, e.message)),
            };
            retries = 0;
            for p in page.problems {
                push_error(run, p.external_id, p.message);
            }
            for r in page.records {
                let device = r.kind == "device";
                if !seen.insert((device, r.external_id.clone())) {
                    push_error(
                        run,
                        Some(r.external_id),
                        "the source lists this id twice; the later record is skipped".into(),
                    );
                    continue;
                }
                out.push(Source {
                    device,
                    external_id: r.external_id,
                    attributes: r.attributes,
                });
            }
            match page.next_cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                Some(_) => return Err("the source returned the same cursor twice".into()),
                None => break,
            }
        }
        run.counts.records = out.len();
        Ok(out)
    }

    /// What the records would change.
    fn plan(&self, run: &ImportRun, all: Vec<Source>) -> Result<Vec<Change>, DomainError> {
        let (devices, records): (Vec<Source>, Vec<Source>) =
            all.into_iter().partition(|r| r.device);
        let records: Vec<(String, BTreeMap<String, Value>)> = records
            .into_iter()
            .map(|r| (r.external_id, r.attributes))
            .collect();
        let mut plan = self.plan_users(run, records)?;
        plan.extend(self.plan_devices(run, devices)?);
        Ok(plan)
    }

    /// What device records would change: matched by this source's link,
    /// else by serial number.
    fn plan_devices(
        &self,
        run: &ImportRun,
        records: Vec<Source>,
    ) -> Result<Vec<Change>, DomainError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_serial = HashMap::new();
        let mut devices = HashMap::new();
        for entry in self.store.scan(DEVICES, b"", None, false) {
            let (_, v) = entry?;
            let d: Device = cohort_storage::decode_json(DEVICES, &v)?;
            if let Some(sn) = &d.serial_number {
                by_serial.insert(sn.clone(), d.id);
            }
            devices.insert(d.id, d);
        }
        let mut plan = Vec::new();
        for r in records {
            let mut attrs = r.attributes;
            let owner = attrs
                .remove("owner")
                .and_then(|o| o.as_str().map(String::from));
            let linked = self
                .store
                .get(
                    LINKS,
                    &link_key(&run.instance_id, &device_link(&r.external_id)),
                )?
                .and_then(|b| Uuid::from_slice(&b).ok());
            let by_sn = attrs
                .get("serial_number")
                .and_then(Value::as_str)
                .and_then(|sn| by_serial.get(sn).copied());
            let device = linked.or(by_sn).and_then(|id| devices.get(&id));
            match device {
                None => plan.push(Change::CreateDevice {
                    external_id: r.external_id,
                    attributes: attrs,
                    owner,
                }),
                Some(d) => {
                    let fields = changed_fields(d, &attrs, &DEVICE_STANDARD);
                    if fields.is_empty() || run.input.changed == Changed::Ignore {
                        plan.push(Change::LinkDevice {
                            external_id: r.external_id,
                            device_id: d.id,
                            owner,
                        });
                    } else {
                        plan.push(Change::UpdateDevice {
                            external_id: r.external_id,
                            device_id: d.id,
                            version: d.version,
                            fields,
                            owner,
                        });
                    }
                }
            }
        }
        Ok(plan)
    }

    /// What user records would change.
    fn plan_users(
        &self,
        run: &ImportRun,
        records: Vec<(String, BTreeMap<String, Value>)>,
    ) -> Result<Vec<Change>, DomainError> {
        let instance = &run.instance_id;
        let mut by_email = HashMap::new();
        let mut by_employee = HashMap::new();
        let mut users = HashMap::new();
        for entry in self.store.scan(USERS, b"", None, false) {
            let (_, v) = entry?;
            let u: User = cohort_storage::decode_json(USERS, &v)?;
            by_email.insert(layout::email(&u.email), u.id);
            if let Some(e) = &u.employee_id {
                by_employee.insert(e.clone(), u.id);
            }
            users.insert(u.id, u);
        }
        let mut linked: HashMap<String, Uuid> = HashMap::new();
        let prefix = [instance.as_bytes(), &[0]].concat();
        for entry in self.store.scan(LINKS, &prefix, None, false) {
            let (k, v) = entry?;
            if let (Ok(ext), Ok(id)) = (
                String::from_utf8(k[prefix.len()..].to_vec()),
                Uuid::from_slice(&v),
            ) {
                linked.insert(ext, id);
            }
        }
        let mut plan = Vec::new();
        let mut present = HashSet::new();
        for (external_id, attrs) in records {
            present.insert(external_id.clone());
            let key = match run.input.match_on {
                MatchOn::Email => attrs
                    .get("email")
                    .and_then(Value::as_str)
                    .map(|e| by_email.get(&layout::email(e))),
                MatchOn::EmployeeId => attrs
                    .get("employee_id")
                    .and_then(Value::as_str)
                    .map(|e| by_employee.get(e)),
            };
            let user = linked
                .get(&external_id)
                .or_else(|| key.flatten())
                .and_then(|id| users.get(id));
            match user {
                None => plan.push(Change::Create {
                    external_id,
                    attributes: attrs,
                }),
                Some(u) => {
                    let fields = changed_fields(u, &attrs, &STANDARD);
                    if fields.is_empty() || run.input.changed == Changed::Ignore {
                        if linked.get(&external_id) != Some(&u.id) {
                            plan.push(Change::Link {
                                external_id,
                                user_id: u.id,
                            });
                        } else {
                            plan.push(Change::Link {
                                external_id: String::new(),
                                user_id: u.id,
                            });
                        }
                    } else {
                        plan.push(Change::Update {
                            external_id,
                            user_id: u.id,
                            version: u.version,
                            fields,
                        });
                    }
                }
            }
        }
        if run.input.missing == Missing::Suspend {
            for (ext, id) in &linked {
                if present.contains(ext) {
                    continue;
                }
                if let Some(u) = users.get(id)
                    && u.state == UserState::Active
                {
                    plan.push(Change::Suspend {
                        external_id: ext.clone(),
                        user_id: *id,
                        version: u.version,
                    });
                }
            }
        }
        Ok(plan)
    }

    /// Writes a plan, change by change (each its own transaction, waiting
    /// for durability every few hundred), recording per-change errors.
    async fn apply(
        &self,
        run: &mut ImportRun,
        actor: &Actor,
        plan: Vec<Change>,
    ) -> Result<(), DomainError> {
        let instance = run.instance_id.clone();
        let mut pending: Option<Committed<()>> = None;
        for (n, change) in plan.into_iter().enumerate() {
            let result = self.store.write(|txn| {
                match &change {
                    Change::Create {
                        external_id,
                        attributes,
                    } => {
                        let mut input = input_from(None, attributes)?;
                        input.state = Some(match run.input.new_users {
                            NewUsers::Staged => UserState::Staged,
                            NewUsers::Active => UserState::Active,
                        });
                        let now = self.clock.now();
                        let user = self.directory.create_user_in(txn, actor, input, now)?;
                        txn.put(
                            LINKS,
                            &link_key(&instance, external_id),
                            user.id.as_bytes().to_vec(),
                        );
                    }
                    Change::Update {
                        external_id,
                        user_id,
                        version,
                        fields,
                    } => {
                        let current = crate::directory::load_user(txn, user_id)?;
                        let after: BTreeMap<String, Value> = fields
                            .iter()
                            .map(|(k, (_, a))| (k.clone(), a.clone()))
                            .collect();
                        let input = input_from(Some(&current), &after)?;
                        self.directory.replace_user_in(
                            txn,
                            actor,
                            user_id,
                            input,
                            None,
                            Some(*version),
                        )?;
                        txn.put(
                            LINKS,
                            &link_key(&instance, external_id),
                            user_id.as_bytes().to_vec(),
                        );
                    }
                    Change::Suspend {
                        user_id, version, ..
                    } => {
                        let current = crate::directory::load_user(txn, user_id)?;
                        self.directory.replace_user_in(
                            txn,
                            actor,
                            user_id,
                            UserInput::from(&current),
                            Some(UserState::Suspended),
                            Some(*version),
                        )?;
                    }
                    Change::Link {
                        external_id,
                        user_id,
                    } => {
                        if !external_id.is_empty() {
                            txn.put(
                                LINKS,
                                &link_key(&instance, external_id),
                                user_id.as_bytes().to_vec(),
                            );
                        }
                    }
                    Change::CreateDevice {
                        external_id,
                        attributes,
                        owner,
                    } => {
                        let input = device_input_from(None, attributes)?;
                        let now = self.clock.now();
                        let device = self.directory.create_device_in(txn, actor, input, now)?;
                        txn.put(
                            LINKS,
                            &link_key(&instance, &device_link(external_id)),
                            device.id.as_bytes().to_vec(),
                        );
                        self.bind_owner(txn, actor, &device.id, owner.as_deref())?;
                    }
                    Change::UpdateDevice {
                        external_id,
                        device_id,
                        version,
                        fields,
                        owner,
                    } => {
                        let current = crate::directory::load_device(txn, device_id)?;
                        let after: BTreeMap<String, Value> = fields
                            .iter()
                            .map(|(k, (_, a))| (k.clone(), a.clone()))
                            .collect();
                        let input = device_input_from(Some(&current), &after)?;
                        self.directory.replace_device_in(
                            txn,
                            actor,
                            device_id,
                            input,
                            Some(*version),
                        )?;
                        txn.put(
                            LINKS,
                            &link_key(&instance, &device_link(external_id)),
                            device_id.as_bytes().to_vec(),
                        );
                        self.bind_owner(txn, actor, device_id, owner.as_deref())?;
                    }
                    Change::LinkDevice {
                        external_id,
                        device_id,
                        owner,
                    } => {
                        txn.put(
                            LINKS,
                            &link_key(&instance, &device_link(external_id)),
                            device_id.as_bytes().to_vec(),
                        );
                        self.bind_owner(txn, actor, device_id, owner.as_deref())?;
                    }
                }
                Ok::<_, DomainError>(())
            });
            match result {
                Ok(c) => {
                    match &change {
                        Change::Create { .. } => run.counts.created += 1,
                        Change::Update { .. } => run.counts.updated += 1,
                        Change::Suspend { .. } => run.counts.suspended += 1,
                        Change::CreateDevice { .. } => run.counts.devices_created += 1,
                        Change::UpdateDevice { .. } => run.counts.devices_updated += 1,
                        Change::Link { .. } | Change::LinkDevice { .. } => {}
                    }
                    pending = Some(c);
                }
                Err(e) => {
                    let ext = match &change {
                        Change::Create { external_id, .. }
                        | Change::Update { external_id, .. }
                        | Change::Suspend { external_id, .. }
                        | Change::Link { external_id, .. }
                        | Change::CreateDevice { external_id, .. }
                        | Change::UpdateDevice { external_id, .. }
                        | Change::LinkDevice { external_id, .. } => external_id.clone(),
                    };
                    push_error(run, Some(ext), e.to_string());
                }
            }
            if (n + 1) % BATCH == 0
                && let Some(c) = pending.take()
            {
                c.durable().await?;
            }
        }
        if let Some(c) = pending {
            c.durable().await?;
        }
        Ok(())
    }

    /// Binds the device to the user the record names as owner (by email,
    /// then username). An owner that is not in the directory is an error
    /// for this record.
    fn bind_owner(
        &self,
        txn: &mut cohort_storage::WriteTxn<'_>,
        actor: &Actor,
        device: &Uuid,
        owner: Option<&str>,
    ) -> Result<(), DomainError> {
        let Some(owner) = owner.map(str::trim).filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let user = match txn.get(USERS_BY_EMAIL, &layout::email(owner))? {
            Some(id) => Some(id),
            None => txn.get(USERS_BY_USERNAME, &layout::username(owner))?,
        }
        .and_then(|b| Uuid::from_slice(&b).ok())
        .ok_or_else(|| {
            DomainError::invalid("owner", format!("no user {owner:?} to bind the device to"))
        })?;
        let now = self.clock.now();
        self.directory.bind_in(txn, actor, &user, device, now)?;
        Ok(())
    }

    /// Marks runs a crash interrupted as failed (at start-up).
    pub fn fail_interrupted(&self) -> Result<(), DomainError> {
        let mut stale = Vec::new();
        for entry in self.store.scan(RUNS, b"", None, false) {
            let (_, v) = entry?;
            let run: ImportRun = cohort_storage::decode_json(RUNS, &v)?;
            if run.state == RunState::Running {
                stale.push(run);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        self.store
            .write(|txn| {
                for mut run in stale {
                    run.state = RunState::Failed;
                    run.failure = Some("interrupted: the server stopped during the run".into());
                    txn.put_json(RUNS, run.id.as_bytes(), &run)?;
                }
                Ok::<_, DomainError>(())
            })?
            .durable_blocking()?;
        Ok(())
    }
}

/// A run repeated on a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    /// Stable id.
    pub id: Uuid,
    /// Unique name; runs it starts are started by `schedule:<name>`.
    pub name: String,
    /// The run (never a dry run).
    pub input: ImportInput,
    /// Hours between runs.
    pub every_hours: u32,
    /// When the next run starts.
    pub next_run_at: DateTime<Utc>,
    /// The last run it started.
    pub last_run_id: Option<Uuid>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A new schedule.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// Unique name.
    pub name: String,
    /// The run to repeat.
    pub input: ImportInput,
    /// Hours between runs, 1 to 8760.
    #[schema(minimum = 1, maximum = 8760)]
    pub every_hours: u32,
    /// When the first run starts (default: now).
    #[serde(default)]
    pub first_run_at: Option<DateTime<Utc>>,
}

impl Imports {
    /// Every schedule, by name.
    pub fn schedules(&self) -> Result<Vec<Schedule>, DomainError> {
        let mut out: Vec<Schedule> = Vec::new();
        for entry in self.store.scan(SCHEDULES, b"", None, false) {
            let (_, v) = entry?;
            out.push(cohort_storage::decode_json(SCHEDULES, &v)?);
        }
        out.sort_by_key(|s| s.name.to_lowercase());
        Ok(out)
    }

    /// Creates a schedule.
    pub async fn create_schedule(
        &self,
        cap: &ManageDirectory<'_>,
        input: ScheduleInput,
    ) -> Result<Schedule, DomainError> {
        if input.name.trim().is_empty() || input.name.chars().count() > 100 {
            return Err(DomainError::invalid("name", "must be 1-100 characters"));
        }
        if !(1..=8760).contains(&input.every_hours) {
            return Err(DomainError::invalid(
                "every_hours",
                "from 1 to 8760 (a year)",
            ));
        }
        if input.input.dry_run {
            return Err(DomainError::invalid(
                "input.dry_run",
                "a schedule applies its runs; preview with a dry run first",
            ));
        }
        let instances = self.instances.list()?;
        if !instances
            .iter()
            .any(|i| i.id == input.input.instance || i.name == input.input.instance)
        {
            return Err(DomainError::invalid(
                "input.instance",
                format!("no plugin instance {:?}", input.input.instance),
            ));
        }
        let now = self.clock.now();
        let schedule = Schedule {
            id: Uuid::now_v7(),
            name: input.name,
            input: input.input,
            every_hours: input.every_hours,
            next_run_at: input.first_run_at.unwrap_or(now),
            last_run_id: None,
            created_by: cap.actor().name.clone(),
            created_at: now,
        };
        let taken = self
            .schedules()?
            .iter()
            .any(|s| s.name.to_lowercase() == schedule.name.to_lowercase());
        if taken {
            return Err(DomainError::Conflict {
                code: "name_taken",
                field: Some("name".into()),
                message: format!("a schedule named {:?} exists", schedule.name),
            });
        }
        let actor = cap.actor().clone();
        self.store
            .write(|txn| {
                txn.put_json(SCHEDULES, schedule.id.as_bytes(), &schedule)?;
                crate::audit::record(
                    txn,
                    now,
                    &actor,
                    crate::audit::Record {
                        action: "import_schedule.create",
                        resource_type: "import_schedule",
                        resource_id: schedule.id.to_string(),
                        changes: crate::audit::diff(None, Some(&schedule)),
                    },
                )?;
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(schedule)
    }

    /// Deletes a schedule (its runs stay).
    pub async fn delete_schedule(
        &self,
        cap: &ManageDirectory<'_>,
        id: &Uuid,
    ) -> Result<(), DomainError> {
        let now = self.clock.now();
        let actor = cap.actor().clone();
        self.store
            .write(|txn| {
                let s: Schedule = txn
                    .get_json(SCHEDULES, id.as_bytes())?
                    .ok_or_else(|| DomainError::not_found("import schedule", id))?;
                txn.delete(SCHEDULES, id.as_bytes());
                crate::audit::record(
                    txn,
                    now,
                    &actor,
                    crate::audit::Record {
                        action: "import_schedule.delete",
                        resource_type: "import_schedule",
                        resource_id: id.to_string(),
                        changes: crate::audit::diff(Some(&s), None),
                    },
                )?;
                Ok::<_, DomainError>(())
            })?
            .durable()
            .await?;
        Ok(())
    }

    /// Starts the runs that are due. A schedule whose last run is still
    /// running, or waiting for approval, skips its turn: runs do not pile up
    /// behind a brake.
    pub async fn run_due(&self) -> Result<usize, DomainError> {
        let now = self.clock.now();
        let mut started = 0;
        for mut s in self.schedules()? {
            if s.next_run_at > now {
                continue;
            }
            let busy = match s.last_run_id {
                Some(id) => self
                    .store
                    .get_json::<ImportRun>(RUNS, id.as_bytes())?
                    .is_some_and(|r| {
                        matches!(r.state, RunState::Running | RunState::AwaitingApproval)
                    }),
                None => false,
            };
            if !busy {
                match self
                    .start_as(
                        &format!("schedule:{}", s.name),
                        &Origin::default(),
                        s.input.clone(),
                    )
                    .await
                {
                    Ok(run) => {
                        s.last_run_id = Some(run.id);
                        started += 1;
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, error = %e, "a scheduled import could not start")
                    }
                }
            }
            // The next turn after now, however long the server was down.
            let step = chrono::Duration::hours(i64::from(s.every_hours));
            while s.next_run_at <= now {
                s.next_run_at += step;
            }
            self.store
                .write(|txn| txn.put_json(SCHEDULES, s.id.as_bytes(), &s))?
                .durable()
                .await?;
        }
        Ok(started)
    }
}

fn push_error(run: &mut ImportRun, external_id: Option<String>, message: String) {
    run.counts.errors += 1;
    if run.errors.len() < MAX_ERRORS {
        run.errors.push(RecordError {
            external_id,
            message,
        });
    }
}

fn count_plan(counts: &mut Counts, plan: &[Change]) {
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

/// The attributes of a record that differ from the subject's, as
/// `[before, after]`. Names in `standard` are the subject's own fields;
/// others are custom attributes.
fn changed_fields(
    subject: &impl Serialize,
    attrs: &BTreeMap<String, Value>,
    standard: &[&str],
) -> BTreeMap<String, (Value, Value)> {
    let current = serde_json::to_value(subject).unwrap_or_default();
    let mut fields = BTreeMap::new();
    for (name, after) in attrs {
        let before = if standard.contains(&name.as_str()) {
            current.get(name)
        } else {
            current["custom_attributes"].get(name)
        }
        .cloned()
        .unwrap_or(Value::Null);
        if before != *after {
            fields.insert(name.clone(), (before, after.clone()));
        }
    }
    fields
}

/// Sets a record's attributes on a subject's writable fields (as JSON):
/// names in `standard` directly, others as custom attributes.
fn overlay(v: &mut Value, attrs: &BTreeMap<String, Value>, standard: &[&str]) {
    for (name, value) in attrs {
        if standard.contains(&name.as_str()) {
            v[name] = value.clone();
        } else {
            if !v["custom_attributes"].is_object() {
                v["custom_attributes"] = serde_json::json!({});
            }
            v["custom_attributes"][name] = value.clone();
        }
    }
}

/// A record as read from the source.
struct Source {
    device: bool,
    external_id: String,
    attributes: BTreeMap<String, Value>,
}

/// Device links live beside user links, apart by this prefix.
fn device_link(external_id: &str) -> String {
    format!("device:{external_id}")
}

/// A device's writable fields with a record's attributes over them.
fn device_input_from(
    current: Option<&Device>,
    attrs: &BTreeMap<String, Value>,
) -> Result<DeviceInput, DomainError> {
    if current.is_none() && !attrs.contains_key("os_family") {
        return Err(DomainError::invalid(
            "os_family",
            "a new device needs its OS family",
        ));
    }
    let mut v = match current {
        Some(d) => serde_json::to_value(DeviceInput::from(d)).unwrap_or_default(),
        None => serde_json::json!({"hostname": "", "os_family": "linux"}),
    };
    overlay(&mut v, attrs, &DEVICE_STANDARD);
    serde_json::from_value(v).map_err(|e| DomainError::invalid("attributes", e.to_string()))
}

/// A user's writable fields with a record's attributes over them. A new
/// user without a username takes the email.
fn input_from(
    current: Option<&User>,
    attrs: &BTreeMap<String, Value>,
) -> Result<UserInput, DomainError> {
    let mut v = match current {
        Some(u) => serde_json::to_value(UserInput::from(u)).unwrap_or_default(),
        None => serde_json::json!({"username": "", "email": ""}),
    };
    overlay(&mut v, attrs, &STANDARD);
    if current.is_none() && v["username"].as_str().is_none_or(str::is_empty) {
        v["username"] = v["email"].clone();
    }
    serde_json::from_value(v).map_err(|e| DomainError::invalid("attributes", e.to_string()))
}
