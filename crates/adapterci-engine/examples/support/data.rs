//! The demo task's JSONL files as tokenized training examples, shared by the engine's examples that train it
//! (`train_demo`, `recovery_convergence`).

use adapterci_engine::dataset::{Example, parse_jsonl, tokenize_records};
use adapterci_engine::model::BaseModel;
use anyhow::Context;

/// The records of the JSONL file at `path`, tokenized for `model` (at most `max_seq_len` tokens each).
pub fn load_examples(path: &str, model: &BaseModel, max_seq_len: usize) -> anyhow::Result<Vec<Example>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let dataset = parse_jsonl(&bytes)?;
    Ok(tokenize_records(&dataset.records, model.tokenizer(), max_seq_len)?)
}
