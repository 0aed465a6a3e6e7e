//! Adapters in the registry: `GET /api/v1/adapters`, `.../{name}/versions` and `.../{name}/versions/{version}`
//! (the last one returns the version's manifest as plain JSON, see `adapterci_core::manifest`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One adapter and its newest version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterInfo {
    pub name: String,
    pub latest_version: u64,
    /// Manifest digest of the latest version.
    pub manifest_digest: String,
    /// The base model the latest version is bound to.
    pub base_model_digest: String,
    /// When the latest version was published.
    pub created_at: DateTime<Utc>,
    /// The version the embedded worker serves now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_version: Option<u64>,
}

/// One published, immutable version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterVersionInfo {
    pub name: String,
    pub version: u64,
    pub manifest_digest: String,
    pub base_model_digest: String,
    /// The run that published it; absent for imported adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub created_at: DateTime<Utc>,
}
