//! Tests of generation on the tiny model: greedy against full recomputation, seeded sampling, stops and errors.

use super::*;
use crate::llama::tests::tiny_model;

fn params(max_new_tokens: usize, temperature: f32, top_p: f32, seed: u64) -> GenerationParams {
    GenerationParams { max_new_tokens, temperature, top_p, seed, stop_token_ids: Vec::new() }
}

/// Greedy decoding the slow way: a full forward pass over the whole sequence for every new token.
fn greedy_by_recomputation(llama: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut sequence: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    for _ in 0..n {
        let logits = tch::no_grad(|| llama.forward(&Tensor::from_slice(&sequence).unsqueeze(0), 0, None, None));
        let last = logits.get(0).get(sequence.len() as i64 - 1);
        sequence.push(last.argmax(-1, false).int64_value(&[]));
    }
    sequence[prompt.len()..].iter().map(|&t| t as u32).collect()
}

const PROMPT: [u32; 5] = [1, 84, 104, 101, 32];

#[test]
fn greedy_generation_with_the_cache_matches_full_recomputation() {
    let model = tiny_model(21);
    let generation = generate(&model.llama, &PROMPT, None, &params(16, 0.0, 1.0, 0)).expect("generate");
    assert_eq!(generation.tokens, greedy_by_recomputation(&model.llama, &PROMPT, 16));
    let distinct: std::collections::BTreeSet<_> = generation.tokens.iter().collect();
    assert!(distinct.len() >= 3, "a degenerate model would make this test weak: {:?}", generation.tokens);
    assert_eq!(generation.finish_reason, FinishReason::Length);
    assert_eq!(generation.prompt_tokens, 5);
    assert!(generation.time_to_first_token > Duration::ZERO);
    assert!(generation.decode_tokens_per_second > 0.0);
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let model = tiny_model(22);
    let run = |seed| generate(&model.llama, &PROMPT, None, &params(24, 1.5, 0.95, seed)).expect("generate").tokens;
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "another seed should sample differently at temperature 1.5");
    let greedy = generate(&model.llama, &PROMPT, None, &params(24, 0.0, 1.0, 0)).expect("generate").tokens;
    let tiny_nucleus = generate(&model.llama, &PROMPT, None, &params(24, 1.0, 1e-6, 9)).expect("generate").tokens;
    assert_eq!(tiny_nucleus, greedy, "a nucleus of one token is greedy decoding");
}

#[test]
fn stops_at_a_stop_token_without_emitting_it() {
    let model = tiny_model(23);
    let free = generate(&model.llama, &PROMPT, None, &params(12, 0.0, 1.0, 0)).expect("generate").tokens;
    let stop = free[4];
    let first = free.iter().position(|&t| t == stop).expect("present");
    let stop_params = GenerationParams { stop_token_ids: vec![999_999, stop], ..params(12, 0.0, 1.0, 0) };
    let stopped = generate(&model.llama, &PROMPT, None, &stop_params).expect("generate");
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.tokens, free[..first]);
}

#[test]
fn the_context_length_bounds_generation() {
    let model = tiny_model(24);
    let context = model.config.max_position_embeddings;
    let long_prompt: Vec<u32> = (0..context as u32 - 3).map(|i| 3 + i % 500).collect();
    let generation = generate(&model.llama, &long_prompt, None, &params(50, 0.0, 1.0, 0)).expect("generate");
    assert_eq!((generation.tokens.len(), generation.finish_reason), (3, FinishReason::Length));
    let none = generate(&model.llama, &PROMPT, None, &params(0, 0.0, 1.0, 0)).expect("generate");
    assert!(none.tokens.is_empty());
}

#[test]
fn rejects_bad_prompts_and_parameters() {
    let model = tiny_model(25);
    let check = |prompt: &[u32], params: GenerationParams, expected: &str| {
        let message = generate(&model.llama, prompt, None, &params).expect_err("should fail").to_string();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    };
    check(&[], params(4, 0.0, 1.0, 0), "the prompt is empty");
    check(&[1, 512], params(4, 0.0, 1.0, 0), "prompt token 1 is 512, outside the vocabulary of 512");
    check(&PROMPT, params(4, -1.0, 1.0, 0), "temperature -1");
    check(&PROMPT, params(4, f32::NAN, 1.0, 0), "temperature NaN");
    check(&PROMPT, params(4, 1.0, 0.0, 0), "top_p 0");
    check(&PROMPT, params(4, 1.0, 1.5, 0), "top_p 1.5");
    check(&vec![1; model.config.max_position_embeddings], params(4, 0.0, 1.0, 0), "context length is 512");
}

fn check_sample(logits: &[f32], temperature: f32, top_p: f32, allowed: &[u32]) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut scratch = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        seen.insert(sample(logits, temperature, top_p, &mut rng, &mut scratch));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), allowed, "logits {logits:?} t={temperature} p={top_p}");
}

#[test]
fn sampling_keeps_to_the_nucleus() {
    // Probabilities 0.5, 0.3, 0.2, ~0 at temperature 1.
    let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln(), -100.0];
    check_sample(&logits, 1.0, 1.0, &[0, 1, 2]);
    check_sample(&logits, 1.0, 0.5, &[0]);
    check_sample(&logits, 1.0, 0.7, &[0, 1]);
    check_sample(&logits, 1.0, 0.81, &[0, 1, 2]);
    check_sample(&logits, 0.01, 1.0, &[0]);
}
