//! Sequence packing on the tiny model: a packed batch has exactly the loss of its examples run one by one
//! (positions restart and attention stays inside each example), and a packed run trains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::training::{NoProgress, TrainSpec};
use adapterci_engine::Tokenizer;
use adapterci_engine::dataset::{Example, parse_jsonl, tokenize_records};
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::train::{BaseCompute, Batch, TrainOptions, TrainingModel, train_lora_with};
use tch::Device;

mod support;
use support::Tiny;

fn tiny() -> Tiny {
    support::tiny(5)
}

fn examples(tokenizer: &Tokenizer) -> Vec<Example> {
    let words = ["red", "blue", "green", "apple", "bread", "cheese", "rain", "sun", "park", "shop", "gold", "tea"];
    let mut lines = String::new();
    for (i, word) in words.iter().enumerate() {
        let prompt = if i % 2 == 0 { format!("say {word}") } else { format!("the word you should say is {word}") };
        lines.push_str(&format!("{{\"prompt\": \"{prompt}\", \"completion\": \"{word}!\"}}\n"));
    }
    let dataset = parse_jsonl(lines.as_bytes()).expect("valid dataset");
    tokenize_records(&dataset.records, tokenizer, 64).expect("fits")
}

fn adapter(llama: &Llama) -> LoraWeights {
    support::lora(llama, 4, 0.0, 1)
}

#[test]
fn a_packed_batch_has_the_loss_of_its_examples_run_alone() {
    let tiny = tiny();
    let all = examples(&tiny.tokenizer);
    let lora = adapter(&tiny.llama);
    let model = TrainingModel::new(&tiny.llama, BaseCompute::F32).expect("training model");
    let rows: Vec<Vec<&Example>> = vec![vec![&all[0], &all[1], &all[2]], vec![&all[3], &all[4]], vec![&all[5]]];
    let packed = Batch::packed(&rows, 0, Device::Cpu);

    let (mut total, mut targets) = (0.0, 0usize);
    for example in rows.iter().flatten() {
        let alone = Batch::new(&[*example], 0, Device::Cpu);
        total += tch::no_grad(|| alone.loss_with(&model, Some(&lora)).double_value(&[])) * alone.target_count as f64;
        targets += alone.target_count;
    }
    let expected = total / targets as f64;
    assert_eq!(packed.target_count, targets);
    assert_eq!(packed.tokens, rows.iter().flatten().map(|e| e.input_ids.len()).sum::<usize>());
    let actual = tch::no_grad(|| packed.loss_with(&model, Some(&lora)).double_value(&[]));
    assert!((actual - expected).abs() < 1e-5 * expected.abs().max(1.0), "packed {actual} vs alone {expected}");

    // positions restart at every example; the first token of the second example sees only itself
    let (first, second) = (all[0].input_ids.len() as i64, all[1].input_ids.len() as i64);
    let positions = packed.position_ids.as_ref().expect("packed rows carry positions");
    assert_eq!(positions.int64_value(&[0, first - 1]), first - 1);
    assert_eq!(positions.int64_value(&[0, first]), 0);
    assert_eq!(positions.int64_value(&[0, first + second]), 0);
    let mask = packed.attention_mask.as_ref().expect("packed rows carry a mask");
    assert!(mask.int64_value(&[0, 0, first, first - 1]) == 0, "no query sees an earlier example");
    assert!(mask.int64_value(&[0, 0, first, first]) != 0);
    assert!(mask.int64_value(&[0, 0, first + 1, first]) != 0);
    assert!(mask.int64_value(&[0, 0, first - 1, first]) == 0, "no query sees a later key");

    // the same rows concatenated without the mask and positions give another loss: the check can fail
    let naive = Batch { attention_mask: None, position_ids: None, ..Batch::packed(&rows, 0, Device::Cpu) };
    let leaked = tch::no_grad(|| naive.loss_with(&model, Some(&lora)).double_value(&[]));
    assert!((leaked - expected).abs() > 1e-4, "attention across examples changed nothing: {leaked} vs {expected}");
}

#[test]
fn packed_training_feeds_more_tokens_per_step_and_learns() {
    let tiny = tiny();
    let all = examples(&tiny.tokenizer);
    let spec = TrainSpec { steps: 12, batch_size: 2, learning_rate: 1e-2, seed: 3, ..TrainSpec::default() };
    let mut plain_lora = adapter(&tiny.llama);
    let plain =
        train_lora_with(&tiny.llama, &mut plain_lora, &all, &spec, 0, &NoProgress, &TrainOptions::default()).unwrap();
    let mut packed_lora = adapter(&tiny.llama);
    let options = TrainOptions { packing: Some(64), ..TrainOptions::default() };
    let packed = train_lora_with(&tiny.llama, &mut packed_lora, &all, &spec, 0, &NoProgress, &options).unwrap();
    assert!(packed.tokens > 2 * plain.tokens, "packed {} tokens vs plain {}", packed.tokens, plain.tokens);
    let first = packed.loss_curve.first().unwrap().1;
    let last = packed.final_loss(3);
    assert!(last < first, "packed training did not learn: {first} -> {last}");
}
