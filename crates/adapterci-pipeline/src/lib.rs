//! Versioned pipeline YAML parsed into a validated PipelineSpec, with line and column in every error.
//!
//! A pipeline file (`pipelines/*.yaml`, see `pipelines/README.md`) is read in one place, [`parse_pipeline`]:
//! YAML syntax and unknown keys are reported by serde, every other check by `build_and_validate`, and all the
//! problems of a file come back together in a [`PipelineError`], each with its line, column and field path.
//! The JSON schema in `pipelines/pipeline.schema.json` is generated from the wire structs ([`pipeline_schema`]).

mod cron;
mod duration;
mod error;
mod locate;
mod parse;
mod schema;
mod spec;
pub mod training_options;
mod validate;
pub mod wire;

pub use cron::CronSchedule;
pub use duration::{format_duration, parse_duration};
pub use error::{PipelineError, Problem, Problems, SourcePosition};
pub use parse::{load_pipeline_file, parse_pipeline};
pub use schema::{SCHEMA_PATH_IN_WORKSPACE, pipeline_schema, pipeline_schema_json};
pub use spec::{
    BaseModelRef, DEFAULT_CHANNEL, DEFAULT_WATCH_INTERVAL, DatasetRef, MIN_WATCH_INTERVAL, PipelineSpec, PromotionSpec,
    PublishSpec, ResourcesSpec, TriggerSpec, WebhookFormat, default_triggers,
};
pub use validate::LOCAL_SCHEME;
pub use wire::{SUPPORTED_VERSIONS, VersionedPipeline};
