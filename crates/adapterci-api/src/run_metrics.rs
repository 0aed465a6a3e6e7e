//! `GET /api/v1/runs/{id}/metrics`: the per-step training metrics of a run.

use serde::{Deserialize, Serialize};

/// Where a run's step metrics come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepMetricsSource {
    /// The metadata store's per-step rows: every field is present.
    Steps,
    /// Only the loss curve of the run's report (runs trained before per-step rows were recorded): learning
    /// rate, tokens and seconds are absent.
    Report,
}

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetricInfo {
    pub step: u64,
    /// `null` when not a finite number.
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Real (not padding) tokens of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Wall time of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl StepMetricInfo {
    /// Tokens per second of the step, when both are known and the step took measurable time.
    pub fn tokens_per_second(&self) -> Option<f64> {
        match (self.tokens, self.seconds) {
            (Some(tokens), Some(seconds)) if seconds > 0.0 => Some(tokens as f64 / seconds),
            _ => None,
        }
    }
}

/// The steps of a run, in step order (empty before its first step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetricsResponse {
    pub run_id: String,
    pub source: StepMetricsSource,
    #[serde(default)]
    pub steps: Vec<StepMetricInfo>,
}
