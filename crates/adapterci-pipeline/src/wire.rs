//! The pipeline file as written, one set of structs per format version; the JSON schema is generated from these.
//!
//! Optional wire fields stand for defaults filled in by `build_and_validate`. Required keys (`name`, `base`,
//! `dataset`) are `Option` too, marked required in the schema only: a missing one is then reported together
//! with every other problem of the file instead of stopping deserialization at the first.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format versions this crate reads, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["v1"];

/// An adapterci pipeline: train a LoRA adapter on a dataset, check it against eval gates, publish it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "version")]
#[schemars(title = "adapterci pipeline")]
pub enum VersionedPipeline {
    /// Format version 1.
    #[serde(rename = "v1")]
    V1(PipelineV1),
}

/// A pipeline in format v1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineV1 {
    /// serde's internally tagged enums buffer the document and lose line and column in their errors, so
    /// `parse_pipeline` reads the version first and deserializes this struct straight from the source; this
    /// field lets the `version` key through `deny_unknown_fields` there. Always `None` through the enum.
    #[serde(default, rename = "version", skip_serializing)]
    #[schemars(skip)]
    pub version_key: Option<serde_yaml::Value>,
    /// The pipeline's name: lowercase letters, digits, '-', '_' and '.', at most 63 characters.
    #[schemars(required, length(min = 1, max = 63))]
    pub name: Option<String>,
    /// A line for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The base model to train on.
    #[schemars(required)]
    pub base: Option<BaseV1>,
    /// The training data.
    #[schemars(required)]
    pub dataset: Option<DatasetV1>,
    /// What starts a run. Default: `[{kind: dataset_watch, interval: 10s}, {kind: manual}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub triggers: Option<Vec<TriggerV1>>,
    /// LoRA and optimisation settings; every field has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingV1>,
    /// Eval gates the adapter must pass to be published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalV1>,
    /// Where a passing adapter goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesV1>,
}

/// Exactly one of `model` and `path`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaseV1 {
    /// A model name from adapterd's model catalog, such as `smollm2-135m-instruct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A GGUF file, relative to the server's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetV1 {
    /// The key of the JSONL dataset in the dataset object store: relative, no `..`.
    #[schemars(required, length(min = 1))]
    pub location: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerV1 {
    pub kind: TriggerKindV1,
    /// Only for `dataset_watch`: how often to look at the dataset, like `500ms`, `10s`, `5m`, `1h`; at least
    /// 1s. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Only for `webhook`: the name of the secret that authenticates deliveries (its value comes from
    /// adapterd's environment, `ADAPTERCI_WEBHOOK_SECRET_<NAME>`, never from this file). Deliveries are posted to
    /// `/api/v1/webhooks/<secret>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub secret: Option<String>,
    /// Only for `webhook`: the sender's format. Default `hmac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<WebhookFormatV1>,
    /// Only for `cron`: five fields (minute hour day-of-month month day-of-week, UTC) like `0 3 * * *`; each a
    /// `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// Who sends a webhook, and so how it is authenticated and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormatV1 {
    /// Hugging Face Hub: `X-Webhook-Secret`, `repo.content` events with `updatedRefs`.
    Huggingface,
    /// GitHub: `X-Hub-Signature-256` (HMAC-SHA256 of the body), `X-GitHub-Delivery`.
    Github,
    /// S3 event notifications (`Records[]`), authenticated by `Authorization: Bearer <secret>`.
    S3,
    /// Generic: `X-Adapterci-Signature: sha256=HMAC(secret, "<timestamp>.<body>")`, `X-Adapterci-Timestamp`,
    /// `X-Adapterci-Delivery`.
    Hmac,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKindV1 {
    /// Run when the dataset's content changes.
    DatasetWatch,
    /// Run when asked from the CLI or the API.
    Manual,
    /// Run when an authenticated webhook delivery says the data changed.
    Webhook,
    /// Run on a schedule.
    Cron,
}

/// Defaults come from adapterci's `TrainSpec` and `LoraSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingV1 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraV1>,
    /// Optimizer steps, at least 1. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub steps: Option<usize>,
    /// Records per step, at least 1. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// Greater than 0. Default 2e-4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// At least 0. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub weight_decay: Option<f64>,
    /// Tokens per record, prompt and completion together; at least 16. Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16))]
    pub max_seq_len: Option<usize>,
    /// Seeds initialisation, shuffling and the eval split. Default 42.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Fraction of records held out for evaluation, strictly between 0 and 1. Default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_fraction: Option<f64>,
    /// At most this many held-out records are generated from for exact match; at least 1. Default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_eval_examples: Option<usize>,
    /// Generation budget for exact match, at least 1. Default 48.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_new_tokens: Option<usize>,
    /// Also evaluate the base model alone (`base_` metrics). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_base: Option<bool>,
    /// Batches of `batch_size` whose gradients add up to one optimizer step; 1 to 1024. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub gradient_accumulation: Option<usize>,
    /// Learning-rate decay after the linear warmup over the first 10% of the steps. Default `cosine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<crate::training_options::LrScheduleV1>,
    /// Stop when the held-out loss stops improving, keeping the best adapter. Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<crate::training_options::EarlyStoppingV1>,
    /// Records longer than `max_seq_len`: `truncate_prompt_left` (default) or `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<crate::training_options::TruncationV1>,
    /// Pack several records into each sequence of up to `max_seq_len` tokens; attention and loss stay within
    /// each record. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<bool>,
    /// Precision of the frozen base weights in the training matmuls: `f32` (default) or `bf16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_precision: Option<crate::training_options::BasePrecisionV1>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraV1 {
    /// 1 to 256. Default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub rank: Option<usize>,
    /// Greater than 0. Default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// At least 0 and less than 1. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// The layer operations that get an adapter, no duplicates. Default all seven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub targets: Option<Vec<LoraTargetV1>>,
    /// Default `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayersV1>,
    /// Scale by `alpha / sqrt(rank)` instead of `alpha / rank` (rsLoRA). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_rslora: Option<bool>,
    /// Module-name pattern -> rank, like PEFT's `rank_pattern`: `{q_proj: 8, model.layers.0.mlp.down_proj: 4}`.
    /// Keys are regular expressions matched against the end of a module's name after a '.'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_pattern: Option<std::collections::BTreeMap<String, usize>>,
    /// Module-name pattern -> alpha, like PEFT's `alpha_pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_pattern: Option<std::collections::BTreeMap<String, f64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoraTargetV1 {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// `all`, a list of layer indices like `[0, 5, 6]`, the last N layers as `{last: 8}`, or an inclusive range of
/// layers as `{range: [4, 11]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayersV1 {
    All,
    List(Vec<usize>),
    Last(usize),
    /// First and last layer, both included.
    Range(usize, usize),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalV1 {
    /// Every gate must pass for the adapter to be published. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Vec<GateV1>>,
}

/// A bound on one metric (such as `exact_match` or `eval_loss`): `min`, `max` or both, inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateV1 {
    #[schemars(length(min = 1))]
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// No regression beyond this much (absolute, >= 0) against the version now served on the publish channel:
    /// losses, perplexities and KL may rise by at most this, other metrics fall by at most this. Passes when
    /// nothing is served yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_regression: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishV1 {
    /// The adapter's name in the registry. Default: the pipeline's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Default `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Canary first: publish to the canary channel, and move `channel` to the version only after it has served
    /// there for `stable_after` without being rolled back. Absent: publish to `channel` at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionV1>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionV1 {
    /// The channel a new version goes to first. Default `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// How long a version must stay clean on the canary channel before it is promoted, like `1h`; at least 1m.
    #[schemars(required, regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub stable_after: Option<String>,
}

