//! Pipelines: `POST /api/v1/pipelines` (apply), `GET /api/v1/pipelines[/{name}]`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/pipelines`: create or update a pipeline from its YAML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyPipelineRequest {
    /// The file the YAML came from, only used in error messages (`file:line:col`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub yaml: String,
}

/// A pipeline as the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineInfo {
    pub name: String,
    /// Starts at 1; grows by one each time an apply changes the spec.
    pub revision: u64,
    /// Digest of the normalised spec: equal digests mean equal pipelines.
    pub spec_digest: String,
    /// The adapter the pipeline publishes.
    pub adapter: String,
    pub dataset_location: String,
    pub base_model: String,
    /// Trigger kinds, e.g. `dataset_changed`, `webhook`, `manual`.
    #[serde(default)]
    pub triggers: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// The pipeline did not exist.
    Created,
    /// The spec changed: a new revision.
    Configured,
    /// Same spec digest as the current revision: nothing changed.
    Unchanged,
}

impl ApplyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        }
    }
}

/// `POST /api/v1/pipelines` answers the pipeline as stored, and what the apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyPipelineResponse {
    #[serde(flatten)]
    pub pipeline: PipelineInfo,
    /// Absent from servers that do not report it; clients then compare with the pipeline before the apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ApplyOutcome>,
}

/// `GET /api/v1/pipelines/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDetail {
    pub info: PipelineInfo,
    /// The YAML of the current revision, as applied.
    pub yaml: String,
}
