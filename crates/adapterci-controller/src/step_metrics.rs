//! The per-step training metrics of runs (step, loss, learning rate, tokens, seconds): when a store is set, the
//! progress writer stores every step the backend reports, so `GET /api/v1/runs/{id}/metrics` and `adapterctl runs
//! metrics` show the whole curve, during the run and after it.

use std::sync::Arc;

use adapterci_core::run_metrics::RunMetricsStore;

use crate::Controller;

impl Controller {
    /// Stores the metrics of every training step from now on in `store`.
    pub fn set_run_metrics(&self, store: Arc<dyn RunMetricsStore>) {
        if let Ok(mut slot) = self.run_metrics.lock() {
            *slot = Some(store);
        }
    }

    pub(crate) fn run_metrics(&self) -> Option<Arc<dyn RunMetricsStore>> {
        self.run_metrics.lock().ok().and_then(|slot| slot.clone())
    }
}

/// Stores the steps `progress` reported since the last call; a failure is logged (the run goes on).
pub(crate) async fn flush_steps(
    store: Option<&Arc<dyn RunMetricsStore>>,
    run_id: &str,
    progress: &crate::progress::RunProgress,
) {
    let Some(store) = store else { return };
    let steps = progress.take_steps();
    if steps.is_empty() {
        return;
    }
    if let Err(error) = store.record_step_metrics(run_id, &steps).await {
        tracing::warn!(run = %run_id, %error, "cannot store training step metrics");
    }
}
