//! The Kubernetes executor against a fake cluster (`support/fake_kube.rs`: a mock API server, since none can run
//! here, whose fake kubelet runs the Job's real `adapterd train-job --staged …`): a job trains end to end; a pod the
//! control plane disrupts is replaced and the run goes on in the new one; a trainer's failure, a Job past its
//! deadline, a pod that cannot start or cannot even be created (a quota refuses it) and a Job of an earlier attempt
//! that will not go each end the attempt naming why; dropping a launch deletes the Job, unless adapterd is stopping:
//! then the Job is left, and the next adapterd's launch of the same job re-attaches to it (running or ended), while
//! a changed job replaces it. Then adapterd itself, started with `--executor kubernetes` and a kubeconfig naming the
//! mock served over HTTP, trains a run triggered through its API.
//!
//! The tests wait on the launch itself and on the events the mock records, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapterci_core::launcher::{LaunchResources, TrainingLauncher};
use adapterci_core::training::{ProgressSink, StepProgress, TrainingFailure};
use adapterci_server::kube_launcher::{JobTemplate, KubernetesLauncher, KubernetesSettings, OLD_JOB_DELETE_TIMEOUT};
use adapterci_server::staging::Staging;
use adapterci_testkit::eventually::eventually;
use tokio::sync::{mpsc, watch};

#[path = "support/tiny_job.rs"]
mod tiny_job;
use tiny_job::tiny_job;

#[path = "support/processes.rs"]
mod processes;
use processes::KillOnDrop;

#[path = "support/fake_kube.rs"]
mod fake_kube;
use fake_kube::{FakeCluster, Kubelet, NAMESPACE, OldJob, Seen, Setup};

const TEMPLATE: &str = r#"
metadata:
  labels: { team: ml }
spec:
  serviceAccountName: adapterci-trainer
  containers:
    - name: trainer
      image: adapterd:test
      securityContext: { allowPrivilegeEscalation: false }
"#;

/// What a launcher's settings differ in between the tests.
#[derive(Clone, Copy)]
struct Limits {
    start_timeout: Option<Duration>,
    old_job_delete_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { start_timeout: None, old_job_delete_timeout: OLD_JOB_DELETE_TIMEOUT }
    }
}

fn launcher(dir: &Path, kubelet: Kubelet) -> (KubernetesLauncher, mpsc::UnboundedReceiver<Seen>) {
    let (launcher, cluster) = launcher_with(dir, kubelet, Limits::default());
    (launcher, cluster.seen)
}

fn launcher_with(dir: &Path, setup: impl Into<Setup>, limits: Limits) -> (KubernetesLauncher, FakeCluster) {
    let cluster = FakeCluster::new(setup, &dir.join("pod-cache"));
    (launcher_on(&cluster, dir, limits), cluster)
}

/// A launcher on `cluster` (a second one: the next adapterd, on the same cluster and staging store).
fn launcher_on(cluster: &FakeCluster, dir: &Path, limits: Limits) -> KubernetesLauncher {
    let staging_url = dir.join("staging").display().to_string();
    let settings = KubernetesSettings {
        namespace: NAMESPACE.to_string(),
        template: JobTemplate::parse(TEMPLATE, &dir.join("template.yaml")).unwrap(),
        staging: Staging::open(&staging_url).unwrap(),
        pod_staging_url: staging_url,
        logs_dir: dir.join("logs"),
        ttl_after_finished: Some(Duration::from_secs(600)),
        // the mock answers at once: polling fast keeps the tests short, and nothing waits on time
        poll_interval: Duration::from_millis(20),
        start_timeout: limits.start_timeout,
        old_job_delete_timeout: limits.old_job_delete_timeout,
    };
    KubernetesLauncher::new(cluster.client(), settings)
}

#[derive(Default)]
struct Progress {
    steps: AtomicUsize,
    /// Where the messages go, when a test waits for them.
    messages: Option<mpsc::UnboundedSender<String>>,
}

impl Progress {
    /// A progress whose messages come out of the receiver.
    fn told() -> (Arc<Progress>, mpsc::UnboundedReceiver<String>) {
        let (messages, received) = mpsc::unbounded_channel();
        (Arc::new(Progress { messages: Some(messages), ..Progress::default() }), received)
    }
}

impl ProgressSink for Progress {
    fn on_step(&self, _: &StepProgress) {
        self.steps.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&self, message: &str) {
        if let Some(messages) = &self.messages {
            let _ = messages.send(message.to_string());
        }
    }
}

