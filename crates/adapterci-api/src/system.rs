//! The health and readiness endpoints' responses.

use serde::{Deserialize, Serialize};

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` when the server answers requests.
    pub status: String,
    /// The adapterd version.
    pub version: String,
}

/// `GET /readyz`: answered with 200 when `ready`, 503 when not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessResponse {
    /// The embedded worker has gone over every published adapter once (each loaded, or its error logged); always
    /// true without a worker.
    pub ready: bool,
    /// Why it is not ready; absent when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
