//! The validated, version-independent pipeline that the rest of adapterci works with.

use std::path::PathBuf;
use std::time::Duration;

use adapterci_core::gate::GateSpec;
use adapterci_core::names::{AdapterName, PipelineName};
use adapterci_core::training::{LoraSpec, TrainSpec};
use serde::{Deserialize, Serialize};

/// The channel an adapter is published to when the pipeline names none.
pub const DEFAULT_CHANNEL: &str = "stable";

/// How often a `dataset_watch` trigger without an `interval` looks at its dataset.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest `dataset_watch` interval accepted: polling an object store faster than this is abuse.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A pipeline after parsing and validation: every default filled in, every value in range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    pub name: PipelineName,
    pub description: Option<String>,
    pub base: BaseModelRef,
    pub dataset: DatasetRef,
    /// Never empty.
    pub triggers: Vec<TriggerSpec>,
    pub lora: LoraSpec,
    pub train: TrainSpec,
    /// Checked in order after training; the adapter is published only if all pass. May be empty.
    pub gates: Vec<GateSpec>,
    /// "No regression beyond a tolerance" gates, against the version served on `publish.channel`. May be empty.
    pub regression_gates: Vec<adapterci_core::gate::regression::RegressionGateSpec>,
    pub publish: PublishSpec,
    pub resources: ResourcesSpec,
}

/// The base model a pipeline trains on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseModelRef {
    /// A model name from adapterd's model catalog, such as `smollm2-135m-instruct`.
    Named(String),
    /// A GGUF file, relative to the server's working directory unless absolute.
    Path(PathBuf),
}

/// The training data of a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// A relative key in the dataset object store, without `..` or empty segments; with a trailing `/`, a prefix
    /// whose objects, in key order, make up the dataset.
    pub location: String,
}

impl DatasetRef {
    /// Whether the location is a prefix (ends with `/`) rather than one object.
    pub fn is_prefix(&self) -> bool {
        self.location.ends_with('/')
    }
}

/// What starts a run of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerSpec {
    /// Poll the dataset every `interval` and run when its content changed.
    DatasetWatch { interval: Duration },
    /// Run when someone asks (CLI, API).
    Manual,
    /// Run on deliveries to `/api/v1/webhooks/<secret>` authenticated with the named secret.
    Webhook { secret: String, format: WebhookFormat },
    /// Run on a schedule.
    Cron { schedule: CronSchedule },
}

pub use crate::cron::CronSchedule;

/// Who sends a webhook, and so how its deliveries are authenticated and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    Huggingface,
    Github,
    S3,
    Hmac,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Huggingface => "huggingface",
            WebhookFormat::Github => "github",
            WebhookFormat::S3 => "s3",
            WebhookFormat::Hmac => "hmac",
        }
    }
}

/// Where a passing adapter is published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishSpec {
    pub adapter: AdapterName,
    pub channel: String,
    /// Canary first, `channel` after a clean period; `None` publishes to `channel` at once.
    pub promotion: Option<PromotionSpec>,
}

/// Canary-first promotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionSpec {
    pub canary_channel: String,
    pub stable_after: Duration,
}

/// What a run's training may use on the executor; `None` leaves the executor's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesSpec {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub gpus: u32,
    pub timeout: Option<Duration>,
}

impl PipelineSpec {
    /// The interval of the pipeline's `dataset_watch` trigger, if it has one.
    pub fn watch_interval(&self) -> Option<Duration> {
        self.triggers.iter().find_map(|trigger| match trigger {
            TriggerSpec::DatasetWatch { interval } => Some(*interval),
            _ => None,
        })
    }

    /// The webhook triggers: `(secret name, format)`.
    pub fn webhooks(&self) -> impl Iterator<Item = (&str, WebhookFormat)> {
        self.triggers.iter().filter_map(|trigger| match trigger {
            TriggerSpec::Webhook { secret, format } => Some((secret.as_str(), *format)),
            _ => None,
        })
    }

    /// The schedule of the pipeline's `cron` trigger, if it has one.
    pub fn cron(&self) -> Option<&CronSchedule> {
        self.triggers.iter().find_map(|trigger| match trigger {
            TriggerSpec::Cron { schedule } => Some(schedule),
            _ => None,
        })
    }

    /// Whether people may start runs by hand.
    pub fn allows_manual_runs(&self) -> bool {
        self.triggers.contains(&TriggerSpec::Manual)
    }
}

/// The triggers of a pipeline that lists none: watch the dataset every 10s, and allow manual runs.
pub fn default_triggers() -> Vec<TriggerSpec> {
    vec![TriggerSpec::DatasetWatch { interval: DEFAULT_WATCH_INTERVAL }, TriggerSpec::Manual]
}
