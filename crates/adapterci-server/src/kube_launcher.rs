//! The Kubernetes executor: each run's training in a `batch/v1` Job of its own, behind the core
//! `TrainingLauncher` port, with the process executor's contract over a cluster.
//!
//! The job is staged in an object store both sides reach (`staging.rs`: `jobs/<run id>/` in the process
//! executor's file layout, the base model content-addressed under `bases/`); the Job is built from the operator's
//! pod template (`job.rs`) and runs `adapterd train-job --staged STAGING_URL --run RUN_ID`. Its pod's log is
//! followed (`follow.rs`): progress lines go to the run's progress, every other line to `<logs dir>/<run
//! id>.log`, which [`TrainingLauncher::logs`] serves as for the process executor. When the Job completes or
//! fails, the result is read back from the staging prefix. Dropping a launch (cancel, timeout, lost lease)
//! deletes the Job, its pod with it (propagation `Background`); the staged job files are removed either way, the
//! base models kept for other runs. Dropped because adapterd itself stops ([`KubernetesLauncher::leave_jobs_on_shutdown`]),
//! it leaves the Job and its staged files: the next adapterd, given the run again, re-attaches to that Job when it
//! trains the same job (`reattach.rs`) instead of training again from the start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapterci_core::launcher::{LaunchResources, LogChunk, TrainingLauncher};
use adapterci_core::training::{ProgressSink, TrainJob, TrainOutput, TrainingFailure};
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use tokio::sync::watch;

use crate::job_files::{append_log, log_path, read_log};
use crate::staging::{PreparedJob, Staging};

mod follow;
pub mod job;
pub mod reattach;

pub use job::{JobRequest, JobTemplate, job_name};
pub use reattach::{JOB_DIGEST_ANNOTATION, job_digest};

/// Where the namespace of adapterd's own pod is, inside a cluster.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long a Job of the same name left by an earlier attempt may take to go once deleted. With propagation
/// `Background` a Job goes at once unless a finalizer holds it, and one that holds it this long is not going by
/// itself: the attempt fails naming it, instead of waiting for the run's time limit.
pub const OLD_JOB_DELETE_TIMEOUT: Duration = Duration::from_secs(300);

/// The Kubernetes executor's settings.
#[derive(Clone, Debug)]
pub struct KubernetesSettings {
    /// Where Jobs are created.
    pub namespace: String,
    pub template: JobTemplate,
    /// The staging area, as adapterd opens it.
    pub staging: Staging,
    /// The staging URL as the pods open it (the same store; for a local directory, the same path on a shared
    /// volume).
    pub pod_staging_url: String,
    /// Where run logs are kept, `<run id>.log`.
    pub logs_dir: PathBuf,
    /// How long a finished Job is kept (`ttlSecondsAfterFinished`), with its pod and its log.
    pub ttl_after_finished: Option<Duration>,
    /// How often the Job's and its pod's status are read while it runs.
    pub poll_interval: Duration,
    /// How long a pod may keep failing to start (unschedulable, image not pulled, missing secret) or to be created
    /// (`FailedCreate`: a quota refuses it) before the attempt fails and the Job is deleted; `None`: until the run's
    /// time limit.
    pub start_timeout: Option<Duration>,
    /// How long a Job of the same name left by an earlier attempt may take to go once deleted before the attempt
    /// fails ([`OLD_JOB_DELETE_TIMEOUT`]).
    pub old_job_delete_timeout: Duration,
}

/// Launches each job as a Kubernetes Job.
#[derive(Clone)]
pub struct KubernetesLauncher {
    client: kube::Client,
    settings: Arc<KubernetesSettings>,
    /// True once adapterd stops: a launch dropped then leaves its Job running, for the next adapterd.
    stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for KubernetesLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesLauncher").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The namespace adapterd runs in: the service account's, or `default` outside a cluster.
pub fn own_namespace() -> String {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE)
        .ok()
        .map(|namespace| namespace.trim().to_string())
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

impl KubernetesLauncher {
    /// A launcher whose dropped launches delete their Jobs, whatever drops them.
    pub fn new(client: kube::Client, settings: KubernetesSettings) -> KubernetesLauncher {
        KubernetesLauncher { client, settings: Arc::new(settings), stopping: watch::channel(false).1 }
    }

