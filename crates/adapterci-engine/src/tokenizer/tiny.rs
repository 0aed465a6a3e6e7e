//! The tiny tokenizer for tiny test models: 3 ChatML specials, the 256 GPT-2 byte tokens and merges learned
//! deterministically from a short fixed English text, 512 tokens in all.
//!
//! Ids mirror SmolLM2's layout: `<|endoftext|>` 0, `<|im_start|>` 1 (BOS), `<|im_end|>` 2 (EOS and PAD), so code
//! and tests behave the same on the tiny and the real model.

use std::collections::BTreeMap;

use super::bpe::{byte_to_char_table, gpt2_byte_order};
use super::pretokenize::PreTokenizer;
use super::{TokenizerSpec, token_type};
use crate::chat::CHATML_TEMPLATE;

/// Total vocabulary size of the tiny tokenizer.
pub const TINY_VOCAB_SIZE: usize = 512;

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The merges are learned from this text; changing it changes every tiny model's vocabulary.
const TRAINING_TEXT: &str = "\
The assistant reads the question and answers it in a short, clear sentence. When the user asks for a summary, \
the assistant writes what matters and leaves out the rest. When the user says hello, the assistant says hello \
back and asks how it can help.

A model is trained on examples. Each example has a prompt and a response, and the training loop shows the model \
the prompt, then teaches it to predict the response one token at a time. The loss goes down as the model learns; \
when it stops going down, training stops. An adapter is a small set of weights that changes how the base model \
behaves without changing the base model itself. Many adapters can share one base model, and each adapter can be \
trained, evaluated, published and served on its own.

Before an adapter is published, it has to pass its gates. A gate compares a metric with a threshold: the \
accuracy on the held-out set must be at least as good as the last version, the perplexity must not rise, and the \
answers must still follow the format the users expect. If every gate passes, the registry stores the new version \
and the server starts to use it. If a gate fails, nothing is published, and the report says which gate failed and \
by how much.

The weather today is mild. In the morning there was rain, and the streets were wet and quiet; in the afternoon the \
sun came out, the children went back to the park, and the old man on the corner opened his shop again. He sells \
bread, apples, cheese and coffee, and he knows the name of everyone who comes in. On Sundays the market fills the \
square, and people talk, laugh and trade stories until the evening light turns the windows gold.

Numbers are written one digit at a time: 1, 2, 3, 10, 42, 100, 2024 and 3.14 all become short runs of digits. \
Code looks different from prose: fn main() { println!(\"hello, world\"); } and def train(model, data): return loss \
are both common. Lists, keys and values appear in JSON, such as {\"name\": \"adapter\", \"rank\": 16, \"alpha\": 32}.

Good writing is simple. Say what you mean, use short words, and stop when you are done. The reader should never \
have to guess what a sentence means or why it is there. That is true for stories, for reports and for the \
messages a system writes when something goes wrong: say what happened, where it happened and what to do next.
";

/// The tiny byte-level BPE spec; deterministic, the same on every call and every machine.
pub fn tiny_tokenizer_spec() -> TokenizerSpec {
    let byte_table = byte_to_char_table();
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| (*s).to_owned()).collect();
    let mut token_types = vec![token_type::CONTROL; SPECIALS.len()];
    for byte in gpt2_byte_order() {
        tokens.push(byte_table[usize::from(byte)].to_string());
        token_types.push(token_type::NORMAL);
    }
    let merges = learn_merges(TRAINING_TEXT, TINY_VOCAB_SIZE - tokens.len());
    for (left, right) in &merges {
        tokens.push(format!("{left}{right}"));
        token_types.push(token_type::NORMAL);
    }
    TokenizerSpec {
        model: "gpt2".to_owned(),
        pre: "smollm".to_owned(),
        tokens,
        token_types,
        merges: merges.iter().map(|(left, right)| format!("{left} {right}")).collect(),
        bos_id: Some(1),
        eos_id: 2,
        pad_id: Some(2),
        add_bos: false,
        chat_template: Some(CHATML_TEMPLATE.to_owned()),
    }
}

/// Classic BPE training over pre-tokenized words: repeatedly merge the most frequent adjacent pair (ties broken by
/// the smaller pair, so the result is deterministic) until `count` new tokens exist. A merge whose result is already
/// a token (reachable by two different paths) is skipped so that every learned merge adds exactly one token.
fn learn_merges(text: &str, count: usize) -> Vec<(String, String)> {
    let byte_table = byte_to_char_table();
    let mut ranges = Vec::new();
    PreTokenizer::DigitsThenGpt2.split(text, &mut ranges);
    let mut words: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for range in ranges {
        let symbols = text[range].bytes().map(|byte| byte_table[usize::from(byte)].to_string()).collect();
        *words.entry(symbols).or_default() += 1;
    }
    let mut known: std::collections::BTreeSet<String> = byte_table.iter().map(char::to_string).collect();
    let mut merges = Vec::with_capacity(count);
    while merges.len() < count {
        let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (symbols, frequency) in &words {
            for pair in symbols.windows(2) {
                if !known.contains(&format!("{}{}", pair[0], pair[1])) {
                    *pairs.entry((pair[0].clone(), pair[1].clone())).or_default() += frequency;
                }
            }
        }
        // BTreeMap iterates pairs in ascending order, and `max_by_key` keeps the last maximum: reverse to keep the
        // smallest pair among equally frequent ones.
        let Some((best, _)) = pairs.into_iter().rev().max_by_key(|(_, frequency)| *frequency) else { break };
        known.insert(format!("{}{}", best.0, best.1));
        words = words.into_iter().map(|(symbols, frequency)| (merge_pair(&symbols, &best), frequency)).fold(
            BTreeMap::new(),
            |mut merged, (symbols, frequency)| {
                *merged.entry(symbols).or_default() += frequency;
                merged
            },
        );
        merges.push(best);
    }
    merges
}

fn merge_pair(symbols: &[String], pair: &(String, String)) -> Vec<String> {
    let mut merged = Vec::with_capacity(symbols.len());
    let mut index = 0;
    while index < symbols.len() {
        if index + 1 < symbols.len() && symbols[index] == pair.0 && symbols[index + 1] == pair.1 {
            merged.push(format!("{}{}", pair.0, pair.1));
            index += 2;
        } else {
            merged.push(symbols[index].clone());
            index += 1;
        }
    }
    merged
}
