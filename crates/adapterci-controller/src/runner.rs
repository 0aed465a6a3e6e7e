//! Executes one claimed run, stage by stage: initial adapter -> train -> eval gates -> publish, or reject and
//! keep the report. Every outcome, including failures, ends in a terminal state with the reason stored.

use std::sync::Arc;
use std::time::Duration;

use adapterci_core::gate::{GateReport, evaluate_gates};
use adapterci_core::manifest::{ADAPTER_WEIGHTS_FILE, EvalReport, Lineage, PipelineRef};
use adapterci_core::ports::{PublishRequest, RegistryError, SourceError};
use adapterci_core::run::{PublishedRef, RunPatch, RunRecord, RunStage, RunState, Trigger};
use adapterci_core::scheduling::ClaimedRun;
use adapterci_core::training::{
    EvalSample, InitialAdapter, InitialAdapterRef, Metrics, StepProgress, TrainJob, TrainingFailure,
};
use adapterci_core::{AdapterName, Digest, PipelineName};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ControllerError;
use crate::progress::{ProgressSnapshot, RunProgress};
use crate::schedule::Interrupted;
use crate::service::Controller;

/// The report kept with a run (as JSON in the metadata store), while it trains and after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<StepProgress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_curve: Vec<(usize, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<GateReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<EvalSample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_adapter: Option<InitialAdapterRef>,
}

