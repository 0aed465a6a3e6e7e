//! The `batch/v1` Job of one run, built from the operator's pod template (`--kube-job-template`): the template
//! keeps everything about where and how the pod runs (image, env and secrets, service account, node selector,
//! tolerations, security contexts, volumes); adapterd fills in what is the run's own (the trainer's arguments,
//! resources, names and labels) and what the executor relies on (no retries by Kubernetes, except of a pod that
//! was disrupted, a pod that does not restart, a TTL after it finished).
//!
//! The Job's own labels are the template pod's labels plus adapterd's, so that an operator selects Jobs as they
//! select pods (`kubectl delete jobs -l app.kubernetes.io/instance=RELEASE`). The labels and the annotation
//! adapterd sets, and those the Job controller sets, are refused in the template rather than overridden: a template
//! that says otherwise would be silently contradicted on every Job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapterci_core::Digest;
use adapterci_core::launcher::LaunchResources;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The label every Job and pod adapterd creates carries, with the value `adapterd`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label naming the run (the run id, or a hashed form where it is not a valid label value).
pub const RUN_LABEL: &str = "adapterci.dev/run";
/// The annotation holding the run id as it is.
pub const RUN_ANNOTATION: &str = "adapterci.dev/run-id";
/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "job-name";
/// The labels the Job controller puts on a Job's pods (and the selector it generates): a template's would be
/// replaced on the pod, and contradict it on the Job.
pub const JOB_CONTROLLER_LABELS: [&str; 5] = [
    JOB_NAME_LABEL,
    "controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-completion-index",
];
/// The pod condition the control plane adds to a pod it is about to terminate for reasons of its own (preemption,
/// an API-initiated eviction such as a node drain, a taint, node shutdown, garbage collection): the Job's pod
/// failure policy ignores such a failure, so the Job controller replaces the pod instead of failing the Job.
pub const DISRUPTION_CONDITION: &str = "DisruptionTarget";
/// The container that trains, when the template has several; otherwise the only (or first) one.
pub const TRAINER_CONTAINER: &str = "trainer";
/// The extended resource a GPU is requested as (the NVIDIA device plugin's).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Label values and Job names: at most 63 characters (a Job name also becomes its pods' `job-name` label).
const MAX_NAME: usize = 63;

/// An operator's pod template, checked when adapterd starts.
#[derive(Clone, Debug)]
pub struct JobTemplate {
    path: PathBuf,
    template: PodTemplateSpec,
    /// The index of the trainer container in `template.spec.containers`.
    trainer: usize,
}

/// What one run's Job is built from, besides the template.
#[derive(Clone, Debug)]
pub struct JobRequest<'a> {
    pub run_id: &'a str,
    /// The staging store URL as the pod reaches it.
    pub staging_url: &'a str,
    /// The pipeline's resources; their `timeout`, the run's time limit, is enforced by Kubernetes too
    /// (`activeDeadlineSeconds`).
    pub resources: &'a LaunchResources,
    /// How long a finished Job (and its pod, with its log) is kept (`ttlSecondsAfterFinished`).
    pub ttl_after_finished: Option<Duration>,
}

