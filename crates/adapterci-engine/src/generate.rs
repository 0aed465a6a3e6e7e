//! Token generation for one sequence: a prefill pass over the prompt, then one-token decode steps on the KV
//! cache; greedy or temperature + top-p sampling from a seeded generator, stop tokens and timings.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tch::{Kind, Tensor};

use crate::EngineError;
use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::lora::LoraWeights;

/// How to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Sample from the smallest set of tokens whose probability reaches `top_p` (1 = all tokens).
    pub top_p: f32,
    /// The same seed, prompt and parameters give the same tokens.
    pub seed: u64,
    /// Generation ends when one of these is produced; it is not included in the output.
    pub stop_token_ids: Vec<u32>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams { max_new_tokens: 128, temperature: 0.0, top_p: 1.0, seed: 0, stop_token_ids: Vec::new() }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced.
    Stop,
    /// `max_new_tokens` were produced, or the context is full.
    Length,
}

/// The generated tokens (without the stop token) and how long they took.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// From the call until the first token was chosen (the prefill pass).
    pub time_to_first_token: Duration,
    /// Tokens after the first, per second of decoding; 0 when there were none.
    pub decode_tokens_per_second: f64,
}

fn invalid(reason: String) -> EngineError {
    EngineError::InvalidConfig(reason)
}

/// Checks the prompt and parameters against the model; returns how many tokens may be generated (fewer than
/// `max_new_tokens` when the context fills up).
pub fn check_generation(llama: &Llama, prompt: &[u32], params: &GenerationParams) -> Result<usize, EngineError> {
    let config = llama.config();
    if prompt.is_empty() {
        return Err(invalid("the prompt is empty".into()));
    }
    if let Some((index, id)) = prompt.iter().enumerate().find(|(_, id)| **id as usize >= config.vocab_size) {
        return Err(invalid(format!("prompt token {index} is {id}, outside the vocabulary of {}", config.vocab_size)));
    }
    if prompt.len() >= config.max_position_embeddings {
        return Err(invalid(format!(
            "the prompt has {} tokens; the context length is {}",
            prompt.len(),
            config.max_position_embeddings
        )));
    }
    if !(params.temperature.is_finite() && params.temperature >= 0.0) {
        return Err(invalid(format!("temperature {} must be 0 or more", params.temperature)));
    }
    if !(params.top_p > 0.0 && params.top_p <= 1.0) {
        return Err(invalid(format!("top_p {} must be in (0, 1]", params.top_p)));
    }
    Ok(params.max_new_tokens.min(config.max_position_embeddings - prompt.len()))
}

/// Generates up to `params.max_new_tokens` tokens after `prompt`, with `lora` applied when given.
pub fn generate(
    llama: &Llama,
    prompt: &[u32],
    lora: Option<&LoraWeights>,
    params: &GenerationParams,
) -> Result<Generation, EngineError> {
    let started = Instant::now();
    let limit = check_generation(llama, prompt, params)?;
    let mut generation = Generation {
        tokens: Vec::with_capacity(limit),
        finish_reason: FinishReason::Length,
        prompt_tokens: prompt.len(),
        time_to_first_token: Duration::ZERO,
        decode_tokens_per_second: 0.0,
    };
    if limit == 0 {
        return Ok(generation);
    }
    // The last token is never fed back, so the cache needs one position less than prompt + limit.
    let capacity = prompt.len() + limit - 1;
    let mut sampler = Sampler::new(params);
    let device = llama.device();
    tch::no_grad(|| {
        let mut cache = KvCache::new(llama.config(), 1, capacity, device);
        let prompt_ids: Vec<i64> = prompt.iter().map(|&id| id as i64).collect();
        let mut input = Tensor::from_slice(&prompt_ids).unsqueeze(0).to_device(device);
        let mut position = 0;
        let mut decode_started = started;
        loop {
            let hidden = llama.forward_hidden(&input, position, Some(&mut cache), lora);
            position += input.size()[1] as usize;
            let last = hidden.narrow(1, hidden.size()[1] - 1, 1);
            let token = sampler.choose(&llama.lm_head(&last))?;
            if generation.tokens.is_empty() {
                generation.time_to_first_token = started.elapsed();
                decode_started = Instant::now();
            }
            if params.stop_token_ids.contains(&token) {
                generation.finish_reason = FinishReason::Stop;
                break;
            }
            generation.tokens.push(token);
            if generation.tokens.len() == limit {
                break;
            }
            input = Tensor::from_slice(&[token as i64]).unsqueeze(0).to_device(device);
        }
        let decoded = generation.tokens.len().saturating_sub(1);
        let seconds = decode_started.elapsed().as_secs_f64();
        if decoded > 0 && seconds > 0.0 {
            generation.decode_tokens_per_second = decoded as f64 / seconds;
        }
        Ok(generation)
    })
}

/// Picks the next token from one position's logits.
struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: StdRng,
    /// Reused across steps: (probability, token) pairs.
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    fn new(params: &GenerationParams) -> Sampler {
        Sampler {
            temperature: params.temperature,
            top_p: params.top_p,
            rng: StdRng::seed_from_u64(params.seed),
            scratch: Vec::new(),
        }
    }

    fn choose(&mut self, logits: &Tensor) -> Result<u32, EngineError> {
        if self.temperature == 0.0 {
            return Ok(logits.argmax(-1, false).reshape([-1]).f_int64_value(&[0])? as u32);
        }
        let logits = logits.reshape([-1]).to_kind(Kind::Float).to_device(tch::Device::Cpu);
        let logits = Vec::<f32>::try_from(&logits)?;
        Ok(sample(&logits, self.temperature, self.top_p, &mut self.rng, &mut self.scratch))
    }
}

/// Softmax of `logits / temperature`, restricted to the top-p nucleus, sampled with `rng`.
fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut StdRng, scratch: &mut Vec<(f32, u32)>) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    scratch.clear();
    scratch.extend(logits.iter().enumerate().map(|(id, &l)| (((l - max) / temperature).exp(), id as u32)));
    let total: f32 = scratch.iter().map(|(p, _)| p).sum();
    let mut kept = scratch.len();
    let mut kept_mass = total;
    if top_p < 1.0 {
        scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut cumulative = 0.0;
        for (index, (p, _)) in scratch.iter().enumerate() {
            cumulative += p;
            if cumulative >= top_p * total {
                kept = index + 1;
                break;
            }
        }
        kept_mass = scratch[..kept].iter().map(|(p, _)| p).sum();
    }
    let mut draw = rng.random_range(0.0..1.0f32) * kept_mass;
    let mut last_possible = scratch[0].1;
    for &(p, id) in &scratch[..kept] {
        if draw < p {
            return id;
        }
        draw -= p;
        if p > 0.0 {
            last_possible = id;
        }
    }
    // Rounding left a sliver of the draw unspent: take the last token that could be drawn.
    last_possible
}

#[cfg(test)]
mod tests;
