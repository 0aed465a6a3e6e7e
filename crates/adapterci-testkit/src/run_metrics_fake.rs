//! An in-memory `RunMetricsStore`, for tests that need no database. It passes the same conformance suite
//! (`run_metrics_conformance`) as the SQL store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use adapterci_core::ports::StoreError;
use adapterci_core::run_metrics::{RunMetricsStore, StepMetric};
use async_trait::async_trait;

/// Step metrics by run id, then by step.
#[derive(Debug, Default)]
pub struct InMemoryRunMetrics {
    runs: Mutex<HashMap<String, BTreeMap<u64, StepMetric>>>,
}

impl InMemoryRunMetrics {
    pub fn new() -> InMemoryRunMetrics {
        InMemoryRunMetrics::default()
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("the in-memory run metrics lock is poisoned".to_string())
}

#[async_trait]
impl RunMetricsStore for InMemoryRunMetrics {
    async fn record_step_metrics(&self, run_id: &str, steps: &[StepMetric]) -> Result<(), StoreError> {
        let mut runs = self.runs.lock().map_err(|_| poisoned())?;
        let run = runs.entry(run_id.to_string()).or_default();
        for metric in steps {
            run.insert(metric.step, metric.clone());
        }
        Ok(())
    }

    async fn step_metrics(&self, run_id: &str) -> Result<Vec<StepMetric>, StoreError> {
        let runs = self.runs.lock().map_err(|_| poisoned())?;
        Ok(runs.get(run_id).map(|steps| steps.values().cloned().collect()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_conforms() {
        crate::run_metrics_conformance::run_metrics_conformance(&InMemoryRunMetrics::new()).await;
    }
}
