//! Domain types, content digests, the run state machine, gate decisions and the port traits of adapterci.
//!
//! This crate does no IO. Every other crate depends on it; it depends on none of them. Implementations of the
//! ports live in their own crates (store, registry, engine, controller) and are wired together by the server.

pub mod base_release;
pub mod channels;
pub mod digest;
pub mod error;
pub mod events;
pub mod gate;
pub mod gc;
pub mod launcher;
pub mod manifest;
pub mod names;
pub mod ports;
pub mod retention;
pub mod run;
pub mod run_metrics;
pub mod scheduling;
pub mod training;

pub use digest::Digest;
pub use error::CoreError;
pub use names::{AdapterName, PipelineName};