impl RunReport {
    fn with_progress(mut self, snapshot: ProgressSnapshot) -> Self {
        self.progress = snapshot.latest;
        self.messages = snapshot.messages;
        self.loss_curve = snapshot.loss_curve;
        self
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// How a run ended when nothing went wrong.
enum Outcome {
    Published(PublishedRef),
    Rejected,
}

impl Controller {
    /// Executes a claimed run to its end while a heartbeat keeps its lease: publishes or rejects it, queues it
    /// again after a retryable failure, or stops at once when it is cancelled or its lease is lost.
    pub(crate) async fn execute_claimed(&self, claimed: ClaimedRun) -> Result<RunRecord, ControllerError> {
        let run = &claimed.run;
        let (cancel, _active) = self.register_active(&run.id);
        let outcome = tokio::select! {
            outcome = self.execute_stages(run) => outcome,
            interrupted = self.keep_lease(&run.id, cancel) => {
                // The stages' future is dropped here, which stops the training (the executor kills its job).
                return match interrupted {
                    Interrupted::Cancelled => {
                        tracing::info!(run = %run.id, "run cancelled: execution stopped");
                        self.finish(&run.id, terminal(RunState::Cancelled, Some("cancelled".to_string()))).await
                    }
                    Interrupted::LeaseLost => {
                        tracing::warn!(run = %run.id, "run lease lost: another controller owns the run now");
                        self.current(&run.id).await
                    }
                };
            }
        };
        match outcome {
            Ok(Outcome::Published(published)) => {
                tracing::info!(run = %run.id, adapter = %published.adapter, version = published.version, "run published");
                self.finish(
                    &run.id,
                    RunPatch { state: Some(RunState::Succeeded), published: Some(published), ..RunPatch::default() },
                )
                .await
            }
            Ok(Outcome::Rejected) => self.finish(&run.id, terminal(RunState::Rejected, None)).await,
            Err(RunFailure::Training(TrainingFailure::Cancelled)) => {
                self.finish(&run.id, terminal(RunState::Cancelled, Some("training cancelled".to_string()))).await
            }
            Err(RunFailure::LeaseLost) => {
                tracing::warn!(run = %run.id, "run lease lost before publishing: nothing published");
                self.current(&run.id).await
            }
            Err(failure) => {
                let retryable = failure.retryable();
                self.retry_or_fail(&claimed, failure.to_string(), retryable).await
            }
        }
    }

    async fn current(&self, run_id: &str) -> Result<RunRecord, ControllerError> {
        self.ports().store.get_run(run_id).await?.ok_or_else(|| ControllerError::RunNotFound(run_id.to_string()))
    }

    /// The version this run already published (a crash between publishing and recording the outcome).
    async fn published_by(
        &self,
        run: &RunRecord,
        adapter: &AdapterName,
    ) -> Result<Option<PublishedRef>, ControllerError> {
        let versions = self.ports().registry.list_versions(adapter).await?;
        Ok(versions.into_iter().find(|version| version.run_id.as_deref() == Some(run.id.as_str())).map(|version| {
            PublishedRef { adapter: version.name, version: version.version, manifest_digest: version.manifest_digest }
        }))
    }

    async fn set_stage(&self, run: &RunRecord, stage: RunStage) -> Result<(), ControllerError> {
        self.ports().store.update_run(&run.id, RunPatch { stage: Some(stage), ..RunPatch::default() }).await?;
        Ok(())
    }

    async fn execute_stages(&self, run: &RunRecord) -> Result<Outcome, RunFailure> {
        let ports = self.ports();
        let (record, spec) = self.load_spec(&run.pipeline).await?;
        if let Some(published) = self.published_by(run, &spec.publish.adapter).await? {
            tracing::info!(run = %run.id, version = published.version, "run had published before a restart: not again");
            self.promote_or_warn(&spec, run, &published).await;
            return Ok(Outcome::Published(published));
        }

        self.set_stage(run, RunStage::InitialAdapter).await?;
        let catalog_base = ports
            .base_models
            .resolve(&spec.base)
            .map_err(|reason| ControllerError::BaseModel { pipeline: spec.name.to_string(), reason })?;
        // A rebase run trains on the base it was queued for, bound to that base's release (on the release itself
        // when the catalog knows where it lies); if the catalog moved on meanwhile, the run fails rather than bind
        // an adapter to a release of another base.
        let (base, base_release_digest) = match &run.trigger {
            Trigger::BaseModelChanged { base_model_digest, base_release_digest } => {
                if *base_model_digest != catalog_base.digest {
                    return Err(ControllerError::BaseModel {
                        pipeline: spec.name.to_string(),
                        reason: format!(
                            "queued to retrain on base {base_model_digest}, but the catalog now has {}",
                            catalog_base.digest
                        ),
                    }
                    .into());
                }
                let base = ports.base_models.release(&catalog_base, base_release_digest).unwrap_or(catalog_base);
                (base, Some(base_release_digest.clone()))
            }
            // a base release is its own release
            _ => {
                let release = catalog_base.recovery_adapter.as_ref().map(|_| catalog_base.digest.clone());
                (catalog_base, release)
            }
        };
        // On a base release with a recovery adapter, the task adapter starts from it (the engine checks that
        // the adapter was trained for this release); otherwise from LoRA's standard initialisation.
        let (initial_adapter, initial) = match &base.recovery_adapter {
            Some(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| ControllerError::BaseModel {
                    pipeline: spec.name.to_string(),
                    reason: format!("reading the recovery adapter {}: {e}", path.display()),
                })?;
                let reference = InitialAdapterRef::RecoveryAdapter {
                    base_release: base.digest.clone(),
                    adapter: Digest::of(&bytes),
                };
                (reference.clone(), Some(InitialAdapter { reference, safetensors: bytes }))
            }
            None => (InitialAdapterRef::StandardInit, None),
        };

        self.set_stage(run, RunStage::Train).await?;
        let dataset = crate::dataset::read_dataset(ports.datasets.as_ref(), &spec.dataset.location)
            .await
            .map_err(ControllerError::from)?;
        let dataset_digest = Digest::of(&dataset);
        ports
            .store
            .update_run(&run.id, RunPatch { dataset_digest: Some(dataset_digest.clone()), ..RunPatch::default() })
            .await
            .map_err(ControllerError::from)?;
        let job = TrainJob {
            base_model_path: base.path.clone(),
            base_model_digest: base.digest.clone(),
            dataset: dataset.to_vec(),
            dataset_digest: dataset_digest.clone(),
            lora: spec.lora.clone(),
            train: spec.train.clone(),
            initial_adapter: initial,
        };
        let report = RunReport { initial_adapter: Some(initial_adapter.clone()), ..RunReport::default() };
        let resources = adapterci_core::launcher::LaunchResources {
            cpus: spec.resources.cpus,
            memory_bytes: spec.resources.memory_bytes,
            gpus: spec.resources.gpus,
            timeout: spec.resources.timeout,
        };
        let mut report = report;
        let output = self.train_with_progress(run, job, &mut report, resources).await?;

        self.set_stage(run, RunStage::Eval).await?;
        let mut gates = evaluate_gates(&spec.gates, &output.metrics);
        if !spec.regression_gates.is_empty() {
            let reference = self.served_metrics(&spec.publish.adapter, &spec.publish.channel).await?;
            let regression = adapterci_core::gate::regression::evaluate_regression_gates(
                &spec.regression_gates,
                &output.metrics,
                reference.as_ref(),
            );
            gates.passed &= regression.passed;
            gates.results.extend(regression.results);
        }
        report.metrics = Some(output.metrics.clone());
        report.gates = Some(gates.clone());
        report.samples = output.samples.clone();
        report.loss_curve = output.loss_curve.clone();
        ports
            .store
            .update_run(&run.id, RunPatch { report: Some(report.to_json()), ..RunPatch::default() })
            .await
            .map_err(ControllerError::from)?;
        if !gates.passed {
            tracing::info!(run = %run.id, "gates failed: nothing published");
            self.notify_gates_failed(&run.id, &spec.publish.adapter, &gates).await;
            return Ok(Outcome::Rejected);
        }

        self.set_stage(run, RunStage::Publish).await?;
        // Fencing: only the lease holder publishes, so a run taken over after an expiry is published once.
        let until =
            self.now() + chrono::Duration::from_std(self.config().scheduling.lease).unwrap_or(chrono::Duration::MAX);
        if !ports.scheduler.renew_lease(&run.id, &self.config().holder, until).await.map_err(ControllerError::from)? {
            return Err(RunFailure::LeaseLost);
        }
        let request = PublishRequest {
            name: spec.publish.adapter.clone(),
            adapter: output.adapter_config.clone(),
            files: vec![(ADAPTER_WEIGHTS_FILE.to_string(), Bytes::from(output.adapter_safetensors))],
            lineage: Lineage {
                base_model_digest: base.digest.clone(),
                base_model_name: base.name.clone(),
                base_release_digest,
                dataset_digests: vec![dataset_digest],
                pipeline: Some(PipelineRef {
                    name: record.name.clone(),
                    revision: record.revision,
                    spec_digest: record.spec_digest.clone(),
                }),
                run_id: Some(run.id.clone()),
                initial_adapter,
                code_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            eval: Some(EvalReport { metrics: output.metrics, gates, samples: output.samples }),
        };
        let version = ports.registry.publish(request).await.map_err(ControllerError::from)?;
        self.notify_published(&version).await;
        let published = PublishedRef {
            adapter: version.name.clone(),
            version: version.version,
            manifest_digest: version.manifest_digest.clone(),
        };
        self.promote_or_warn(&spec, run, &published).await;
        Ok(Outcome::Published(published))
    }

    /// The promotion policy's first step; a refusal (a pinned channel, another base) leaves the version published
    /// but unpromoted, and is logged.
    async fn promote_or_warn(
        &self,
        spec: &adapterci_pipeline::PipelineSpec,
        run: &RunRecord,
        published: &PublishedRef,
    ) {
        if let Err(error) = self.promote_published(spec, run, published).await {
            tracing::warn!(run = %run.id, adapter = %published.adapter, version = published.version, %error, "published but not promoted");
        }
    }

    /// The eval metrics of the version `channel` of `adapter` serves now; `None` when it serves none (or the
    /// version has no eval report): regression gates then have nothing to regress from.
    async fn served_metrics(
        &self,
        adapter: &adapterci_core::AdapterName,
        channel: &str,
    ) -> Result<Option<adapterci_core::training::Metrics>, ControllerError> {
        let Ok(channel) = adapterci_core::channels::ChannelName::new(channel) else { return Ok(None) };
        let Some(pointer) = self.ports().store.get_channel(adapter, &channel).await? else { return Ok(None) };
        let served = self.ports().registry.get(adapter, pointer.version).await.map_err(ControllerError::from)?;
        Ok(served.and_then(|version| version.manifest.eval).map(|eval| eval.metrics))
    }

    /// Runs the training job while a task copies its progress into the run's report; the training's messages stay
    /// in `report` after it.
    async fn train_with_progress(
        &self,
        run: &RunRecord,
        job: TrainJob,
        report: &mut RunReport,
        resources: adapterci_core::launcher::LaunchResources,
    ) -> Result<adapterci_core::training::TrainOutput, RunFailure> {
        let (progress, changes) = RunProgress::new();
        let progress = Arc::new(progress);
        let metrics = self.run_metrics();
        // aborted when this function returns or its future is dropped (cancel, timeout, lost lease, shutdown): the
        // writer holds the progress itself, so it would otherwise wait for changes for ever
        let writer = AbortOnDrop(tokio::spawn(write_progress(
            self.ports().store.clone(),
            metrics.clone(),
            run.id.clone(),
            progress.clone(),
            changes,
            report.clone(),
            self.config().progress_write_interval,
        )));
        let execution = async {
            match self.launcher() {
                Some(launcher) => launcher.launch(&run.id, job, &resources, progress.clone()).await,
                None => {
                    // the in-process executor shares adapterd's process: it can hold the run to no CPU or memory
                    // limit, so the run says so rather than seeming to honour them
                    if let Some(note) = unenforced_in_process(&resources) {
                        adapterci_core::training::ProgressSink::on_message(progress.as_ref(), &note);
                    }
                    self.ports().executor.execute(job, progress.clone()).await
                }
            }
        };
        let result = match resources.timeout {
            // Dropping the execution stops the training, as a cancel does.
            Some(limit) => tokio::time::timeout(limit, execution).await.map_err(|_| RunFailure::TimedOut(limit)),
            None => Ok(execution.await),
        };
        drop(writer);
        // the steps after the writer's last pass
        crate::step_metrics::flush_steps(metrics.as_ref(), &run.id, &progress).await;
        report.messages = progress.snapshot().messages;
        result?.map_err(RunFailure::Training)
    }

    pub(crate) async fn load_spec(
        &self,
        name: &PipelineName,
    ) -> Result<(adapterci_core::ports::PipelineRecord, Arc<adapterci_pipeline::PipelineSpec>), ControllerError> {
        let record = self
            .ports()
            .store
            .get_pipeline(name)
            .await?
            .ok_or_else(|| ControllerError::PipelineNotFound(name.to_string()))?;
        let spec = self.specs.get(&record).map_err(|error| ControllerError::StoredPipeline {
            name: name.to_string(),
            revision: record.revision,
            reason: error.to_string(),
        })?;
        Ok((record, spec))
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies progress snapshots into the run's report until aborted, at most once per `interval`.
async fn write_progress(
    store: Arc<dyn adapterci_core::ports::MetadataStore>,
    metrics: Option<Arc<dyn adapterci_core::run_metrics::RunMetricsStore>>,
    run_id: String,
    progress: Arc<RunProgress>,
    mut changes: watch::Receiver<u64>,
    report: RunReport,
    interval: Duration,
) {
    while changes.changed().await.is_ok() {
        let json = report.clone().with_progress(progress.snapshot()).to_json();
        if let Err(error) = store.update_run(&run_id, RunPatch { report: Some(json), ..RunPatch::default() }).await {
            tracing::warn!(run = %run_id, %error, "cannot store training progress");
        }
        crate::step_metrics::flush_steps(metrics.as_ref(), &run_id, &progress).await;
        tokio::time::sleep(interval).await;
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
enum RunFailure {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Training(TrainingFailure),
    #[error("the run lease was lost")]
    LeaseLost,
    #[error("training took longer than the pipeline's resources.timeout of {}s", .0.as_secs())]
    TimedOut(Duration),
}

impl RunFailure {
    /// Whether another attempt may succeed: backend and infrastructure failures yes, bad input no.
    fn retryable(&self) -> bool {
        match self {
            RunFailure::Training(TrainingFailure::Backend(_)) => true,
            RunFailure::Training(_) | RunFailure::LeaseLost | RunFailure::TimedOut(_) => false,
            RunFailure::Controller(error) => matches!(
                error,
                ControllerError::Store(_)
                    | ControllerError::Registry(RegistryError::Backend(_) | RegistryError::Store(_))
                    | ControllerError::Source(SourceError::Backend(_))
            ),
        }
    }
}

fn terminal(state: RunState, error: Option<String>) -> RunPatch {
    RunPatch { state: Some(state), error, ..RunPatch::default() }
}

impl From<adapterci_core::ports::StoreError> for RunFailure {
    fn from(error: adapterci_core::ports::StoreError) -> Self {
        RunFailure::Controller(error.into())
    }
}

/// What the in-process executor cannot apply of a pipeline's `resources`, in words; `None` when nothing was asked.
fn unenforced_in_process(resources: &adapterci_core::launcher::LaunchResources) -> Option<String> {
    let mut asked = Vec::new();
    if let Some(cpus) = resources.cpus {
        asked.push(format!("cpus {cpus}"));
    }
    if let Some(bytes) = resources.memory_bytes {
        asked.push(format!("memory {bytes} bytes"));
    }
    (!asked.is_empty()).then(|| {
        format!(
            "resources.{} not applied: the in-process executor (adapterd --executor thread) trains in adapterd's own \
             process; the process executor applies both, the kubernetes executor sets them on the Job",
            asked.join(" and resources.")
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::AbortOnDrop;

    #[tokio::test(start_paused = true)]
    async fn dropping_the_guard_ends_a_task_that_would_wait_for_ever() {
        let (sender, closed) = tokio::sync::oneshot::channel::<()>();
        let guard = AbortOnDrop(tokio::spawn(async move {
            let _sender = sender;
            std::future::pending::<()>().await
        }));
        drop(guard);
        // the aborted task drops its sender; left running, it would hold it and the (paused) clock would run out
        let ended = tokio::time::timeout(Duration::from_secs(3600), closed).await;
        assert!(matches!(ended, Ok(Err(_))), "the task still runs: {ended:?}");
    }
}
