//! Runs: `POST /api/v1/pipelines/{name}/trigger`, `GET /api/v1/runs[?pipeline=&limit=]`, `GET /api/v1/runs/{id}`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a run is in its life (the same names as `adapterci_core::run::RunState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    /// Every gate passed and the adapter was published.
    Succeeded,
    /// A gate failed: nothing was published. A normal outcome, not an error.
    Rejected,
    Failed,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Rejected,
        RunState::Failed,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Rejected => "rejected",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// A terminal state never changes again: a client following a run stops there.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Rejected | RunState::Failed | RunState::Cancelled)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The adapter version a run published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedInfo {
    pub adapter: String,
    pub version: u64,
    pub manifest_digest: String,
}

/// One run of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub pipeline: String,
    pub pipeline_revision: u64,
    pub state: RunState,
    /// `initial_adapter`, `train`, `eval` or `publish` while running; the last stage reached afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What started the run, e.g. `{"kind": "manual"}` or
    /// `{"kind": "dataset_changed", "location": "...", "digest": "sha256:..."}`.
    pub trigger: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishedInfo>,
    /// Why the run failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run's report, a [`RunReport`] as JSON; see [`RunInfo::typed_report`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl RunInfo {
    /// The report decoded as a [`RunReport`]; `Ok(None)` when the run has none yet.
    ///
    /// The report stays plain JSON in [`RunInfo`] so that a report this client does not understand never makes
    /// the run itself unreadable.
    pub fn typed_report(&self) -> Result<Option<RunReport>, serde_json::Error> {
        self.report.as_ref().map(RunReport::deserialize).transpose()
    }

    /// The trigger's kind (`manual`, `dataset_changed`, `webhook`, ...), or `unknown`.
    pub fn trigger_kind(&self) -> &str {
        self.trigger.get("kind").and_then(|kind| kind.as_str()).unwrap_or("unknown")
    }
}

/// The report of a run, filled in as it goes: progress while training, then metrics, gates and samples.
/// Every field defaults, so a partial report decodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Metric values by name (`exact_match`, `eval_loss`, `base_exact_match`, ...). `null` stands for a value
    /// that is not a finite number, which JSON cannot carry.
    #[serde(default)]
    pub metrics: BTreeMap<String, Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<GateReport>,
    #[serde(default)]
    pub samples: Vec<EvalSample>,
    /// `[step, training loss]` pairs.
    #[serde(default)]
    pub loss_curve: Vec<(u64, f64)>,
    /// The latest training step, while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,
    /// Messages from the job, oldest first.
    #[serde(default)]
    pub messages: Vec<String>,
}

/// Every gate's decision; `passed` only when all passed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub passed: bool,
    #[serde(default)]
    pub results: Vec<GateResult>,
}

/// The decision of one gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub metric: String,
    /// The measured value; `null` when the metric was missing or not finite.
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    pub passed: bool,
    /// Why it passed or failed, for people.
    #[serde(default)]
    pub reason: String,
}

/// One held-out example answered by the base model and by the adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSample {
    pub prompt: String,
    pub expected: String,
    #[serde(default)]
    pub base_output: Option<String>,
    pub adapter_output: String,
    pub exact_match: bool,
}

/// The latest training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
}

/// `GET /api/v1/runs` query: newest runs first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunListQuery {
    /// Only runs of this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// At most this many runs; the server picks a default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /api/v1/runs/{id}/logs?offset=` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLogsQuery {
    /// Byte offset to read from; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A part of a run's captured training log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLogsResponse {
    /// The log from the requested offset to its current end (invalid UTF-8 replaced).
    pub text: String,
    /// Where the next read starts.
    pub next_offset: u64,
    /// The run has ended: the log will not grow.
    pub complete: bool,
}