impl JobTemplate {
    /// Reads and checks the template at `path`; the error names the file and the field.
    pub fn load(path: &Path) -> Result<JobTemplate, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("reading the Job template {}: {e}", path.display()))?;
        JobTemplate::parse(&text, path)
    }

    /// Checks `text`, the template read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<JobTemplate, String> {
        let shown = path.display();
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("{shown}: not valid YAML: {e}"))?;
        let Some(spec) = value.get("spec") else {
            return Err(format!(
                "{shown}: spec: missing (expected a pod template: metadata and spec, with spec.containers)"
            ));
        };
        let containers = spec.get("containers").and_then(serde_yaml::Value::as_sequence);
        let Some(containers) = containers.filter(|containers| !containers.is_empty()) else {
            return Err(format!("{shown}: spec.containers: the pod template needs a container (the trainer)"));
        };
        for (index, container) in containers.iter().enumerate() {
            if container.get("name").and_then(serde_yaml::Value::as_str).is_none_or(str::is_empty) {
                return Err(format!("{shown}: spec.containers[{index}].name: missing"));
            }
        }
        refuse_job_fields(&value, &shown.to_string())?;
        let template: PodTemplateSpec =
            serde_yaml::from_value(value).map_err(|e| format!("{shown}: not a pod template: {e}"))?;
        refuse_reserved_metadata(template.metadata.as_ref(), &shown.to_string())?;
        let pod = template.spec.as_ref().ok_or_else(|| format!("{shown}: spec: missing"))?;
        if let Some(policy) = pod.restart_policy.as_deref().filter(|policy| *policy != "Never") {
            return Err(format!(
                "{shown}: spec.restartPolicy: {policy} would restart a failed trainer; leave it out (adapterd sets \
                 Never, and the controller retries)"
            ));
        }
        let trainer = pod.containers.iter().position(|container| container.name == TRAINER_CONTAINER).unwrap_or(0);
        let container = &pod.containers[trainer];
        if container.image.as_deref().is_none_or(str::is_empty) {
            return Err(format!("{shown}: spec.containers[{trainer}].image: missing (an image with adapterd in it)"));
        }
        if container.args.is_some() {
            return Err(format!(
                "{shown}: spec.containers[{trainer}].args: set by adapterd (train-job --staged …); leave it out"
            ));
        }
        Ok(JobTemplate { path: path.to_path_buf(), template, trainer })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the container that trains (whose log is followed).
    pub fn trainer_container(&self) -> &str {
        self.template.spec.as_ref().map_or(TRAINER_CONTAINER, |pod| pod.containers[self.trainer].name.as_str())
    }

    /// The Job of one run.
    pub fn build(&self, request: &JobRequest<'_>) -> Job {
        let name = job_name(request.run_id);
        let labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), "adapterd".to_string()),
            (RUN_LABEL.to_string(), label_value(request.run_id)),
        ]);
        let annotations = BTreeMap::from([(RUN_ANNOTATION.to_string(), request.run_id.to_string())]);
        let mut template = self.template.clone();
        let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
        let pod_labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        pod_labels.extend(labels);
        // the Job is labelled as its pod (the template's labels, and adapterd's, which the template may not set);
        // not annotated as it: a pod's annotations (`karpenter.sh/do-not-disrupt`, a sidecar injector's) are
        // meant for pods, and some tools act on them wherever they find them
        let job_labels = pod_labels.clone();
        metadata.annotations.get_or_insert_with(BTreeMap::new).extend(annotations.clone());
        if let Some(pod) = template.spec.as_mut() {
            pod.restart_policy = Some("Never".to_string());
            fill_trainer(&mut pod.containers[self.trainer], request);
        }
        Job {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(job_labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                pod_failure_policy: Some(ignore_disruptions()),
                active_deadline_seconds: request.resources.timeout.map(|deadline| seconds(deadline).max(1)),
                ttl_seconds_after_finished: request.ttl_after_finished.map(|ttl| seconds(ttl) as i32),
                template,
                ..JobSpec::default()
            }),
            status: None,
        }
    }
}

/// The Job's pod failure policy: a pod that failed because the control plane disrupted it (its `DisruptionTarget`
/// condition) does not count against `backoffLimit` 0, so the Job controller replaces it and the run goes on in a
/// new pod; any other failure fails the Job, and the controller retries the run. Needs `restartPolicy: Never`
/// (adapterd's) and Kubernetes 1.26 or later (beta, on by default; GA in 1.31).
fn ignore_disruptions() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![PodFailurePolicyRule {
            action: "Ignore".to_string(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: DISRUPTION_CONDITION.to_string(),
                status: "True".to_string(),
            }]),
        }],
    }
}

/// Refuses a Job's fields put in the pod template, where Kubernetes' pod types would silently drop them: the template
/// is the pod's, and adapterd sets the Job's own.
fn refuse_job_fields(value: &serde_yaml::Value, shown: &str) -> Result<(), String> {
    const JOB_FIELDS: [&str; 2] = ["podFailurePolicy", "backoffLimit"];
    for (path, object) in [("", Some(value)), ("spec.", value.get("spec"))] {
        let Some(object) = object else { continue };
        if let Some(field) = JOB_FIELDS.iter().find(|field| object.get(**field).is_some()) {
            return Err(format!(
                "{shown}: {path}{field}: a Job's field, which adapterd sets (backoffLimit 0, and a podFailurePolicy \
                 that ignores disrupted pods); the template is the pod's: leave it out"
            ));
        }
    }
    Ok(())
}

