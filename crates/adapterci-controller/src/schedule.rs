//! Scheduling on the controller side: how triggers become queued runs (debounce, supersede), how runs are
//! claimed under a lease that a heartbeat keeps alive, and what happens after a failure (retry with backoff), a
//! cancel, or a graceful shutdown (runs in flight handed back to the queue). The durable state lives in the
//! metadata store behind `RunScheduler`; this file only decides.

use std::sync::Arc;
use std::time::Duration;

use adapterci_core::PipelineName;
use adapterci_core::run::{NewRun, RunPatch, RunRecord, RunState, Trigger};
use adapterci_core::scheduling::{ClaimedRun, ConcurrencyLimits, EnqueueRequest, RetryPolicy};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::{Controller, ControllerError};

/// How runs are queued, claimed and retried.
#[derive(Clone, Debug)]
pub struct SchedulingConfig {
    /// Dataset changes and webhook deliveries start their run this long after the last of a burst.
    pub debounce: Duration,
    /// A run that keeps being pushed back by a steady stream of changes starts at most this long after the
    /// first one.
    pub max_debounce: Duration,
    /// When newer data arrives while a run of the pipeline waits for a free slot, cancel the waiting run.
    pub supersede_queued: bool,
    pub limits: ConcurrencyLimits,
    /// A claimed run belongs to this controller for this long unless the heartbeat renews it; after a crash,
    /// another controller takes the run over once it expires.
    pub lease: Duration,
    /// How often a running run's lease is renewed (well under `lease`).
    pub heartbeat: Duration,
    pub retry: RetryPolicy,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            debounce: Duration::from_secs(5),
            max_debounce: Duration::from_secs(60),
            supersede_queued: true,
            limits: ConcurrencyLimits::default(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// Whether a queued run should wait for the burst it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Due at once, never joined with another run (a person asked, or a test checks the data now).
    Immediate,
    /// Due after the debounce window; joins a queued run of the pipeline that is not due yet.
    Debounced,
}

fn chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Why the execution of a claimed run stopped before it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupted {
    /// The run was cancelled (here or through another controller).
    Cancelled,
    /// The lease is gone: another controller took the run over after it expired.
    LeaseLost,
}

impl Controller {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.ports().clock.now()
    }

    /// Queues a run of `pipeline` (checked to exist), debounced or not.
    pub(crate) async fn enqueue(
        &self,
        pipeline: &PipelineName,
        trigger: Trigger,
        timing: Timing,
    ) -> Result<RunRecord, ControllerError> {
        let record = self
            .ports()
            .store
            .get_pipeline(pipeline)
            .await?
            .ok_or_else(|| ControllerError::PipelineNotFound(pipeline.to_string()))?;
        let config = &self.config().scheduling;
        let now = self.now();
        let (not_before, coalesce_max_delay, supersede_queued) = match timing {
            Timing::Immediate => (now, None, false),
            Timing::Debounced => {
                (now + chrono(config.debounce), Some(chrono(config.max_debounce)), config.supersede_queued)
            }
        };
        let request = EnqueueRequest {
            run: NewRun {
                pipeline: record.name.clone(),
                pipeline_revision: record.revision,
                trigger,
                dataset_digest: None,
            },
            not_before,
            coalesce_max_delay,
            supersede_queued,
        };
        let enqueued = self.ports().scheduler.enqueue_run(request, now).await?;
        if enqueued.coalesced {
            tracing::info!(run = %enqueued.run.id, pipeline = %pipeline, "trigger joined a queued run (debounce)");
        } else {
            tracing::info!(run = %enqueued.run.id, pipeline = %pipeline, superseded = ?enqueued.superseded, "run queued");
        }
        Ok(enqueued.run)
    }

    /// Claims the next due run that fits the limits, leased to this controller.
    pub(crate) async fn claim(&self) -> Result<Option<ClaimedRun>, ControllerError> {
        let config = &self.config().scheduling;
        let now = self.now();
        let scheduler = &self.ports().scheduler;
        for id in scheduler.expire_leases(now, config.retry.max_attempts).await? {
            tracing::warn!(run = %id, "run lease expired: queued again for another attempt, or failed");
        }
        let claimed =
            scheduler.claim_due_run(&self.config().holder, now, now + chrono(config.lease), config.limits).await?;
        if let Some(claimed) = &claimed {
            tracing::info!(run = %claimed.run.id, pipeline = %claimed.run.pipeline, attempt = claimed.attempt, "run started");
        }
        Ok(claimed)
    }

