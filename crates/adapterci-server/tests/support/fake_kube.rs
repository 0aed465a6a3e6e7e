//! A fake Kubernetes cluster for the Kubernetes executor's tests. No Kubernetes API server can run here (none is
//! installable in this environment), so the API server is a mock: a `tower::service_fn` serving the few endpoints
//! the launcher uses (create, read and delete a Job; list a Job's pods and events; a pod's log), handed to
//! `kube::Client::new` in-process or served over real HTTP on 127.0.0.1 (for an adapterd started with a
//! kubeconfig). Its "fake kubelet" is real where it matters: when a Job is created it runs the pod's command,
//! `adapterd train-job` with the arguments of the Job's trainer container, against a real object store (a temp
//! directory through object_store's LocalFileSystem), serves the process's output as the pod's log stream, and
//! reports the Job Complete or Failed from its exit status. Its "Job controller" honours the one pod failure policy
//! adapterd sets: a disrupted pod is replaced only when the Job says to ignore disruptions.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

pub const NAMESPACE: &str = "adapterci-test";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the fake kubelet does with a created Job.
#[derive(Clone, Copy)]
pub enum Kubelet {
    /// Runs the trainer container's command; the first log stream of the pod drops after this many lines.
    Run { drop_first_stream_after: Option<usize> },
    /// The first pod prints a few lines and is disrupted (preempted: phase Failed, a `DisruptionTarget` condition);
    /// once its log was read, a Job whose pod failure policy ignores disruptions gets a second pod, as `Run`, and
    /// any other Job fails (`BackoffLimitExceeded`), as the Job controller does with `backoffLimit` 0.
    DisruptFirstPod,
    /// No pod until the launcher has asked for the Job's events, then as `Run` (a pod created late).
    RunOnceEventsAsked,
    /// No pod ever runs: the Job fails at once with this reason (as when its deadline passed while Pending).
    FailAtOnce(&'static str),
    /// The pod runs for ever, its log stream open.
    Hang,
    /// The pod never starts: no node has the GPU it asks for, and its image cannot be pulled.
    Pending,
    /// The pod is never created: a ResourceQuota refuses it, which the Job controller tells in `FailedCreate`
    /// events on the Job (one per try, each naming the pod it generated); no Job condition says so.
    QuotaExceeded,
}

/// A Job of the run's name left by an earlier attempt, there before the test starts.
#[derive(Clone, Copy)]
pub struct OldJob {
    pub name: &'static str,
    /// A finalizer nothing removes: deleting the Job only marks it (`deletionTimestamp`), and it stays.
    pub finalizer: Option<&'static str>,
}

/// How the fake cluster behaves.
#[derive(Clone, Copy)]
pub struct Setup {
    pub kubelet: Kubelet,
    /// Listing events is refused (403), as with a Role from before it allowed `list` on `events`.
    pub events_forbidden: bool,
    pub old_job: Option<OldJob>,
}

impl From<Kubelet> for Setup {
    fn from(kubelet: Kubelet) -> Setup {
        Setup { kubelet, events_forbidden: false, old_job: None }
    }
}

/// What the mock saw, in order.
#[derive(Debug, PartialEq)]
pub enum Seen {
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
    /// A pod disrupted before `pod` was created (`Kubelet::DisruptFirstPod`).
    disrupted: Option<(String, watch::Receiver<PodLog>)>,
    log_streams: usize,
}

struct Cluster {
    setup: Setup,
    staging_cache: PathBuf,
    jobs: Arc<Mutex<HashMap<String, FakeJob>>>,
    /// Every Job created, as it was posted (kept after it is deleted).
    created: Mutex<HashMap<String, Value>>,
    /// The `Authorization` headers of the requests.
    authorizations: Mutex<BTreeSet<String>>,
    /// How many times the events were listed.
    events_listed: std::sync::atomic::AtomicUsize,
    seen: mpsc::UnboundedSender<Seen>,
}

/// A fake cluster, with what it saw.
pub struct FakeCluster {
    cluster: Arc<Cluster>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    let mut response = Response::new(Full::new(bytes).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason,
               "code": code.as_u16(), "message": message}),
    )
}

