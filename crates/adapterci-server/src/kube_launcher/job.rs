//! The `batch/v1` Job of one run, built from the operator's pod template (`--kube-job-template`): the template
//! keeps everything about where and how the pod runs (image, env and secrets, service account, node selector,
//! tolerations, security contexts, volumes); adapterd fills in what is the run's own (the trainer's arguments,
//! resources, names and labels) and what the executor relies on (no retries by Kubernetes, a pod that does not
//! restart, a TTL after it finished).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapterci_core::Digest;
use adapterci_core::launcher::LaunchResources;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
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
        let template: PodTemplateSpec =
            serde_yaml::from_value(value).map_err(|e| format!("{shown}: not a pod template: {e}"))?;
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
        metadata.labels.get_or_insert_with(BTreeMap::new).extend(labels.clone());
        metadata.annotations.get_or_insert_with(BTreeMap::new).extend(annotations.clone());
        if let Some(pod) = template.spec.as_mut() {
            pod.restart_policy = Some("Never".to_string());
            fill_trainer(&mut pod.containers[self.trainer], request);
        }
        Job {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: request.resources.timeout.map(|deadline| seconds(deadline).max(1)),
                ttl_seconds_after_finished: request.ttl_after_finished.map(|ttl| seconds(ttl) as i32),
                template,
                ..JobSpec::default()
            }),
            status: None,
        }
    }
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
