//! Following a run's Job to its end: its status is read every poll interval; its pod's log is streamed
//! (`follow=true`, with timestamps) while the trainer container runs, progress lines going to the run's progress
//! and every other line to the run's log, and streamed again from the second of the last line handled (skipping
//! what was handled, by timestamp) when the stream drops while the Job still runs. A pod that cannot start
//! (unschedulable, an image that cannot be pulled, a missing secret) is reported in the run's log and messages, once
//! per distinct reason, while the Job waits for it; so is a pod the Job controller cannot create (a ResourceQuota
//! refuses it), told by the Job's `FailedCreate` events while no pod exists.
//!
//! A Job may have a second pod: one the control plane disrupted (preempted, evicted by a node drain, its node shut
//! down: its `DisruptionTarget` condition) fails without failing the Job (the Job's pod failure policy ignores it),
//! and the Job controller creates another. The disruption is told once; the rest of the first pod's log is read,
//! then the new pod's is followed from its start (the first pod's lines, handled already, are not read again), and
//! the start timeout counts from the new pod's own problems.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use adapterci_core::training::{ProgressSink, TrainingFailure};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};

use super::job::{DISRUPTION_CONDITION, JOB_NAME_LABEL};
use crate::job_files::{append_log, forward_line};

/// Consecutive failed reads of the Job after which the attempt fails (the API server is gone).
const MAX_API_ERRORS: u32 = 30;

/// How a Job ended, by its status conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum JobEnd {
    Complete,
    /// `reason` as Kubernetes gives it (`DeadlineExceeded`, `BackoffLimitExceeded`, …).
    Failed {
        reason: String,
        message: String,
    },
}

pub(super) struct Follower<'a> {
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
    /// Where the Job controller tells why it could not create the pod.
    pub events: Api<Event>,
    pub name: &'a str,
    pub container: &'a str,
    pub log: &'a Path,
    pub poll_interval: Duration,
    /// How long the pod may keep failing to start before the attempt fails; `None`: no limit here.
    pub start_timeout: Option<Duration>,
}

/// Where the trainer container of the Job's newest pod is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trainer {
    /// No pod yet, or its trainer has not started (its log cannot be read yet).
    NotStarted,
    Running,
    Terminated,
}

/// What the follower knows between two looks at the Job.
#[derive(Default)]
struct Followed {
    /// The pod whose log is read.
    pod: Option<String>,
    /// The timestamp of the last line of that pod's log handled, and how many handled lines had it: a stream
    /// opened again starts at that second, and what was handled is skipped.
    last: Option<(Timestamp, usize)>,
    /// Whether the pod's trainer was seen running or ended (its log can be read).
    trainer_started: bool,
    /// Whether the log of the pod's ended trainer was read to its end.
    read_to_end: bool,
    /// What was told already (each problem is told once).
    notes: HashSet<String>,
    /// Failed reads of the Job in a row.
    api_errors: u32,
    /// Since when the pod has been failing to start (or to be created), without a break.
    stuck_since: Option<tokio::time::Instant>,
    /// Whether listing the Job's events was refused (a Role without `list` on `events`): not asked again.
    events_forbidden: bool,
}

impl Followed {
    /// What is known when the Job's newest pod is `pod`, another than the one followed so far: nothing of its log
    /// yet. A pod the Job controller creates after refusals to create one (no pod before) goes on from them, without a
    /// break in the start timeout; a pod that replaces another (a disrupted one) has the start timeout to itself.
    fn next_pod(self, pod: Option<String>) -> Followed {
        let stuck_since = if self.pod.is_none() { self.stuck_since } else { None };
        Followed {
            pod,
            notes: self.notes,
            api_errors: self.api_errors,
            stuck_since,
            events_forbidden: self.events_forbidden,
            ..Followed::default()
        }
    }
}

