//! The launcher the controller trains through when one is set (a child process per run, whose log can be
//! read by run id), instead of the in-process `TrainingExecutor` port.

use std::sync::Arc;

use adapterci_core::launcher::{LogChunk, TrainingLauncher};

use crate::{Controller, ControllerError};

impl Controller {
    /// Trains every run from now on through `launcher`.
    pub fn set_launcher(&self, launcher: Arc<dyn TrainingLauncher>) {
        if let Ok(mut slot) = self.launcher.lock() {
            *slot = Some(launcher);
        }
    }

    pub fn launcher(&self) -> Option<Arc<dyn TrainingLauncher>> {
        self.launcher.lock().ok().and_then(|slot| slot.clone())
    }

    /// The captured training log of `run_id` from byte `offset`; `None` when no launcher keeps one (the run
    /// trained in-process, or has not started training yet). The run must exist.
    pub async fn run_logs(&self, run_id: &str, offset: u64) -> Result<Option<LogChunk>, ControllerError> {
        self.ports().store.get_run(run_id).await?.ok_or_else(|| ControllerError::RunNotFound(run_id.to_string()))?;
        let Some(launcher) = self.launcher() else { return Ok(None) };
        launcher.logs(run_id, offset).await.map_err(ControllerError::Logs)
    }
}
