//! Controller behaviour on in-memory ports: watches, triggers, gating, publishing. No database, no libtorch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;

use adapterci_controller::{
    ApplyOutcome, Controller, ControllerConfig, ControllerError, Ports, ResolvedBase, StaticBaseModels,
};
use adapterci_core::ports::{AdapterRegistry, DatasetSource, RunStore};
use adapterci_core::run::{RunState, Trigger};
use adapterci_core::{AdapterName, Digest, PipelineName};
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use bytes::Bytes;

const PIPELINE: &str = "version: v1
name: demo
base:
  model: tiny
dataset:
  location: datasets/demo/train.jsonl
triggers:
  - kind: dataset_watch
    interval: 10s
  - kind: manual
eval:
  gates:
    - metric: exact_match
      min: 0.5
publish:
  adapter: demo-adapter
";

struct Harness {
    controller: Controller,
    clock: Arc<ManualClock>,
    datasets: Arc<ObjectStoreDatasetSource>,
    registry: Arc<ObjectStoreRegistry>,
    store: Arc<InMemoryMetadataStore>,
    executor: Arc<ScriptedExecutor>,
}

fn harness() -> Harness {
    harness_with(ResolvedBase {
        name: "tiny".to_string(),
        path: PathBuf::from("tiny.gguf"),
        digest: Digest::of(b"tiny"),
        recovery_adapter: None,
    })
}

fn harness_with(base: ResolvedBase) -> Harness {
    let store = Arc::new(InMemoryMetadataStore::new());
    let registry = Arc::new(ObjectStoreRegistry::new(open_object_store("memory://").unwrap(), store.clone()));
    let datasets = Arc::new(ObjectStoreDatasetSource::new(open_object_store("memory://").unwrap()));
    let clock = Arc::new(ManualClock::new());
    let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
    let executor = ScriptedExecutor::new();
    let ports = Ports {
        store: store.clone(),
        registry: registry.clone(),
        datasets: datasets.clone(),
        executor: executor.clone(),
        base_models: Arc::new(StaticBaseModels::new([base])),
        clock: clock.clone(),
        scheduler: scheduler.clone(),
        deliveries: scheduler,
    };
    Harness {
        controller: Controller::new(ports, ControllerConfig::default()),
        clock,
        datasets,
        registry,
        store,
        executor,
    }
}

impl Harness {
    async fn upload(&self, content: &str) {
        self.datasets.write("datasets/demo/train.jsonl", Bytes::from(content.to_string())).await.unwrap();
    }

    /// Moves the clock past the watch interval and polls.
    async fn poll(&self) -> usize {
        self.clock.advance(chrono::Duration::seconds(11));
        self.controller.poll_watches().await.unwrap().len()
    }

    /// Moves the clock past the debounce window and executes the next due run.
    async fn run_next(&self) -> Option<adapterci_core::run::RunRecord> {
        self.clock.advance(chrono::Duration::seconds(6));
        self.controller.run_next().await.unwrap()
    }

    async fn versions(&self) -> Vec<u64> {
        let name = AdapterName::new("demo-adapter").unwrap();
        self.registry.list_versions(&name).await.unwrap().iter().map(|version| version.version).collect()
    }
}

fn demo() -> PipelineName {
    PipelineName::new("demo").unwrap()
}

#[tokio::test]
async fn apply_reports_created_then_unchanged_then_configured() {
    let h = harness();
    let (record, outcome) = h.controller.apply(PIPELINE, None).await.unwrap();
    assert_eq!((record.revision, outcome), (1, ApplyOutcome::Created));
    let (record, outcome) = h.controller.apply(PIPELINE, None).await.unwrap();
    assert_eq!((record.revision, outcome), (1, ApplyOutcome::Unchanged));
    let changed = PIPELINE.replace("min: 0.5", "min: 0.6");
    let (record, outcome) = h.controller.apply(&changed, None).await.unwrap();
    assert_eq!((record.revision, outcome), (2, ApplyOutcome::Configured));
}