    /// Renews the lease of `run_id` every heartbeat until it is lost or `cancel` fires; returns why it stopped.
    pub(crate) async fn keep_lease(&self, run_id: &str, mut cancel: watch::Receiver<bool>) -> Interrupted {
        let config = &self.config().scheduling;
        let mut ticker = tokio::time::interval(config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        return Interrupted::Cancelled;
                    }
                    continue;
                }
            }
            let until = self.now() + chrono(config.lease);
            match self.ports().scheduler.renew_lease(run_id, &self.config().holder, until).await {
                Ok(true) => {}
                Ok(false) => {
                    let state = self.ports().store.get_run(run_id).await.ok().flatten().map(|run| run.state);
                    return if state == Some(RunState::Cancelled) {
                        Interrupted::Cancelled
                    } else {
                        Interrupted::LeaseLost
                    };
                }
                // A store that does not answer for a while is not a lost lease: the next beat tries again, and
                // if the lease expires meanwhile the next renewal says so.
                Err(error) => tracing::warn!(run = %run_id, %error, "cannot renew the run lease"),
            }
        }
    }

    /// After a failed attempt: queue the run again after the backoff, or fail it for good.
    pub(crate) async fn retry_or_fail(
        &self,
        claimed: &ClaimedRun,
        error: String,
        retryable: bool,
    ) -> Result<RunRecord, ControllerError> {
        let run = &claimed.run;
        let backoff = if retryable { self.config().scheduling.retry.backoff_after(claimed.attempt) } else { None };
        if let Some(backoff) = backoff {
            let not_before = self.now() + chrono(backoff);
            tracing::warn!(run = %run.id, attempt = claimed.attempt, %error, retry_in = ?backoff, "run failed: retrying later");
            let reason = format!("attempt {} failed: {error}; retrying at {not_before}", claimed.attempt);
            return Ok(self.ports().scheduler.retry_later(&run.id, &self.config().holder, not_before, &reason).await?);
        }
        tracing::warn!(run = %run.id, attempt = claimed.attempt, %error, "run failed");
        self.finish(&run.id, RunPatch { state: Some(RunState::Failed), error: Some(error), ..RunPatch::default() })
            .await
    }

    /// Writes a terminal state; when the run already ended (a cancel won the race) returns it as it is.
    pub(crate) async fn finish(&self, run_id: &str, patch: RunPatch) -> Result<RunRecord, ControllerError> {
        let store = &self.ports().store;
        match store.update_run(run_id, patch).await {
            Ok(run) => Ok(run),
            Err(adapterci_core::ports::StoreError::InvalidTransition(reason)) => {
                tracing::info!(run = %run_id, %reason, "run already ended");
                store.get_run(run_id).await?.ok_or_else(|| ControllerError::RunNotFound(run_id.to_string()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Cancels a run: a queued run never starts; a running one is stopped (its training aborted) at once when
    /// it runs here, and at its next heartbeat when it runs on another controller.
    pub async fn cancel(&self, run_id: &str) -> Result<RunRecord, ControllerError> {
        let store = &self.ports().store;
        let run = store.get_run(run_id).await?.ok_or_else(|| ControllerError::RunNotFound(run_id.to_string()))?;
        if run.state.is_terminal() {
            return Ok(run);
        }
        let cancelled = self
            .finish(
                run_id,
                RunPatch {
                    state: Some(RunState::Cancelled),
                    error: Some("cancelled".to_string()),
                    ..RunPatch::default()
                },
            )
            .await?;
        if let Ok(active) = self.active_runs.lock()
            && let Some(cancel) = active.get(run_id)
        {
            let _ = cancel.send(true);
        }
        tracing::info!(run = %run_id, state = %cancelled.state, "run cancel requested");
        Ok(cancelled)
    }

    /// Registers a run executing here, so that `cancel` can stop it; the guard unregisters it.
    pub(crate) fn register_active(self: &Controller, run_id: &str) -> (watch::Receiver<bool>, ActiveGuard<'_>) {
        let (sender, receiver) = watch::channel(false);
        if let Ok(mut active) = self.active_runs.lock() {
            active.insert(run_id.to_string(), sender);
        }
        (receiver, ActiveGuard { controller: self, run_id: run_id.to_string() })
    }

    /// Runs executing in this process now.
    pub fn active_run_count(&self) -> usize {
        self.active_runs.lock().map(|active| active.len()).unwrap_or(0)
    }
}

/// Removes a run from the controller's active set when its execution ends, however it ends.
pub(crate) struct ActiveGuard<'a> {
    controller: &'a Controller,
    run_id: String,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut active) = self.controller.active_runs.lock() {
            active.remove(&self.run_id);
        }
    }
}

/// A unique name for this controller's leases.
pub(crate) fn holder_name() -> String {
    format!("controller-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple())
}

/// A claimed run executing as a task of the loop.
pub(crate) struct Execution {
    pub(crate) run_id: String,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Keeps `Arc<Controller>` helpers in one place for the loop.
pub(crate) fn spawn_execution(controller: Arc<Controller>, claimed: ClaimedRun) -> Execution {
    let run_id = claimed.run.id.clone();
    let task = tokio::spawn(async move {
        let id = claimed.run.id.clone();
        if let Err(error) = controller.execute_claimed(claimed).await {
            tracing::warn!(run = %id, %error, "run execution failed");
        }
    });
    Execution { run_id, task }
}

/// The note a handed-back run carries until it is claimed again.
const HANDED_BACK: &str = "adapterd stopped before the run finished: handed back to the queue, not counted as an \
                           attempt; the next adapterd runs it again";

impl Controller {
    /// A graceful shutdown: stops every execution still in flight and hands its run back to the queue, due at
    /// once, the stopped execution not counted as an attempt, so that restarts (every `helm upgrade`) never use
    /// up a run's attempts and the next controller need not wait for a lease to expire.
    ///
    /// Why this is safe:
    /// - Each task is aborted and then awaited, so its future has been dropped before its run is handed back:
    ///   the launch went with it (the process executor killed its trainer; the Kubernetes executor, which sees
    ///   the same shutdown watch, left its Job for the next adapterd to re-attach to) and nothing of this
    ///   execution can write or publish once another controller may hold the run.
    /// - An execution that ended on its own before the abort landed (its outcome or retry recorded) is skipped,
    ///   and so is one that panicked: that is a failure, left to the lease and counted as an attempt as before.
    /// - The hand-back itself is one conditional write on this controller's lease and the running state. A run
    ///   that finished (succeeded, rejected, failed, cancelled) or was queued for a retry is no longer running
    ///   under this lease, and a run whose lease expired and was taken over belongs to another holder: all are
    ///   left as they are.
    /// - Publishing is fenced by the lease right before it (`execute_stages` renews it and stops when that
    ///   fails). An abort that lands after the fence may leave the version published without the run's outcome
    ///   recorded; the run is then handed back like any other, and its next execution finds the version by the
    ///   run id and records it without publishing or training again, as after a crash.
    pub(crate) async fn stop_and_hand_back(&self, executions: Vec<Execution>) {
        for execution in &executions {
            execution.task.abort();
        }
        for Execution { run_id, task } in executions {
            match task.await {
                Ok(()) => continue,
                Err(error) if error.is_panic() => {
                    tracing::warn!(run = %run_id, "run execution panicked: left to its lease");
                    continue;
                }
                Err(_) => {}
            }
            self.hand_back(&run_id).await;
        }
    }

    /// Hands a run this controller holds back to the queue (see `stop_and_hand_back`).
    async fn hand_back(&self, run_id: &str) {
        let holder = &self.config().holder;
        match self.ports().scheduler.hand_back(run_id, holder, self.now(), HANDED_BACK).await {
            Ok(true) => {
                tracing::info!(run = %run_id, "adapterd stopping: run handed back to the queue, attempt not counted")
            }
            Ok(false) => tracing::info!(run = %run_id, "run not handed back: it ended, or another controller holds it"),
            Err(error) => tracing::warn!(
                run = %run_id,
                %error,
                "cannot hand the run back: the next controller takes it over when its lease expires"
            ),
        }
    }
}
