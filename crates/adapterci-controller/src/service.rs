//! The controller object: applying pipelines, manual triggers, and the loop that polls watches and executes
//! queued runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapterci_core::PipelineName;
use adapterci_core::ports::{
    AdapterRegistry, AdapterVersionRecord, Clock, DatasetSource, MetadataStore, PipelineRecord, TrainingExecutor,
};
use adapterci_core::run::{RunRecord, Trigger};
use adapterci_core::scheduling::{DeliveryLog, RunScheduler};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::schedule::{Execution, SchedulingConfig, Timing, holder_name, spawn_execution};
use crate::specs::SpecCache;
use crate::webhook_trigger::WebhookSecrets;
use crate::{BaseModels, ControllerError};

/// The outside world, as ports.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn MetadataStore>,
    pub registry: Arc<dyn AdapterRegistry>,
    pub datasets: Arc<dyn DatasetSource>,
    pub executor: Arc<dyn TrainingExecutor>,
    pub base_models: Arc<dyn BaseModels>,
    pub clock: Arc<dyn Clock>,
    /// Durable scheduling (leases, debounce, limits, retries); usually the same store as `store`.
    pub scheduler: Arc<dyn RunScheduler>,
    /// Webhook delivery ids seen, so that a redelivery starts nothing; usually the same store again.
    pub deliveries: Arc<dyn DeliveryLog>,
}

/// Timing of the controller loop.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// How often the loop wakes to poll due watches and claim queued runs.
    pub tick: Duration,
    /// At most one progress write per run per this interval.
    pub progress_write_interval: Duration,
    pub scheduling: SchedulingConfig,
    /// This controller's name on the leases it holds; unique per process by default.
    pub holder: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            tick: Duration::from_secs(1),
            progress_write_interval: Duration::from_secs(1),
            scheduling: SchedulingConfig::default(),
            holder: holder_name(),
        }
    }
}

/// Told about every published version (the embedded worker uses it to pull at once instead of at its next poll).
/// The runner awaits each listener before it goes on, so a listener can make what it heard durable (adapterd stores
/// the outbound event) before the run's outcome is recorded; a listener must not wait for slow work (delivery).
#[async_trait::async_trait]
pub trait PublishListener: Send + Sync {
    async fn published(&self, version: &AdapterVersionRecord);
    /// A run of the pipeline publishing `adapter` failed its eval gates (nothing was published).
    async fn gates_failed(
        &self,
        _run_id: &str,
        _adapter: &adapterci_core::AdapterName,
        _gates: &adapterci_core::gate::GateReport,
    ) {
    }
}

/// What `apply` did to a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl ApplyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        }
    }
}

/// The controller. Cheap to share behind an `Arc`.
pub struct Controller {
    ports: Ports,
    config: ControllerConfig,
    listeners: Mutex<Vec<Arc<dyn PublishListener>>>,
    /// When each pipeline's watch was last polled (in memory: after a restart every watch is due at once).
    pub(crate) last_polled: Mutex<HashMap<PipelineName, DateTime<Utc>>>,
    /// Up to when each pipeline's cron schedule was checked (in memory: firings while no controller ran are
    /// skipped, not caught up).
    pub(crate) cron_checked: Mutex<HashMap<PipelineName, DateTime<Utc>>>,
    /// Runs executing in this process, with the switch that cancels each.
    pub(crate) active_runs: Mutex<HashMap<String, watch::Sender<bool>>>,
    pub(crate) specs: SpecCache,
    pub(crate) webhook_secrets: WebhookSecrets,
    /// Where training runs when not through `ports.executor` (a child process per run, with its log).
    pub(crate) launcher: Mutex<Option<Arc<dyn adapterci_core::launcher::TrainingLauncher>>>,
    /// Where each training step's metrics are stored, when set.
    pub(crate) run_metrics: Mutex<Option<Arc<dyn adapterci_core::run_metrics::RunMetricsStore>>>,
}