#[tokio::test]
async fn invalid_pipelines_and_unknown_base_models_are_refused_and_store_nothing() {
    let h = harness();
    let error = h.controller.apply(&PIPELINE.replace("name: demo", "name: Demo!"), Some("p.yaml")).await.unwrap_err();
    assert!(matches!(error, ControllerError::InvalidPipeline(_)), "{error}");
    assert!(error.to_string().starts_with("p.yaml:2:7: name:"), "{error}");
    let error = h.controller.apply(&PIPELINE.replace("model: tiny", "model: huge"), None).await.unwrap_err();
    assert!(error.to_string().contains("base model \"huge\" is not in the catalog (known: tiny)"), "{error}");
    assert!(h.store.list_runs(None, 10).await.unwrap().is_empty());
    let error = h.controller.trigger(&demo(), Trigger::Manual).await.unwrap_err();
    assert!(matches!(error, ControllerError::PipelineNotFound(_)), "{error}");
}

#[tokio::test]
async fn a_watch_queues_one_run_per_content_change_and_none_for_a_touch() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    assert_eq!(h.poll().await, 0, "no dataset yet");
    h.upload("good 1\n").await;
    assert_eq!(h.poll().await, 1, "first content");
    assert_eq!(h.poll().await, 0, "nothing changed");
    h.upload("good 1\n").await;
    assert_eq!(h.poll().await, 0, "same bytes written again");
    h.upload("good 2\n").await;
    assert_eq!(h.poll().await, 1, "new content");
    let runs = h.store.list_runs(Some(&demo()), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].state, RunState::Queued);
    assert!(matches!(&runs[0].trigger, Trigger::DatasetChanged { digest, .. } if *digest == Digest::of(b"good 2\n")));
    assert_eq!(runs[1].state, RunState::Cancelled, "the older queued run is superseded by newer data");
    assert!(runs[1].error.as_deref().unwrap_or_default().contains("superseded"), "{:?}", runs[1].error);
}

#[tokio::test]
async fn a_watch_is_not_polled_before_its_interval() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    assert_eq!(h.poll().await, 1);
    h.upload("good good\n").await;
    h.clock.advance(chrono::Duration::seconds(5));
    assert_eq!(h.controller.poll_watches().await.unwrap().len(), 0, "interval not elapsed");
    h.clock.advance(chrono::Duration::seconds(5));
    assert_eq!(h.controller.poll_watches().await.unwrap().len(), 1);
}

#[tokio::test]
async fn passing_gates_publish_and_failing_gates_reject_with_the_report() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\ngood\n").await;
    h.poll().await;
    let run = h.run_next().await.expect("a queued run");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let published = run.published.expect("published");
    assert_eq!(published.version, 1);
    assert_eq!(run.dataset_digest, Some(Digest::of(b"good\ngood\n")));
    let manifest = h.registry.get(&published.adapter, 1).await.unwrap().unwrap().manifest;
    assert_eq!(manifest.lineage.dataset_digests, vec![Digest::of(b"good\ngood\n")]);
    assert_eq!(manifest.lineage.pipeline.as_ref().map(|pipeline| pipeline.revision), Some(1));
    assert_eq!(manifest.lineage.run_id.as_deref(), Some(run.id.as_str()));

    h.upload("bad\nbad\nbad\n").await;
    h.poll().await;
    let run = h.run_next().await.expect("a queued run");
    assert_eq!(run.state, RunState::Rejected, "{run:#?}");
    assert!(run.published.is_none());
    let report = run.report.expect("report kept");
    assert_eq!(report["gates"]["passed"], false);
    assert_eq!(report["gates"]["results"][0]["metric"], "exact_match");
    assert_eq!(h.versions().await, vec![1]);
    assert!(h.run_next().await.is_none());
}

#[tokio::test]
async fn a_training_failure_fails_the_run_with_its_reason() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("fail\n").await;
    h.poll().await;
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.error.as_deref(), Some("invalid training input: line 1: scripted failure"));
    assert!(h.versions().await.is_empty());
}

#[tokio::test]
async fn a_manual_run_trains_on_the_current_dataset_with_the_pipeline_settings() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    h.controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    let jobs = h.executor.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].base_model_digest, Digest::of(b"tiny"));
    assert_eq!(jobs[0].dataset, b"good\n");
    assert_eq!(jobs[0].lora.rank, 16);
}