impl Follower<'_> {
    /// Follows the Job until it completes or fails.
    pub(super) async fn follow(&self, progress: &dyn ProgressSink) -> Result<JobEnd, TrainingFailure> {
        let mut followed = Followed::default();
        loop {
            let Some(job) = self.read_job(&mut followed, progress).await? else {
                tokio::time::sleep(self.poll_interval).await;
                continue;
            };
            let pod = self.newest_pod(&mut followed.notes, progress).await;
            let pod_name = pod.as_ref().and_then(|pod| pod.metadata.name.clone());
            if pod_name.is_some() && pod_name != followed.pod {
                if let (Some(previous), true, false) = (&followed.pod, followed.trainer_started, followed.read_to_end) {
                    // the rest of the replaced pod's log, from where it was left
                    let previous = previous.clone();
                    self.read_log(&previous, false, &mut followed, progress).await;
                }
                if let (Some(previous), Some(next)) = (&followed.pod, &pod_name) {
                    let text = format!("pod {previous} was replaced by pod {next}: following its log");
                    self.note(&mut followed.notes, progress, &text).await;
                }
                followed = followed.next_pod(pod_name.clone());
            }
            if let Some(disruption) = pod.as_ref().and_then(disruption) {
                let pod_name = pod_name.as_deref().unwrap_or("?");
                let text = format!(
                    "pod {pod_name} was disrupted ({disruption}): the Job controller replaces it (podFailurePolicy), \
                     and the run goes on in the new pod"
                );
                self.note(&mut followed.notes, progress, &text).await;
            }
            let trainer = pod.as_ref().map_or(Trainer::NotStarted, |pod| self.trainer(pod));
            if trainer != Trainer::NotStarted {
                // the pod started: what kept it from starting is over
                followed.trainer_started = true;
                followed.stuck_since = None;
            }
            if let Some(end) = job_end(&job) {
                // what the pod printed since the last read (its trainer ended before the Job's status said so)
                if let (Some(pod_name), false) = (&pod_name, trainer == Trainer::NotStarted || followed.read_to_end) {
                    self.read_log(pod_name, false, &mut followed, progress).await;
                }
                return Ok(end);
            }
            match (&pod, &pod_name, trainer) {
                (Some(_), Some(pod_name), Trainer::Running) => {
                    let before = followed.last;
                    self.read_log(pod_name, true, &mut followed, progress).await;
                    if followed.last == before {
                        // the stream ended with nothing new (the trainer is ending): wait for the next look
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                (Some(_), Some(pod_name), Trainer::Terminated) => {
                    if !followed.read_to_end {
                        followed.read_to_end = self.read_log(pod_name, false, &mut followed, progress).await;
                    }
                    tokio::time::sleep(self.poll_interval).await;
                }
                (Some(pod), _, _) => {
                    let problems = waiting_problems(pod, self.container);
                    let pod_name = pod_name.as_deref().unwrap_or("?");
                    for problem in &problems {
                        self.note(&mut followed.notes, progress, &format!("pod {pod_name}: {problem}")).await;
                    }
                    let what = || format!("the pod {pod_name} of the Kubernetes Job {} could not start", self.name);
                    if let Some(failure) = self.past_start_timeout(&mut followed, Some(&problems), what) {
                        return Err(failure);
                    }
                    tokio::time::sleep(self.poll_interval).await;
                }
                (None, _, _) => {
                    let uid = job.metadata.uid.as_deref();
                    let problems = self.creation_problems(uid, &mut followed, progress).await;
                    let what = || format!("the Kubernetes Job {} could not create its pod", self.name);
                    if let Some(failure) = self.past_start_timeout(&mut followed, problems.as_deref(), what) {
                        return Err(failure);
                    }
                    tokio::time::sleep(self.poll_interval).await;
                }
            }
        }
    }

    /// Keeps the time since when the pod has failed to start (or be created) without a break, by the `problems`
    /// seen now (`None`: not known this time, which neither starts nor breaks it); the attempt's failure once that
    /// lasted the start timeout.
    fn past_start_timeout(
        &self,
        followed: &mut Followed,
        problems: Option<&[String]>,
        what: impl FnOnce() -> String,
    ) -> Option<TrainingFailure> {
        let problems = problems?;
        followed.stuck_since = match problems.is_empty() {
            true => None,
            false => Some(followed.stuck_since.unwrap_or_else(tokio::time::Instant::now)),
        };
        let (since, limit) = (followed.stuck_since?, self.start_timeout?);
        (since.elapsed() >= limit).then(|| {
            TrainingFailure::Backend(format!(
                "{} within {} s (--kube-start-timeout-secs): {} (log: {})",
                what(),
                limit.as_secs(),
                problems.join("; "),
                self.log.display()
            ))
        })
    }

    /// Why the Job controller could not create the Job's pod (no pod exists): the Job's `FailedCreate` events, each
    /// distinct one told once; `None` when the events could not be read (listing them forbidden is told once, and
    /// not asked again).
    async fn creation_problems(
        &self,
        uid: Option<&str>,
        followed: &mut Followed,
        progress: &dyn ProgressSink,
    ) -> Option<Vec<String>> {
        if followed.events_forbidden {
            return None;
        }
        let selector =
            ListParams::default().fields(&format!("involvedObject.kind=Job,involvedObject.name={}", self.name));
        let events = match self.events.list(&selector).await {
            Ok(events) => events.items,
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                followed.events_forbidden = true;
                let text = format!(
                    "listing the events of the Job {} is forbidden (adapterd's Role needs `list` on `events`): why \
                     its pod is not created cannot be told: {}",
                    self.name, status.message
                );
                self.note(&mut followed.notes, progress, &text).await;
                return None;
            }
            Err(error) => {
                let text = format!("listing the events of the Job {}: {error}", self.name);
                self.note(&mut followed.notes, progress, &text).await;
                return None;
            }
        };
        let mut problems = Vec::new();
        for (key, text) in failed_creates(&events, uid) {
            self.note_once(&mut followed.notes, progress, &key, &format!("Job {}: {text}", self.name)).await;
            problems.push(text);
        }
        Some(problems)
    }

    /// The Job as the API server has it now; `None` after a failed read (told once), an error once too many
    /// failed in a row or when the Job is gone.
    async fn read_job(
        &self,
        followed: &mut Followed,
        progress: &dyn ProgressSink,
    ) -> Result<Option<Job>, TrainingFailure> {
        match self.jobs.get_opt(self.name).await {
            Ok(Some(job)) => {
                followed.api_errors = 0;
                Ok(Some(job))
            }
            Ok(None) => Err(TrainingFailure::Backend(format!(
                "the Kubernetes Job {} was deleted before it finished (log: {})",
                self.name,
                self.log.display()
            ))),
            Err(error) => {
                followed.api_errors += 1;
                let text = format!("reading the Kubernetes Job {}: {error}", self.name);
                if followed.api_errors >= MAX_API_ERRORS {
                    return Err(TrainingFailure::Backend(format!("{text} (log: {})", self.log.display())));
                }
                self.note(&mut followed.notes, progress, &text).await;
                Ok(None)
            }
        }
    }

    /// The Job's most recent pod ([`newest`]).
    async fn newest_pod(&self, notes: &mut HashSet<String>, progress: &dyn ProgressSink) -> Option<Pod> {
        let selector = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={}", self.name));
        match self.pods.list(&selector).await {
            Ok(pods) => newest(pods.items),
            Err(error) => {
                self.note(notes, progress, &format!("listing the pods of the Job {}: {error}", self.name)).await;
                None
            }
        }
    }

    /// Where the trainer container of `pod` is.
    fn trainer(&self, pod: &Pod) -> Trainer {
        let statuses = pod.status.as_ref().and_then(|status| status.container_statuses.as_ref());
        let state = statuses.into_iter().flatten().find(|status| status.name == self.container);
        match state.and_then(|status| status.state.as_ref()) {
            Some(state) if state.running.is_some() => Trainer::Running,
            Some(state) if state.terminated.is_some() => Trainer::Terminated,
            _ => Trainer::NotStarted,
        }
    }

    /// Reads the trainer's log from the second of the last line handled on (all of it the first time), handling
    /// the lines not handled yet, until the stream ends (with `follow`, when the container ends or the connection
    /// drops); whether it was read to its end. Lines carry their timestamps, so a log the kubelet rotated meanwhile
    /// is still read from the right place.
    async fn read_log(&self, pod: &str, follow: bool, followed: &mut Followed, progress: &dyn ProgressSink) -> bool {
        let params = LogParams {
            container: Some(self.container.to_string()),
            follow,
            timestamps: true,
            // whole seconds: the API server's precision (a rounded-up second would lose lines)
            since_time: followed.last.and_then(|(last, _)| Timestamp::from_second(last.as_second()).ok()),
            ..LogParams::default()
        };
        let stream = match self.pods.log_stream(pod, &params).await {
            Ok(stream) => stream,
            Err(error) => {
                let text = format!("reading the log of pod {pod}: {error}");
                self.note(&mut followed.notes, progress, &text).await;
                return false;
            }
        };
        let mut lines = stream.lines();
        // the lines of this stream stamped with the last handled line's timestamp
        let mut at_last = 0usize;
        while let Some(line) = lines.next().await {
            let Ok(line) = line else { return false };
            let Some((stamp, text)) = split_timestamp(&line) else {
                forward_line(&line, progress, self.log).await;
                continue;
            };
            match followed.last {
                Some((last, _)) if stamp < last => continue,
                Some((last, handled)) if stamp == last => {
                    at_last += 1;
                    if at_last <= handled {
                        continue;
                    }
                    followed.last = Some((stamp, at_last));
                }
                _ => {
                    at_last = 1;
                    followed.last = Some((stamp, 1));
                }
            }
            forward_line(text, progress, self.log).await;
        }
        true
    }

    /// Tells the run's log and messages of `text`, once.
    async fn note(&self, notes: &mut HashSet<String>, progress: &dyn ProgressSink, text: &str) {
        self.note_once(notes, progress, text, text).await;
    }

    /// Tells the run's log and messages of `text`, unless something was told under `key` already.
    async fn note_once(&self, notes: &mut HashSet<String>, progress: &dyn ProgressSink, key: &str, text: &str) {
        if notes.insert(key.to_string()) {
            tracing::warn!(job = self.name, "{text}");
            append_log(self.log, &format!("--- {} {text}", chrono::Utc::now().to_rfc3339())).await;
            progress.on_message(text);
        }
    }
}