fn not_found(name: &str) -> Response<Body> {
    status(StatusCode::NOT_FOUND, "NotFound", format!("jobs.batch \"{name}\" not found"))
}

impl Cluster {
    async fn serve<B: http_body::Body>(self: Arc<Self>, request: Request<B>) -> Result<Response<Body>, Infallible> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        if let Some(authorization) = request.headers().get(http::header::AUTHORIZATION) {
            let authorization = String::from_utf8_lossy(authorization.as_bytes()).to_string();
            self.authorizations.lock().unwrap().insert(authorization);
        }
        let body = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
        let jobs_path = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
        let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        let events_path = format!("/api/v1/namespaces/{NAMESPACE}/events");
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
        } else if method == Method::GET && path == events_path {
            self.list_events(&query)
        } else {
            full(StatusCode::NOT_FOUND, json!({"kind": "Status", "code": 404, "message": path}))
        };
        Ok(response)
    }

    fn create(&self, mut job: Value) -> Response<Body> {
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        if self.jobs.lock().unwrap().contains_key(&name) {
            return status(StatusCode::CONFLICT, "AlreadyExists", format!("jobs.batch \"{name}\" already exists"));
        }
        self.created.lock().unwrap().insert(name.clone(), job.clone());
        job["metadata"]["namespace"] = json!(NAMESPACE);
        job["metadata"]["uid"] = json!(format!("uid-{name}"));
        job["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        job["status"] = json!({"active": 1});
        let mut fake = FakeJob { job: job.clone(), pod: None, disrupted: None, log_streams: 0 };
        match self.setup.kubelet {
            Kubelet::Run { .. } => fake.pod = Some(self.run_pod(&name, &job)),
            Kubelet::DisruptFirstPod => {
                let lines = ["first pod: starting", "first pod: fetching the base model"];
                let log = PodLog { lines: lines.map(str::to_string).to_vec(), closed: true };
                fake.disrupted = Some((format!("{name}-disrupted"), watch::channel(log).1));
            }
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
            Kubelet::RunOnceEventsAsked | Kubelet::QuotaExceeded => {}
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

    /// Deletes the Job, unless a finalizer holds it: then it is only marked as being deleted, as the API server does.
    fn delete(&self, name: &str, body: &[u8]) -> Response<Body> {
        let policy = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|body| body["propagationPolicy"].as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = self.seen.send(Seen::Deleted(name.to_string(), policy));
        let mut jobs = self.jobs.lock().unwrap();
        let held = jobs.get(name).is_some_and(|fake| fake.job["metadata"]["finalizers"].as_array().is_some());
        if held {
            let fake = jobs.get_mut(name).unwrap();
            fake.job["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:30Z");
            return full(StatusCode::OK, fake.job.clone());
        }
        match jobs.remove(name) {
            Some(fake) => full(StatusCode::OK, fake.job),
            None => not_found(name),
        }
    }

    fn list_pods(&self, query: &str) -> Response<Body> {
        let jobs = self.jobs.lock().unwrap();
        let items: Vec<Value> = jobs
            .iter()
            .filter(|(name, _)| query.contains(&format!("job-name%3D{name}")))
            .flat_map(|(job_name, fake)| {
                let disrupted = fake.disrupted.as_ref().map(|(pod_name, _)| disrupted_pod(pod_name, job_name));
                disrupted.into_iter().chain(self.pod_of(job_name, fake))
            })
            .collect();
        full(StatusCode::OK, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}))
    }

    /// The pod of `fake` as the API server lists it, if it has one.
    fn pod_of(&self, job_name: &str, fake: &FakeJob) -> Option<Value> {
        let (pod_name, log) = fake.pod.as_ref()?;
        if let Kubelet::Pending = self.setup.kubelet {
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
    }

    /// The events of the Job the field selector names. A Job waiting for the launcher to ask gets its pod now.
    fn list_events(&self, query: &str) -> Response<Body> {
        self.events_listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut jobs = self.jobs.lock().unwrap();
        let names: Vec<String> = jobs
            .keys()
            .filter(|name| {
                query.contains("involvedObject.kind%3DJob") && query.contains(&format!("involvedObject.name%3D{name}"))
            })
            .cloned()
            .collect();
        let mut items = Vec::new();
        for name in names {
            let fake = jobs.get_mut(&name).unwrap();
            if let (Kubelet::RunOnceEventsAsked, None) = (self.setup.kubelet, &fake.pod) {
                let job = fake.job.clone();
                fake.pod = Some(self.run_pod(&name, &job));
            }
            if let Kubelet::QuotaExceeded = self.setup.kubelet {
                items.extend(quota_events(&name));
            }
        }
        if self.setup.events_forbidden {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "events is forbidden: User \"system:serviceaccount:{NAMESPACE}:adapterd\" cannot list resource \
                     \"events\" in API group \"\" in the namespace \"{NAMESPACE}\""
                ),
            );
        }
        full(StatusCode::OK, json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}))
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
        let named =
            |pod_log: &Option<(String, watch::Receiver<PodLog>)>| pod_log.as_ref().is_some_and(|(name, _)| name == pod);
        let Some((name, fake)) = jobs.iter_mut().find(|(_, fake)| named(&fake.pod) || named(&fake.disrupted)) else {
            return not_found(pod);
        };
        if named(&fake.disrupted) {
            // the disrupted pod's log is all there: the Job controller acts on the pod's failure now
            let receiver = fake.disrupted.as_ref().map(|(_, log)| log.clone()).unwrap();
            if fake.pod.is_none() && fake.job["status"].get("conditions").is_none() {
                let job = fake.job.clone();
                if ignores_disruptions(&job) {
                    fake.pod = Some(self.run_pod(name, &job));
                } else {
                    fake.job["status"] = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                        "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
                }
            }
            return log_response(receiver, follow, timestamps, since, None);
        }
        fake.log_streams += 1;
        let drop_after = match self.setup.kubelet {
            Kubelet::Run { drop_first_stream_after } if fake.log_streams == 1 => drop_first_stream_after,
            _ => None,
        };
        let receiver = fake.pod.as_ref().map(|(_, log)| log.clone()).unwrap();
        log_response(receiver, follow, timestamps, since, drop_after)
    }
}

