//! The launcher port: where a run's training executes when it runs outside the controller's process (a local
//! child process today, a Kubernetes Job next), with the log it captured. The controller hands it the run id so
//! that the logs can be found by run; dropping a launch's future stops the training (a clean stop on cancel).

use std::sync::Arc;

use async_trait::async_trait;

use crate::training::{ProgressSink, TrainJob, TrainOutput, TrainingFailure};

/// A part of a run's captured log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// The bytes from the requested offset to the current end of the log.
    pub bytes: Vec<u8>,
    /// Where the next read starts (the requested offset plus the bytes returned).
    pub next_offset: u64,
}

/// What a launched job may use (the pipeline's `resources`); `None` leaves the launcher's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchResources {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub gpus: u32,
    /// The run's time limit (`resources.timeout`). The controller enforces it by dropping the launch; a launcher
    /// whose jobs can outlive adapterd (a Kubernetes Job) also gives it to the job as a backstop.
    pub timeout: Option<std::time::Duration>,
}

/// Launches training jobs away from the controller and keeps their logs.
#[async_trait]
pub trait TrainingLauncher: Send + Sync {
    /// Runs `job` for `run_id` until it ends, reporting progress; dropping the future stops the job. A job that
    /// dies without a result fails with `TrainingFailure::Backend` naming how it ended (exit status or signal).
    async fn launch(
        &self,
        run_id: &str,
        job: TrainJob,
        resources: &LaunchResources,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<TrainOutput, TrainingFailure>;

    /// The captured log of `run_id` from byte `offset` on; `None` when this launcher has no log of that run.
    async fn logs(&self, run_id: &str, offset: u64) -> Result<Option<LogChunk>, String>;
}
