//! Tiny random-weight Llama models in GGUF (F32, GQA, tied embedding) with the tiny tokenizer, for tests.

use std::path::Path;

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::EngineError;
use crate::config::LlamaConfig;
use crate::gguf::write_gguf;
use crate::tokenizer::{TokenizerSpec, tiny_tokenizer_spec};

/// Writes a tiny model ([`LlamaConfig::tiny`] over the tiny tokenizer's vocabulary) that `BaseModel::load`
/// reads like the real one. The same seed writes the same bytes.
pub fn write_tiny_model(path: &Path, seed: u64) -> Result<(), EngineError> {
    let spec = tiny_tokenizer_spec();
    write_model(path, &LlamaConfig::tiny(spec.tokens.len()), &spec, seed)
}

/// Writes a random-weight model of any `config` (an untied one gets `output.weight`) with `spec`'s tokenizer.
pub fn write_model(path: &Path, config: &LlamaConfig, spec: &TokenizerSpec, seed: u64) -> Result<(), EngineError> {
    config.validate().map_err(EngineError::InvalidConfig)?;
    if spec.tokens.len() != config.vocab_size {
        return Err(EngineError::InvalidConfig(format!(
            "the tokenizer has {} tokens but the config's vocabulary is {}",
            spec.tokens.len(),
            config.vocab_size
        )));
    }
    let mut metadata = config.to_gguf_metadata();
    metadata.push(("general.name".into(), crate::gguf::GgufValue::String("adapterci-tiny".into())));
    metadata.extend(spec.to_gguf_metadata());
    write_gguf(path, &metadata, &random_tensors(config, seed))
}

/// GGUF tensor names and shapes (outermost first) of a Llama model, with random values: uniform in
/// `±sqrt(3/fan_in)` for linear weights (unit variance, so every layer adds about as much as the input), `±0.3` for the embedding and
/// `1 ± 0.1` for norms.
fn random_tensors(config: &LlamaConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (h, ffn, vocab) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let kv = config.num_kv_heads * config.head_dim;
    let mut tensor = |name: String, shape: Vec<usize>, center: f32, bound: f32| {
        let values = (0..shape.iter().product()).map(|_| center + rng.random_range(-bound..bound)).collect();
        (name, shape, values)
    };
    let linear_bound = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
    // A small embedding keeps the residual stream from being just the input token's embedding, which with a
    // tied LM head would make the model echo its last token.
    let mut tensors = vec![tensor("token_embd.weight".into(), vec![vocab, h], 0.0, 0.3)];
    for i in 0..config.num_layers {
        let name = |suffix: &str| format!("blk.{i}.{suffix}.weight");
        tensors.push(tensor(name("attn_norm"), vec![h], 1.0, 0.1));
        tensors.push(tensor(name("attn_q"), vec![h, h], 0.0, linear_bound(h)));
        tensors.push(tensor(name("attn_k"), vec![kv, h], 0.0, linear_bound(h)));
        tensors.push(tensor(name("attn_v"), vec![kv, h], 0.0, linear_bound(h)));
        tensors.push(tensor(name("attn_output"), vec![h, h], 0.0, linear_bound(h)));
        tensors.push(tensor(name("ffn_norm"), vec![h], 1.0, 0.1));
        tensors.push(tensor(name("ffn_gate"), vec![ffn, h], 0.0, linear_bound(h)));
        tensors.push(tensor(name("ffn_up"), vec![ffn, h], 0.0, linear_bound(h)));
        tensors.push(tensor(name("ffn_down"), vec![h, ffn], 0.0, linear_bound(ffn)));
    }
    tensors.push(tensor("output_norm.weight".into(), vec![h], 1.0, 0.1));
    if !config.tie_word_embeddings {
        tensors.push(tensor("output.weight".into(), vec![vocab, h], 0.0, linear_bound(h)));
    }
    tensors
}