#[tokio::test]
async fn resources_the_in_process_executor_cannot_apply_are_named_in_the_report() {
    let h = harness();
    let with_resources = PIPELINE.replace("publish:", "resources:\n  cpus: 2\n  memory: 1Gi\npublish:");
    h.controller.apply(&with_resources, None).await.unwrap();
    h.upload("good\n").await;
    h.controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    let messages = run.report.unwrap()["messages"].clone();
    let note = "resources.cpus 2 and resources.memory 1073741824 bytes not applied: the in-process executor";
    assert!(messages.as_array().unwrap().iter().any(|m| m.as_str().unwrap().starts_with(note)), "{messages}");

    // nothing asked, nothing said
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    h.controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let report = h.run_next().await.unwrap().report.unwrap();
    assert!(report.get("messages").is_none_or(|m| !m.to_string().contains("not applied")), "{report}");
}

#[tokio::test]
async fn a_missing_dataset_fails_the_run_naming_the_location() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    let error = run.error.unwrap_or_default();
    assert!(error.contains("datasets/demo/train.jsonl"), "{error}");
}

#[tokio::test]
async fn a_cron_trigger_queues_one_run_per_firing() {
    let h = harness();
    let yaml =
        PIPELINE.replace("  - kind: manual\n", "  - kind: manual\n  - kind: cron\n    schedule: \"*/10 * * * *\"\n");
    h.controller.apply(&yaml, None).await.unwrap();
    let scheduled = |runs: &[adapterci_core::run::RunRecord]| {
        runs.iter().filter(|run| matches!(run.trigger, Trigger::Schedule { .. })).count()
    };
    h.controller.poll_watches().await.unwrap(); // 00:00:00: the first look starts the clock, fires nothing
    assert_eq!(scheduled(&h.store.list_runs(None, 10).await.unwrap()), 0);
    h.clock.advance(chrono::Duration::minutes(9));
    h.controller.poll_watches().await.unwrap();
    assert_eq!(scheduled(&h.store.list_runs(None, 10).await.unwrap()), 0, "00:09: not due");
    h.clock.advance(chrono::Duration::minutes(2));
    h.controller.poll_watches().await.unwrap();
    h.controller.poll_watches().await.unwrap();
    let runs = h.store.list_runs(None, 10).await.unwrap();
    assert_eq!(scheduled(&runs), 1, "00:10 fired once, not once per pass");
    assert!(matches!(&runs[0].trigger, Trigger::Schedule { schedule, .. } if schedule == "*/10 * * * *"));
}

#[tokio::test]
async fn on_a_base_release_the_task_adapter_starts_from_its_recovery_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let recovery = dir.path().join("recovery.safetensors");
    std::fs::write(&recovery, b"recovery adapter bytes").unwrap();
    let base = ResolvedBase {
        name: "tiny".to_string(),
        path: dir.path().join("base.safetensors"),
        digest: Digest::of(b"release"),
        recovery_adapter: Some(recovery),
    };
    let h = harness_with(base);
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\ngood\n").await;
    h.poll().await;
    let run = h.run_next().await.expect("a queued run");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let jobs = h.executor.jobs();
    let initial = jobs[0].initial_adapter.as_ref().expect("the job starts from the recovery adapter");
    assert_eq!(initial.safetensors, b"recovery adapter bytes");
    let expected = adapterci_core::training::InitialAdapterRef::RecoveryAdapter {
        base_release: Digest::of(b"release"),
        adapter: Digest::of(b"recovery adapter bytes"),
    };
    assert_eq!(initial.reference, expected);
    let published = run.published.expect("published");
    let manifest = h.registry.get(&published.adapter, 1).await.unwrap().unwrap().manifest;
    assert_eq!(manifest.lineage.initial_adapter, expected);
    assert_eq!(manifest.lineage.base_release_digest, Some(Digest::of(b"release")));
}

#[tokio::test]
async fn every_training_step_is_stored_as_a_step_metric_when_a_store_is_set() {
    let h = harness();
    let metrics = Arc::new(adapterci_testkit::run_metrics_fake::InMemoryRunMetrics::new());
    h.controller.set_run_metrics(metrics.clone());
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\ngood\n").await;
    h.poll().await;
    let run = h.run_next().await.expect("a queued run");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    // the scripted executor reports three steps with loss 1/step, 100 tokens in 1 s each
    let steps = adapterci_core::run_metrics::RunMetricsStore::step_metrics(metrics.as_ref(), &run.id).await.unwrap();
    let seen: Vec<(u64, f64, u64)> = steps.iter().map(|s| (s.step, s.loss, s.tokens)).collect();
    assert_eq!(seen, vec![(1, 1.0, 100), (2, 0.5, 100), (3, 1.0 / 3.0, 100)]);
    assert!(steps.iter().all(|s| s.tokens_per_second() == 100.0));
}

