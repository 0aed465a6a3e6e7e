//! The default training executor: runs the engine's training backend on a blocking thread of its own, so
//! training never occupies a tokio worker.

use std::sync::Arc;

use adapterci_core::ports::TrainingExecutor;
use adapterci_core::training::{ProgressSink, TrainJob, TrainOutput, TrainingBackend, TrainingFailure};
use async_trait::async_trait;

/// Executes training jobs in this process on `spawn_blocking` threads.
pub struct ThreadExecutor {
    backend: Arc<dyn TrainingBackend>,
}

impl ThreadExecutor {
    pub fn new(backend: Arc<dyn TrainingBackend>) -> ThreadExecutor {
        ThreadExecutor { backend }
    }
}

#[async_trait]
impl TrainingExecutor for ThreadExecutor {
    async fn execute(&self, job: TrainJob, progress: Arc<dyn ProgressSink>) -> Result<TrainOutput, TrainingFailure> {
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || backend.train(&job, progress.as_ref()))
            .await
            .map_err(|error| TrainingFailure::Backend(format!("the training thread died: {error}")))?
    }
}
