//! What a training job is asked to do and what it returns: the contract between the controller and any
//! training backend (in-process engine, local process, Kubernetes Job).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// A linear operation of a decoder layer that a LoRA adapter can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The short name used in pipelines and manifests (`q`, `gate`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Gate => "gate",
            LoraTarget::Up => "up",
            LoraTarget::Down => "down",
        }
    }

    /// The module name PEFT and Hugging Face Llama checkpoints use (`q_proj`, `gate_proj`, ...).
    pub fn hf_module(self) -> &'static str {
        match self {
            LoraTarget::Q => "self_attn.q_proj",
            LoraTarget::K => "self_attn.k_proj",
            LoraTarget::V => "self_attn.v_proj",
            LoraTarget::O => "self_attn.o_proj",
            LoraTarget::Gate => "mlp.gate_proj",
            LoraTarget::Up => "mlp.up_proj",
            LoraTarget::Down => "mlp.down_proj",
        }
    }
}

/// Which decoder layers carry the adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LayerSelection {
    /// Every layer of the model.
    #[default]
    All,
    /// Exactly these layer indices.
    List(Vec<usize>),
    /// The last `n` layers.
    LastN(usize),
}

impl LayerSelection {
    /// The concrete, sorted layer indices for a model with `num_layers` layers; `Err` names an index out of range.
    pub fn resolve(&self, num_layers: usize) -> Result<Vec<usize>, String> {
        let mut layers = match self {
            LayerSelection::All => (0..num_layers).collect::<Vec<_>>(),
            LayerSelection::LastN(n) => (num_layers.saturating_sub(*n)..num_layers).collect(),
            LayerSelection::List(list) => {
                if let Some(bad) = list.iter().find(|&&layer| layer >= num_layers) {
                    return Err(format!(
                        "layer {bad} does not exist: the model has {num_layers} layers (0..{num_layers})"
                    ));
                }
                list.clone()
            }
        };
        layers.sort_unstable();
        layers.dedup();
        Ok(layers)
    }
}

/// LoRA hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<LoraTarget>,
    pub layers: LayerSelection,
    /// Scale the update by `alpha / sqrt(rank)` instead of `alpha / rank` (rsLoRA, PEFT's `use_rslora`).
    #[serde(default)]
    pub use_rslora: bool,
    /// Module-name pattern -> rank for the modules whose rank is not `rank` (PEFT's `rank_pattern`: a key
    /// matches a module such as `model.layers.3.self_attn.q_proj` when it matches a whole dotted suffix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Module-name pattern -> alpha, like `rank_pattern` (PEFT's `alpha_pattern`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: LoraTarget::ALL.to_vec(),
            layers: LayerSelection::All,
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        }
    }
}

/// How the learning rate decays after the linear warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Cosine decay to 0.
    #[default]
    Cosine,
    /// Linear decay to 0.
    Linear,
}

/// What happens to a record longer than `max_seq_len` tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationPolicy {
    /// Drop tokens from the left of the prompt; a completion that cannot fit is still refused.
    #[default]
    TruncatePromptLeft,
    /// Refuse the record, naming its line.
    Reject,
}

/// Precision of the frozen base weights in the training matmuls. The adapter, norms, attention, the loss and
/// the optimizer stay f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BasePrecision {
    /// The base model's f32 weights: what inference computes.
    #[default]
    F32,
    /// bf16 copies of the linear and LM-head weights, activations rounded to bf16 at those matmuls: several
    /// times faster matmuls on CPUs with AVX-512 BF16 and on GPUs.
    Bf16,
}

impl BasePrecision {
    /// The name as spelled in pipelines, reports and flags.
    pub fn name(self) -> &'static str {
        match self {
            BasePrecision::F32 => "f32",
            BasePrecision::Bf16 => "bf16",
        }
    }
}

/// Stop training when the validation loss (on the held-out records) has not improved by `min_delta` for
/// `patience` evaluations in a row, keeping the best adapter seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingSpec {
    /// Evaluate after every this many steps.
    pub every_steps: usize,
    pub patience: usize,
    pub min_delta: f64,
}

fn one() -> usize {
    1
}

/// Optimisation and evaluation settings of one training job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Records longer than this (in tokens, prompt and completion together) are truncated from the left of
    /// the prompt; a record whose completion alone is longer is rejected.
    pub max_seq_len: usize,
    pub seed: u64,
    /// Fraction of the records held out for evaluation (chosen by `seed`).
    pub eval_fraction: f64,
    /// At most this many held-out records are generated from for exact match.
    pub max_eval_examples: usize,
    /// Generation budget when evaluating exact match.
    pub max_new_tokens: usize,
    /// Also evaluate the base model alone on the held-out records (`base_` metrics).
    pub eval_base: bool,
    /// Batches of `batch_size` whose gradients add up to one optimizer step (1: no accumulation).
    #[serde(default = "one")]
    pub gradient_accumulation: usize,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSpec>,
    #[serde(default)]
    pub truncation: TruncationPolicy,
    /// Pack several short records into one sequence of up to `max_seq_len` tokens (attention stays within
    /// each record); a batch is then `batch_size` packed sequences.
    #[serde(default)]
    pub packing: bool,
    #[serde(default)]
    pub base_precision: BasePrecision,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            steps: 100,
            batch_size: 4,
            learning_rate: 2e-4,
            weight_decay: 0.0,
            max_seq_len: 256,
            seed: 42,
            eval_fraction: 0.1,
            max_eval_examples: 32,
            max_new_tokens: 48,
            eval_base: true,
            gradient_accumulation: 1,
            lr_schedule: LrSchedule::Cosine,
            early_stopping: None,
            truncation: TruncationPolicy::TruncatePromptLeft,
            packing: false,
            base_precision: BasePrecision::F32,
        }
    }
}