/// The most recently created of `pods`; of pods created in the same second (the API server's precision), one that
/// has not ended, so that a replacement created within the second its predecessor failed is preferred to it.
pub(super) fn newest(pods: Vec<Pod>) -> Option<Pod> {
    pods.into_iter().max_by_key(|pod| {
        let created = pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
        let phase = pod.status.as_ref().and_then(|status| status.phase.as_deref());
        let ended = pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Failed" | "Succeeded"));
        (created, !ended)
    })
}

/// Why `pod` was disrupted (`reason: message` of its `DisruptionTarget` condition), if it was.
pub(super) fn disruption(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let condition =
        conditions.iter().find(|condition| condition.type_ == DISRUPTION_CONDITION && condition.status == "True")?;
    Some(format!(
        "{DISRUPTION_CONDITION}: {}: {}",
        condition.reason.as_deref().unwrap_or(""),
        condition.message.as_deref().unwrap_or("")
    ))
}

/// A log line as the API server sends it with `timestamps=true`: its RFC 3339 timestamp, a space, the line.
fn split_timestamp(line: &str) -> Option<(Timestamp, &str)> {
    let (stamp, text) = line.split_once(' ')?;
    Some((stamp.parse().ok()?, text))
}

/// How `job` ended, if it did: its `Complete` or `Failed` condition.
pub(super) fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref().and_then(|status| status.conditions.as_ref())?;
    conditions.iter().filter(|condition| condition.status == "True").find_map(|condition| {
        match condition.type_.as_str() {
            "Complete" => Some(JobEnd::Complete),
            "Failed" => Some(JobEnd::Failed {
                reason: condition.reason.clone().unwrap_or_else(|| "Failed".to_string()),
                message: condition.message.clone().unwrap_or_default(),
            }),
            _ => None,
        }
    })
}