impl Controller {
    pub fn new(ports: Ports, config: ControllerConfig) -> Controller {
        Controller {
            ports,
            config,
            listeners: Mutex::new(Vec::new()),
            last_polled: Mutex::new(HashMap::new()),
            cron_checked: Mutex::new(HashMap::new()),
            active_runs: Mutex::new(HashMap::new()),
            specs: SpecCache::default(),
            webhook_secrets: WebhookSecrets::default(),
            launcher: Mutex::new(None),
            run_metrics: Mutex::new(None),
        }
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    pub fn add_publish_listener(&self, listener: Arc<dyn PublishListener>) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.push(listener);
        }
    }

    pub(crate) async fn notify_published(&self, version: &AdapterVersionRecord) {
        let listeners = self.listeners.lock().map(|listeners| listeners.clone()).unwrap_or_default();
        for listener in listeners {
            listener.published(version).await;
        }
    }

    pub(crate) async fn notify_gates_failed(
        &self,
        run_id: &str,
        adapter: &adapterci_core::AdapterName,
        gates: &adapterci_core::gate::GateReport,
    ) {
        let listeners = self.listeners.lock().map(|listeners| listeners.clone()).unwrap_or_default();
        for listener in listeners {
            listener.gates_failed(run_id, adapter, gates).await;
        }
    }

    /// Validates `yaml` and stores it. `file` only labels error messages.
    pub async fn apply(
        &self,
        yaml: &str,
        file: Option<&str>,
    ) -> Result<(PipelineRecord, ApplyOutcome), ControllerError> {
        let spec = adapterci_pipeline::parse_pipeline(yaml, file)?;
        self.ports
            .base_models
            .resolve(&spec.base)
            .map_err(|reason| ControllerError::BaseModel { pipeline: spec.name.to_string(), reason })?;
        let before = self.ports.store.get_pipeline(&spec.name).await?;
        let record = self.ports.store.upsert_pipeline(&spec.name, yaml).await?;
        let outcome = match before {
            None => ApplyOutcome::Created,
            Some(before) if before.revision == record.revision => ApplyOutcome::Unchanged,
            Some(_) => ApplyOutcome::Configured,
        };
        tracing::info!(pipeline = %record.name, revision = record.revision, outcome = outcome.as_str(), "pipeline applied");
        Ok((record, outcome))
    }

    /// Queues a run of `pipeline`, due at once (a person asked: never debounced or joined with another run).
    pub async fn trigger(&self, pipeline: &PipelineName, trigger: Trigger) -> Result<RunRecord, ControllerError> {
        self.enqueue(pipeline, trigger, Timing::Immediate).await
    }

    /// Claims the next due run and executes it here to its end (or to a retry); `None` when no run is due.
    pub async fn run_next(&self) -> Result<Option<RunRecord>, ControllerError> {
        let Some(claimed) = self.claim().await? else {
            return Ok(None);
        };
        self.execute_claimed(claimed).await.map(Some)
    }

    /// One pass of the loop: poll due watches, then execute queued runs until none is left.
    pub async fn tick(&self) -> Result<(), ControllerError> {
        self.poll_watches().await?;
        while self.run_next().await?.is_some() {}
        self.promote_due_canaries().await?;
        Ok(())
    }

    /// Every `config.tick`: polls due watches, then starts due runs as tasks, as many as the limits allow, so
    /// that watches keep being polled while runs train. Errors are logged, never fatal. On shutdown, runs still
    /// executing are stopped and handed back to the queue, due at once and without counting the stopped
    /// execution as an attempt (`Controller::stop_and_hand_back`); only a crash leaves them to their leases.
    pub async fn run_until(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut executions: Vec<Execution> = Vec::new();
        let mut passes: u64 = 0;
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(error) = self.poll_watches().await {
                        tracing::warn!(%error, "controller watch pass failed");
                    }
                    // canaries wait minutes: checking them every tenth pass is plenty
                    if passes.is_multiple_of(10)
                        && let Err(error) = self.promote_due_canaries().await
                    {
                        tracing::warn!(%error, "canary promotion pass failed");
                    }
                    passes += 1;
                    executions.retain(|execution| !execution.task.is_finished());
                    while executions.len() < self.config.scheduling.limits.global {
                        match self.claim().await {
                            Ok(Some(claimed)) => executions.push(spawn_execution(self.clone(), claimed)),
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%error, "claiming a run failed");
                                break;
                            }
                        }
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.stop_and_hand_back(executions).await;
                        tracing::info!("controller stopped");
                        return;
                    }
                }
            }
        }
    }
}
