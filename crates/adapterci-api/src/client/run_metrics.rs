//! [`ApiClient`] method for a run's per-step training metrics.

use reqwest::Method;

use super::{ApiClient, Body};
use crate::RunMetricsResponse;
use crate::error::ApiError;

impl ApiClient {
    /// `GET /api/v1/runs/{id}/metrics`.
    pub async fn run_metrics(&self, id: &str) -> Result<RunMetricsResponse, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "runs", id, "metrics"]), Body::<()>::None).await
    }
}
