//! Token-length statistics of a tokenized dataset, and the truncation policy for records longer than the
//! maximum sequence length.

use std::fmt;

use super::{DatasetIssue, DatasetIssues, DatasetRecord, Example, tokenize_records};
use crate::EngineError;
use crate::tokenizer::Tokenizer;

/// What to do with a record longer than `max_seq_len` tokens (the job's `TrainSpec::truncation`).
pub use adapterci_core::training::TruncationPolicy;

/// Tokenizes `records` like [`tokenize_records`], applying `policy` to over-long records.
pub fn tokenize_records_with_policy(
    records: &[DatasetRecord],
    tokenizer: &Tokenizer,
    max_seq_len: usize,
    policy: TruncationPolicy,
) -> Result<Vec<Example>, EngineError> {
    let examples = tokenize_records(records, tokenizer, max_seq_len)?;
    if policy == TruncationPolicy::TruncatePromptLeft {
        return Ok(examples);
    }
    let issues: Vec<DatasetIssue> = examples
        .iter()
        .filter(|e| e.truncated_tokens > 0)
        .map(|e| {
            DatasetIssue::at(
                e.line,
                format!(
                    "the record is {} tokens, longer than max_seq_len {max_seq_len} (truncation is off)",
                    e.input_ids.len() + e.truncated_tokens
                ),
            )
        })
        .collect();
    if issues.is_empty() { Ok(examples) } else { Err(EngineError::InvalidDataset(DatasetIssues::collect(issues))) }
}

/// Lengths in tokens over a tokenized dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLengthStats {
    pub examples: usize,
    pub total_tokens: usize,
    /// Tokens that carry the loss (assistant content and end of turn).
    pub target_tokens: usize,
    pub min: usize,
    pub max: usize,
    pub mean: f64,
    /// Nearest-rank percentiles.
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    /// Records whose prompt was cut to fit, and the tokens cut.
    pub truncated_examples: usize,
    pub truncated_tokens: usize,
}

/// Statistics of `examples` (all zero for none).
pub fn token_length_stats(examples: &[Example]) -> TokenLengthStats {
    let mut lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    lengths.sort_unstable();
    let percentile = |p: f64| {
        if lengths.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * lengths.len() as f64).ceil() as usize;
        lengths[rank.clamp(1, lengths.len()) - 1]
    };
    let total_tokens: usize = lengths.iter().sum();
    TokenLengthStats {
        examples: examples.len(),
        total_tokens,
        target_tokens: examples.iter().map(Example::target_count).sum(),
        min: lengths.first().copied().unwrap_or(0),
        max: lengths.last().copied().unwrap_or(0),
        mean: if lengths.is_empty() { 0.0 } else { total_tokens as f64 / lengths.len() as f64 },
        p50: percentile(50.0),
        p90: percentile(90.0),
        p99: percentile(99.0),
        truncated_examples: examples.iter().filter(|e| e.truncated_tokens > 0).count(),
        truncated_tokens: examples.iter().map(|e| e.truncated_tokens).sum(),
    }
}

impl fmt::Display for TokenLengthStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} examples, {} tokens ({} targets); length min {} p50 {} p90 {} p99 {} max {} mean {:.1}; {} truncated \
             ({} tokens cut)",
            self.examples,
            self.total_tokens,
            self.target_tokens,
            self.min,
            self.p50,
            self.p90,
            self.p99,
            self.max,
            self.mean,
            self.truncated_examples,
            self.truncated_tokens
        )
    }
}
