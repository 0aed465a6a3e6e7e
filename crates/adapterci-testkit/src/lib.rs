//! Test-only helpers: in-memory fakes of the ports, a controllable clock, a scripted training executor, and the
//! conformance suites that every implementation of a port must pass.

pub mod channel_conformance;
pub mod clock;
pub mod eventually;
pub mod executor_fake;
pub mod postgres;
pub mod registry_conformance;
pub mod run_metrics_conformance;
pub mod run_metrics_fake;
pub mod scheduling_conformance;
pub mod scheduling_fake;
pub mod seaweedfs;
pub mod servers;
pub mod store_conformance;
pub mod store_fake;
mod store_fake_channels;
pub mod tokio_clock;
