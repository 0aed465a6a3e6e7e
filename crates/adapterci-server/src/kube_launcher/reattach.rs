//! Re-attaching to a run's Job that an earlier adapterd started: adapterd restarts (a `helm upgrade`, a node drain)
//! while a Job trains, and the next adapterd, given the same run again once its lease expired, follows that Job
//! instead of deleting it and training again from the start.
//!
//! Each Job carries the digest of what it trains ([`JOB_DIGEST_ANNOTATION`], [`job_digest`]): the trainer's staged
//! inputs and the parts of the Job that change what the trainer does or may use (its arguments, its resources, its
//! deadline). A Job with this launch's digest that has not failed is re-attached to; one with another digest (the
//! dataset, the pipeline or the resources changed), without a digest (made by an adapterd from before this), failed,
//! or being deleted is deleted and created again. The rest of the pod template (the image, its env, where it is
//! scheduled) is left out on purpose: an upgrade that changes the image lets the Job running finish as it was
//! created, and the next Job uses the new template.

use adapterci_core::Digest;
use adapterci_core::digest::DigestWriter;
use k8s_openapi::api::batch::v1::Job;

use super::follow::{JobEnd, job_end};
use crate::staging::PreparedJob;

/// The annotation holding the digest of what a Job trains ([`job_digest`]).
pub const JOB_DIGEST_ANNOTATION: &str = "adapterci.dev/job-digest";

/// The digest of what the Job `manifest` trains, with the staged inputs `prepared`: the inputs' names and bytes
/// ([`PreparedJob::trained_inputs`]), then the trainer container's `args` (the staging URL as the pod opens it, the
/// run id) and `resources`, and the Job's `activeDeadlineSeconds`, each as JSON.
pub fn job_digest(prepared: &PreparedJob, manifest: &Job) -> Digest {
    let mut writer = DigestWriter::new();
    let mut part = |name: &str, bytes: &[u8]| {
        // lengths first: no two sequences of parts hash alike
        writer.update(&(name.len() as u64).to_le_bytes());
        writer.update(name.as_bytes());
        writer.update(&(bytes.len() as u64).to_le_bytes());
        writer.update(bytes);
    };
    part("adapterci job digest", b"v1");
    for (name, bytes) in prepared.trained_inputs() {
        part(name, &bytes);
    }
    let spec = manifest.spec.as_ref();
    let trainer = spec.and_then(|spec| spec.template.spec.as_ref()).and_then(|pod| {
        let args = |container: &&k8s_openapi::api::core::v1::Container| container.args.is_some();
        // the container adapterd filled in is the one with arguments (the template may not set any)
        pod.containers.iter().find(args)
    });
    let json = |value: Option<serde_json::Value>| serde_json::to_vec(&value).unwrap_or_default();
    part("args", &json(trainer.and_then(|trainer| serde_json::to_value(&trainer.args).ok())));
    part("resources", &json(trainer.and_then(|trainer| serde_json::to_value(&trainer.resources).ok())));
    let deadline = spec.and_then(|spec| spec.active_deadline_seconds);
    part("activeDeadlineSeconds", &json(deadline.map(serde_json::Value::from)));
    writer.finish()
}

/// What to do with a Job of the run's name that is there before the launch creates one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Existing {
    /// Follow it: it trains this very job and has not failed. `created`: its creation time, for the run's log.
    ReAttach { created: String },
    /// Delete it and create the run's Job again, for the reason given.
    Replace { why: String },
}

