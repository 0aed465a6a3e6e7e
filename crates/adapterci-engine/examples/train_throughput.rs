//! Training throughput in the peer's setting (`shared/tools/hf_peer.py`: PEFT LoRA r16 on all seven linear
//! modules, batch 4 x 128 tokens, loss on every token, AdamW), and with a loss on the last 16 tokens only
//! (the completion-only case, where the LM head runs on the target positions alone).
//!
//! ```text
//! cargo run --release -p adapterci-engine --example train_throughput -- [MODEL.gguf] [THREADS] [STEPS] [all|last16|both] [f32|bf16]
//! ```
//!
//! `bf16` runs the frozen base matmuls on bf16 copies of the weights (`BaseCompute::Bf16`).
//! Prints `ours_step <label> <step> tokens_per_s <x> loss <y>` per step and `ours_peak_rss_mib <m>` (the
//! process's high-water resident memory) for `scripts/bench/train_throughput.sh`.

use std::path::PathBuf;
use std::sync::Mutex;

use adapterci_core::training::{AdapterConfig, LoraTarget, ProgressSink, StepProgress, TrainSpec};
use adapterci_engine::dataset::Example;
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::train::{BaseCompute, TrainOptions, train_lora_with};
use adapterci_engine::{LlamaConfig, Tokenizer};
use anyhow::Context;

const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
const TEXT: &str = "The history of the adapter begins with a simple idea: keep the base model frozen and learn a small \
                    low-rank update for each task. ";
const BATCH: usize = 4;
const SEQ: usize = 128;

struct Rates(Mutex<Vec<f64>>, &'static str);

impl ProgressSink for Rates {
    fn on_step(&self, p: &StepProgress) {
        println!("ours_step {} {} tokens_per_s {:.1} loss {:.4}", self.1, p.step, p.tokens_per_second, p.loss);
        self.0.lock().map(|mut rates| rates.push(p.tokens_per_second)).ok();
    }
    fn on_message(&self, _: &str) {}
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().map_or_else(|| PathBuf::from(DEFAULT_MODEL), PathBuf::from);
    let threads: i32 = args.next().map_or(Ok(2), |t| t.parse()).context("threads")?;
    let steps: usize = args.next().map_or(Ok(4), |t| t.parse()).context("steps")?;
    let mode = args.next().unwrap_or_else(|| "both".to_owned());
    let base_compute = match args.next().as_deref() {
        None | Some("f32") => BaseCompute::F32,
        Some("bf16") => BaseCompute::Bf16,
        Some(other) => anyhow::bail!("base precision {other:?} is not f32 or bf16"),
    };
    let options = TrainOptions { base_compute, ..TrainOptions::default() };
    tch::set_num_threads(threads);
    let file = GgufFile::open(&model)?;
    let config = LlamaConfig::from_gguf(&file)?;
    let llama = Llama::load(&file, &config, tch::Device::Cpu)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let ids: Vec<u32> = tokenizer.encode(&TEXT.repeat(40), false)[..SEQ].to_vec();
    let adapter = AdapterConfig {
        rank: 16,
        alpha: 32.0,
        targets: LoraTarget::ALL.to_vec(),
        layers: (0..config.num_layers).collect(),
        dtype: "f16".into(),
    };
    let spec = TrainSpec { steps, batch_size: BATCH, learning_rate: 1e-4, ..TrainSpec::default() };
    let cases = [("all", "loss on every token (peer setting)", 1), ("last16", "loss on the last 16 tokens", SEQ - 16)];
    for (key, label, targets_from) in cases.into_iter().filter(|(key, _, _)| mode == "both" || mode == *key) {
        let mask: Vec<bool> = (0..SEQ).map(|i| i >= targets_from).collect();
        let example = Example {
            line: 1,
            input_ids: ids.clone(),
            loss_mask: mask,
            prompt_len: targets_from,
            prompt: String::new(),
            expected: String::new(),
            truncated_tokens: 0,
        };
        let examples = vec![example; BATCH];
        let mut lora = LoraWeights::init_standard(&adapter, 0.0, &config, 1, tch::Device::Cpu)?;
        eprintln!("{label}: r16 all-linear, batch {BATCH} x {SEQ}, {threads} threads");
        let rates = Rates(Mutex::default(), key);
        let report = train_lora_with(&llama, &mut lora, &examples, &spec, tokenizer.eos_id(), &rates, &options)?;
        let rates = rates.0.into_inner().unwrap_or_default();
        let best = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "{label}: {:.1} tokens/s over {steps} steps (best step {best:.1}, first step included)",
            report.tokens_per_second
        );
    }
    println!("ours_peak_rss_mib {}", peak_rss_mib().map_or_else(|| "unknown".to_owned(), |m| format!("{m:.0}")));
    Ok(())
}

/// `VmHWM` of `/proc/self/status` (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
