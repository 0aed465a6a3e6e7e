//! The controller's error type.

use adapterci_core::ports::{RegistryError, SourceError, StoreError};

/// Errors of controller operations (a failed gate is not an error: it is a run outcome).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    InvalidPipeline(#[from] adapterci_pipeline::PipelineError),
    #[error("pipeline {0:?} does not exist")]
    PipelineNotFound(String),
    #[error("run {0:?} does not exist")]
    RunNotFound(String),
    #[error("pipeline {pipeline:?}: {reason}")]
    BaseModel { pipeline: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A stored pipeline no longer parses (written by another version of adapterci, or edited by hand).
    #[error("stored pipeline {name:?} revision {revision} is invalid: {reason}")]
    StoredPipeline { name: String, revision: u64, reason: String },
    /// A run's captured log could not be read.
    #[error("reading the run's log: {0}")]
    Logs(String),
    /// A channel change of the promotion policy was refused.
    #[error(transparent)]
    Channel(#[from] adapterci_core::channels::ChannelError),
    /// The promotion policy names something that cannot be used.
    #[error("promotion: {0}")]
    Promotion(String),
}
