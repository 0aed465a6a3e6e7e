//! The training options beyond the basic numbers, as written and as checked: rsLoRA and per-module rank and
//! alpha (`training.lora.use_rslora`, `rank_pattern`, `alpha_pattern`), gradient accumulation, the
//! learning-rate schedule, early stopping, the truncation policy and sequence packing.
//!
//! Patterns follow PEFT: a key matches a module such as `model.layers.3.self_attn.q_proj` when the regular
//! expression `(.*\.)?(KEY)$` matches its whole name, so `q_proj` matches every query projection and
//! `model.layers.0.mlp.down_proj` one module.

use std::collections::BTreeMap;

use adapterci_core::training::{BasePrecision, EarlyStoppingSpec, LrSchedule, TrainSpec, TruncationPolicy};
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Checker;

/// Default of `training.early_stopping.every_steps`.
pub const DEFAULT_EARLY_STOPPING_EVERY_STEPS: usize = 10;
/// Default of `training.early_stopping.patience`.
pub const DEFAULT_EARLY_STOPPING_PATIENCE: usize = 3;
/// The most batches one optimizer step may accumulate.
pub const MAX_GRADIENT_ACCUMULATION: usize = 1024;
/// Pattern keys are checked against the module names of models with up to this many layers.
const MAX_PATTERN_LAYERS: usize = 1024;

/// How the learning rate decays after the linear warmup (the first 10% of the steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduleV1 {
    /// Cosine decay to 0 (the default).
    Cosine,
    /// Linear decay to 0.
    Linear,
}

/// What happens to a record longer than `max_seq_len` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TruncationV1 {
    /// Drop tokens from the left of the prompt (the default); a completion that cannot fit is still refused.
    TruncatePromptLeft,
    /// Refuse the dataset, naming the line of every over-long record.
    Reject,
}

/// Precision of the frozen base weights in the training matmuls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BasePrecisionV1 {
    /// The base model's f32 weights (the default).
    F32,
    /// bf16 copies of the frozen weights: faster matmuls on CPUs with AVX-512 BF16 and on GPUs; the adapter,
    /// the loss and the optimizer stay f32.
    Bf16,
}

/// Stop when the loss on the held-out records has not improved by `min_delta` for `patience` evaluations in a
/// row; the adapter kept is the best one evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingV1 {
    /// Evaluate every this many steps; at least 1 and at most `steps`. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub every_steps: Option<usize>,
    /// Evaluations without improvement before stopping; at least 1. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub patience: Option<usize>,
    /// The smallest decrease of the validation loss that counts as an improvement; at least 0. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_delta: Option<f64>,
}

/// `training.lora.use_rslora`, `rank_pattern` and `alpha_pattern`, checked.
pub(crate) fn build_lora_options(
    checker: &mut Checker,
    use_rslora: Option<bool>,
    rank_pattern: Option<BTreeMap<String, usize>>,
    alpha_pattern: Option<BTreeMap<String, f64>>,
    max_rank: usize,
) -> (bool, BTreeMap<String, usize>, BTreeMap<String, f64>) {
    let rank_pattern = rank_pattern.unwrap_or_default();
    for (key, &rank) in &rank_pattern {
        let path = format!("training.lora.rank_pattern.{key}");
        check_pattern_key(checker, &path, key);
        if !(1..=max_rank).contains(&rank) {
            checker.report(&path, format!("rank must be between 1 and {max_rank}, got {rank}"));
        }
    }
    let alpha_pattern = alpha_pattern.unwrap_or_default();
    for (key, &alpha) in &alpha_pattern {
        let path = format!("training.lora.alpha_pattern.{key}");
        check_pattern_key(checker, &path, key);
        if !(alpha.is_finite() && alpha > 0.0) {
            checker.report(&path, format!("alpha must be a number greater than 0, got {alpha}"));
        }
    }
    (use_rslora.unwrap_or(false), rank_pattern, alpha_pattern)
}