/// The next item of `receiver`; a test that would wait for ever fails instead, after the testkit's deadline.
async fn next<T>(receiver: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
    tokio::time::timeout(adapterci_testkit::eventually::DEADLINE, receiver.recv()).await.expect("gave up waiting")
}

/// Everything left in `receiver` now.
fn drain<T>(receiver: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    std::iter::from_fn(|| receiver.try_recv().ok()).collect()
}

async fn log_text(launcher: &KubernetesLauncher, run: &str) -> String {
    String::from_utf8(launcher.logs(run, 0).await.unwrap().expect("a log").bytes).unwrap()
}

/// The files left under the staging prefix of `run`.
fn staged_files(dir: &Path, run: &str) -> usize {
    walk(&dir.join("staging/jobs").join(run))
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| if entry.path().is_dir() { walk(&entry.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trains_end_to_end_in_a_kubernetes_job() {
    let dir = tempfile::tempdir().unwrap();
    // the pod's first log stream drops after three lines: the launcher reconnects from the second of the last line
    // it handled, and skips what it handled (the fourth line has the third's timestamp)
    let (launcher, mut events) = launcher(dir.path(), Kubelet::Run { drop_first_stream_after: Some(3) });
    let progress = Arc::new(Progress::default());
    let job = tiny_job(dir.path(), 3);
    let resources = LaunchResources { cpus: Some(1.0), ..LaunchResources::default() };
    let output = launcher.launch("run-1", job.clone(), &resources, progress.clone()).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    assert_eq!(output.adapter_config.rank, 2);
    assert!(output.metrics.contains_key("eval_loss"), "{:?}", output.metrics);
    assert_eq!(progress.steps.load(Ordering::SeqCst), 3, "every step's progress came back, once");
    assert_eq!(next(&mut events).await, Some(Seen::Created("adapterci-train-run-1".to_string())));

    let log = log_text(&launcher, "run-1").await;
    assert!(log.contains("training started as the Kubernetes Job adapterci-test/adapterci-train-run-1"), "{log}");
    assert_eq!(log.matches("fetching the base model").count(), 1, "the pod's own lines, once: {log}");
    let pod_lines: Vec<&str> = log.lines().filter(|line| !line.starts_with("--- ")).collect();
    let distinct: std::collections::HashSet<&&str> = pod_lines.iter().collect();
    assert_eq!(distinct.len(), pod_lines.len(), "no line handled twice across the reconnect: {log}");
    assert_eq!(log.matches("adapter written").count(), 1, "{log}");
    assert_eq!(log.matches("training on").count(), 1, "a line read before the stream dropped is not repeated");
    assert!(!log.contains("{\"step\""), "progress lines go to the progress, not the log: {log}");
    assert!(log.contains("the Job adapterci-test/adapterci-train-run-1 completed"), "{log}");

    assert_eq!(staged_files(dir.path(), "run-1"), 0, "the staged job files are removed");
    let base = dir.path().join("staging/bases").join(job.base_model_digest.hex());
    assert!(base.is_file(), "the base model stays staged for other runs");
    assert!(dir.path().join("pod-cache").join(job.base_model_digest.hex()).is_file(), "the pod cached it");
    assert!(launcher.logs("never-ran", 0).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disrupted_pod_is_replaced_and_the_run_goes_on_in_the_new_pod() {
    let dir = tempfile::tempdir().unwrap();
    // the first pod is preempted after two lines; the mock's Job controller replaces it only as the Job's pod failure
    // policy says (without it, the Job fails)
    let (launcher, cluster) = launcher_with(dir.path(), Kubelet::DisruptFirstPod, Limits::default());
    let (progress, mut told) = Progress::told();
    let job = tiny_job(dir.path(), 3);
    let output = launcher.launch("run-12", job, &LaunchResources::default(), progress.clone()).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    assert_eq!(progress.steps.load(Ordering::SeqCst), 3, "the new pod's steps, once each");

    let sent = cluster.created("adapterci-train-run-12").unwrap();
    let policy = &sent["spec"]["podFailurePolicy"]["rules"];
    assert_eq!(
        policy,
        &serde_json::json!([{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]),
        "{sent:#}"
    );
    assert_eq!(sent["spec"]["backoffLimit"], 0, "{sent:#}");
    assert_eq!(sent["metadata"]["labels"]["team"], "ml", "the Job has the template's labels: {sent:#}");

    let log = log_text(&launcher, "run-12").await;
    assert_eq!(log.matches("first pod: starting").count(), 1, "{log}");
    assert_eq!(log.matches("first pod: fetching the base model").count(), 1, "{log}");
    let disrupted = "pod adapterci-train-run-12-disrupted was disrupted (DisruptionTarget: PreemptionByScheduler: \
                     default-scheduler: preempting to accommodate a higher priority pod)";
    assert_eq!(log.matches(disrupted).count(), 1, "told once: {log}");
    assert!(
        log.contains("pod adapterci-train-run-12-disrupted was replaced by pod adapterci-train-run-12-pod"),
        "{log}"
    );
    // the new pod's lines, each once, although their timestamps are those of the first pod's lines
    assert_eq!(log.matches("training on").count(), 1, "{log}");
    assert_eq!(log.matches("adapter written").count(), 1, "{log}");
    let pod_lines: Vec<&str> = log.lines().filter(|line| !line.starts_with("--- ")).collect();
    let distinct: std::collections::HashSet<&&str> = pod_lines.iter().collect();
    assert_eq!(distinct.len(), pod_lines.len(), "no line handled twice: {log}");
    assert!(log.contains("the Job adapterci-test/adapterci-train-run-12 completed"), "{log}");
    let messages = drain(&mut told);
    assert!(messages.iter().any(|message| message.starts_with(disrupted)), "{messages:?}");
    assert_eq!(staged_files(dir.path(), "run-12"), 0, "the staged job files are removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_trainer_surfaces_its_failure_json() {
    let dir = tempfile::tempdir().unwrap();
    let (launcher, _events) = launcher(dir.path(), Kubelet::Run { drop_first_stream_after: None });
    let mut job = tiny_job(dir.path(), 3);
    job.dataset = b"this is not jsonl\n".to_vec();
    let failure = launcher.launch("run-2", job, &LaunchResources::default(), Arc::new(Progress::default())).await;
    match failure {
        Err(TrainingFailure::InvalidInput(message)) => assert!(!message.is_empty()),
        other => panic!("expected the trainer's own failure, got {other:?}"),
    }
    let log = log_text(&launcher, "run-2").await;
    assert!(log.contains("the Job failed: BackoffLimitExceeded"), "{log}");
    assert_eq!(staged_files(dir.path(), "run-2"), 0, "the staged job files are removed");
}

#[tokio::test]
async fn a_job_past_its_deadline_without_a_result_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (launcher, _events) = launcher(dir.path(), Kubelet::FailAtOnce("DeadlineExceeded"));
    let job = tiny_job(dir.path(), 3);
    // the pipeline's resources.timeout becomes the Job's own deadline
    let resources = LaunchResources { timeout: Some(std::time::Duration::from_secs(90)), ..LaunchResources::default() };
    let failure = launcher.launch("run-3", job, &resources, Arc::new(Progress::default())).await;
    match failure {
        Err(TrainingFailure::Backend(message)) => {
            assert!(message.contains("the Kubernetes Job adapterci-test/adapterci-train-run-3 failed"), "{message}");
            assert!(message.contains("DeadlineExceeded"), "{message}");
            assert!(message.contains("specified deadline (90 s)"), "{message}");
            let log_path = dir.path().join("logs/run-3.log");
            assert!(message.contains(&log_path.display().to_string()), "{message}");
        }
        other => panic!("expected a backend failure naming the Job and its reason, got {other:?}"),
    }
    assert_eq!(staged_files(dir.path(), "run-3"), 0, "the staged job files are removed");
}

#[tokio::test]
async fn dropping_a_launch_deletes_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let (launcher, mut events) = launcher(dir.path(), Kubelet::Hang);
    // adapterd's shutdown signal is wired, and not set: the drop is a cancel, not adapterd stopping
    let (_shutdown, stopping) = watch::channel(false);
    let launcher = launcher.leave_jobs_on_shutdown(stopping);
    let job = tiny_job(dir.path(), 3);
    let launch = tokio::spawn(async move {
        launcher.launch("run-4", job, &LaunchResources::default(), Arc::new(Progress::default())).await
    });
    assert_eq!(next(&mut events).await, Some(Seen::Created("adapterci-train-run-4".to_string())));
    // what a cancel, a timeout or a lost lease does to the launch
    launch.abort();
    assert!(launch.await.unwrap_err().is_cancelled());
    assert_eq!(
        next(&mut events).await,
        Some(Seen::Deleted("adapterci-train-run-4".to_string(), "Background".to_string())),
        "the Job is deleted, its pod with it"
    );
    eventually("the staged job files removed", || async { (staged_files(dir.path(), "run-4") == 0).then_some(()) })
        .await;
    let log = std::fs::read_to_string(dir.path().join("logs/run-4.log")).unwrap();
    assert!(log.contains("Kubernetes Job adapterci-train-run-4 stopped"), "{log}");
}

/// Starts the launch of `job` as run `run` on `launcher` and, once its Job was created (and, with `wait_for_step`,
/// its pod has reported a step), stops adapterd: the shutdown signal is set, then the launch dropped, as the
/// controller's runs are when adapterd stops.
async fn stop_adapterd_while_it_trains(
    launcher: &KubernetesLauncher,
    cluster: &mut FakeCluster,
    run: &'static str,
    job: adapterci_core::training::TrainJob,
    wait_for_step: bool,
) {
    let (shutdown, stopping) = watch::channel(false);
    let launcher = launcher.clone().leave_jobs_on_shutdown(stopping);
    let progress = Arc::new(Progress::default());
    let launch = {
        let progress = progress.clone();
        tokio::spawn(async move { launcher.launch(run, job, &LaunchResources::default(), progress).await })
    };
    let name = format!("adapterci-train-{run}");
    assert_eq!(next(&mut cluster.seen).await, Some(Seen::Created(name.clone())));
    if wait_for_step {
        let steps = || async { (progress.steps.load(Ordering::SeqCst) > 0).then_some(()) };
        eventually("the first pod to report a step", steps).await;
    }
    shutdown.send(true).unwrap();
    launch.abort();
    assert!(launch.await.unwrap_err().is_cancelled());
}

/// Waits until the fake kubelet has ended the Job `name` (its trainer exited).
async fn job_ended(cluster: &FakeCluster, name: &str) {
    let ended = || async { cluster.job_status(name).filter(|status| status.get("conditions").is_some()) };
    let status = eventually("the Job to end", ended).await;
    assert_eq!(status["conditions"][0]["type"], "Complete", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_running_by_a_stopping_adapterd_is_re_attached_to_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (first, mut cluster) =
        launcher_with(dir.path(), Kubelet::Run { drop_first_stream_after: None }, Limits::default());
    let job = tiny_job(dir.path(), 3);
    stop_adapterd_while_it_trains(&first, &mut cluster, "run-13", job.clone(), true).await;
    let log = log_text(&first, "run-13").await;
    assert!(
        log.contains(
            "--- adapterd is stopping: the Job adapterci-test/adapterci-train-run-13 keeps running; the next \
             adapterd re-attaches to it"
        ),
        "{log}"
    );
    assert!(staged_files(dir.path(), "run-13") > 0, "the staged job files stay, for the Job's pod");

    // the next adapterd is given the run again (its lease expired) with the same job
    let second = launcher_on(&cluster, dir.path(), Limits::default());
    let progress = Arc::new(Progress::default());
    let output = second.launch("run-13", job, &LaunchResources::default(), progress.clone()).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    assert!(output.metrics.contains_key("eval_loss"), "{:?}", output.metrics);
    // the pod's log is followed from its start: the steps the first launch saw come again, each once
    assert_eq!(progress.steps.load(Ordering::SeqCst), 3);
    assert_eq!(drain(&mut cluster.seen), Vec::<Seen>::new(), "no Job deleted, none created again");
    assert_eq!(cluster.created_names(), vec!["adapterci-train-run-13".to_string()], "the first Job's pod trained");
    let log = log_text(&second, "run-13").await;
    assert_eq!(
        log.matches(
            "--- re-attaching to the Job adapterci-test/adapterci-train-run-13 an earlier adapterd started for the \
             same job (created 2026-01-01T00:00:00Z)"
        )
        .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("staging the job").count(), 1, "staged once, by the first adapterd: {log}");
    assert!(log.contains("the Job adapterci-test/adapterci-train-run-13 completed"), "{log}");
    assert_eq!(staged_files(dir.path(), "run-13"), 0, "the staged job files are removed at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_succeeded_while_adapterd_was_away_is_re_attached_to_and_its_result_read() {
    let dir = tempfile::tempdir().unwrap();
    let (first, mut cluster) =
        launcher_with(dir.path(), Kubelet::Run { drop_first_stream_after: None }, Limits::default());
    let job = tiny_job(dir.path(), 3);
    stop_adapterd_while_it_trains(&first, &mut cluster, "run-14", job.clone(), false).await;
    job_ended(&cluster, "adapterci-train-run-14").await;

    let second = launcher_on(&cluster, dir.path(), Limits::default());
    let progress = Arc::new(Progress::default());
    let output = second.launch("run-14", job, &LaunchResources::default(), progress.clone()).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    assert_eq!(output.adapter_config.rank, 2);
    assert_eq!(progress.steps.load(Ordering::SeqCst), 3, "the ended pod's log, read once");
    assert_eq!(drain(&mut cluster.seen), Vec::<Seen>::new(), "nothing created or deleted");
    let log = log_text(&second, "run-14").await;
    assert!(log.contains("--- re-attaching to the Job adapterci-test/adapterci-train-run-14"), "{log}");
    assert!(log.contains("the Job adapterci-test/adapterci-train-run-14 completed"), "{log}");
    assert_eq!(staged_files(dir.path(), "run-14"), 0, "the staged job files are removed at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_by_a_stopping_adapterd_for_another_job_is_deleted_and_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let (first, mut cluster) =
        launcher_with(dir.path(), Kubelet::Run { drop_first_stream_after: None }, Limits::default());
    let job = tiny_job(dir.path(), 3);
    stop_adapterd_while_it_trains(&first, &mut cluster, "run-15", job.clone(), false).await;
    // the first pod's trainer is done before the second Job's starts: both write to the run's staged folder
    job_ended(&cluster, "adapterci-train-run-15").await;

    // the run's dataset changed meanwhile (another dataset version when it was queued again)
    let mut changed = job;
    changed.dataset =
        (0..12).map(|i| format!("{{\"prompt\": \"q {i}\", \"completion\": \"no\"}}\n")).collect::<String>().into();
    changed.dataset_digest = adapterci_core::Digest::of(&changed.dataset);
    let second = launcher_on(&cluster, dir.path(), Limits::default());
    let output =
        second.launch("run-15", changed, &LaunchResources::default(), Arc::new(Progress::default())).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    let name = "adapterci-train-run-15".to_string();
    assert_eq!(
        drain(&mut cluster.seen),
        vec![Seen::Deleted(name.clone(), "Background".to_string()), Seen::Created(name)],
        "the earlier Job deleted, the run's created again"
    );
    let log = log_text(&second, "run-15").await;
    assert!(
        log.contains(
            "--- a Job adapterci-test/adapterci-train-run-15 of an earlier attempt exists and is not re-attached to: \
             it trains another job: its adapterci.dev/job-digest is sha256:"
        ),
        "{log}"
    );
    assert!(!log.contains("re-attaching"), "{log}");
    assert!(log.contains("training started as the Kubernetes Job adapterci-test/adapterci-train-run-15"), "{log}");
}

#[tokio::test]
async fn a_pod_that_cannot_start_is_reported_not_waited_on_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (launcher, mut events) = launcher(dir.path(), Kubelet::Pending);
    let (messages, mut received) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress { messages: Some(messages), ..Progress::default() });
    let job = tiny_job(dir.path(), 3);
    let launch =
        tokio::spawn(async move { launcher.launch("run-5", job, &LaunchResources::default(), progress).await });
    let mut told = Vec::new();
    while told.len() < 2 {
        told.push(next(&mut received).await.expect("the launch tells why its pod does not start"));
    }
    assert!(told.iter().any(|m| m.contains("not scheduled: Unschedulable: 0/3 nodes are available")), "{told:?}");
    assert!(told.iter().any(|m| m.contains("trainer container trainer is waiting: ImagePullBackOff")), "{told:?}");
    let log = std::fs::read_to_string(dir.path().join("logs/run-5.log")).unwrap();
    assert!(log.contains("pod adapterci-train-run-5-pod: not scheduled: Unschedulable"), "{log}");
    assert!(log.contains("ImagePullBackOff"), "{log}");
    // the run's timeout (or a cancel) ends the wait
    launch.abort();
    assert!(launch.await.unwrap_err().is_cancelled());
    assert_eq!(next(&mut events).await, Some(Seen::Created("adapterci-train-run-5".to_string())));
    assert_eq!(
        next(&mut events).await,
        Some(Seen::Deleted("adapterci-train-run-5".to_string(), "Background".to_string()))
    );
    assert!(received.try_recv().is_err(), "each problem is told once");
}

#[tokio::test]
async fn a_pod_that_cannot_start_within_the_start_timeout_fails_the_attempt_and_its_job_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // a limit of zero: the first look at the stuck pod is already past it
    let limits = Limits { start_timeout: Some(Duration::ZERO), ..Limits::default() };
    let (launcher, mut cluster) = launcher_with(dir.path(), Kubelet::Pending, limits);
    let events = &mut cluster.seen;
    let job = tiny_job(dir.path(), 3);
    let failure = launcher.launch("run-6", job, &LaunchResources::default(), Arc::new(Progress::default())).await;
    match failure {
        Err(TrainingFailure::Backend(message)) => {
            assert!(message.contains("adapterci-train-run-6 could not start within 0 s"), "{message}");
            assert!(message.contains("--kube-start-timeout-secs"), "{message}");
            assert!(message.contains("Unschedulable: 0/3 nodes are available"), "{message}");
            assert!(message.contains("ImagePullBackOff"), "{message}");
        }
        other => panic!("expected a backend failure naming why the pod did not start, got {other:?}"),
    }
    assert_eq!(next(events).await, Some(Seen::Created("adapterci-train-run-6".to_string())));
    assert_eq!(next(events).await, Some(Seen::Deleted("adapterci-train-run-6".to_string(), "Background".to_string())));
    assert_eq!(staged_files(dir.path(), "run-6"), 0, "the staged job files are removed");
}

#[tokio::test]
async fn a_job_of_an_earlier_attempt_is_deleted_before_the_new_one_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let old = OldJob { name: "adapterci-train-run-7", finalizer: None };
    let setup = Setup { old_job: Some(old), ..Setup::from(Kubelet::FailAtOnce("DeadlineExceeded")) };
    let (launcher, mut cluster) = launcher_with(dir.path(), setup, Limits::default());
    let job = tiny_job(dir.path(), 3);
    let failure = launcher.launch("run-7", job, &LaunchResources::default(), Arc::new(Progress::default())).await;
    // the new Job was created, and ended as this kubelet ends every Job
    assert!(matches!(&failure, Err(TrainingFailure::Backend(m)) if m.contains("DeadlineExceeded")), "{failure:?}");
    let name = "adapterci-train-run-7".to_string();
    assert_eq!(next(&mut cluster.seen).await, Some(Seen::Deleted(name.clone(), "Background".to_string())));
    assert_eq!(next(&mut cluster.seen).await, Some(Seen::Created(name)));
    let log = log_text(&launcher, "run-7").await;
    assert!(
        log.contains(
            "a Job adapterci-test/adapterci-train-run-7 of an earlier attempt exists and is not re-attached to: it \
             carries no adapterci.dev/job-digest annotation (an older adapterd created it): deleting it"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn a_job_of_an_earlier_attempt_that_a_finalizer_holds_fails_the_attempt_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = OldJob { name: "adapterci-train-run-8", finalizer: Some("example.com/keep") };
    let setup = Setup { old_job: Some(old), ..Setup::from(Kubelet::Run { drop_first_stream_after: None }) };
    // a limit of zero: the first look after the delete is already past it
    let limits = Limits { old_job_delete_timeout: Duration::ZERO, ..Limits::default() };
    let (launcher, mut cluster) = launcher_with(dir.path(), setup, limits);
    let job = tiny_job(dir.path(), 3);
    let failure = launcher.launch("run-8", job, &LaunchResources::default(), Arc::new(Progress::default())).await;
    let message = match failure {
        Err(TrainingFailure::Backend(message)) => message,
        other => panic!("expected a backend failure naming the Job that stays, got {other:?}"),
    };
    assert!(
        message.contains("the Kubernetes Job adapterci-test/adapterci-train-run-8 of an earlier attempt was still there 0 s after it was deleted"),
        "{message}"
    );
    assert!(message.contains("finalizers example.com/keep"), "{message}");
    assert!(message.contains("deletionTimestamp 2026-01-01T00:00:30Z"), "{message}");
    assert!(message.contains("kubectl -n adapterci-test delete job adapterci-train-run-8"), "{message}");
    let name = "adapterci-train-run-8".to_string();
    assert_eq!(next(&mut cluster.seen).await, Some(Seen::Deleted(name.clone(), "Background".to_string())));
    assert!(cluster.created_names().is_empty(), "the run's Job was never created");
    let log = log_text(&launcher, "run-8").await;
    assert!(log.contains("finalizers example.com/keep"), "the run's log says it too: {log}");
    eventually("the staged job files removed", || async { (staged_files(dir.path(), "run-8") == 0).then_some(()) })
        .await;
}

#[tokio::test]
async fn a_pod_a_quota_refuses_is_reported_once_from_the_jobs_events() {
    let dir = tempfile::tempdir().unwrap();
    let (launcher, cluster) = launcher_with(dir.path(), Kubelet::QuotaExceeded, Limits::default());
    let (progress, mut told) = Progress::told();
    let job = tiny_job(dir.path(), 3);
    let launch = {
        let launcher = launcher.clone();
        tokio::spawn(async move { launcher.launch("run-9", job, &LaunchResources::default(), progress).await })
    };
    let message = next(&mut told).await.expect("the launch tells why its pod is not created");
    assert!(message.starts_with("Job adapterci-train-run-9: FailedCreate: Error creating: pods"), "{message}");
    assert!(message.contains("is forbidden: exceeded quota: gpu-quota"), "{message}");
    // several more looks at the Job's events, each with both refusals (each naming another generated pod)
    let listed = cluster.events_listed();
    eventually("more looks at the events", || async { (cluster.events_listed() >= listed + 3).then_some(()) }).await;
    // the run's timeout (or a cancel) ends the wait
    launch.abort();
    assert!(launch.await.unwrap_err().is_cancelled());
    assert_eq!(drain(&mut told), Vec::<String>::new(), "the same refusal is told once");
    let log = log_text(&launcher, "run-9").await;
    assert_eq!(log.matches("exceeded quota: gpu-quota").count(), 1, "{log}");
    assert!(!log.contains("an earlier Job's refusal"), "another Job's events are not this one's: {log}");
}

#[tokio::test]
async fn a_pod_a_quota_refuses_fails_the_attempt_after_the_start_timeout_and_its_job_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { start_timeout: Some(Duration::ZERO), ..Limits::default() };
    let (launcher, mut cluster) = launcher_with(dir.path(), Kubelet::QuotaExceeded, limits);
    let job = tiny_job(dir.path(), 3);
    let failure = launcher.launch("run-10", job, &LaunchResources::default(), Arc::new(Progress::default())).await;
    let message = match failure {
        Err(TrainingFailure::Backend(message)) => message,
        other => panic!("expected a backend failure naming the refusal, got {other:?}"),
    };
    assert!(
        message.contains(
            "the Kubernetes Job adapterci-train-run-10 could not create its pod within 0 s (--kube-start-timeout-secs)"
        ),
        "{message}"
    );
    assert!(message.contains(&fake_kube::quota_message("adapterci-train-run-10-x7k2p")), "{message}");
    assert!(!message.contains("an earlier Job's refusal"), "{message}");
    let name = "adapterci-train-run-10".to_string();
    assert_eq!(next(&mut cluster.seen).await, Some(Seen::Created(name.clone())));
    assert_eq!(next(&mut cluster.seen).await, Some(Seen::Deleted(name, "Background".to_string())));
    assert_eq!(staged_files(dir.path(), "run-10"), 0, "the staged job files are removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_events_forbidden_is_told_once_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // the pod is created only once the launcher has asked for the Job's events (and been refused)
    let setup = Setup { events_forbidden: true, ..Setup::from(Kubelet::RunOnceEventsAsked) };
    let (launcher, _cluster) = launcher_with(dir.path(), setup, Limits::default());
    let (progress, mut told) = Progress::told();
    let job = tiny_job(dir.path(), 3);
    let output = launcher.launch("run-11", job, &LaunchResources::default(), progress.clone()).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    assert_eq!(progress.steps.load(Ordering::SeqCst), 3);
    // the trainer's own messages come too
    let messages: Vec<String> = drain(&mut told).into_iter().filter(|message| message.contains("events")).collect();
    assert_eq!(messages.len(), 1, "told once: {messages:?}");
    assert!(messages[0].contains("listing the events of the Job adapterci-train-run-11 is forbidden"), "{messages:?}");
    assert!(messages[0].contains("needs `list` on `events`"), "{messages:?}");
    let log = log_text(&launcher, "run-11").await;
    assert_eq!(log.matches("listing the events of the Job").count(), 1, "{log}");
    assert!(log.contains("the Job adapterci-test/adapterci-train-run-11 completed"), "{log}");
}

/// adapterd as a child process, killed when dropped.
struct Adapterd {
    child: KillOnDrop,
    stderr: std::path::PathBuf,
}

impl Adapterd {
    /// What adapterd printed; `panic`s with it (and how it ended) if it is no longer running.
    fn check_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            panic!("adapterd exited with {status}:\n{stderr}");
        }
    }
}

const PIPELINE: &str = "version: v1
name: kube
base:
  model: tiny
dataset:
  location: datasets/kube/train.jsonl
triggers:
  - kind: manual
training:
  lora:
    rank: 2
    alpha: 4
  steps: 3
  batch_size: 2
  max_seq_len: 32
  eval_fraction: 0.2
  max_eval_examples: 1
  max_new_tokens: 2
resources:
  cpus: 1
  memory: 2Gi
  timeout: 10m
publish:
  adapter: kube
";

/// A kubeconfig naming the API server at `server`, with a bearer token, as `kubectl` would have it.
fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster: {{ server: \"{server}\" }}
users:
  - name: adapterd
    user: {{ token: kubeconfig-token }}
contexts:
  - name: fake
    context: {{ cluster: fake, user: adapterd, namespace: {NAMESPACE} }}
current-context: fake
"
    )
}

/// adapterd with `--executor kubernetes`, reaching the API server through the kubeconfig at `kubeconfig` (kube-rs'
/// `Client::try_default`, as outside a cluster), on a free port.
fn start_adapterd_on_kubernetes(dir: &Path, kubeconfig: &Path, template: &Path, model: &Path) -> (Adapterd, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let stderr = dir.join("adapterd.stderr");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--model=tiny={}", model.display()))
        .args(["--no-worker", "--tick-ms=100", "--threads=1", "--executor", "kubernetes"])
        .arg(format!("--kube-job-template={}", template.display()))
        .arg(format!("--kube-namespace={NAMESPACE}"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ADAPTERCI_DATABASE_URL")
        .env_remove("ADAPTERCI_REGISTRY_URL")
        .env_remove("ADAPTERCI_DATASETS_URL")
        .env_remove("ADAPTERCI_KUBE_STAGING_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("adapterd starts");
    (Adapterd { child: KillOnDrop(child), stderr }, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapterd_with_the_kubernetes_executor_trains_a_run_triggered_over_http() {
    use adapterci_api::{ApiClient, ApplyPipelineRequest, RunState};

    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(Kubelet::Run { drop_first_stream_after: None }, &dir.path().join("pod-cache"));
    let api_server = cluster.serve_http().await;
    let config = dir.path().join("kubeconfig.yaml");
    std::fs::write(&config, kubeconfig(&format!("http://{api_server}"))).unwrap();
    let template = dir.path().join("job-template.yaml");
    std::fs::write(&template, TEMPLATE).unwrap();
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).unwrap();
    let (mut adapterd, url) = start_adapterd_on_kubernetes(dir.path(), &config, &template, &model);
    let client = ApiClient::new(&url).unwrap();
    eventually("adapterd to answer", || {
        adapterd.check_running();
        let client = &client;
        async move { client.health().await.ok() }
    })
    .await;
    client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: PIPELINE.to_string() }).await.unwrap();
    client.push_dataset("datasets/kube/train.jsonl", tiny_job::dataset()).await.unwrap();

    let run = client.trigger_pipeline("kube").await.unwrap();
    let done = eventually("the run to end", || {
        adapterd.check_running();
        let (client, id) = (&client, &run.id);
        async move { client.get_run(id).await.ok().filter(|info| info.state.is_terminal()) }
    })
    .await;
    let stderr = std::fs::read_to_string(&adapterd.stderr).unwrap_or_default();
    assert_eq!(done.state, RunState::Succeeded, "{done:#?}\nadapterd:\n{stderr}");
    assert_eq!(done.published.as_ref().map(|published| published.version), Some(1), "{done:#?}");
    let versions: Vec<u64> =
        client.list_adapter_versions("kube").await.unwrap().iter().map(|version| version.version).collect();
    assert_eq!(versions, vec![1], "the adapter the pod trained is published");

    // the Job adapterd created through the API server, with the kubeconfig's credentials
    let names = cluster.created_names();
    assert_eq!(names.len(), 1, "one Job for the run: {names:?}");
    let job = cluster.created(&names[0]).unwrap();
    assert_eq!(job["metadata"]["annotations"]["adapterci.dev/run-id"], run.id.as_str(), "{job:#}");
    let pod = &job["spec"]["template"]["spec"];
    let trainer = &pod["containers"][0];
    assert_eq!(trainer["resources"]["requests"]["cpu"], "1000m", "{job:#}");
    assert_eq!(trainer["resources"]["limits"]["memory"], "2147483648", "{job:#}");
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 600, "the pipeline's timeout: {job:#}");
    assert_eq!(job["spec"]["backoffLimit"], 0, "{job:#}");
    assert_eq!(pod["serviceAccountName"], "adapterci-trainer", "the template's pod: {job:#}");
    let args: Vec<&str> = trainer["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap()).collect();
    assert_eq!(args[0], "train-job", "{args:?}");
    assert!(args.windows(2).any(|pair| pair == ["--run", run.id.as_str()]), "{args:?}");
    assert!(cluster.authorizations().contains("Bearer kubeconfig-token"), "{:?}", cluster.authorizations());

    // the pod's own lines (the real trainer's) are the run's log, served by adapterd's API
    let logs = client.run_logs(&run.id, 0).await.unwrap();
    assert!(
        logs.text.contains(&format!("training started as the Kubernetes Job {NAMESPACE}/{}", names[0])),
        "{}",
        logs.text
    );
    assert!(logs.text.contains("training on") && logs.text.contains("adapter written"), "{}", logs.text);
    assert!(logs.text.contains("completed"), "{}", logs.text);
    adapterd.check_running();
}
