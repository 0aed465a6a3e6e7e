//! Held-out evaluation: masked cross-entropy (`eval_loss`) and greedy-generation exact match, for an adapter
//! and for the base model alone.

use adapterci_core::training::EvalSample;
use tch::Kind;

use crate::EngineError;
use crate::dataset::Example;
use crate::generate::GenerationParams;
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::model::{BaseModel, LoadedAdapter};
use crate::train::Batch;

pub mod metrics;

/// Examples per forward pass when computing the eval loss.
pub const EVAL_BATCH_SIZE: usize = 8;

/// What one model (base, or base plus adapter) scored on the held-out examples.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOutcome {
    /// Mean cross-entropy per target token over every held-out example.
    pub loss: f64,
    /// Share of the generated examples whose trimmed output equals the trimmed expected answer.
    pub exact_match: f64,
    /// The generated answer of each of the first `max_examples` examples, in order.
    pub outputs: Vec<String>,
}

/// Token-weighted mean cross-entropy over the target tokens of `examples` (NaN when there are none).
pub fn eval_loss(llama: &Llama, lora: Option<&LoraWeights>, examples: &[Example], pad_id: u32) -> f64 {
    // similar lengths together: less padding to run through the model
    let mut order: Vec<&Example> = examples.iter().collect();
    order.sort_by_key(|e| e.input_ids.len());
    let mut total = 0.0;
    let mut count = 0usize;
    tch::no_grad(|| {
        for chunk in order.chunks(EVAL_BATCH_SIZE) {
            let batch = Batch::new(chunk, pad_id, llama.device());
            if batch.target_count == 0 {
                continue;
            }
            let loss = batch.loss(llama, lora).to_kind(Kind::Double).double_value(&[]);
            total += loss * batch.target_count as f64;
            count += batch.target_count;
        }
    });
    if count == 0 { f64::NAN } else { total / count as f64 }
}

/// Tokens allowed beyond the expected answer's length when generating for exact match.
pub const EXACT_MATCH_SLACK_TOKENS: usize = 8;

/// Greedy answers for the prompts of `examples` (stopping at the tokenizer's stop tokens).
///
/// Each answer gets at most `max_new_tokens`, and at most [`EXACT_MATCH_SLACK_TOKENS`] more than its expected
/// answer plus end of turn: an output much longer than the expected one cannot match it, and a base model that
/// rambles would otherwise spend the whole budget on every example.
pub fn generate_answers(
    model: &BaseModel,
    adapter: Option<&LoadedAdapter>,
    examples: &[Example],
    max_new_tokens: usize,
) -> Result<Vec<String>, EngineError> {
    let stop_token_ids = model.tokenizer().stop_token_ids();
    examples
        .iter()
        .map(|example| {
            let answer_tokens = example.input_ids.len() - example.prompt_len;
            let params = GenerationParams {
                max_new_tokens: max_new_tokens.min(answer_tokens + EXACT_MATCH_SLACK_TOKENS),
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                stop_token_ids: stop_token_ids.clone(),
            };
            let generation = model.generate(&example.input_ids[..example.prompt_len], adapter, &params)?;
            let mut tokens = generation.tokens;
            while tokens.last().is_some_and(|t| stop_token_ids.contains(t)) {
                tokens.pop();
            }
            Ok(model.tokenizer().decode(&tokens))
        })
        .collect()
}

/// `true` when the output answers exactly (surrounding whitespace ignored).
pub fn is_exact_match(output: &str, expected: &str) -> bool {
    output.trim() == expected.trim()
}

/// Eval loss over all `examples` and exact match over the first `max_examples` of them.
pub fn evaluate(
    model: &BaseModel,
    adapter: Option<&LoadedAdapter>,
    examples: &[Example],
    max_examples: usize,
    max_new_tokens: usize,
) -> Result<EvalOutcome, EngineError> {
    let pad_id = pad_token_id(model);
    let loss = eval_loss(model.llama(), adapter.map(LoadedAdapter::lora), examples, pad_id);
    let generated = &examples[..examples.len().min(max_examples)];
    let outputs = generate_answers(model, adapter, generated, max_new_tokens)?;
    let matches = outputs.iter().zip(generated).filter(|(output, e)| is_exact_match(output, &e.expected)).count();
    let exact_match = if outputs.is_empty() { 0.0 } else { matches as f64 / outputs.len() as f64 };
    Ok(EvalOutcome { loss, exact_match, outputs })
}

/// The token used to pad batches: the tokenizer's end of sequence (never a target, so its value is irrelevant).
pub fn pad_token_id(model: &BaseModel) -> u32 {
    model.tokenizer().eos_id()
}

/// One sample per generated example, with the base model's answer when it was evaluated.
pub fn eval_samples(examples: &[Example], adapter: &EvalOutcome, base: Option<&EvalOutcome>) -> Vec<EvalSample> {
    adapter
        .outputs
        .iter()
        .zip(examples)
        .enumerate()
        .map(|(index, (output, example))| EvalSample {
            prompt: example.prompt.clone(),
            expected: example.expected.clone(),
            base_output: base.and_then(|b| b.outputs.get(index).cloned()),
            adapter_output: output.clone(),
            exact_match: is_exact_match(output, &example.expected),
        })
        .collect()
}