/// The Job controller's `FailedCreate` events among `events` (of the Job with `uid`, when known: a Job of the same
/// name before it has events of its own), oldest first, one per distinct refusal: each as `(key, text)`, the key
/// being the text without the name of the pod refused (the controller generates one per try).
pub(super) fn failed_creates(events: &[Event], uid: Option<&str>) -> Vec<(String, String)> {
    let mut failed: Vec<&Event> = events
        .iter()
        .filter(|event| event.reason.as_deref() == Some("FailedCreate"))
        .filter(|event| match (uid, event.involved_object.uid.as_deref()) {
            (Some(uid), Some(involved)) => uid == involved,
            _ => true,
        })
        .collect();
    failed.sort_by_key(|event| {
        let last = event.last_timestamp.as_ref().or(event.first_timestamp.as_ref()).map(|time| time.0);
        last.or(event.event_time.as_ref().map(|time| time.0))
    });
    let mut told = Vec::<(String, String)>::new();
    for event in failed {
        let text = format!("FailedCreate: {}", event.message.as_deref().unwrap_or("").trim());
        let key = without_pod_name(&text);
        if !told.iter().any(|(seen, _)| *seen == key) {
            told.push((key, text));
        }
    }
    told
}

/// `message` with the name in its first `pods "NAME"` left out.
fn without_pod_name(message: &str) -> String {
    let Some((before, rest)) = message.split_once("pods \"") else { return message.to_string() };
    let Some((_, after)) = rest.split_once('"') else { return message.to_string() };
    format!("{before}pods \"…\"{after}")
}

