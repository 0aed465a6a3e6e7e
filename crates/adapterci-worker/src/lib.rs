//! The inference worker: pulls published adapter versions from the registry, verifies them (content digest and
//! base binding), keeps them in a memory-bounded cache keyed by manifest digest, swaps the served version
//! atomically, and answers completion requests. A version bound to a base release the worker's releases folder
//! lacks is served once the release is fetched from its [`ReleaseSource`] (the registry's store), verified.
//!
//! The engine is synchronous and its tensors are not `Sync`, so one dedicated thread owns the base model and the
//! adapter cache; async callers talk to it over a channel and never block a tokio worker.

mod cache;
mod engine_thread;
mod error;
mod worker;

pub use adapterci_core::base_release::ReleaseSource;
pub use error::WorkerError;
pub use worker::{
    BASE_MODEL_ALIAS, CompletionOutput, Prompt, Readiness, SamplingRequest, ServedAdapter, ServedModel, Worker,
    WorkerConfig,
};
