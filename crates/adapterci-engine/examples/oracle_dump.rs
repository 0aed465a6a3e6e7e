//! Dumps the engine's logits and greedy continuations as JSON so oracle scripts (HF transformers fp32,
//! llama.cpp) can compare them with their own.
//!
//! Run: `cargo run --release -p adapterci-engine --example oracle_dump < request.json > response.json`
//!
//! Request (stdin):
//! ```json
//! {"model": "path/to/model.gguf",      // required
//!  "prompts": [[1, 504, 3], [...]],    // required: token ids per prompt (no BOS is added)
//!  "greedy_tokens": 32,                // optional, default 32: greedy continuation length (no stop tokens)
//!  "top_k": 20,                        // optional, default 20: (token, logit) pairs kept per position
//!  "adapter": "path/to/adapter.safetensors",  // optional: apply this LoRA adapter
//!  "device": "cpu",                    // optional: auto | cpu | cuda | cuda:N (default cpu)
//!  "threads": 2}                       // optional: libtorch intra-op threads
//! ```
//! Response (stdout):
//! ```json
//! {"model": "...", "digest": "<sha256 of the GGUF>", "vocab_size": 49152,
//!  "results": [{"prompt": [1, 504, 3],
//!               "positions": [{"logsumexp": 12.34, "top": [[token, logit], ...]}, ...],  // one per prompt token:
//!                                                  // the scores of the token after it, top_k by logit, descending
//!               "greedy": [ids...]}]}               // greedy_tokens argmax tokens after the prompt
//! ```
//! Logits are f32 values printed as JSON numbers; logsumexp is computed in f64 over the full vocabulary.
//! The greedy continuation never stops early, even at EOS: compare it with HF `generate` run with
//! `eos_token_id=None` (its `min_new_tokens` would instead suppress EOS and so diverge after one).
//! Checked against transformers 5.24 fp32 on the SmolLM2 Q4_1 GGUF: top-k logits within 2e-6.

use std::io::Read;
use std::path::PathBuf;

use adapterci_engine::device::{DeviceChoice, set_threads};
use adapterci_engine::generate::GenerationParams;
use adapterci_engine::model::BaseModel;
use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    model: PathBuf,
    prompts: Vec<Vec<u32>>,
    #[serde(default = "default_greedy_tokens")]
    greedy_tokens: usize,
    #[serde(default = "default_top_k")]
    top_k: usize,
    #[serde(default)]
    adapter: Option<PathBuf>,
    #[serde(default = "default_device")]
    device: DeviceChoice,
    #[serde(default)]
    threads: Option<usize>,
}

fn default_greedy_tokens() -> usize {
    32
}

fn default_top_k() -> usize {
    20
}

fn default_device() -> DeviceChoice {
    DeviceChoice::Cpu
}

#[derive(Serialize)]
struct Response {
    model: PathBuf,
    digest: String,
    vocab_size: usize,
    results: Vec<PromptResult>,
}

#[derive(Serialize)]
struct PromptResult {
    prompt: Vec<u32>,
    positions: Vec<Position>,
    greedy: Vec<u32>,
}

#[derive(Serialize)]
struct Position {
    logsumexp: f64,
    top: Vec<(u32, f32)>,
}

fn position(logits: &[f32], top_k: usize) -> Position {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let logsumexp = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    let mut ranked: Vec<(u32, f32)> = logits.iter().enumerate().map(|(id, &l)| (id as u32, l)).collect();
    ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top_k);
    Position { logsumexp, top: ranked }
}

fn main() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the request from stdin")?;
    let request: Request = serde_json::from_str(&input).context("parsing the request")?;
    if let Some(threads) = request.threads {
        set_threads(threads);
    }
    let model = BaseModel::load(&request.model, request.device)?;
    let adapter = match &request.adapter {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(model.load_adapter(&bytes)?)
        }
        None => None,
    };
    let params = GenerationParams { max_new_tokens: request.greedy_tokens, ..GenerationParams::default() };
    let mut results = Vec::with_capacity(request.prompts.len());
    for (index, prompt) in request.prompts.iter().enumerate() {
        let logits = model.logits(prompt, adapter.as_ref()).with_context(|| format!("prompt {index}"))?;
        let positions = logits.iter().map(|row| position(row, request.top_k)).collect();
        let greedy = model.generate(prompt, adapter.as_ref(), &params).with_context(|| format!("prompt {index}"))?;
        results.push(PromptResult { prompt: prompt.clone(), positions, greedy: greedy.tokens });
    }
    let response = Response {
        model: request.model.clone(),
        digest: model.digest().hex(),
        vocab_size: model.config().vocab_size,
        results,
    };
    serde_json::to_writer(std::io::stdout().lock(), &response)?;
    println!();
    Ok(())
}