/// A pod's log from its start (or from `since`), each line with its timestamp when asked; with `follow`, open until
/// the container ends (or until `drop_after` lines were served).
fn log_response(
    receiver: watch::Receiver<PodLog>,
    follow: bool,
    timestamps: bool,
    since: Option<Timestamp>,
    drop_after: Option<usize>,
) -> Response<Body> {
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

/// The kubelet's timestamp of a pod's log line `index`: two lines share each, four to a second, so that a stream
/// opened again from a second repeats lines, some of them at the very timestamp it stopped at.
fn line_timestamp(index: usize) -> Timestamp {
    let tick = index as i64 / 2;
    Timestamp::new(1_767_225_600 + tick / 4, (tick % 4) as i32 * 250_000_000).unwrap()
}

/// Whether the Job's pod failure policy ignores a pod with the `DisruptionTarget` condition, as adapterd's does.
fn ignores_disruptions(job: &Value) -> bool {
    job["spec"]["podFailurePolicy"]["rules"].as_array().into_iter().flatten().any(|rule| {
        rule["action"] == "Ignore"
            && rule["onPodConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|pattern| pattern["type"] == "DisruptionTarget" && pattern["status"] == "True")
    })
}

/// A pod the scheduler preempted: its trainer killed, the pod failed, with the condition saying why.
fn disrupted_pod(pod_name: &str, job_name: &str) -> Value {
    json!({
        "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": {"job-name": job_name},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Failed",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                            "message": "default-scheduler: preempting to accommodate a higher priority pod"}],
            "containerStatuses": [{"name": "trainer", "image": "adapterd:test", "imageID": "", "ready": false,
                                   "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}]
        }
    })
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

/// The quota refusal for the pod the Job controller generated as `pod`.
pub fn quota_message(pod: &str) -> String {
    format!(
        "Error creating: pods \"{pod}\" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, \
         used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    )
}

/// The events of Job `name` refused by a quota: two tries, each naming the pod it generated, and an event of an
/// earlier Job of the same name (another uid) that is not this one's.
fn quota_events(name: &str) -> Vec<Value> {
    let event = |uid: String, at: &str, reason: &str, message: String| {
        json!({
            "metadata": {"name": format!("{name}.{at}"), "namespace": NAMESPACE},
            "involvedObject": {"kind": "Job", "namespace": NAMESPACE, "name": name, "uid": uid,
                               "apiVersion": "batch/v1"},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": at, "lastTimestamp": at, "source": {"component": "job-controller"}
        })
    };
    let uid = format!("uid-{name}");
    vec![
        event(uid.clone(), "2026-01-01T00:00:01Z", "FailedCreate", quota_message(&format!("{name}-x7k2p"))),
        event(uid, "2026-01-01T00:00:11Z", "FailedCreate", quota_message(&format!("{name}-q9zvw"))),
        event(
            "uid-of-an-earlier-job".to_string(),
            "2025-12-31T00:00:00Z",
            "FailedCreate",
            "Error creating: an earlier Job's refusal".to_string(),
        ),
    ]
}

impl FakeCluster {
    /// A fake cluster whose kubelet caches base models in `cache`.
    pub fn new(setup: impl Into<Setup>, cache: &Path) -> FakeCluster {
        let setup = setup.into();
        let (seen, receiver) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            setup,
            staging_cache: cache.to_path_buf(),
            jobs: Arc::default(),
            created: Mutex::default(),
            authorizations: Mutex::default(),
            events_listed: Default::default(),
            seen,
        });
        if let Some(old) = setup.old_job {
            let mut job = json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": old.name, "namespace": NAMESPACE, "uid": "uid-of-an-earlier-job",
                             "creationTimestamp": "2025-12-31T00:00:00Z"},
                "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "adapterd:old"}]}}},
                "status": {"active": 1}
            });
            if let Some(finalizer) = old.finalizer {
                job["metadata"]["finalizers"] = json!([finalizer]);
            }
            let fake = FakeJob { job, pod: None, disrupted: None, log_streams: 0 };
            cluster.jobs.lock().unwrap().insert(old.name.to_string(), fake);
        }
        FakeCluster { cluster, seen: receiver }
    }

    /// A client of the cluster, in-process.
    pub fn client(&self) -> kube::Client {
        let cluster = self.cluster.clone();
        let service = tower::service_fn(move |request| cluster.clone().serve(request));
        kube::Client::new(service, NAMESPACE)
    }

    /// Serves the cluster's API over HTTP on 127.0.0.1, on a free port, until the test's runtime ends.
    pub async fn serve_http(&self) -> SocketAddr {
        let cluster = self.cluster.clone();
        let service = tower::service_fn(move |request: Request<axum::body::Body>| cluster.clone().serve(request));
        let router = axum::Router::new().fallback_service(service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// The Job `name` as it was created.
    pub fn created(&self, name: &str) -> Option<Value> {
        self.cluster.created.lock().unwrap().get(name).cloned()
    }

    /// The status of the Job `name` as the API server has it now, if the Job is there.
    pub fn job_status(&self, name: &str) -> Option<Value> {
        self.cluster.jobs.lock().unwrap().get(name).map(|fake| fake.job["status"].clone())
    }

    /// The names of the Jobs created.
    pub fn created_names(&self) -> Vec<String> {
        self.cluster.created.lock().unwrap().keys().cloned().collect()
    }

    /// How many times the events were listed.
    pub fn events_listed(&self) -> usize {
        self.cluster.events_listed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The `Authorization` headers the API server was sent.
    pub fn authorizations(&self) -> BTreeSet<String> {
        self.cluster.authorizations.lock().unwrap().clone()
    }
}