/// Where a task adapter's weights start from, recorded in the lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InitialAdapterRef {
    /// LoRA's standard initialisation: A random (Kaiming-uniform), B zero.
    StandardInit,
    /// The accuracy-recovery adapter of a base release.
    RecoveryAdapter { base_release: Digest, adapter: Digest },
    /// Not trained here: imported from another tool's files (`format`, such as `peft`).
    Imported { format: String },
}

/// An adapter's weights to start from, with their identity.
#[derive(Clone, Debug)]
pub struct InitialAdapter {
    pub reference: InitialAdapterRef,
    /// fp16/bf16/fp32 safetensors in our adapter layout.
    pub safetensors: Vec<u8>,
}

/// One training job: everything a backend needs, with no reference to a store.
#[derive(Clone, Debug)]
pub struct TrainJob {
    pub base_model_path: PathBuf,
    pub base_model_digest: Digest,
    /// The dataset as JSONL (`{"prompt","completion"}` or `{"messages":[...]}` per line).
    pub dataset: Vec<u8>,
    pub dataset_digest: Digest,
    pub lora: LoraSpec,
    pub train: TrainSpec,
    pub initial_adapter: Option<InitialAdapter>,
}

/// The adapter's shape as stored next to its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<LoraTarget>,
    pub layers: Vec<usize>,
    /// `f16`, `bf16` or `f32`.
    pub dtype: String,
}

/// One held-out example, answered by the base model and by the adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalSample {
    pub prompt: String,
    pub expected: String,
    pub base_output: Option<String>,
    pub adapter_output: String,
    pub exact_match: bool,
}

/// What a finished training job returns.
#[derive(Clone, Debug)]
pub struct TrainOutput {
    /// The trained adapter as safetensors (see `AdapterConfig::dtype`).
    pub adapter_safetensors: Vec<u8>,
    pub adapter_config: AdapterConfig,
    /// Metrics by name: `eval_loss`, `exact_match`, `base_eval_loss`, `base_exact_match`, `train_loss`, ...
    pub metrics: BTreeMap<String, f64>,
    pub samples: Vec<EvalSample>,
    /// `(step, training loss)` for every step.
    pub loss_curve: Vec<(usize, f64)>,
}

/// A progress report from a running job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
    /// Real tokens the step trained on.
    #[serde(default)]
    pub tokens: usize,
    /// Wall time of the step.
    #[serde(default)]
    pub seconds: f64,
}

/// Receives progress from a training backend. Implementations must be cheap: the backend calls them inline.
pub trait ProgressSink: Send + Sync {
    fn on_step(&self, progress: &StepProgress);
    fn on_message(&self, message: &str);
}

/// A sink that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn on_step(&self, _: &StepProgress) {}
    fn on_message(&self, _: &str) {}
}

/// Why a training job did not produce an adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainingFailure {
    /// The user's input (dataset, spec, initial adapter) is wrong; retrying will not help.
    #[error("invalid training input: {0}")]
    InvalidInput(String),
    /// The backend failed (model load, libtorch, process died).
    #[error("training failed: {0}")]
    Backend(String),
    /// The job was cancelled.
    #[error("training cancelled")]
    Cancelled,
}

/// A synchronous training backend (the engine). Callers run it on a dedicated thread.
pub trait TrainingBackend: Send + Sync {
    fn train(&self, job: &TrainJob, progress: &dyn ProgressSink) -> Result<TrainOutput, TrainingFailure>;
}

/// Metric values by name, as gates see them.
pub type Metrics = BTreeMap<String, f64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_precision_prints_the_name_it_is_written_as() {
        for precision in [BasePrecision::F32, BasePrecision::Bf16] {
            assert_eq!(serde_json::to_value(precision).unwrap(), serde_json::json!(precision.name()));
        }
    }

    #[test]
    fn layer_selection_resolves_and_checks_range() {
        assert_eq!(LayerSelection::All.resolve(3).unwrap(), vec![0, 1, 2]);
        assert_eq!(LayerSelection::LastN(2).resolve(5).unwrap(), vec![3, 4]);
        assert_eq!(LayerSelection::LastN(9).resolve(2).unwrap(), vec![0, 1]);
        assert_eq!(LayerSelection::List(vec![4, 1, 4]).resolve(5).unwrap(), vec![1, 4]);
        let err = LayerSelection::List(vec![30]).resolve(30).unwrap_err();
        assert!(err.contains("layer 30 does not exist"), "{err}");
    }

    #[test]
    fn specs_written_before_the_training_options_still_read_with_their_defaults() {
        let old_lora = r#"{"rank":8,"alpha":16.0,"dropout":0.0,"targets":["q"],"layers":"all"}"#;
        let lora: LoraSpec = serde_json::from_str(old_lora).unwrap();
        assert!(!lora.use_rslora && lora.rank_pattern.is_empty() && lora.alpha_pattern.is_empty());
        let old_train = r#"{"steps":5,"batch_size":2,"learning_rate":0.001,"weight_decay":0.0,"max_seq_len":64,
            "seed":1,"eval_fraction":0.1,"max_eval_examples":4,"max_new_tokens":8,"eval_base":false}"#;
        let train: TrainSpec = serde_json::from_str(old_train).unwrap();
        assert_eq!(train.gradient_accumulation, 1);
        assert_eq!((train.lr_schedule, train.truncation, train.packing), Default::default());
        assert_eq!(train.early_stopping, None);
        let round_trip: TrainSpec = serde_json::from_str(&serde_json::to_string(&train).unwrap()).unwrap();
        assert_eq!(round_trip, train);
    }
}
