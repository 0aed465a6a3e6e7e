//! A training job on the engine's tiny model, shared by the executor tests (the process executor's and the
//! Kubernetes executor's): a few steps on a ten-line dataset, done in seconds on a CPU.

use std::path::Path;

use adapterci_core::Digest;
use adapterci_core::training::{LoraSpec, TrainJob, TrainSpec};

pub fn dataset() -> Vec<u8> {
    (0..10)
        .map(|i| format!("{{\"prompt\": \"question {i}\", \"completion\": \"yes\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A job of `steps` steps on a tiny model written to `dir/tiny.gguf`.
pub fn tiny_job(dir: &Path, steps: usize) -> TrainJob {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).expect("the tiny model is written");
    let dataset = dataset();
    TrainJob {
        base_model_digest: Digest::of(&std::fs::read(&model).expect("the tiny model is read")),
        base_model_path: model,
        dataset_digest: Digest::of(&dataset),
        dataset,
        lora: LoraSpec { rank: 2, alpha: 4.0, ..LoraSpec::default() },
        train: TrainSpec {
            steps,
            batch_size: 2,
            max_seq_len: 32,
            eval_fraction: 0.2,
            max_eval_examples: 1,
            max_new_tokens: 2,
            ..TrainSpec::default()
        },
        initial_adapter: None,
    }
}