/// Refuses the labels and annotation adapterd sets, and the labels the Job controller sets, in the template's pod
/// metadata (which also labels the Job).
fn refuse_reserved_metadata(metadata: Option<&ObjectMeta>, shown: &str) -> Result<(), String> {
    let Some(metadata) = metadata else { return Ok(()) };
    for key in metadata.labels.iter().flat_map(BTreeMap::keys) {
        let whose = match key.as_str() {
            MANAGED_BY_LABEL | RUN_LABEL => "adapterd (on every Job and pod it creates)",
            key if JOB_CONTROLLER_LABELS.contains(&key) => "the Job controller (on the Job's pods)",
            _ => continue,
        };
        return Err(format!("{shown}: metadata.labels.{key}: set by {whose}; leave it out"));
    }
    if metadata.annotations.as_ref().is_some_and(|annotations| annotations.contains_key(RUN_ANNOTATION)) {
        return Err(format!(
            "{shown}: metadata.annotations.{RUN_ANNOTATION}: set by adapterd (the run's id); leave it out"
        ));
    }
    Ok(())
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX).min(i64::from(i32::MAX))
}

/// The trainer container's arguments, resources and thread count.
fn fill_trainer(container: &mut Container, request: &JobRequest<'_>) {
    container.args =
        Some(["train-job", "--staged", request.staging_url, "--run", request.run_id].map(str::to_string).to_vec());
    let resources = container.resources.get_or_insert_with(ResourceRequirements::default);
    let mut set = |key: &str, quantity: String, request_too: bool| {
        resources.limits.get_or_insert_with(BTreeMap::new).insert(key.to_string(), Quantity(quantity.clone()));
        if request_too {
            resources.requests.get_or_insert_with(BTreeMap::new).insert(key.to_string(), Quantity(quantity));
        }
    };
    if let Some(cpus) = request.resources.cpus {
        set("cpu", format!("{}m", (cpus * 1000.0).round().max(1.0) as u64), true);
    }
    if let Some(memory) = request.resources.memory_bytes {
        set("memory", memory.to_string(), true);
    }
    if request.resources.gpus > 0 {
        // extended resources are requested by their limit alone
        set(GPU_RESOURCE, request.resources.gpus.to_string(), false);
    }
    if let Some(cpus) = request.resources.cpus {
        // libtorch threads: the pipeline's CPUs, rounded up, unless the template says otherwise
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|var| var.name == crate::env_vars::ADAPTERCI_THREADS) {
            let threads = (cpus.ceil() as usize).max(1);
            env.push(EnvVar {
                name: crate::env_vars::ADAPTERCI_THREADS.to_string(),
                value: Some(threads.to_string()),
                value_from: None,
            });
        }
    }
}

/// A Job name for `run_id`: `adapterci-train-<run id>` when that is a valid DNS-1123 label, otherwise the run id
/// lowercased, other characters as `-`, truncated, with a hash of the run id so that names stay distinct.
pub fn job_name(run_id: &str) -> String {
    const PREFIX: &str = "adapterci-train-";
    let plain = format!("{PREFIX}{run_id}");
    if plain.len() <= MAX_NAME && is_dns_label(&plain) {
        return plain;
    }
    let hash = &Digest::of(run_id.as_bytes()).hex()[..10];
    let cleaned: String =
        run_id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let room = MAX_NAME - PREFIX.len() - hash.len() - 1;
    let stem: String = cleaned.chars().take(room).collect();
    let stem = stem.trim_matches('-');
    if stem.is_empty() { format!("{PREFIX}{hash}") } else { format!("{PREFIX}{stem}-{hash}") }
}

/// `run_id` as a label value: itself when valid, else a hashed form like the Job name's.
fn label_value(run_id: &str) -> String {
    let valid = run_id.len() <= MAX_NAME
        && run_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && run_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && run_id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid { run_id.to_string() } else { job_name(run_id).trim_start_matches("adapterci-train-").to_string() }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests;
