//! The Kubernetes executor against a fake cluster. No Kubernetes API server can run here (none is installable in
//! this environment), so the API server is a mock: a `tower::service_fn` handed to `kube::Client::new`, serving
//! the few endpoints the launcher uses (create, read and delete a Job; list a Job's pods; a pod's log). Its "fake
//! kubelet" is real where it matters: when a Job is created it runs the pod's command, `adapterd train-job` with
//! the arguments of the Job's trainer container, against a real object store (a temp directory through
//! object_store's LocalFileSystem), serves the process's output as the pod's log stream, and reports the Job
//! Complete or Failed from its exit status.
//!
//! The tests wait on the launch itself and on the events the mock records, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapterci_core::launcher::{LaunchResources, TrainingLauncher};
use adapterci_core::training::{ProgressSink, StepProgress, TrainingFailure};
use adapterci_server::kube_launcher::{JobTemplate, KubernetesLauncher, KubernetesSettings};
use adapterci_server::staging::Staging;
use adapterci_testkit::eventually::eventually;
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

#[path = "support/tiny_job.rs"]
mod tiny_job;
use tiny_job::tiny_job;

const NAMESPACE: &str = "adapterci-test";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the fake kubelet does with a created Job.
#[derive(Clone, Copy)]
enum Kubelet {
    /// Runs the trainer container's command; the first log stream of the pod drops after this many lines.
    Run { drop_first_stream_after: Option<usize> },
    /// No pod ever runs: the Job fails at once with this reason (as when its deadline passed while Pending).
    FailAtOnce(&'static str),
    /// The pod runs for ever, its log stream open.
    Hang,
    /// The pod never starts: no node has the GPU it asks for, and its image cannot be pulled.
    Pending,
}

/// What the mock saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Created(String),
    /// The Job's name and the delete's propagation policy.
    Deleted(String, String),
}

/// A pod's log as the kubelet keeps it.
#[derive(Clone, Default)]
struct PodLog {
    lines: Vec<String>,
    closed: bool,
}

struct FakeJob {
    job: Value,
    pod: Option<(String, watch::Receiver<PodLog>)>,
    log_streams: usize,
}

struct Cluster {
    kubelet: Kubelet,
    staging_cache: std::path::PathBuf,
    jobs: Arc<Mutex<HashMap<String, FakeJob>>>,
    seen: mpsc::UnboundedSender<Seen>,
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    let mut response = Response::new(Full::new(bytes).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

fn not_found(name: &str) -> Response<Body> {
    full(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": format!("jobs.batch \"{name}\" not found")}),
    )
}

