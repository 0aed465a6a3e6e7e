//! The health endpoint's response.

use serde::{Deserialize, Serialize};

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` when the server answers requests.
    pub status: String,
    /// The adapterd version.
    pub version: String,
}
