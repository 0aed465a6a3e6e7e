//! Shared by the engine's training tests: a random-weight tiny model of SmolLM2's architecture, loaded on the
//! CPU with its tokenizer.

#![allow(dead_code, clippy::expect_used)] // each test file uses part of it; a failed expect is a failed test

use adapterci_core::training::{AdapterConfig, LoraTarget};
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::tiny::write_tiny_model;
use adapterci_engine::{LlamaConfig, Tokenizer};
use tch::Device;

pub struct Tiny {
    pub llama: Llama,
    pub tokenizer: Tokenizer,
    _dir: tempfile::TempDir,
}

/// The tiny model written with `seed`.
pub fn tiny(seed: u64) -> Tiny {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, seed).expect("write tiny model");
    let file = GgufFile::open(&path).expect("open tiny model");
    let config = LlamaConfig::from_gguf(&file).expect("config");
    let llama = Llama::load(&file, &config, Device::Cpu).expect("load tiny model");
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    Tiny { llama, tokenizer, _dir: dir }
}

/// A task a tiny model can learn: answer with the word the prompt names, in one of a few phrasings.
pub fn learnable_jsonl() -> String {
    let words = ["red", "blue", "green", "apple", "bread", "cheese", "rain", "sun", "park", "shop", "gold", "tea"];
    let phrasings = ["say {}", "repeat {}", "the word is {}", "echo {} please"];
    let mut lines = String::new();
    for (i, word) in words.iter().enumerate() {
        for (j, phrasing) in phrasings.iter().enumerate() {
            let prompt = phrasing.replace("{}", word);
            let completion = if (i + j) % 2 == 0 { format!("{word}!") } else { format!("{word}.") };
            lines.push_str(&format!("{{\"prompt\": \"{prompt}\", \"completion\": \"{completion}\"}}\n"));
        }
    }
    lines
}

/// A fresh rank-8 adapter (standard init) on every target of the tiny model's two layers.
pub fn adapter(llama: &Llama, seed: u64) -> LoraWeights {
    lora(llama, 8, 0.0, seed)
}

/// A fresh adapter of `rank` (alpha `2 * rank`, f32, standard init) on every target of the tiny model's two layers.
pub fn lora(llama: &Llama, rank: usize, dropout: f64, seed: u64) -> LoraWeights {
    let config = AdapterConfig {
        rank,
        alpha: 2.0 * rank as f64,
        targets: LoraTarget::ALL.to_vec(),
        layers: vec![0, 1],
        dtype: "f32".into(),
    };
    LoraWeights::init_standard(&config, dropout, llama.config(), seed, llama.device()).expect("init adapter")
}
