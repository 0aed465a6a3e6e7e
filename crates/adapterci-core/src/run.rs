//! Runs of a pipeline: their states, stages and allowed transitions, and the records the metadata store keeps.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AdapterName, CoreError, Digest, PipelineName};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    /// Every gate passed and the adapter was published.
    Succeeded,
    /// A gate failed: nothing was published, the report is kept.
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

    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Rejected | RunState::Failed | RunState::Cancelled)
    }

    /// Checks that a run may move from `self` to `next`.
    pub fn transition(self, next: RunState) -> Result<RunState, CoreError> {
        let allowed = match self {
            RunState::Queued => matches!(next, RunState::Running | RunState::Cancelled | RunState::Failed),
            // A running run may be re-queued when its worker died (lease lost).
            RunState::Running => next.is_terminal() || next == RunState::Queued,
            _ => false,
        };
        if allowed {
            Ok(next)
        } else {
            Err(CoreError::InvalidTransition { from: self.to_string(), to: next.to_string() })
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| format!("unknown run state {value:?}"))
    }
}

/// The stage a running run is in, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStage {
    InitialAdapter,
    Train,
    Eval,
    Publish,
}

impl RunStage {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStage::InitialAdapter => "initial_adapter",
            RunStage::Train => "train",
            RunStage::Eval => "eval",
            RunStage::Publish => "publish",
        }
    }
}

impl fmt::Display for RunStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStage {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [RunStage::InitialAdapter, RunStage::Train, RunStage::Eval, RunStage::Publish]
            .into_iter()
            .find(|stage| stage.as_str() == value)
            .ok_or_else(|| format!("unknown run stage {value:?}"))
    }
}

/// What started a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// The watched dataset's content changed.
    DatasetChanged { location: String, digest: Digest },
    /// A person asked (`adapterctl trigger`).
    Manual,
    /// A webhook delivery.
    Webhook { source: String, delivery_id: String },
    /// A `cron` trigger's schedule came due.
    Schedule { schedule: String, due: DateTime<Utc> },
    /// The base model changed: retrain on its new base release (the rebase DAG).
    BaseModelChanged { base_model_digest: Digest, base_release_digest: Digest },
}

/// A run as the metadata store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: PipelineName,
    pub pipeline_revision: u64,
    pub state: RunState,
    pub stage: Option<RunStage>,
    pub trigger: Trigger,
    pub dataset_digest: Option<Digest>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The run's report (metrics, gates, samples) as JSON, once evaluated.
    pub report: Option<serde_json::Value>,
    pub published: Option<PublishedRef>,
    pub error: Option<String>,
}

/// The version a run published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRef {
    pub adapter: AdapterName,
    pub version: u64,
    pub manifest_digest: Digest,
}

/// A run to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub pipeline: PipelineName,
    pub pipeline_revision: u64,
    pub trigger: Trigger,
    pub dataset_digest: Option<Digest>,
}

impl NewRun {
    /// The record of this run when it is created: queued, with no stage, report or outcome yet.
    pub fn into_queued_record(self, id: String, now: DateTime<Utc>) -> RunRecord {
        RunRecord {
            id,
            pipeline: self.pipeline,
            pipeline_revision: self.pipeline_revision,
            state: RunState::Queued,
            stage: None,
            trigger: self.trigger,
            dataset_digest: self.dataset_digest,
            created_at: now,
            updated_at: now,
            report: None,
            published: None,
            error: None,
        }
    }
}

/// Changes to a run; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunPatch {
    pub state: Option<RunState>,
    pub stage: Option<RunStage>,
    pub dataset_digest: Option<Digest>,
    pub report: Option<serde_json::Value>,
    pub published: Option<PublishedRef>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_never_change() {
        for from in RunState::ALL.into_iter().filter(|state| state.is_terminal()) {
            for to in RunState::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_ordinary_path_is_allowed() {
        assert_eq!(RunState::Queued.transition(RunState::Running).unwrap(), RunState::Running);
        assert_eq!(RunState::Running.transition(RunState::Succeeded).unwrap(), RunState::Succeeded);
        assert_eq!(RunState::Running.transition(RunState::Rejected).unwrap(), RunState::Rejected);
        assert!(RunState::Queued.transition(RunState::Succeeded).is_err());
    }

    #[test]
    fn states_and_stages_round_trip_through_text() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().unwrap(), state);
        }
        assert_eq!("publish".parse::<RunStage>().unwrap(), RunStage::Publish);
        assert!("nope".parse::<RunStage>().is_err());
    }
}