/// A pattern key must compile the way PEFT uses it and could match one of the seven modules.
fn check_pattern_key(checker: &mut Checker, path: &str, key: &str) {
    if key.trim().is_empty() {
        checker.report(path, "a pattern must not be empty");
        return;
    }
    match Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")) {
        Err(error) => {
            let reason = error.to_string().lines().last().unwrap_or_default().trim().to_string();
            checker.report(path, format!("{key:?} is not a regular expression: {reason}"));
        }
        Ok(regex) => {
            let modules = [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ];
            let matches_some_module = (0..MAX_PATTERN_LAYERS)
                .any(|layer| modules.iter().any(|module| regex.is_match(&format!("model.layers.{layer}.{module}"))));
            if !matches_some_module {
                checker.report(
                    path,
                    format!(
                        "{key:?} matches no module: a key matches the end of a name such as \
                         model.layers.3.self_attn.q_proj or model.layers.0.mlp.down_proj after a '.'"
                    ),
                );
            }
        }
    }
}

/// The wire values of the training options, as read from `training`.
pub(crate) struct TrainOptionsV1 {
    pub gradient_accumulation: Option<usize>,
    pub lr_schedule: Option<LrScheduleV1>,
    pub early_stopping: Option<EarlyStoppingV1>,
    pub truncation: Option<TruncationV1>,
    pub packing: Option<bool>,
    pub base_precision: Option<BasePrecisionV1>,
}

/// Checks the training options and writes them into `train` (whose `steps` is already set).
pub(crate) fn build_train_options(checker: &mut Checker, options: TrainOptionsV1, train: &mut TrainSpec) {
    let accumulation = options.gradient_accumulation.unwrap_or(1);
    if !(1..=MAX_GRADIENT_ACCUMULATION).contains(&accumulation) {
        checker.report(
            "training.gradient_accumulation",
            format!("must be between 1 and {MAX_GRADIENT_ACCUMULATION}, got {accumulation}"),
        );
    }
    train.gradient_accumulation = accumulation;
    train.lr_schedule = match options.lr_schedule {
        None | Some(LrScheduleV1::Cosine) => LrSchedule::Cosine,
        Some(LrScheduleV1::Linear) => LrSchedule::Linear,
    };
    train.truncation = match options.truncation {
        None | Some(TruncationV1::TruncatePromptLeft) => TruncationPolicy::TruncatePromptLeft,
        Some(TruncationV1::Reject) => TruncationPolicy::Reject,
    };
    train.packing = options.packing.unwrap_or(false);
    train.base_precision = match options.base_precision {
        None | Some(BasePrecisionV1::F32) => BasePrecision::F32,
        Some(BasePrecisionV1::Bf16) => BasePrecision::Bf16,
    };
    train.early_stopping = options.early_stopping.map(|stopping| build_early_stopping(checker, stopping, train.steps));
}

fn build_early_stopping(checker: &mut Checker, stopping: EarlyStoppingV1, steps: usize) -> EarlyStoppingSpec {
    let every_steps = stopping.every_steps.unwrap_or(DEFAULT_EARLY_STOPPING_EVERY_STEPS.min(steps.max(1)));
    if every_steps == 0 {
        checker.report("training.early_stopping.every_steps", "must be at least 1, got 0");
    } else if every_steps > steps {
        checker.report(
            "training.early_stopping.every_steps",
            format!("must be at most training.steps ({steps}), got {every_steps}: no evaluation would run"),
        );
    }
    let patience = stopping.patience.unwrap_or(DEFAULT_EARLY_STOPPING_PATIENCE);
    if patience == 0 {
        checker.report("training.early_stopping.patience", "must be at least 1, got 0");
    }
    let min_delta = stopping.min_delta.unwrap_or(0.0);
    if !(min_delta.is_finite() && min_delta >= 0.0) {
        checker.report("training.early_stopping.min_delta", format!("must be a number at least 0, got {min_delta}"));
    }
    EarlyStoppingSpec { every_steps, patience, min_delta }
}