    /// Launches dropped once `shutdown` is true (adapterd stopping: set before the controller drops its runs) leave
    /// their Jobs running and their staged files in place, for the next adapterd to re-attach to; dropped otherwise
    /// (a cancel, the run's time limit, a lost lease) they delete them as before.
    pub fn leave_jobs_on_shutdown(mut self, shutdown: watch::Receiver<bool>) -> KubernetesLauncher {
        self.stopping = shutdown;
        self
    }

    pub fn settings(&self) -> &KubernetesSettings {
        &self.settings
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn events(&self) -> Api<Event> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// Creates `job`; a Job of the same name that appeared since the launch looked (`replace`) is deleted first, as
    /// [`KubernetesLauncher::delete_old`] does.
    async fn create(&self, job: &Job, name: &str, log: &std::path::Path) -> Result<(), TrainingFailure> {
        let jobs = self.jobs();
        let failed = |e: kube::Error| backend(format!("creating the Kubernetes Job {}: {e}", self.describe(name)));
        match jobs.create(&PostParams::default(), job).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 || status.is_already_exists() => {}
            Err(error) => return Err(failed(error)),
        }
        self.delete_old(name, "it appeared while the job was staged", log).await?;
        jobs.create(&PostParams::default(), job).await.map(|_| ()).map_err(failed)
    }

    /// The Job of the run's name, if one is there already (left by an earlier attempt).
    async fn existing(&self, name: &str) -> Result<Option<Job>, TrainingFailure> {
        self.jobs()
            .get_opt(name)
            .await
            .map_err(|e| backend(format!("reading the Kubernetes Job {}: {e}", self.describe(name))))
    }

    /// Deletes the Job `name` an earlier attempt left (for the reason `why`), and waits for it to go, for
    /// `old_job_delete_timeout` at most.
    async fn delete_old(&self, name: &str, why: &str, log: &std::path::Path) -> Result<(), TrainingFailure> {
        let jobs = self.jobs();
        let failed = |e: kube::Error| backend(format!("deleting the Kubernetes Job {}: {e}", self.describe(name)));
        let line = format!("--- a Job {} of an earlier attempt exists and {why}: deleting it", self.describe(name));
        append_log(log, &line).await;
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(failed(error)),
        }
        let deadline = tokio::time::Instant::now() + self.settings.old_job_delete_timeout;
        loop {
            match jobs.get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(old)) if tokio::time::Instant::now() >= deadline => {
                    let message = self.old_job_stays(name, &old, log);
                    append_log(log, &format!("--- {} {message}", now())).await;
                    return Err(backend(message));
                }
                Ok(Some(_)) => tokio::time::sleep(self.settings.poll_interval).await,
                Err(error) => return Err(failed(error)),
            }
        }
    }

    /// Whether the launch re-attaches to the Job an earlier adapterd left, `old`: it trains the job of `digest`, has
    /// not failed, and the inputs staged for it are `prepared`'s. `Err`: why it is replaced instead.
    async fn re_attachable(
        &self,
        old: &Job,
        digest: &adapterci_core::Digest,
        run_id: &str,
        prepared: &PreparedJob,
    ) -> Result<String, String> {
        let created = match reattach::judge(old, digest) {
            reattach::Existing::ReAttach { created } => created,
            reattach::Existing::Replace { why } => return Err(why),
        };
        let staged = self.settings.staging.url();
        match self.settings.staging.staged_inputs_match(run_id, prepared).await {
            Ok(true) => Ok(created),
            Ok(false) => Err(format!("the inputs staged for it under {staged}/jobs/{run_id} are missing or differ")),
            Err(error) => Err(format!("the inputs staged for it could not be read: {error}")),
        }
    }

    /// Why the attempt fails when the Job `old` of an earlier attempt outlasted the wait for its deletion: what
    /// holds it (its finalizers, since when it is being deleted) and how to let it go.
    fn old_job_stays(&self, name: &str, old: &Job, log: &std::path::Path) -> String {
        let namespace = &self.settings.namespace;
        let mut holding = Vec::new();
        if let Some(finalizers) = old.metadata.finalizers.as_ref().filter(|finalizers| !finalizers.is_empty()) {
            holding.push(format!("finalizers {}", finalizers.join(", ")));
        }
        if let Some(since) = &old.metadata.deletion_timestamp {
            holding.push(format!("deletionTimestamp {}", since.0));
        }
        let holding = match holding.is_empty() {
            true => String::new(),
            false => format!(" ({})", holding.join("; ")),
        };
        format!(
            "the Kubernetes Job {} of an earlier attempt was still there {} s after it was deleted{holding}, so the \
             run's Job cannot be created: remove it (kubectl -n {namespace} delete job {name}, and its finalizers if \
             no controller removes them) (log: {})",
            self.describe(name),
            self.settings.old_job_delete_timeout.as_secs(),
            log.display()
        )
    }

    /// Re-attaches to the run's Job an earlier adapterd left for the same job (`digest`), or stages `prepared` and
    /// creates `manifest`, after deleting a Job of the run's name that is not re-attached to.
    async fn attach_or_create(
        &self,
        guard: &mut LaunchGuard,
        prepared: &PreparedJob,
        manifest: &Job,
        digest: &adapterci_core::Digest,
    ) -> Result<(), TrainingFailure> {
        let (name, run_id, log) = (guard.name.clone(), guard.run_id.clone(), guard.log.clone());
        let existing = match self.existing(&name).await {
            Ok(existing) => existing,
            Err(failure) => {
                // whether an earlier adapterd's Job is there is not known: it is left as it is, for the next attempt
                guard.armed = false;
                return Err(failure);
            }
        };
        let described = self.describe(&name);
        if let Some(old) = existing {
            match self.re_attachable(&old, digest, &run_id, prepared).await {
                Ok(created) => {
                    let line = format!(
                        "--- re-attaching to the Job {described} an earlier adapterd started for the same job \
                         (created {created})"
                    );
                    append_log(&log, &line).await;
                    tracing::info!(run = %run_id, job = %described, "re-attached to the training job an earlier adapterd started");
                    return Ok(());
                }
                Err(why) => {
                    let why = format!("is not re-attached to: {why}");
                    if let Err(failure) = self.delete_old(&name, &why, &log).await {
                        return stopped(guard, "deleting the earlier attempt's Job failed", failure);
                    }
                }
            }
        }
        append_log(&log, &format!("--- {} staging the job in {}", now(), self.settings.staging.url())).await;
        if let Err(failure) = self.settings.staging.stage_prepared(&run_id, prepared).await {
            return stopped(guard, "staging the job failed", failure);
        }
        if let Err(failure) = self.create(manifest, &name, &log).await {
            return stopped(guard, "creating the Job failed", failure);
        }
        append_log(&log, &format!("--- {} training started as the Kubernetes Job {described}", now())).await;
        tracing::info!(run = %run_id, job = %described, "training job created");
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.settings.namespace)
    }
}

