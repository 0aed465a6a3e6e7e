//! The job's training options reach the engine: rsLoRA and rank patterns shape the adapter, the schedule sets
//! each step's learning rate, gradient accumulation and packing feed more tokens per step, early stopping ends
//! the run, and the reject policy refuses an over-long record by its line (`EngineBackend`, tiny model).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use adapterci_core::Digest;
use adapterci_core::training::{
    EarlyStoppingSpec, LoraSpec, LoraTarget, LrSchedule, ProgressSink, StepProgress, TrainJob, TrainOutput, TrainSpec,
    TrainingBackend, TrainingFailure, TruncationPolicy,
};
use adapterci_engine::EngineBackend;
use adapterci_engine::LlamaConfig;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::tiny::write_tiny_model;
use adapterci_engine::train::learning_rate_for;
use tch::Device;

fn dataset() -> String {
    let words = ["red", "blue", "green", "apple", "bread", "cheese", "rain", "sun", "park", "shop", "gold", "tea"];
    let mut lines = String::new();
    for word in words {
        for phrasing in ["say {}", "repeat {}", "echo {} please"] {
            let prompt = phrasing.replace("{}", word);
            lines.push_str(&format!("{{\"prompt\": \"{prompt}\", \"completion\": \"{word}\"}}\n"));
        }
    }
    lines
}

struct Base {
    path: PathBuf,
    digest: Digest,
    config: LlamaConfig,
    _dir: tempfile::TempDir,
}

fn base() -> Base {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, 11).unwrap();
    let digest = Digest::of(&std::fs::read(&path).unwrap());
    let config = LlamaConfig::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    Base { path, digest, config, _dir: dir }
}

fn job(base: &Base, data: &str, lora: LoraSpec, train: TrainSpec) -> TrainJob {
    TrainJob {
        base_model_path: base.path.clone(),
        base_model_digest: base.digest.clone(),
        dataset: data.as_bytes().to_vec(),
        dataset_digest: Digest::of(data.as_bytes()),
        lora,
        train,
        initial_adapter: None,
    }
}

fn train_spec() -> TrainSpec {
    TrainSpec {
        steps: 10,
        batch_size: 2,
        learning_rate: 1e-2,
        max_seq_len: 64,
        eval_fraction: 0.25,
        max_eval_examples: 2,
        max_new_tokens: 4,
        eval_base: false,
        ..TrainSpec::default()
    }
}

#[derive(Default)]
struct Steps(Mutex<Vec<StepProgress>>);

impl ProgressSink for Steps {
    fn on_step(&self, progress: &StepProgress) {
        self.0.lock().unwrap().push(progress.clone());
    }
    fn on_message(&self, _: &str) {}
}

fn metric(output: &TrainOutput, name: &str) -> f64 {
    *output.metrics.get(name).unwrap_or_else(|| panic!("metric {name} missing: {:?}", output.metrics))
}

#[test]
fn the_specs_training_options_reach_the_engine() {
    let base = base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let lora = LoraSpec {
        rank: 8,
        alpha: 16.0,
        use_rslora: true,
        rank_pattern: BTreeMap::from([("q_proj".to_string(), 4)]),
        ..LoraSpec::default()
    };
    // a min_delta no loss can beat: the first evaluation (step 2) is the best, the next one (step 4) stops
    let stopping = EarlyStoppingSpec { every_steps: 2, patience: 1, min_delta: 1e9 };
    let train = TrainSpec {
        gradient_accumulation: 2,
        lr_schedule: LrSchedule::Linear,
        early_stopping: Some(stopping),
        packing: true,
        ..train_spec()
    };
    let steps = Steps::default();
    let output = backend.train(&job(&base, &dataset(), lora.clone(), train.clone()), &steps).unwrap();

    let adapter = LoraWeights::from_safetensors(&output.adapter_safetensors, &base.config, Device::Cpu).unwrap();
    assert!(adapter.options().use_rslora);
    assert_eq!(adapter.options().rank_pattern, lora.rank_pattern);
    let (q_a, _) = adapter.get(0, LoraTarget::Q).unwrap();
    let (k_a, _) = adapter.get(0, LoraTarget::K).unwrap();
    assert_eq!((q_a.size()[0], k_a.size()[0]), (4, 8));
    assert_eq!(adapter.scale_of(0, LoraTarget::K), Some(16.0 / 8f64.sqrt()));

    let recorded = steps.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 4, "early stopping after the second evaluation");
    for progress in &recorded {
        let expected = learning_rate_for(LrSchedule::Linear, progress.step - 1, 10, 1e-2);
        assert!((progress.learning_rate - expected).abs() < 1e-12, "step {}: {progress:?}", progress.step);
    }
    assert_eq!(metric(&output, "stopped_early_at"), 4.0);
    assert_eq!(metric(&output, "train_steps"), 4.0);

    // the same 4 steps without accumulation and packing see fewer than half the tokens
    let plain = TrainSpec { gradient_accumulation: 1, packing: false, ..train };
    let plain_output = backend.train(&job(&base, &dataset(), lora, plain), &Steps::default()).unwrap();
    assert_eq!(metric(&plain_output, "train_steps"), 4.0);
    assert!(
        metric(&output, "train_tokens") > 2.0 * metric(&plain_output, "train_tokens"),
        "{} vs {}",
        metric(&output, "train_tokens"),
        metric(&plain_output, "train_tokens")
    );
}

#[test]
fn the_reject_policy_names_the_over_long_record() {
    let base = base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let long_prompt = "word ".repeat(40);
    let data = format!("{}{{\"prompt\": \"{long_prompt}\", \"completion\": \"x\"}}\n", dataset());
    let long_line = data.lines().count();
    let reject = TrainSpec { max_seq_len: 32, truncation: TruncationPolicy::Reject, ..train_spec() };
    let message = match backend.train(&job(&base, &data, LoraSpec::default(), reject), &Steps::default()) {
        Err(TrainingFailure::InvalidInput(message)) => message,
        other => panic!("expected invalid input, got {:?}", other.map(|o| o.metrics)),
    };
    assert!(message.contains(&format!("line {long_line}")), "{message}");
    assert!(message.contains("truncation is off"), "{message}");
    let truncate = TrainSpec { max_seq_len: 32, steps: 1, ..train_spec() };
    backend.train(&job(&base, &data, LoraSpec::default(), truncate), &Steps::default()).expect("left truncation");
}

#[test]
fn the_spec_maps_onto_the_engines_options() {
    use adapterci_core::training::BasePrecision;
    use adapterci_engine::backend::train_options;
    use adapterci_engine::train::{BaseCompute, Schedule};
    let spec = TrainSpec {
        base_precision: BasePrecision::Bf16,
        packing: true,
        max_seq_len: 96,
        gradient_accumulation: 3,
        lr_schedule: LrSchedule::Linear,
        ..TrainSpec::default()
    };
    let options = train_options(&spec, &[]);
    assert_eq!(options.base_compute, BaseCompute::Bf16);
    assert_eq!((options.packing, options.gradient_accumulation, options.schedule), (Some(96), 3, Schedule::Linear));
    assert!(options.early_stopping.is_none());
    let default = train_options(&TrainSpec::default(), &[]);
    assert_eq!((default.base_compute, default.packing), (BaseCompute::F32, None));
}
