//! An in-memory `RunScheduler` and `DeliveryLog` over [`InMemoryMetadataStore`], for controller tests that need
//! no database. One async mutex makes each operation atomic with respect to the others; run state changes go
//! through the store's own `update_run`, so its state machine checks still apply. It passes the same
//! conformance suite (`scheduling_conformance`) as the SQL store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use adapterci_core::ports::{RunStore, StoreError};
use adapterci_core::run::{RunPatch, RunRecord, RunState};
use adapterci_core::scheduling::{
    ClaimedRun, ConcurrencyLimits, DeliveryLog, EnqueueRequest, Enqueued, RunSchedule, RunScheduler,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::store_fake::InMemoryMetadataStore;

#[derive(Clone, Debug)]
struct Entry {
    schedule: RunSchedule,
    queued_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    schedules: HashMap<String, Entry>,
    deliveries: BTreeSet<(String, String)>,
}

/// The scheduler of an in-memory metadata store.
#[derive(Debug)]
pub struct InMemoryScheduler {
    store: Arc<InMemoryMetadataStore>,
    state: Mutex<State>,
}

impl InMemoryScheduler {
    pub fn new(store: Arc<InMemoryMetadataStore>) -> InMemoryScheduler {
        InMemoryScheduler { store, state: Mutex::new(State::default()) }
    }

    /// Runs in `state`, oldest first.
    async fn runs_in(&self, state: RunState) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs: Vec<RunRecord> =
            self.store.list_runs(None, usize::MAX).await?.into_iter().filter(|run| run.state == state).collect();
        runs.reverse();
        Ok(runs)
    }

    /// Moves a run; `None` when it is no longer in a state that allows the move (a racing cancel).
    async fn move_run(&self, id: &str, patch: RunPatch) -> Result<Option<RunRecord>, StoreError> {
        match self.store.update_run(id, patch).await {
            Ok(run) => Ok(Some(run)),
            Err(StoreError::InvalidTransition(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

#[async_trait]
impl RunScheduler for InMemoryScheduler {
    async fn enqueue_run(&self, request: EnqueueRequest, now: DateTime<Utc>) -> Result<Enqueued, StoreError> {
        let mut state = self.state.lock().await;
        let queued: Vec<RunRecord> = self
            .runs_in(RunState::Queued)
            .await?
            .into_iter()
            .filter(|run| run.pipeline == request.run.pipeline)
            .collect();
        if let Some(max_delay) = request.coalesce_max_delay {
            for run in &queued {
                let Some(entry) = state.schedules.get_mut(&run.id) else { continue };
                if entry.schedule.not_before <= now {
                    continue;
                }
                let latest = entry.queued_at + max_delay;
                entry.schedule.not_before = request.not_before.max(entry.schedule.not_before).min(latest);
                entry.schedule.coalesced_triggers += 1;
                return Ok(Enqueued { run: run.clone(), coalesced: true, superseded: Vec::new() });
            }
        }
        let created = self.store.create_run(request.run.clone()).await?;
        let mut superseded = Vec::new();
        if request.supersede_queued {
            for run in &queued {
                let patch = RunPatch {
                    state: Some(RunState::Cancelled),
                    error: Some(format!("superseded by run {} (newer data)", created.id)),
                    ..RunPatch::default()
                };
                if self.move_run(&run.id, patch).await?.is_some() {
                    superseded.push(run.id.clone());
                }
            }
        }
        state.schedules.insert(
            created.id.clone(),
            Entry {
                schedule: RunSchedule {
                    run_id: created.id.clone(),
                    not_before: request.not_before,
                    attempts: 0,
                    coalesced_triggers: 0,
                    lease_holder: None,
                    lease_expires_at: None,
                },
                queued_at: now,
            },
        );
        Ok(Enqueued { run: created, coalesced: false, superseded })
    }

    async fn expire_leases(&self, now: DateTime<Utc>, max_attempts: u32) -> Result<Vec<String>, StoreError> {
        let mut state = self.state.lock().await;
        let expired: Vec<String> = state
            .schedules
            .values()
            .filter(|entry| entry.schedule.lease_expires_at.is_some_and(|expires| expires < now))
            .map(|entry| entry.schedule.run_id.clone())
            .collect();
        let mut touched = Vec::new();
        for id in expired {
            let Some(entry) = state.schedules.get_mut(&id) else { continue };
            let patch = if entry.schedule.attempts >= max_attempts {
                RunPatch {
                    state: Some(RunState::Failed),
                    error: Some(format!(
                        "the controller running it stopped answering {} times (lease held by {} expired)",
                        entry.schedule.attempts,
                        entry.schedule.lease_holder.as_deref().unwrap_or("nobody")
                    )),
                    ..RunPatch::default()
                }
            } else {
                RunPatch { state: Some(RunState::Queued), ..RunPatch::default() }
            };
            entry.schedule.lease_holder = None;
            entry.schedule.lease_expires_at = None;
            entry.schedule.not_before = now;
            let running = self.store.get_run(&id).await?.is_some_and(|run| run.state == RunState::Running);
            if running && self.move_run(&id, patch).await?.is_some() {
                touched.push(id);
            }
        }
        Ok(touched)
    }

    async fn claim_due_run(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limits: ConcurrencyLimits,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        let mut state = self.state.lock().await;
        let running = self.runs_in(RunState::Running).await?;
        if running.len() >= limits.global {
            return Ok(None);
        }
        let mut per_pipeline: BTreeMap<String, usize> = BTreeMap::new();
        for run in &running {
            *per_pipeline.entry(run.pipeline.to_string()).or_default() += 1;
        }
        for run in self.runs_in(RunState::Queued).await? {
            let entry = state.schedules.get(&run.id);
            if entry.is_some_and(|entry| entry.schedule.not_before > now)
                || per_pipeline.get(run.pipeline.as_str()).copied().unwrap_or(0) >= limits.per_pipeline
            {
                continue;
            }
            // The SQL store clears the error of a claimed run; the fake's patch cannot, so it leaves it.
            let Some(claimed) =
                self.move_run(&run.id, RunPatch { state: Some(RunState::Running), ..RunPatch::default() }).await?
            else {
                continue;
            };
            let entry = state.schedules.entry(run.id.clone()).or_insert_with(|| Entry {
                schedule: RunSchedule {
                    run_id: run.id.clone(),
                    not_before: now,
                    attempts: 0,
                    coalesced_triggers: 0,
                    lease_holder: None,
                    lease_expires_at: None,
                },
                queued_at: now,
            });
            entry.schedule.attempts += 1;
            entry.schedule.lease_holder = Some(holder.to_string());
            entry.schedule.lease_expires_at = Some(lease_until);
            return Ok(Some(ClaimedRun {
                run: claimed,
                attempt: entry.schedule.attempts,
                lease_expires_at: lease_until,
            }));
        }
        Ok(None)
    }

    async fn renew_lease(&self, run_id: &str, holder: &str, lease_until: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        let Some(entry) = state.schedules.get_mut(run_id) else { return Ok(false) };
        if entry.schedule.lease_holder.as_deref() != Some(holder) {
            return Ok(false);
        }
        entry.schedule.lease_expires_at = Some(lease_until);
        Ok(self.store.get_run(run_id).await?.is_some_and(|run| run.state == RunState::Running))
    }

    async fn retry_later(
        &self,
        run_id: &str,
        holder: &str,
        not_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<RunRecord, StoreError> {
        let mut state = self.state.lock().await;
        let Some(entry) = state.schedules.get_mut(run_id) else {
            return Err(StoreError::Conflict { what: format!("run {run_id} is not leased to {holder}") });
        };
        if entry.schedule.lease_holder.as_deref() != Some(holder) {
            return Err(StoreError::Conflict { what: format!("run {run_id} is not leased to {holder}") });
        }
        let patch = RunPatch { state: Some(RunState::Queued), error: Some(reason.to_string()), ..RunPatch::default() };
        let Some(run) = self.move_run(run_id, patch).await? else {
            return Err(StoreError::Conflict { what: format!("run {run_id} is no longer running") });
        };
        entry.schedule.not_before = not_before;
        entry.schedule.lease_holder = None;
        entry.schedule.lease_expires_at = None;
        Ok(run)
    }

    async fn hand_back(
        &self,
        run_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        let Some(entry) = state.schedules.get_mut(run_id) else { return Ok(false) };
        if entry.schedule.lease_holder.as_deref() != Some(holder) {
            return Ok(false);
        }
        // `update_run` refuses the move unless the run is still running (a racing cancel or finish wins)
        let patch = RunPatch { state: Some(RunState::Queued), error: Some(reason.to_string()), ..RunPatch::default() };
        let running = self.store.get_run(run_id).await?.is_some_and(|run| run.state == RunState::Running);
        if !running || self.move_run(run_id, patch).await?.is_none() {
            return Ok(false);
        }
        entry.schedule.attempts = entry.schedule.attempts.saturating_sub(1);
        entry.schedule.not_before = now;
        entry.schedule.lease_holder = None;
        entry.schedule.lease_expires_at = None;
        Ok(true)
    }

    async fn run_schedule(&self, run_id: &str) -> Result<Option<RunSchedule>, StoreError> {
        Ok(self.state.lock().await.schedules.get(run_id).map(|entry| entry.schedule.clone()))
    }
}

#[async_trait]
impl DeliveryLog for InMemoryScheduler {
    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        _received_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.state.lock().await.deliveries.insert((source.to_string(), delivery_id.to_string())))
    }
}
