//! Full recomputes as resources: started on demand, at start-up and on a
//! schedule, each recorded with its state, what it changed and how long it
//! took, so an admin can start one and watch it finish.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Groups;
use super::apply::Counts;
use super::layout::RUNS;
use crate::auth::Actor;
use crate::error::DomainError;

/// How many finished runs are kept.
const KEEP: usize = 50;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = RecomputeState)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Still computing.
    Running,
    /// Done; `counts` says what changed.
    Finished,
    /// Stopped; `error` says why. Memberships written before the failure stay.
    Failed,
}

/// One full recompute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecomputeRun {
    /// Run id (UUIDv7, so runs sort by start).
    pub id: Uuid,
    /// Where it is.
    pub state: RunState,
    /// `api`, `startup` or `schedule`.
    pub trigger: String,
    /// Who started it.
    pub requested_by: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it changed, once finished.
    pub counts: Option<Counts>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: Option<u64>,
    /// The number of the host running it (`/readyz` shows each host's). A
    /// run whose host stopped is marked failed by the host that runs the
    /// scheduled work. Absent on runs recorded before hosts had numbers.
    #[serde(default)]
    pub host: Option<u32>,
}

impl Groups {
    fn write_run(&self, run: &RecomputeRun) -> Result<cohort_storage::Committed<()>, DomainError> {
        self.store().write(|txn| {
            txn.put_json(RUNS, run.id.as_bytes(), run)?;
            Ok::<_, DomainError>(())
        })
    }

    /// The hosts of the runs that are running (`None`: a run recorded
    /// without one). The history is pruned to the last 50 runs, so this
    /// scan stays small.
    pub fn running_hosts(&self) -> Result<Vec<Option<u32>>, DomainError> {
        let mut hosts = Vec::new();
        for entry in self.store().scan(RUNS, b"", None, false) {
            let (_, v) = entry?;
            let run: RecomputeRun = cohort_storage::decode_json(RUNS, &v)?;
            if run.state == RunState::Running {
                hosts.push(run.host);
            }
        }
        Ok(hosts)
    }

    /// Marks as failed the runs still "running" whose host `stopped` says
    /// is gone (a crash, a restart, a host of several that died; see
    /// `replication::StoppedHosts`). Returns how many it closed.
    pub fn close_interrupted_runs(
        &self,
        stopped: &dyn Fn(Option<u32>) -> bool,
    ) -> Result<usize, DomainError> {
        let mut stale = Vec::new();
        for entry in self.store().scan(RUNS, b"", None, false) {
            let (_, v) = entry?;
            let run: RecomputeRun = cohort_storage::decode_json(RUNS, &v)?;
            if run.state == RunState::Running && stopped(run.host) {
                stale.push(run.id);
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        Ok(self
            .store()
            .write(|txn| {
                let mut closed = 0;
                for id in stale {
                    // Read again inside the transaction: the run may have
                    // finished since the scan, and its end must not be undone.
                    let Some(mut run) = txn.get_json::<RecomputeRun>(RUNS, id.as_bytes())? else {
                        continue;
                    };
                    if run.state != RunState::Running {
                        continue;
                    }
                    run.state = RunState::Failed;
                    run.error = Some(format!(
                        "interrupted: the server running it stopped (host {})",
                        run.host.map_or("unknown".into(), |h| h.to_string())
                    ));
                    txn.put_json(RUNS, run.id.as_bytes(), &run)?;
                    closed += 1;
                }
                Ok::<_, DomainError>(closed)
            })?
            .durable_blocking()?)
    }

    /// Starts a full recompute in the background, or returns the one that is
    /// already running (one at a time: a second would only wait for the
    /// first and find nothing to do).
    pub async fn start_recompute(
        &self,
        actor: &Actor,
        trigger: &str,
    ) -> Result<RecomputeRun, DomainError> {
        let run = {
            let mut current = self.inner.running.lock();
            if let Some(id) = *current
                && let Some(run) = self.get_run(&id)?
            {
                return Ok(run);
            }
            let run = RecomputeRun {
                id: Uuid::now_v7(),
                state: RunState::Running,
                trigger: trigger.to_string(),
                requested_by: actor.name.clone(),
                started_at: self.now(),
                finished_at: None,
                counts: None,
                error: None,
                elapsed_ms: None,
                host: Some(self.store().host()),
            };
            *current = Some(run.id);
            run
        };
        if let Err(e) = self.write_run(&run)?.durable().await {
            *self.inner.running.lock() = None;
            return Err(e.into());
        }
        let this = self.clone();
        let actor = actor.clone();
        let started = run.clone();
        tokio::spawn(async move {
            let clock = crate::clock::Stopwatch::start();
            let result = this.recompute_all(&actor).await;
            let mut done = started;
            done.finished_at = Some(this.now());
            done.elapsed_ms = Some(clock.elapsed().as_millis() as u64);
            match result {
                Ok(c) => {
                    tracing::info!(
                        run = %done.id,
                        added = c.added,
                        removed = c.removed,
                        suggested = c.suggested,
                        elapsed_ms = done.elapsed_ms,
                        "full group recompute finished"
                    );
                    done.state = RunState::Finished;
                    done.counts = Some(c);
                }
                Err(e) => {
                    tracing::error!(run = %done.id, error = %e, "full group recompute failed");
                    done.state = RunState::Failed;
                    done.error = Some(e.to_string());
                }
            }
            let recorded = match this.write_run(&done) {
                Ok(c) => c.durable().await.map_err(DomainError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = recorded.and_then(|_| this.prune_runs()) {
                tracing::error!(error = %e, "could not record the recompute's result");
            }
            *this.inner.running.lock() = None;
        });
        Ok(run)
    }

    fn prune_runs(&self) -> Result<(), DomainError> {
        let keys: Vec<Vec<u8>> = self
            .store()
            .scan(RUNS, b"", None, true)
            .skip(KEEP)
            .map(|e| e.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        if !keys.is_empty() {
            // Pruning need not be durable before anything else happens.
            let _ = self.store().write(|txn| {
                for k in &keys {
                    txn.delete(RUNS, k);
                }
                Ok::<_, DomainError>(())
            })?;
        }
        Ok(())
    }

    /// One run.
    pub fn get_run(&self, id: &Uuid) -> Result<Option<RecomputeRun>, DomainError> {
        Ok(self.store().get_json(RUNS, id.as_bytes())?)
    }

    /// The latest runs, newest first.
    pub fn list_runs(&self) -> Result<Vec<RecomputeRun>, DomainError> {
        self.store()
            .scan(RUNS, b"", None, true)
            .map(|e| {
                let (_, v) = e?;
                Ok(cohort_storage::decode_json(RUNS, &v)?)
            })
            .collect()
    }
}
