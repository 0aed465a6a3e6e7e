//! The inference worker: pulls published adapter versions from the registry, verifies them (content digest and
//! base binding), keeps them in a memory-bounded cache keyed by manifest digest, swaps the served version
//! atomically, and answers completion requests.
//!
//! The engine is synchronous and its tensors are not `Sync`, so one dedicated thread owns the base model and the
//! adapter cache; async callers talk to it over a channel and never block a tokio worker.

mod cache;
mod engine_thread;
mod error;
mod worker;

pub use error::WorkerError;
pub use worker::{
    BASE_MODEL_ALIAS, CompletionOutput, Prompt, SamplingRequest, ServedAdapter, ServedModel, Worker, WorkerConfig,
};