/// Records the gate failures the controller reports to its listeners.
#[derive(Default)]
struct GateFailures(std::sync::Mutex<Vec<(String, String, Vec<String>)>>);

#[async_trait::async_trait]
impl adapterci_controller::PublishListener for GateFailures {
    async fn published(&self, _: &adapterci_core::ports::AdapterVersionRecord) {}
    async fn gates_failed(&self, run_id: &str, adapter: &AdapterName, gates: &adapterci_core::gate::GateReport) {
        let failed = gates.results.iter().filter(|g| !g.passed).map(|g| g.metric.clone()).collect();
        self.0.lock().unwrap().push((run_id.to_string(), adapter.to_string(), failed));
    }
}

#[tokio::test]
async fn listeners_hear_of_a_run_whose_gates_fail_and_of_no_run_that_passes() {
    let h = harness();
    let failures = Arc::new(GateFailures::default());
    h.controller.add_publish_listener(failures.clone());
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\ngood\n").await;
    h.poll().await;
    assert_eq!(h.run_next().await.unwrap().state, RunState::Succeeded);
    assert!(failures.0.lock().unwrap().is_empty());
    h.upload("bad\nbad\nbad\n").await;
    h.poll().await;
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Rejected);
    let heard = failures.0.lock().unwrap().clone();
    assert_eq!(heard, vec![(run.id, "demo-adapter".to_string(), vec!["exact_match".to_string()])]);
}

#[tokio::test]
async fn a_local_directory_location_is_watched_and_trained_on_like_a_prefix() {
    let h = harness();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("orders");
    let location = format!("file://{}/", data.display());
    h.controller.apply(&PIPELINE.replace("datasets/demo/train.jsonl", &location), None).await.unwrap();
    // nothing there yet: no run
    assert_eq!(h.poll().await, 0);
    std::fs::create_dir_all(data.join("2026")).unwrap();
    std::fs::write(data.join("a.jsonl"), "good\n").unwrap();
    std::fs::write(data.join("2026/b.jsonl"), "good").unwrap();
    assert_eq!(h.poll().await, 1, "the new files start one run");
    let run = h.run_next().await.expect("a queued run");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    // every file below the directory, in path order, joined into whole lines
    assert_eq!(h.executor.jobs().last().unwrap().dataset, b"good\ngood\n".to_vec());
    // the same bytes written again start nothing; a new file does
    std::fs::write(data.join("a.jsonl"), "good\n").unwrap();
    assert_eq!(h.poll().await, 0, "a rewrite without a change");
    std::fs::write(data.join("c.jsonl"), "bad\n").unwrap();
    assert_eq!(h.poll().await, 1);
}

#[tokio::test]
async fn a_missing_local_file_fails_the_run_naming_it() {
    let h = harness();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let pipeline = PIPELINE.replace("datasets/demo/train.jsonl", &format!("file://{}", missing.display()));
    h.controller.apply(&pipeline, None).await.unwrap();
    h.controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Failed);
    let error = run.error.unwrap_or_default();
    assert!(error.contains(&format!("file://{}", missing.display())), "{error}");
}

#[tokio::test]
async fn a_regression_gate_holds_a_candidate_to_the_version_served_on_the_channel() {
    let h = harness();
    let pipeline = PIPELINE.replace("      min: 0.5", "      max_regression: 0.1");
    h.controller.apply(&pipeline, None).await.unwrap();
    // nothing served yet: the gate passes and says so
    h.upload("good\ngood\n").await;
    h.poll().await;
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    // exact match 0.667 against the served 1.0: more than 0.1 worse
    h.upload("good\ngood\nbad\n").await;
    h.poll().await;
    let run = h.run_next().await.unwrap();
    assert_eq!(run.state, RunState::Rejected, "{run:#?}");
    let report = run.report.unwrap();
    assert_eq!(report["gates"]["results"][0]["metric"], "exact_match");
    assert_eq!(report["gates"]["results"][0]["min"], 0.9, "held to the served 1.0 minus 0.1");
    // 0.9 is within the tolerance
    h.upload("good\ngood\ngood\ngood\ngood\ngood\ngood\ngood\ngood\nbad\n").await;
    h.poll().await;
    assert_eq!(h.run_next().await.unwrap().state, RunState::Succeeded);
    assert_eq!(h.versions().await, vec![1, 2]);
}
