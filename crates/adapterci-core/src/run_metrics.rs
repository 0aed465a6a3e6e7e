//! Per-step training metrics of a run (step, loss, learning rate, tokens, seconds) and the port that stores
//! them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;
use crate::training::StepProgress;

/// One optimizer step of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetric {
    /// Counted from 1.
    pub step: u64,
    pub loss: f64,
    pub learning_rate: f64,
    /// Real (not padding) tokens the step trained on.
    pub tokens: u64,
    /// Wall time of the step.
    pub seconds: f64,
}

impl StepMetric {
    pub fn from_progress(progress: &StepProgress) -> StepMetric {
        StepMetric {
            step: progress.step as u64,
            loss: progress.loss,
            learning_rate: progress.learning_rate,
            tokens: progress.tokens as u64,
            seconds: progress.seconds,
        }
    }

    /// Tokens per second of this step (0 when it took no measurable time).
    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.tokens as f64 / self.seconds } else { 0.0 }
    }
}

/// Stores the per-step metrics of runs. A step recorded again for the same run (a run resumed from a
/// checkpoint repeats the steps after it) replaces the earlier row, so the curve has one point per step.
#[async_trait]
pub trait RunMetricsStore: Send + Sync {
    async fn record_step_metrics(&self, run_id: &str, steps: &[StepMetric]) -> Result<(), StoreError>;
    /// The run's steps in step order; empty for a run with none (or an unknown id).
    async fn step_metrics(&self, run_id: &str) -> Result<Vec<StepMetric>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_metric_comes_from_progress() {
        let progress = StepProgress {
            step: 3,
            total_steps: 10,
            loss: 0.5,
            learning_rate: 1e-3,
            tokens_per_second: 200.0,
            tokens: 400,
            seconds: 2.0,
        };
        let metric = StepMetric::from_progress(&progress);
        assert_eq!((metric.step, metric.tokens, metric.tokens_per_second()), (3, 400, 200.0));
    }
}
