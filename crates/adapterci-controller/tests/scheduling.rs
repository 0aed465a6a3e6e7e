//! Durable scheduling seen from the controller: debounce of bursts, retries with backoff, leases kept by
//! heartbeats and taken over after a crash, runs handed back on a graceful shutdown, cancellation, and exactly
//! one publish per run. Every test runs on a
//! paused tokio clock that also drives the controller's wall clock (`TokioClock`): timers fire in virtual time,
//! deterministically, and nothing waits for real time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapterci_controller::{
    Controller, ControllerConfig, Ports, PublishListener, ResolvedBase, SchedulingConfig, StaticBaseModels,
};
use adapterci_core::ports::{AdapterRegistry, AdapterVersionRecord, DatasetSource, RunStore, TrainingExecutor};
use adapterci_core::run::{RunRecord, RunState, Trigger};
use adapterci_core::scheduling::{ConcurrencyLimits, RetryPolicy, RunScheduler};
use adapterci_core::training::{ProgressSink, TrainJob, TrainOutput, TrainingFailure};
use adapterci_core::{AdapterName, Digest, PipelineName};
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_testkit::eventually::eventually;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use adapterci_testkit::tokio_clock::TokioClock;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

const PIPELINE: &str = "version: v1
name: demo
base:
  model: tiny
dataset:
  location: datasets/demo/train.jsonl
triggers:
  - kind: dataset_watch
    interval: 1s
  - kind: manual
publish:
  adapter: demo-adapter
";

const DEBOUNCE: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);

fn scheduling() -> SchedulingConfig {
    SchedulingConfig {
        debounce: DEBOUNCE,
        max_debounce: Duration::from_secs(600),
        supersede_queued: true,
        limits: ConcurrencyLimits { global: 2, per_pipeline: 1 },
        lease: LEASE,
        heartbeat: HEARTBEAT,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(15),
        },
    }
}

/// An executor that fails with a backend error the first `failures` times, blocks the first call while
/// `block_first` holds, and otherwise behaves like the scripted executor.
#[derive(Default)]
struct TestExecutor {
    inner: ScriptedExecutor,
    failures: AtomicUsize,
    block_first: bool,
    /// Calls before this one block until dropped, as a long training does (`block_first` is the first only).
    blocked_calls: usize,
    calls: AtomicUsize,
    started: Notify,
    /// Training futures dropped before they finished (a cancel or a crash stopped them).
    dropped: Arc<AtomicUsize>,
}

struct DropFlag(Arc<AtomicUsize>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl TrainingExecutor for TestExecutor {
    async fn execute(&self, job: TrainJob, progress: Arc<dyn ProgressSink>) -> Result<TrainOutput, TrainingFailure> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut flag = DropFlag(self.dropped.clone(), false);
        self.started.notify_one();
        if (self.block_first && call == 0) || call < self.blocked_calls {
            std::future::pending::<()>().await;
        }
        let failures_left = self.failures.load(Ordering::SeqCst);
        if failures_left > 0 {
            self.failures.store(failures_left - 1, Ordering::SeqCst);
            flag.1 = true;
            return Err(TrainingFailure::Backend("the device went away".to_string()));
        }
        let result = self.inner.execute(job, progress).await;
        flag.1 = true;
        result
    }
}

/// Crashes the execution that publishes (a panic ends its task) right after the version is recorded.
struct CrashAfterPublish;

#[async_trait]
impl PublishListener for CrashAfterPublish {
    async fn published(&self, _version: &AdapterVersionRecord) {
        panic!("simulated crash between publishing and recording the run's outcome");
    }
}

struct Harness {
    store: Arc<InMemoryMetadataStore>,
    scheduler: Arc<InMemoryScheduler>,
    datasets: Arc<ObjectStoreDatasetSource>,
    registry: Arc<ObjectStoreRegistry>,
    ports: Ports,
    executor: Arc<TestExecutor>,
}

fn harness(executor: TestExecutor) -> Harness {
    let store = Arc::new(InMemoryMetadataStore::new());
    let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
    let registry = Arc::new(ObjectStoreRegistry::new(open_object_store("memory://").unwrap(), store.clone()));
    let datasets = Arc::new(ObjectStoreDatasetSource::new(open_object_store("memory://").unwrap()));
    let executor = Arc::new(executor);
    let base = ResolvedBase {
        name: "tiny".to_string(),
        path: PathBuf::from("tiny.gguf"),
        digest: Digest::of(b"tiny"),
        recovery_adapter: None,
    };
    let ports = Ports {
        store: store.clone(),
        registry: registry.clone(),
        datasets: datasets.clone(),
        executor: executor.clone(),
        base_models: Arc::new(StaticBaseModels::new([base])),
        clock: Arc::new(TokioClock::new()),
        scheduler: scheduler.clone(),
        deliveries: scheduler.clone(),
    };
    Harness { store, scheduler, datasets, registry, ports, executor }
}

