//! The training options of `training` and `training.lora` (rsLoRA, rank/alpha patterns, gradient accumulation,
//! schedule, early stopping, truncation, packing): accepted forms, defaults and problems with their places.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::training::{BasePrecision, EarlyStoppingSpec, LrSchedule, TrainSpec, TruncationPolicy};
use adapterci_pipeline::{PipelineSpec, parse_pipeline};

const MINIMAL: &str = "\
version: v1
name: demo
base: {model: smollm2-135m-instruct}
dataset: {location: datasets/demo/train.jsonl}
";

fn parse_ok(extra: &str) -> PipelineSpec {
    let source = format!("{MINIMAL}{extra}");
    parse_pipeline(&source, Some("p.yaml")).unwrap_or_else(|error| panic!("{error}\nin:\n{source}"))
}

fn check_problems(extra: &str, expect: &[&str]) {
    let source = format!("{MINIMAL}{extra}");
    let error = parse_pipeline(&source, None).expect_err(&source);
    let lines: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
    assert_eq!(lines, expect, "in:\n{source}");
}

#[test]
fn every_option_is_read_into_the_spec() {
    let spec = parse_ok(
        "\
training:
  lora:
    use_rslora: true
    rank_pattern: {q_proj: 8, model.layers.0.mlp.down_proj: 4}
    alpha_pattern: {'mlp\\..*': 2.5}
  steps: 30
  gradient_accumulation: 4
  lr_schedule: linear
  early_stopping: {every_steps: 5, patience: 2, min_delta: 0.01}
  truncation: reject
  packing: true
  base_precision: bf16
",
    );
    assert!(spec.lora.use_rslora);
    let ranks: Vec<(&str, usize)> = spec.lora.rank_pattern.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(ranks, [("model.layers.0.mlp.down_proj", 4), ("q_proj", 8)]);
    assert_eq!(spec.lora.alpha_pattern.get("mlp\\..*"), Some(&2.5));
    assert_eq!(spec.train.gradient_accumulation, 4);
    assert_eq!(spec.train.lr_schedule, LrSchedule::Linear);
    assert_eq!(spec.train.early_stopping, Some(EarlyStoppingSpec { every_steps: 5, patience: 2, min_delta: 0.01 }));
    assert_eq!(spec.train.truncation, TruncationPolicy::Reject);
    assert!(spec.train.packing);
    assert_eq!(spec.train.base_precision, BasePrecision::Bf16);
}

#[test]
fn absent_options_take_the_defaults_and_early_stopping_fills_its_own() {
    let spec = parse_ok("");
    let default = TrainSpec::default();
    assert_eq!(
        (spec.train.gradient_accumulation, spec.train.lr_schedule, spec.train.truncation, spec.train.packing),
        (1, LrSchedule::Cosine, TruncationPolicy::TruncatePromptLeft, false)
    );
    assert_eq!(spec.train, default);
    assert!(!spec.lora.use_rslora && spec.lora.rank_pattern.is_empty());
    let spec = parse_ok("training:\n  steps: 6\n  early_stopping: {}\n");
    // the default evaluation interval (10) is cut to the run's length so that at least one evaluation runs
    assert_eq!(spec.train.early_stopping, Some(EarlyStoppingSpec { every_steps: 6, patience: 3, min_delta: 0.0 }));
}

#[test]
fn bad_options_are_reported_with_line_and_field() {
    check_problems(
        "training:\n  lora:\n    rank_pattern: {k_proj: 300}\n  gradient_accumulation: 2000\n",
        &[
            "7:28: training.lora.rank_pattern.k_proj: rank must be between 1 and 256, got 300",
            "8:26: training.gradient_accumulation: must be between 1 and 1024, got 2000",
        ],
    );
    check_problems(
        "training:\n  lora:\n    alpha_pattern: {'[': 1}\n",
        &["7:26: training.lora.alpha_pattern.[: \"[\" is not a regular expression: error: unclosed character class"],
    );
    check_problems(
        "training:\n  early_stopping: {every_steps: 0, paitence: 2}\n",
        &["6:36: training.early_stopping: unknown field `paitence`, expected one of `every_steps`, `patience`, \
           `min_delta`"],
    );
}
