//! `GET /api/v1/runs/{id}/metrics`: a run's per-step training metrics from the metadata store, or, for a run
//! with no per-step rows, the loss curve of its report.

use adapterci_api::{RunMetricsResponse, RunReport, StepMetricInfo, StepMetricsSource};
use adapterci_core::run_metrics::StepMetric;
use axum::Json;
use axum::extract::{Path, State};

use crate::{AppError, AppState};

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

fn step_info(metric: StepMetric) -> StepMetricInfo {
    StepMetricInfo {
        step: metric.step,
        loss: finite(metric.loss),
        learning_rate: finite(metric.learning_rate),
        tokens: Some(metric.tokens),
        seconds: finite(metric.seconds),
    }
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunMetricsResponse>, AppError> {
    let run = super::runs::stored_run(&state, &id).await?;
    let steps = match &state.run_metrics {
        Some(store) => store.step_metrics(&id).await?,
        None => Vec::new(),
    };
    if !steps.is_empty() {
        let steps = steps.into_iter().map(step_info).collect();
        return Ok(Json(RunMetricsResponse { run_id: id, source: StepMetricsSource::Steps, steps }));
    }
    // a report that does not decode has no curve to show; the run itself is still there
    let report: RunReport = run.report.and_then(|report| serde_json::from_value(report).ok()).unwrap_or_default();
    let steps = report
        .loss_curve
        .into_iter()
        .map(|(step, loss)| StepMetricInfo {
            step,
            loss: finite(loss),
            learning_rate: None,
            tokens: None,
            seconds: None,
        })
        .collect();
    Ok(Json(RunMetricsResponse { run_id: id, source: StepMetricsSource::Report, steps }))
}