impl Cluster {
    async fn serve(self: Arc<Self>, request: Request<kube::client::Body>) -> Result<Response<Body>, Infallible> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let body = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
        let jobs_path = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
        let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        let response = if method == Method::POST && path == jobs_path {
            self.create(serde_json::from_slice(&body).unwrap())
        } else if let Some(name) = path.strip_prefix(&format!("{jobs_path}/")) {
            match method {
                Method::GET => self.get(name),
                Method::DELETE => self.delete(name, &body),
                _ => full(StatusCode::METHOD_NOT_ALLOWED, json!({})),
            }
        } else if method == Method::GET && path == pods_path {
            self.list_pods(&query)
        } else if let Some(pod) = path.strip_prefix(&format!("{pods_path}/")).and_then(|p| p.strip_suffix("/log")) {
            self.log(pod, &query)
        } else {
            full(StatusCode::NOT_FOUND, json!({"kind": "Status", "code": 404, "message": path}))
        };
        Ok(response)
    }

    fn create(&self, mut job: Value) -> Response<Body> {
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        job["metadata"]["namespace"] = json!(NAMESPACE);
        job["metadata"]["uid"] = json!(format!("uid-{name}"));
        job["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        job["status"] = json!({"active": 1});
        let mut fake = FakeJob { job: job.clone(), pod: None, log_streams: 0 };
        match self.kubelet {
            Kubelet::Run { .. } => fake.pod = Some(self.run_pod(&name, &job)),
            Kubelet::FailAtOnce(reason) => {
                // the message names the deadline the Job was created with, as the test checks it
                let deadline = &job["spec"]["activeDeadlineSeconds"];
                fake.job["status"] = json!({"failed": 0, "conditions": [{
                    "type": "Failed", "status": "True", "reason": reason,
                    "message": format!("Job was active longer than specified deadline ({deadline} s)")}]});
            }
            Kubelet::Hang | Kubelet::Pending => {
                let (sender, receiver) = watch::channel(PodLog::default());
                // kept for ever: the stream never closes
                std::mem::forget(sender);
                fake.pod = Some((format!("{name}-pod"), receiver));
            }
        }
        self.jobs.lock().unwrap().insert(name.clone(), fake);
        let _ = self.seen.send(Seen::Created(name));
        full(StatusCode::CREATED, job)
    }

    /// Starts the trainer container's command, its stdout and stderr as the pod's log; when it ends, the Job's
    /// status follows from its exit status.
    fn run_pod(&self, name: &str, job: &Value) -> (String, watch::Receiver<PodLog>) {
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> =
            container["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap().to_string()).collect();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_adapterd"));
        command.args(&args).env("ADAPTERCI_BASE_CACHE", &self.staging_cache);
        for var in container["env"].as_array().into_iter().flatten() {
            if let Some(value) = var["value"].as_str() {
                command.env(var["name"].as_str().unwrap(), value);
            }
        }
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (sender, receiver) = watch::channel(PodLog::default());
        let sender = Arc::new(sender);
        let readers: Vec<_> = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .map(|output| {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(output).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sender.send_modify(|log| log.lines.push(line));
                }
            })
        })
        .collect();
        let jobs = self.jobs.clone();
        let pod_name = format!("{name}-pod");
        let name = name.to_string();
        tokio::spawn(async move {
            for reader in readers {
                let _ = reader.await;
            }
            let status = child.wait().await.unwrap();
            sender.send_modify(|log| log.closed = true);
            let mut jobs = jobs.lock().unwrap();
            let Some(fake) = jobs.get_mut(&name) else { return };
            fake.job["status"] = if status.success() {
                json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
            } else {
                json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                       "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
            };
        });
        (pod_name, receiver)
    }

    fn get(&self, name: &str) -> Response<Body> {
        match self.jobs.lock().unwrap().get(name) {
            Some(fake) => full(StatusCode::OK, fake.job.clone()),
            None => not_found(name),
        }
    }

    fn delete(&self, name: &str, body: &[u8]) -> Response<Body> {
        let policy = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|body| body["propagationPolicy"].as_str().map(str::to_string))
            .unwrap_or_default();
        let removed = self.jobs.lock().unwrap().remove(name);
        let _ = self.seen.send(Seen::Deleted(name.to_string(), policy));
        match removed {
            Some(fake) => full(StatusCode::OK, fake.job),
            None => not_found(name),
        }
    }

    fn list_pods(&self, query: &str) -> Response<Body> {
        let jobs = self.jobs.lock().unwrap();
        let items: Vec<Value> = jobs
            .iter()
            .filter(|(name, _)| query.contains(&format!("job-name%3D{name}")))
            .filter_map(|(job_name, fake)| {
                let (pod_name, log) = fake.pod.as_ref()?;
                if let Kubelet::Pending = self.kubelet {
                    return Some(pending_pod(pod_name, job_name));
                }
                let state = if log.borrow().closed {
                    json!({"terminated": {"exitCode": 0}})
                } else {
                    json!({"running": {"startedAt": "2026-01-01T00:00:01Z"}})
                };
                Some(json!({
                    "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": {"job-name": job_name},
                                 "creationTimestamp": "2026-01-01T00:00:01Z"},
                    "status": {"phase": "Running", "containerStatuses": [{
                        "name": "trainer", "image": "adapterd:test", "imageID": "", "ready": true,
                        "restartCount": 0, "state": state}]}
                }))
            })
            .collect();
        full(StatusCode::OK, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}))
    }

    /// The pod's log from its start (or from `sinceTime`), each line with its timestamp when asked; with `follow`,
    /// open until the container ends (or, once, dropped early).
    fn log(&self, pod: &str, query: &str) -> Response<Body> {
        let follow = query.contains("follow=true");
        let timestamps = query.contains("timestamps=true");
        let since: Option<Timestamp> = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("sinceTime="))
            .map(|since| since.replace("%3A", ":").parse().unwrap());
        let mut jobs = self.jobs.lock().unwrap();
        let Some(fake) = jobs.values_mut().find(|fake| fake.pod.as_ref().is_some_and(|(name, _)| name == pod)) else {
            return not_found(pod);
        };
        fake.log_streams += 1;
        let drop_after = match self.kubelet {
            Kubelet::Run { drop_first_stream_after } if fake.log_streams == 1 => drop_first_stream_after,
            _ => None,
        };
        let receiver = fake.pod.as_ref().map(|(_, log)| log.clone()).unwrap();
        let start = (receiver, 0usize, 0usize);
        let lines = futures::stream::unfold(start, move |(mut receiver, mut next, served)| async move {
            if drop_after.is_some_and(|after| served >= after) {
                return None;
            }
            loop {
                let log = receiver.wait_for(|log| log.lines.len() > next || log.closed || !follow).await.ok()?.clone();
                let line = log.lines.get(next)?;
                let stamp = line_timestamp(next);
                next += 1;
                if since.is_some_and(|since| stamp < since) {
                    continue;
                }
                let line = if timestamps { format!("{stamp} {line}\n") } else { format!("{line}\n") };
                let frame = http_body::Frame::data(Bytes::from(line));
                return Some((Ok::<_, std::io::Error>(frame), (receiver, next, served + 1)));
            }
        });
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(lines.boxed())));
        response.headers_mut().insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        response
    }
}

