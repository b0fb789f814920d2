//! Import schedules: a run repeated every so many hours, started by the
//! server's scheduler through `run_due`. Apart from the runs themselves
//! because a schedule has its own record, audit trail and rule for turns
//! that fall while the previous run is still going or braked.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ImportInput, ImportRun, Imports, RUNS, RunState, SCHEDULES};
use crate::auth::{ManageDirectory, Mutation, Origin};
use crate::error::DomainError;

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
