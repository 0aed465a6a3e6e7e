//! Following a run's Job to its end: its status is read every poll interval; its pod's log is streamed
//! (`follow=true`) while the trainer container runs, progress lines going to the run's progress and every other
//! line to the run's log, and streamed again (skipping the lines already handled) when the stream drops while the
//! Job still runs. A pod that cannot start (unschedulable, an image that cannot be pulled, a missing secret) is
//! reported in the run's log and messages, once per distinct reason, while the Job waits for it.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use adapterci_core::training::{ProgressSink, TrainingFailure};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use super::job::JOB_NAME_LABEL;
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
    pub name: &'a str,
    pub container: &'a str,
    pub log: &'a Path,
    pub poll_interval: Duration,
}

impl Follower<'_> {
    /// Follows the Job until it completes or fails.
    pub(super) async fn follow(&self, progress: &dyn ProgressSink) -> Result<JobEnd, TrainingFailure> {
        // the lines of the current pod's log already handled, skipped when the stream is opened again
        let mut seen = 0usize;
        let mut current_pod: Option<String> = None;
        let mut notes = HashSet::new();
        let mut api_errors = 0u32;
        loop {
            let job = match self.jobs.get_opt(self.name).await {
                Ok(Some(job)) => job,
                Ok(None) => {
                    return Err(TrainingFailure::Backend(format!(
                        "the Kubernetes Job {} was deleted before it finished (log: {})",
                        self.name,
                        self.log.display()
                    )));
                }
                Err(error) => {
                    api_errors += 1;
                    let text = format!("reading the Kubernetes Job {}: {error}", self.name);
                    if api_errors >= MAX_API_ERRORS {
                        return Err(TrainingFailure::Backend(format!("{text} (log: {})", self.log.display())));
                    }
                    self.note(&mut notes, progress, &text).await;
                    tokio::time::sleep(self.poll_interval).await;
                    continue;
                }
            };
            api_errors = 0;
            let pod = self.newest_pod(&mut notes, progress).await;
            let pod_name = pod.as_ref().and_then(|pod| pod.metadata.name.clone());
            if pod_name.is_some() && pod_name != current_pod {
                seen = 0;
                current_pod = pod_name.clone();
            }
            let started = pod.as_ref().is_some_and(|pod| self.container_started(pod));
            if let Some(end) = job_end(&job) {
                // what the pod printed since the last read (its container ended before the Job's status said so)
                if let (Some(pod_name), true) = (&pod_name, started) {
                    self.read_log(pod_name, false, &mut seen, progress).await;
                }
                return Ok(end);
            }
            match (&pod, &pod_name) {
                (Some(_), Some(pod_name)) if started => {
                    let before = seen;
                    self.read_log(pod_name, true, &mut seen, progress).await;
                    if seen == before {
                        // the stream ended with nothing new (the container ended): wait for the Job's status
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                (Some(pod), _) => {
                    for problem in waiting_problems(pod, self.container) {
                        let text = format!("pod {}: {problem}", pod_name.as_deref().unwrap_or("?"));
                        self.note(&mut notes, progress, &text).await;
                    }
                    tokio::time::sleep(self.poll_interval).await;
                }
                _ => tokio::time::sleep(self.poll_interval).await,
            }
        }
    }

    /// The Job's most recent pod.
    async fn newest_pod(&self, notes: &mut HashSet<String>, progress: &dyn ProgressSink) -> Option<Pod> {
        let selector = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={}", self.name));
        match self.pods.list(&selector).await {
            Ok(pods) => pods.items.into_iter().max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            }),
            Err(error) => {
                self.note(notes, progress, &format!("listing the pods of the Job {}: {error}", self.name)).await;
                None
            }
        }
    }

    /// Whether the trainer container has started (its log can be read).
    fn container_started(&self, pod: &Pod) -> bool {
        let statuses = pod.status.as_ref().and_then(|status| status.container_statuses.as_ref());
        statuses.into_iter().flatten().filter(|status| status.name == self.container).any(|status| {
            status.state.as_ref().is_some_and(|state| state.running.is_some() || state.terminated.is_some())
        })
    }

    /// Reads the trainer's log from the start, handling the lines after the first `seen`, until the stream ends
    /// (`follow`: when the container ends or the connection drops).
    async fn read_log(&self, pod: &str, follow: bool, seen: &mut usize, progress: &dyn ProgressSink) {
        let params = LogParams { container: Some(self.container.to_string()), follow, ..LogParams::default() };
        let stream = match self.pods.log_stream(pod, &params).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(pod, %error, "the pod's log could not be opened");
                return;
            }
        };
        let mut lines = stream.lines().enumerate();
        while let Some((index, line)) = lines.next().await {
            let Ok(line) = line else { return };
            if index < *seen {
                continue;
            }
            forward_line(&line, progress, self.log).await;
            *seen = index + 1;
        }
    }

    /// Tells the run's log and messages of `text`, once.
    async fn note(&self, notes: &mut HashSet<String>, progress: &dyn ProgressSink, text: &str) {
        if notes.insert(text.to_string()) {
            tracing::warn!(job = self.name, "{text}");
            append_log(self.log, &format!("--- {} {text}", chrono::Utc::now().to_rfc3339())).await;
            progress.on_message(text);
        }
    }
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
}