fn backend(message: String) -> TrainingFailure {
    TrainingFailure::Backend(message)
}

/// The launch's end by `failure`, the guard told `why` for the run's log.
fn stopped<T>(guard: &mut LaunchGuard, why: &'static str, failure: TrainingFailure) -> Result<T, TrainingFailure> {
    guard.why = why;
    Err(failure)
}

#[async_trait]
impl TrainingLauncher for KubernetesLauncher {
    async fn launch(
        &self,
        run_id: &str,
        job: TrainJob,
        resources: &LaunchResources,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<TrainOutput, TrainingFailure> {
        let settings = &self.settings;
        let log = log_path(&settings.logs_dir, run_id).map_err(backend)?;
        tokio::fs::create_dir_all(&settings.logs_dir)
            .await
            .map_err(|e| backend(format!("creating {}: {e}", settings.logs_dir.display())))?;
        let name = job_name(run_id);
        // from the look for the run's Job on, it and the staged files go, however the launch ends (unless adapterd
        // stops)
        let mut guard = LaunchGuard {
            jobs: self.jobs(),
            name: name.clone(),
            staging: settings.staging.clone(),
            run_id: run_id.to_string(),
            log: log.clone(),
            namespace: settings.namespace.clone(),
            stopping: self.stopping.clone(),
            job_may_exist: false,
            armed: true,
            why: "run cancelled, timed out or taken over",
        };
        // the job's digest before anything is staged: an earlier adapterd's Job of the same digest trains on what is
        // staged under the run's folder, which must stay as it is
        let prepared = match settings.staging.prepare_job(&job).await {
            Ok(prepared) => prepared,
            Err(failure) => return stopped(&mut guard, "staging the job failed", failure),
        };
        let mut manifest = settings.template.build(&JobRequest {
            run_id,
            staging_url: &settings.pod_staging_url,
            // the controller drops the launch (deleting the Job) when the run's time limit passes; the Job's own
            // deadline (`resources.timeout`) is the backstop for an adapterd that stopped before it could delete it
            resources,
            ttl_after_finished: settings.ttl_after_finished,
        });
        let digest = job_digest(&prepared, &manifest);
        manifest
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(JOB_DIGEST_ANNOTATION.to_string(), digest.to_string());
        // from the look on, the Job may be this run's: a launch dropped now deletes it (a 404 is fine)
        guard.job_may_exist = true;
        self.attach_or_create(&mut guard, &prepared, &manifest, &digest).await?;
        let described = self.describe(&name);
        let follower = follow::Follower {
            jobs: self.jobs(),
            pods: self.pods(),
            events: self.events(),
            name: &name,
            container: settings.template.trainer_container(),
            log: &log,
            poll_interval: settings.poll_interval,
            start_timeout: settings.start_timeout,
        };
        let end = follower.follow(&*progress).await;
        // a launch that lost track of its Job (the API server gone) deletes it on its way out, as a dropped one does
        guard.armed = end.is_err();
        guard.why = "the executor lost track of it";
        let result = match end {
            Ok(follow::JobEnd::Complete) => {
                append_log(&log, &format!("--- {} the Job {described} completed", now())).await;
                settings.staging.read_output(run_id).await
            }
            Ok(follow::JobEnd::Failed { reason, message }) => {
                append_log(&log, &format!("--- {} the Job failed: {reason}: {message}", now())).await;
                match settings.staging.read_failure(run_id).await {
                    Some(failure) => Err(failure),
                    None => Err(backend(format!(
                        "the Kubernetes Job {described} failed: {reason}: {message} (log: {})",
                        log.display()
                    ))),
                }
            }
            Err(failure) => Err(failure),
        };
        if let Err(error) = settings.staging.remove_job(run_id).await {
            tracing::warn!(run = run_id, %error, "the staged job files could not be removed");
        }
        result
    }

    async fn logs(&self, run_id: &str, offset: u64) -> Result<Option<LogChunk>, String> {
        read_log(&log_path(&self.settings.logs_dir, run_id)?, offset).await
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// Deletes the run's Job (its pod with it) and the staged job files when a launch is dropped before its end (or
/// gives up on its Job); leaves both when adapterd is stopping, for the next adapterd to re-attach to.
struct LaunchGuard {
    jobs: Api<Job>,
    name: String,
    staging: Staging,
    run_id: String,
    log: PathBuf,
    namespace: String,
    /// True once adapterd stops ([`KubernetesLauncher::leave_jobs_on_shutdown`]).
    stopping: watch::Receiver<bool>,
    /// Whether the run's Job may exist (the launch looked for it): before, nothing was staged or created.
    job_may_exist: bool,
    armed: bool,
    /// Why the Job is stopped, for the run's log.
    why: &'static str,
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.job_may_exist && *self.stopping.borrow() {
            let line = format!(
                "--- adapterd is stopping: the Job {}/{} keeps running; the next adapterd re-attaches to it",
                self.namespace, self.name
            );
            crate::job_files::append_log_now(&self.log, &line);
            tracing::info!(job = %self.name, "adapterd is stopping: the training job is left running");
            return;
        }
        if !self.job_may_exist {
            // nothing was staged for the run yet (and what is there may be an earlier adapterd's Job's): left alone
            let line = format!("--- {} stopped before the Kubernetes Job was created ({})", now(), self.why);
            crate::job_files::append_log_now(&self.log, &line);
            return;
        }
        let line = format!("--- {} Kubernetes Job {} stopped ({}): deleting it", now(), self.name, self.why);
        crate::job_files::append_log_now(&self.log, &line);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(job = %self.name, "no runtime to delete the Kubernetes Job on: it runs to its deadline");
            return;
        };
        let (jobs, name, staging, run_id) =
            (self.jobs.clone(), self.name.clone(), self.staging.clone(), self.run_id.clone());
        runtime.spawn(async move {
            match jobs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(job = %name, "training job deleted"),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => tracing::warn!(job = %name, %error, "deleting the training job failed"),
            }
            if let Err(error) = staging.remove_job(&run_id).await {
                tracing::warn!(run = %run_id, %error, "the staged job files could not be removed");
            }
        });
    }
}