/// Why a pod that has not started its trainer is not starting: not schedulable, or a container waiting for a
/// reason other than being created.
pub(super) fn waiting_problems(pod: &Pod, container: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(status) = pod.status.as_ref() else { return problems };
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled" && condition.status == "False" {
            problems.push(format!(
                "not scheduled: {}: {}",
                condition.reason.as_deref().unwrap_or("Unschedulable"),
                condition.message.as_deref().unwrap_or("")
            ));
        }
    }
    let statuses = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for status in statuses {
        let Some(waiting) = status.state.as_ref().and_then(|state| state.waiting.as_ref()) else { continue };
        let reason = waiting.reason.as_deref().unwrap_or("");
        if !matches!(reason, "" | "ContainerCreating" | "PodInitializing") {
            let which = if status.name == container { "the trainer container" } else { "container" };
            problems.push(format!(
                "{which} {} is waiting: {reason}: {}",
                status.name,
                waiting.message.as_deref().unwrap_or("")
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}, "status": status})).unwrap()
    }

    #[test]
    fn a_job_ends_by_its_complete_or_failed_condition() {
        assert_eq!(job_end(&job(serde_json::json!({"active": 1}))), None);
        let complete = job(serde_json::json!({"conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"}
        ]}));
        assert_eq!(job_end(&complete), Some(JobEnd::Complete));
        let failed = job(serde_json::json!({"conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
             "message": "Job was active longer than specified deadline"}
        ]}));
        assert_eq!(
            job_end(&failed),
            Some(JobEnd::Failed {
                reason: "DeadlineExceeded".to_string(),
                message: "Job was active longer than specified deadline".to_string()
            })
        );
        assert_eq!(job_end(&job(serde_json::json!({"conditions": [{"type": "Failed", "status": "False"}]}))), None);
    }

    #[test]
    fn a_log_line_splits_into_its_timestamp_and_text() {
        let (stamp, text) = split_timestamp("2026-11-28T10:00:05.5Z {\"step\": 1} and more").unwrap();
        assert_eq!(stamp.to_string(), "2026-11-28T10:00:05.5Z");
        assert_eq!(text, "{\"step\": 1} and more");
        let (_, empty) = split_timestamp("2026-11-28T10:00:05.123456789Z ").unwrap();
        assert_eq!(empty, "");
        assert!(split_timestamp("no timestamp here").is_none());
    }

    #[test]
    fn a_pod_that_cannot_start_says_why() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}],
                "containerStatuses": [{"name": "trainer", "image": "x", "imageID": "", "ready": false,
                                       "restartCount": 0,
                                       "state": {"waiting": {"reason": "ImagePullBackOff",
                                                             "message": "Back-off pulling image \"x\""}}}]
            }
        }))
        .unwrap();
        let problems = waiting_problems(&pod, "trainer");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("Unschedulable: 0/3 nodes are available"), "{problems:?}");
        assert!(problems[1].contains("trainer container trainer is waiting: ImagePullBackOff"), "{problems:?}");
        let creating: Pod = serde_json::from_value(serde_json::json!({"status": {"containerStatuses": [
            {"name": "trainer", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]}}))
        .unwrap();
        assert!(waiting_problems(&creating, "trainer").is_empty(), "being created is no problem");
    }

    fn pod(name: &str, created: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": created}, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_pod_is_the_last_created_and_of_a_second_the_one_not_ended() {
        let disrupted = serde_json::json!({"phase": "Failed", "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
             "message": "preempted by a pod of a higher priority"}]});
        let running = serde_json::json!({"phase": "Running"});
        let name = |pod: Option<Pod>| pod.and_then(|pod| pod.metadata.name);
        let later = vec![pod("b", "2026-01-01T00:00:09Z", running.clone()), pod("a", "2026-01-01T00:00:01Z", running)];
        assert_eq!(name(newest(later)), Some("b".to_string()));
        // the replacement, created within the second its predecessor failed, whichever way the list has them
        let first = pod("first", "2026-01-01T00:00:05Z", disrupted.clone());
        let second = pod("second", "2026-01-01T00:00:05Z", serde_json::json!({"phase": "Pending"}));
        assert_eq!(name(newest(vec![first.clone(), second.clone()])), Some("second".to_string()));
        assert_eq!(name(newest(vec![second, first.clone()])), Some("second".to_string()));
        assert_eq!(name(newest(Vec::new())), None);
        assert_eq!(
            disruption(&first).as_deref(),
            Some("DisruptionTarget: PreemptionByScheduler: preempted by a pod of a higher priority")
        );
        let not_yet = pod(
            "p",
            "2026-01-01T00:00:05Z",
            serde_json::json!({"conditions": [
            {"type": "DisruptionTarget", "status": "False"}, {"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(disruption(&not_yet), None);
    }

    #[test]
    fn a_replacement_pod_has_the_start_timeout_to_itself() {
        let since = tokio::time::Instant::now();
        // refusals to create the first pod: the pod that is created at last goes on from them
        let refused = Followed { stuck_since: Some(since), ..Followed::default() };
        let first = refused.next_pod(Some("first".to_string()));
        assert_eq!(first.stuck_since, Some(since));
        assert_eq!(first.pod.as_deref(), Some("first"));
        // the first pod was stuck, then disrupted: its replacement starts afresh, with nothing of a log read
        let mut stuck = Followed { stuck_since: Some(since), ..first };
        stuck.last = Some((Timestamp::UNIX_EPOCH, 2));
        stuck.read_to_end = true;
        stuck.trainer_started = true;
        stuck.notes.insert("told".to_string());
        let second = stuck.next_pod(Some("second".to_string()));
        assert_eq!(second.stuck_since, None);
        assert_eq!((second.last, second.read_to_end, second.trainer_started), (None, false, false));
        assert!(second.notes.contains("told"), "what was told is not told again");
    }

    fn event(uid: &str, reason: &str, at: &str, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("j.{at}")},
            "involvedObject": {"kind": "Job", "name": "j", "uid": uid},
            "reason": reason, "type": "Warning", "lastTimestamp": at, "message": message
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_the_job_controller_cannot_create_is_told_once_per_refusal() {
        let quota = |pod: &str| {
            format!(
                "Error creating: pods \"{pod}\" is forbidden: exceeded quota: gpu, requested: \
                 requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
            )
        };
        let events = [
            event("now", "FailedCreate", "2026-01-01T00:00:20Z", &quota("j-bbbbb")),
            event("now", "FailedCreate", "2026-01-01T00:00:10Z", &quota("j-aaaaa")),
            event("now", "SuccessfulCreate", "2026-01-01T00:00:30Z", "Created pod: j-ccccc"),
            event("before", "FailedCreate", "2025-12-31T00:00:00Z", "Error creating: an older Job's refusal"),
        ];
        let told = failed_creates(&events, Some("now"));
        assert_eq!(told.len(), 1, "the same refusal for another generated pod name is told once: {told:?}");
        assert_eq!(told[0].1, format!("FailedCreate: {}", quota("j-aaaaa")), "the first one, as it was");
        assert!(told[0].0.contains("pods \"…\" is forbidden: exceeded quota: gpu"), "{told:?}");
        let unknown_uid = failed_creates(&events, None);
        assert_eq!(unknown_uid.len(), 2, "without the Job's uid every FailedCreate counts: {unknown_uid:?}");
        assert!(unknown_uid[0].1.contains("an older Job's refusal"), "oldest first: {unknown_uid:?}");
        assert_eq!(without_pod_name("no pod named here"), "no pod named here");
    }
}
