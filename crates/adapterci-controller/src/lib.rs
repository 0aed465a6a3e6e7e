//! The controller: applies pipelines, watches dataset locations, schedules runs durably in the metadata store
//! and executes them stage by stage (initial adapter -> train -> eval gates -> publish or reject).
//!
//! It talks to the world only through the ports of `adapterci-core`, so its tests run on in-memory fakes with
//! no database, object store or libtorch.

mod base_watch;
mod dataset;
mod error;
mod launch;
mod models;
mod progress;
mod promotion;
mod rebase;
mod runner;
mod schedule;
mod service;
mod specs;
mod step_metrics;
mod watch;
mod webhook_trigger;
pub mod webhooks;

pub use base_watch::{REBASED_FILE, RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE, WatchedBaseModels};
pub use error::ControllerError;
pub use models::{BaseModels, ResolvedBase, StaticBaseModels};
pub use rebase::RebaseOutcome;
pub use runner::RunReport;
pub use schedule::SchedulingConfig;
pub use service::{ApplyOutcome, Controller, ControllerConfig, Ports, PublishListener};
pub use webhook_trigger::{WebhookFailure, WebhookOutcome};