/// Whether the Job `old`, there before the launch, is re-attached to or replaced, by its [`JOB_DIGEST_ANNOTATION`]
/// against `digest` (this launch's) and its state.
pub(super) fn judge(old: &Job, digest: &Digest) -> Existing {
    let replace = |why: String| Existing::Replace { why };
    if let Some(since) = &old.metadata.deletion_timestamp {
        return replace(format!("it is being deleted since {}", since.0));
    }
    let annotations = old.metadata.annotations.as_ref();
    let Some(theirs) = annotations.and_then(|annotations| annotations.get(JOB_DIGEST_ANNOTATION)) else {
        return replace(format!("it carries no {JOB_DIGEST_ANNOTATION} annotation (an older adapterd created it)"));
    };
    let ours = digest.to_string();
    if *theirs != ours {
        return replace(format!(
            "it trains another job: its {JOB_DIGEST_ANNOTATION} is {theirs}, this attempt's {ours}"
        ));
    }
    if let Some(JobEnd::Failed { reason, message }) = job_end(old) {
        return replace(format!("it failed: {reason}: {message}"));
    }
    let created = old
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(|| "at an unknown time".to_string(), |at| at.0.to_string());
    Existing::ReAttach { created }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use adapterci_core::launcher::LaunchResources;
    use adapterci_core::training::{LoraSpec, TrainJob, TrainSpec};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::kube_launcher::{JobRequest, JobTemplate};
    use crate::staging::Staging;

    const TEMPLATE: &str = "spec:\n  containers:\n    - name: trainer\n      image: adapterd:1\n";

    fn job(dataset: &[u8]) -> TrainJob {
        TrainJob {
            base_model_path: "/models/tiny.gguf".into(),
            base_model_digest: Digest::of(b"base"),
            dataset: dataset.to_vec(),
            dataset_digest: Digest::of(dataset),
            lora: LoraSpec::default(),
            train: TrainSpec::default(),
            initial_adapter: None,
        }
    }

    /// The digest of `job` staged in `dir`, its Job from `template` with `resources`.
    async fn digest_of(dir: &Path, job: &TrainJob, template: &str, resources: &LaunchResources) -> Digest {
        std::fs::create_dir_all(dir.join("staging/bases")).unwrap();
        // the base as if staged already: preparing the job does not read the model file then
        std::fs::write(dir.join("staging/bases").join(job.base_model_digest.hex()), b"base").unwrap();
        let staging = Staging::open(&dir.join("staging").display().to_string()).unwrap();
        let prepared = staging.prepare_job(job).await.unwrap();
        let template = JobTemplate::parse(template, Path::new("template.yaml")).unwrap();
        let request =
            JobRequest { run_id: "run-1", staging_url: "s3://bucket/staging", resources, ttl_after_finished: None };
        job_digest(&prepared, &template.build(&request))
    }

    #[tokio::test]
    async fn the_job_digest_follows_what_is_trained_not_where_or_by_which_image() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let resources = LaunchResources { cpus: Some(2.0), ..LaunchResources::default() };
        let base = digest_of(dir, &job(b"a\n"), TEMPLATE, &resources).await;
        assert_eq!(base, digest_of(dir, &job(b"a\n"), TEMPLATE, &resources).await, "the same job, the same digest");
        let mut moved = job(b"a\n");
        moved.base_model_path = "/elsewhere/tiny.gguf".into();
        assert_eq!(base, digest_of(dir, &moved, TEMPLATE, &resources).await, "where adapterd keeps the base");
        let upgraded = TEMPLATE.replace("adapterd:1", "adapterd:2");
        assert_eq!(base, digest_of(dir, &job(b"a\n"), &upgraded, &resources).await, "the image of an upgrade");
        assert_ne!(base, digest_of(dir, &job(b"b\n"), TEMPLATE, &resources).await, "another dataset");
        let mut steps = job(b"a\n");
        steps.train.steps += 1;
        assert_ne!(base, digest_of(dir, &steps, TEMPLATE, &resources).await, "other training settings");
        let more = LaunchResources { cpus: Some(4.0), ..LaunchResources::default() };
        assert_ne!(base, digest_of(dir, &job(b"a\n"), TEMPLATE, &more).await, "other resources");
        let timed = LaunchResources { timeout: Some(std::time::Duration::from_secs(60)), ..resources.clone() };
        assert_ne!(base, digest_of(dir, &job(b"a\n"), TEMPLATE, &timed).await, "another deadline");
    }

    fn existing(digest: Option<&str>, condition: Option<(&str, &str)>, deleting: bool) -> Job {
        let mut job = Job::default();
        let annotations =
            digest.map(|digest| BTreeMap::from([(JOB_DIGEST_ANNOTATION.to_string(), digest.to_string())]));
        job.metadata.annotations = annotations;
        job.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        if deleting {
            job.metadata.deletion_timestamp = Some(Time("2026-01-01T00:05:00Z".parse().unwrap()));
        }
        job.status = Some(JobStatus {
            active: condition.is_none().then_some(1),
            conditions: condition.map(|(type_, reason)| {
                vec![JobCondition {
                    type_: type_.to_string(),
                    status: "True".to_string(),
                    reason: Some(reason.to_string()),
                    message: Some("said the Job controller".to_string()),
                    ..JobCondition::default()
                }]
            }),
            ..JobStatus::default()
        });
        job
    }

    fn check(old: Job, expect: &str) {
        let digest = Digest::of(b"this job");
        let got = match judge(&old, &digest) {
            Existing::ReAttach { created } => format!("re-attach, created {created}"),
            Existing::Replace { why } => format!("replace: {why}"),
        };
        assert_eq!(got, expect.replace("OURS", &digest.to_string()));
    }

    #[test]
    fn a_job_of_the_same_digest_that_has_not_failed_is_re_attached_to() {
        let ours = Digest::of(b"this job").to_string();
        check(existing(Some(&ours), None, false), "re-attach, created 2026-01-01T00:00:00Z");
        check(existing(Some(&ours), Some(("Complete", "")), false), "re-attach, created 2026-01-01T00:00:00Z");
    }

    #[test]
    fn any_other_job_is_replaced_saying_why() {
        let ours = Digest::of(b"this job").to_string();
        check(
            existing(Some("sha256:0"), None, false),
            "replace: it trains another job: its adapterci.dev/job-digest is sha256:0, this attempt's OURS",
        );
        check(
            existing(None, None, false),
            "replace: it carries no adapterci.dev/job-digest annotation (an older adapterd created it)",
        );
        check(
            existing(Some(&ours), Some(("Failed", "DeadlineExceeded")), false),
            "replace: it failed: DeadlineExceeded: said the Job controller",
        );
        check(existing(Some(&ours), None, true), "replace: it is being deleted since 2026-01-01T00:05:00Z");
    }
}