/// What a run's training may use on the executor (a local process, a Kubernetes Job).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesV1 {
    /// CPU cores, like `2` or `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Host memory (not GPU memory), like `512Mi`, `8Gi` or a number of bytes. The local process executor kills a
    /// trainer whose processes hold more, resident (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti)?$"))]
    pub memory: Option<String>,
    /// GPUs. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Training stops and the run fails after this long, like `2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
}

const LAYERS_EXPECTED: &str = "`all`, a list of layer indices such as [0, 5, 6], {last: N} or {range: [FIRST, LAST]}";

impl<'de> Deserialize<'de> for LayersV1 {
    // A visitor rather than `#[serde(untagged)]`: untagged enums answer every mistake with "did not match any
    // variant" and lose the position of the element at fault.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LayersVisitor)
    }
}

struct LayersVisitor;

impl<'de> Visitor<'de> for LayersVisitor {
    type Value = LayersV1;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(LAYERS_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<LayersV1, E> {
        match value {
            "all" => Ok(LayersV1::All),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LayersV1, A::Error> {
        let mut layers = Vec::new();
        while let Some(layer) = seq.next_element::<usize>()? {
            layers.push(layer);
        }
        Ok(LayersV1::List(layers))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LayersV1, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("last"));
        };
        let layers = match key.as_str() {
            "last" => LayersV1::Last(map.next_value::<usize>()?),
            "range" => {
                let [first, last] = map.next_value::<[usize; 2]>()?;
                LayersV1::Range(first, last)
            }
            other => return Err(de::Error::unknown_field(other, &["last", "range"])),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!("`{extra}` next to `{key}`: give one of last or range")));
        }
        Ok(layers)
    }
}

impl Serialize for LayersV1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            LayersV1::All => serializer.serialize_str("all"),
            LayersV1::List(layers) => layers.serialize(serializer),
            LayersV1::Last(count) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("last", count)?;
                map.end()
            }
            LayersV1::Range(first, last) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("range", &[first, last])?;
                map.end()
            }
        }
    }
}

impl JsonSchema for LayersV1 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LayersV1".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Which decoder layers carry the adapter: `all`, a list of layer indices such as \
                [0, 5, 6], the last N layers as {last: N}, or the layers FIRST to LAST included as \
                {range: [FIRST, LAST]}.",
            "oneOf": [
                { "const": "all" },
                {
                    "type": "array",
                    "items": { "type": "integer", "minimum": 0 },
                    "minItems": 1,
                    "uniqueItems": true
                },
                {
                    "type": "object",
                    "properties": { "last": { "type": "integer", "minimum": 1 } },
                    "required": ["last"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "properties": {
                        "range": {
                            "type": "array",
                            "items": { "type": "integer", "minimum": 0 },
                            "minItems": 2,
                            "maxItems": 2
                        }
                    },
                    "required": ["range"],
                    "additionalProperties": false
                }
            ]
        })
    }
}