/// The kubelet's timestamp of a pod's log line `index`: two lines share each, four to a second, so that a stream
/// opened again from a second repeats lines, some of them at the very timestamp it stopped at.
fn line_timestamp(index: usize) -> Timestamp {
    let tick = index as i64 / 2;
    Timestamp::new(1_767_225_600 + tick / 4, (tick % 4) as i32 * 250_000_000).unwrap()
}

fn pending_pod(pod_name: &str, job_name: &str) -> Value {
    json!({
        "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": {"job-name": job_name}},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}],
            "containerStatuses": [{"name": "trainer", "image": "adapterd:test", "imageID": "", "ready": false,
                                   "restartCount": 0,
                                   "state": {"waiting": {"reason": "ImagePullBackOff",
                                                         "message": "Back-off pulling image \"adapterd:test\""}}}]
        }
    })
}

/// The fake cluster's client, with what it saw.
fn fake_cluster(kubelet: Kubelet, cache: &Path) -> (kube::Client, mpsc::UnboundedReceiver<Seen>) {
    let (seen, events) = mpsc::unbounded_channel();
    let cluster = Arc::new(Cluster { kubelet, staging_cache: cache.to_path_buf(), jobs: Arc::default(), seen });
    let service = tower::service_fn(move |request| cluster.clone().serve(request));
    (kube::Client::new(service, NAMESPACE), events)
}

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

fn launcher(dir: &Path, kubelet: Kubelet) -> (KubernetesLauncher, mpsc::UnboundedReceiver<Seen>) {
    launcher_with(dir, kubelet, None)
}

fn launcher_with(
    dir: &Path,
    kubelet: Kubelet,
    start_timeout: Option<Duration>,
) -> (KubernetesLauncher, mpsc::UnboundedReceiver<Seen>) {
    let (client, events) = fake_cluster(kubelet, &dir.join("pod-cache"));
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
        start_timeout,
    };
    (KubernetesLauncher::new(client, settings), events)
}

#[derive(Default)]
struct Progress {
    steps: AtomicUsize,
    /// Where the messages go, when a test waits for them.
    messages: Option<mpsc::UnboundedSender<String>>,
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
    let (launcher, mut events) = launcher_with(dir.path(), Kubelet::Pending, Some(Duration::ZERO));
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
    assert_eq!(next(&mut events).await, Some(Seen::Created("adapterci-train-run-6".to_string())));
    assert_eq!(
        next(&mut events).await,
        Some(Seen::Deleted("adapterci-train-run-6".to_string(), "Background".to_string()))
    );
    assert_eq!(staged_files(dir.path(), "run-6"), 0, "the staged job files are removed");
}