impl Harness {
    /// A controller on the shared ports, with a lease name of its own (a replica, or a restarted adapterd).
    fn controller(&self) -> Arc<Controller> {
        Arc::new(Controller::new(
            self.ports.clone(),
            ControllerConfig { scheduling: scheduling(), ..ControllerConfig::default() },
        ))
    }

    async fn upload(&self, content: &str) {
        self.datasets.write("datasets/demo/train.jsonl", Bytes::from(content.to_string())).await.unwrap();
    }

    async fn runs(&self) -> Vec<RunRecord> {
        self.store.list_runs(None, 100).await.unwrap()
    }

    async fn versions(&self) -> Vec<AdapterVersionRecord> {
        self.registry.list_versions(&AdapterName::new("demo-adapter").unwrap()).await.unwrap()
    }

    async fn run(&self, id: &str) -> RunRecord {
        self.store.get_run(id).await.unwrap().unwrap()
    }
}

fn demo() -> PipelineName {
    PipelineName::new("demo").unwrap()
}

async fn wait(duration: Duration) {
    // Virtual time: the paused runtime jumps to each timer (heartbeats included) in order.
    tokio::time::sleep(duration).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_uploads_inside_the_debounce_window_start_one_run_on_the_last_data() {
    let h = harness(TestExecutor::default());
    let controller = h.controller();
    controller.apply(PIPELINE, None).await.unwrap();
    for upload in 0..20 {
        h.upload(&format!("good {upload}\n")).await;
        wait(Duration::from_secs(1)).await;
        assert_eq!(controller.poll_watches().await.unwrap().len(), 1, "upload {upload} is seen");
        assert!(controller.run_next().await.unwrap().is_none(), "nothing starts inside the window");
    }
    assert_eq!(h.runs().await.len(), 1, "one run for the whole burst");
    wait(DEBOUNCE).await;
    let run = controller.run_next().await.unwrap().expect("due after the window");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    assert_eq!(h.executor.inner.jobs()[0].dataset, b"good 19\n", "the run trains on the newest data");
    let schedule = h.scheduler.run_schedule(&run.id).await.unwrap().unwrap();
    assert_eq!(schedule.coalesced_triggers, 19);
    assert!(controller.run_next().await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_exponential_backoff_up_to_the_cap() {
    let h = harness(TestExecutor { failures: AtomicUsize::new(2), ..TestExecutor::default() });
    let controller = h.controller();
    controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    let queued = controller.trigger(&demo(), Trigger::Manual).await.unwrap();

    let first = controller.run_next().await.unwrap().unwrap();
    assert_eq!(first.state, RunState::Queued, "a backend failure is retried");
    assert!(first.error.as_deref().unwrap_or_default().contains("attempt 1 failed"), "{:?}", first.error);
    wait(Duration::from_secs(9)).await;
    assert!(controller.run_next().await.unwrap().is_none(), "backing off for 10 s");
    wait(Duration::from_secs(1)).await;
    let second = controller.run_next().await.unwrap().unwrap();
    assert_eq!(second.state, RunState::Queued);
    wait(Duration::from_secs(14)).await;
    assert!(controller.run_next().await.unwrap().is_none(), "20 s capped to 15 s");
    wait(Duration::from_secs(1)).await;
    let third = controller.run_next().await.unwrap().unwrap();
    assert_eq!(third.state, RunState::Succeeded, "{third:#?}");
    assert_eq!(third.id, queued.id);
    assert_eq!(h.scheduler.run_schedule(&queued.id).await.unwrap().unwrap().attempts, 3);
    assert_eq!(h.versions().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_failing_every_attempt_fails_after_the_attempt_limit() {
    let h = harness(TestExecutor { failures: AtomicUsize::new(100), ..TestExecutor::default() });
    let controller = h.controller();
    controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    let run = controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let mut last = None;
    for _ in 0..4 {
        wait(Duration::from_secs(15)).await;
        last = controller.run_next().await.unwrap();
    }
    let last = last.unwrap();
    assert_eq!((last.id.as_str(), last.state), (run.id.as_str(), RunState::Failed));
    assert_eq!(last.error.as_deref(), Some("training failed: the device went away"));
    wait(Duration::from_secs(60)).await;
    assert!(controller.run_next().await.unwrap().is_none(), "no fifth attempt");
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_lease_and_a_crashed_controllers_run_is_taken_over_after_it_expires() {
    let h = harness(TestExecutor { block_first: true, ..TestExecutor::default() });
    let (first, second) = (h.controller(), h.controller());
    first.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    let run = first.trigger(&demo(), Trigger::Manual).await.unwrap();

    let crashing = tokio::spawn({
        let first = first.clone();
        async move { first.run_next().await }
    });
    h.executor.started.notified().await;
    wait(LEASE * 3).await;
    assert!(second.run_next().await.unwrap().is_none(), "heartbeats keep the lease for three lease periods");
    assert_eq!(h.run(&run.id).await.state, RunState::Running);

    crashing.abort(); // the first controller dies (kill -9): no heartbeat any more, no cleanup
    assert!(crashing.await.unwrap_err().is_cancelled());
    wait(LEASE - HEARTBEAT).await;
    assert!(second.run_next().await.unwrap().is_none(), "the lease has not expired yet");
    wait(HEARTBEAT + Duration::from_secs(1)).await;
    let taken_over = second.run_next().await.unwrap().expect("taken over after the lease expired");
    assert_eq!(taken_over.id, run.id);
    assert_eq!(taken_over.state, RunState::Succeeded, "{taken_over:#?}");
    assert_eq!(h.scheduler.run_schedule(&run.id).await.unwrap().unwrap().attempts, 2);
    assert_eq!(h.versions().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_publishing_does_not_publish_the_run_again() {
    let h = harness(TestExecutor::default());
    let (first, second) = (h.controller(), h.controller());
    first.add_publish_listener(Arc::new(CrashAfterPublish));
    first.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    let run = first.trigger(&demo(), Trigger::Manual).await.unwrap();
    let crashed = tokio::spawn({
        let first = first.clone();
        async move { first.run_next().await }
    });
    assert!(crashed.await.unwrap_err().is_panic());
    assert_eq!(h.versions().await.len(), 1, "published before the crash");
    assert_eq!(h.run(&run.id).await.state, RunState::Running, "the outcome was never recorded");

    wait(LEASE + Duration::from_secs(1)).await;
    let finished = second.run_next().await.unwrap().expect("taken over");
    assert_eq!(finished.state, RunState::Succeeded);
    let versions = h.versions().await;
    assert_eq!(versions.len(), 1, "exactly one version for the run");
    assert_eq!(finished.published.map(|published| published.version), Some(versions[0].version));
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 1, "the second controller did not train again");
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_a_running_run_at_once_and_a_queued_run_never_starts() {
    let h = harness(TestExecutor { block_first: true, ..TestExecutor::default() });
    let controller = h.controller();
    controller.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    let running = controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let execution = tokio::spawn({
        let controller = controller.clone();
        async move { controller.run_next().await }
    });
    h.executor.started.notified().await;
    assert_eq!(controller.active_run_count(), 1);
    let cancelled = controller.cancel(&running.id).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    let ended = execution.await.unwrap().unwrap().unwrap();
    assert_eq!(ended.state, RunState::Cancelled);
    assert_eq!(h.executor.dropped.load(Ordering::SeqCst), 1, "the training was stopped, not left running");
    assert_eq!(controller.active_run_count(), 0);

    let queued = controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    assert_eq!(controller.cancel(&queued.id).await.unwrap().state, RunState::Cancelled);
    assert!(controller.run_next().await.unwrap().is_none());
    assert!(h.versions().await.is_empty());
    let error = controller.cancel("no-such-run").await.unwrap_err();
    assert!(error.to_string().contains("no-such-run"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_through_another_controller_stops_at_its_next_heartbeat() {
    let h = harness(TestExecutor { block_first: true, ..TestExecutor::default() });
    let (runner, api) = (h.controller(), h.controller());
    runner.apply(PIPELINE, None).await.unwrap();
    h.upload("good\n").await;
    let run = runner.trigger(&demo(), Trigger::Manual).await.unwrap();
    let execution = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run_next().await }
    });
    h.executor.started.notified().await;
    let cancelled_at = h.ports.clock.now();
    api.cancel(&run.id).await.unwrap();
    let ended = execution.await.unwrap().unwrap().unwrap();
    assert_eq!(ended.state, RunState::Cancelled);
    assert_eq!(h.executor.dropped.load(Ordering::SeqCst), 1);
    assert!(h.versions().await.is_empty());
    // Virtual time: the runner noticed at its next heartbeat, not at the lease's end.
    let noticed_after = h.ports.clock.now() - cancelled_at;
    assert!(noticed_after <= chrono::Duration::from_std(HEARTBEAT).unwrap(), "{noticed_after}");
}

#[tokio::test(start_paused = true)]
async fn training_past_the_pipelines_timeout_is_stopped_and_the_run_fails() {
    let h = harness(TestExecutor { block_first: true, ..TestExecutor::default() });
    let controller = h.controller();
    let yaml = PIPELINE.replace("publish:\n", "resources:\n  timeout: 2m\npublish:\n");
    controller.apply(&yaml, None).await.unwrap();
    h.upload("good\n").await;
    controller.trigger(&demo(), Trigger::Manual).await.unwrap();
    let run = controller.run_next().await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed, "{run:#?}");
    assert_eq!(run.error.as_deref(), Some("training took longer than the pipeline's resources.timeout of 120s"));
    assert_eq!(h.executor.dropped.load(Ordering::SeqCst), 1, "the training was stopped");
    assert!(h.versions().await.is_empty());
}

/// Holds every training until opened.
struct GatedExecutor {
    inner: ScriptedExecutor,
    open: tokio::sync::watch::Receiver<bool>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

#[async_trait]
impl TrainingExecutor for GatedExecutor {
    async fn execute(&self, job: TrainJob, progress: Arc<dyn ProgressSink>) -> Result<TrainOutput, TrainingFailure> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.inner.execute(job, progress).await
    }
}

#[tokio::test(start_paused = true)]
async fn the_loop_runs_at_most_the_global_limit_at_once_and_one_run_per_pipeline() {
    let h = harness(TestExecutor::default());
    let (open, gate) = tokio::sync::watch::channel(false);
    let executor = Arc::new(GatedExecutor {
        inner: ScriptedExecutor::default(),
        open: gate,
        running: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
    });
    let mut ports = h.ports.clone();
    ports.executor = executor.clone();
    let controller = Arc::new(Controller::new(
        ports,
        ControllerConfig { tick: Duration::from_secs(1), scheduling: scheduling(), ..ControllerConfig::default() },
    ));
    for name in ["one", "two", "three"] {
        let yaml = PIPELINE
            .replace("name: demo", &format!("name: {name}"))
            .replace("adapter: demo-adapter", &format!("adapter: {name}"))
            .replace("  - kind: dataset_watch\n    interval: 1s\n", "");
        controller.apply(&yaml, None).await.unwrap();
    }
    h.upload("good\n").await; // every pipeline reads the same dataset location
    for name in ["one", "one", "two", "three"] {
        controller.trigger(&PipelineName::new(name).unwrap(), Trigger::Manual).await.unwrap();
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(controller.clone().run_until(stopped));
    wait(Duration::from_secs(5)).await;
    assert_eq!(executor.running.load(Ordering::SeqCst), 2, "the global limit is 2");
    let running = h.store.list_runs(None, 10).await.unwrap();
    let running: Vec<String> =
        running.iter().filter(|run| run.state == RunState::Running).map(|run| run.pipeline.to_string()).collect();
    assert_eq!(running.len(), 2);
    assert_ne!(running[0], running[1], "one run per pipeline at a time: {running:?}");
    open.send(true).unwrap();
    wait(Duration::from_secs(10)).await;
    let runs = h.store.list_runs(None, 10).await.unwrap();
    assert!(runs.iter().all(|run| run.state == RunState::Succeeded), "{runs:#?}");
    assert_eq!(executor.most_at_once.load(Ordering::SeqCst), 2);
    stop.send(true).unwrap();
    loop_task.await.unwrap();
}

/// Stops inside publishing: the version is stored, then the listener holds the execution until it is dropped.
struct StallAfterPublish(Arc<Notify>);

#[async_trait]
impl PublishListener for StallAfterPublish {
    async fn published(&self, _version: &AdapterVersionRecord) {
        self.0.notify_one();
        std::future::pending::<()>().await;
    }
}

/// The pipeline without its dataset watch: the loop's watch pass would queue a run of its own.
fn manual_only() -> String {
    PIPELINE.replace("  - kind: dataset_watch\n    interval: 1s\n", "")
}

/// Starts `controller`'s loop, waits until the executor has started a training, then shuts the loop down as
/// adapterd does on SIGTERM and waits for it to return.
async fn stop_mid_training(h: &Harness, controller: &Arc<Controller>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(controller.clone().run_until(stopped));
    h.executor.started.notified().await;
    stop.send(true).unwrap();
    loop_task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_hands_the_run_back_and_restarts_never_use_up_its_attempts() {
    // more stop/start cycles than the attempt limit (4), each during the run's training
    const RESTARTS: usize = 5;
    let h = harness(TestExecutor { blocked_calls: RESTARTS, ..TestExecutor::default() });
    h.controller().apply(&manual_only(), None).await.unwrap();
    h.upload("good\n").await;
    let run = h.controller().trigger(&demo(), Trigger::Manual).await.unwrap();

    for restart in 1..=RESTARTS {
        let adapterd = h.controller();
        stop_mid_training(&h, &adapterd).await;
        assert_eq!(h.executor.dropped.load(Ordering::SeqCst), restart, "the training was stopped, not left running");
        assert_eq!(adapterd.active_run_count(), 0);
        let stopped = h.run(&run.id).await;
        assert_eq!(stopped.state, RunState::Queued, "restart {restart}: {stopped:#?}");
        assert!(stopped.error.as_deref().is_some_and(|note| note.contains("handed back")), "{:?}", stopped.error);
        let schedule = h.scheduler.run_schedule(&run.id).await.unwrap().unwrap();
        assert_eq!(schedule.attempts, 0, "restart {restart}: the stopped execution is not an attempt");
        assert_eq!((schedule.lease_holder, schedule.lease_expires_at), (None, None));
        assert!(schedule.not_before <= h.ports.clock.now(), "due at once");
    }

    // No lease to wait out: a controller whose claim comes before any expiry could (a crashed holder's run is
    // not claimable for a whole lease, see the takeover test) claims it at once.
    let next = h.controller();
    let finished = next.run_next().await.unwrap().expect("claimed at once");
    assert_eq!((finished.id.as_str(), finished.state), (run.id.as_str(), RunState::Succeeded), "{finished:#?}");
    assert_eq!(h.scheduler.run_schedule(&run.id).await.unwrap().unwrap().attempts, 1, "its first counted attempt");
    assert_eq!(h.versions().await.len(), 1);
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), RESTARTS + 1);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_after_a_run_ended_hands_nothing_back() {
    let h = harness(TestExecutor { blocked_calls: 1, ..TestExecutor::default() });
    let adapterd = h.controller();
    adapterd.apply(&manual_only(), None).await.unwrap();
    h.upload("good\n").await;
    let cancelled = adapterd.trigger(&demo(), Trigger::Manual).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(adapterd.clone().run_until(stopped));
    h.executor.started.notified().await;
    adapterd.cancel(&cancelled.id).await.unwrap();
    let finished = adapterd.trigger(&demo(), Trigger::Manual).await.unwrap();
    eventually("the second run to succeed", || async {
        (h.run(&finished.id).await.state == RunState::Succeeded).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    loop_task.await.unwrap();
    assert_eq!(h.run(&cancelled.id).await.state, RunState::Cancelled);
    assert_eq!(h.run(&finished.id).await.state, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_publishing_hands_the_run_back_and_the_next_controller_publishes_nothing_new() {
    let h = harness(TestExecutor::default());
    let adapterd = h.controller();
    let published = Arc::new(Notify::new());
    adapterd.add_publish_listener(Arc::new(StallAfterPublish(published.clone())));
    adapterd.apply(&manual_only(), None).await.unwrap();
    h.upload("good\n").await;
    let run = adapterd.trigger(&demo(), Trigger::Manual).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(adapterd.clone().run_until(stopped));
    published.notified().await;
    stop.send(true).unwrap();
    loop_task.await.unwrap();
    assert_eq!(h.versions().await.len(), 1, "published before the stop");
    assert_eq!(h.run(&run.id).await.state, RunState::Queued, "the outcome was not recorded: handed back");
    assert_eq!(h.scheduler.run_schedule(&run.id).await.unwrap().unwrap().attempts, 0);

    let finished = h.controller().run_next().await.unwrap().expect("claimed at once");
    assert_eq!(finished.state, RunState::Succeeded, "{finished:#?}");
    let versions = h.versions().await;
    assert_eq!(versions.len(), 1, "exactly one version for the run");
    assert_eq!(finished.published.map(|published| published.version), Some(versions[0].version));
    assert_eq!(h.executor.calls.load(Ordering::SeqCst), 1, "not trained again");
}
