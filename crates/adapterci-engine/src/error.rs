//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file is malformed, truncated or uses something this reader does not support.
    #[error("{path}: {reason}")]
    Gguf { path: PathBuf, reason: String },
    /// The model's metadata does not describe a model this engine can run.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A dataset record is invalid; `line` is 1-based.
    #[error("dataset line {line}: {reason}")]
    Dataset { line: usize, reason: String },
    /// A dataset has problems: every bad record with its line (the first ones, and how many in all).
    #[error("invalid dataset: {0}")]
    InvalidDataset(crate::dataset::DatasetIssues),
    /// Training diverged or could not proceed (a non-finite loss, no examples).
    #[error("training: {0}")]
    Training(String),
    /// An adapter file is malformed or does not fit the model.
    #[error("adapter: {0}")]
    Adapter(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("libtorch: {0}")]
    Torch(String),
    /// What the engine was writing to a caller's writer (a merged model to a file) could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl From<tch::TchError> for EngineError {
    fn from(error: tch::TchError) -> Self {
        EngineError::Torch(error.to_string())
    }
}
