//! The worker's error type.

use adapterci_core::Digest;
use adapterci_core::ports::RegistryError;

/// Errors of the inference worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// `model` names neither the base model nor a served adapter.
    #[error("model {0:?} is not served here (see GET /v1/models)")]
    UnknownModel(String),
    /// The adapter was trained for another base model: serving it would silently give wrong answers.
    #[error(
        "adapter {adapter} version {version} was trained for base model {expected}, but this worker serves {actual}: refused"
    )]
    BaseMismatch { adapter: String, version: u64, expected: Digest, actual: Digest },
    /// The adapter is bound to a base release that neither the releases folder nor the release source has whole:
    /// `error` names the release and the key looked for (missing, or its bytes not of its digest).
    #[error(
        "adapter {adapter} version {version} is bound to base release {release}, which could not be fetched: {error}"
    )]
    ReleaseFetch { adapter: String, version: u64, release: Digest, error: Box<RegistryError> },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("engine: {0}")]
    Engine(String),
    /// The engine thread is gone (it panicked or the worker is shutting down).
    #[error("the inference engine is not running")]
    EngineStopped,
}
