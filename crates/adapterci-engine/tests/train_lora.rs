//! LoRA training on a tiny random model: the schedule, loss going down on held-out records, the base weights
//! staying frozen, and the same seed giving the same adapter bytes.

use adapterci_core::training::{NoProgress, ProgressSink, StepProgress, TrainSpec};
use adapterci_engine::Tokenizer;
use adapterci_engine::dataset::{Example, parse_jsonl, split_train_eval, tokenize_records};
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::train::{Batch, TrainReport, learning_rate_at, train_lora};
use std::sync::Mutex;
use tch::Tensor;

mod support;
use support::{Tiny, adapter, learnable_jsonl};

fn tiny() -> Tiny {
    support::tiny(3)
}

fn examples(tokenizer: &Tokenizer) -> (Vec<Example>, Vec<Example>) {
    let dataset = parse_jsonl(learnable_jsonl().as_bytes()).expect("valid dataset");
    let all = tokenize_records(&dataset.records, tokenizer, 64).expect("fits");
    let (train, eval) = split_train_eval(all.len(), 0.25, 1);
    (train.iter().map(|&i| all[i].clone()).collect(), eval.iter().map(|&i| all[i].clone()).collect())
}

fn spec(steps: usize, seed: u64) -> TrainSpec {
    TrainSpec { steps, batch_size: 8, learning_rate: 1e-2, seed, ..TrainSpec::default() }
}

fn mean_loss(llama: &Llama, lora: Option<&LoraWeights>, examples: &[Example], pad: u32) -> f64 {
    let refs: Vec<&Example> = examples.iter().collect();
    tch::no_grad(|| Batch::new(&refs, pad, llama.device()).loss(llama, lora).double_value(&[]))
}

#[derive(Default)]
struct Recorder(Mutex<Vec<StepProgress>>);

impl ProgressSink for Recorder {
    fn on_step(&self, progress: &StepProgress) {
        self.0.lock().expect("recorder lock").push(progress.clone());
    }
    fn on_message(&self, _: &str) {}
}

#[test]
fn schedule_warms_up_linearly_then_decays_along_a_cosine() {
    let check = |step: usize, expect: f64| {
        let got = learning_rate_at(step, 100, 1.0);
        assert!((got - expect).abs() < 1e-9, "step {step}: {got} != {expect}");
    };
    check(0, 0.1);
    check(4, 0.5);
    check(9, 1.0);
    check(10, 1.0);
    check(55, 0.5);
    assert!(learning_rate_at(99, 100, 1.0) < 0.001);
    assert_eq!(learning_rate_at(0, 1, 2e-4), 2e-4, "one step still trains at the peak rate");
}

#[test]
fn training_lowers_held_out_loss_and_leaves_the_base_untouched() {
    let tiny = tiny();
    let (train, eval) = examples(&tiny.tokenizer);
    let pad = tiny.tokenizer.eos_id();
    let base_weights: Vec<Tensor> = tiny.llama.weights().iter().map(|w| w.copy()).collect();
    let mut lora = adapter(&tiny.llama, 1);
    let before = mean_loss(&tiny.llama, Some(&lora), &eval, pad);
    assert!((before - mean_loss(&tiny.llama, None, &eval, pad)).abs() < 1e-6, "a fresh adapter changes nothing");
    let recorder = Recorder::default();
    let report = train_lora(&tiny.llama, &mut lora, &train, &spec(40, 1), pad, &recorder).expect("trains");
    let after = mean_loss(&tiny.llama, Some(&lora), &eval, pad);
    assert!(after < 0.7 * before, "held-out loss {before:.3} -> {after:.3}");
    assert!(report.final_loss(10) < report.loss_curve[0].1, "{:?}", report.loss_curve);
    let steps = recorder.0.lock().expect("recorder lock");
    assert_eq!(steps.iter().map(|p| p.step).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    assert!(steps.iter().all(|p| p.loss.is_finite() && p.tokens_per_second > 0.0 && p.total_steps == 40));
    for (weight, original) in tiny.llama.weights().iter().zip(&base_weights) {
        assert!(weight.equal(original), "a base weight changed");
        assert!(!weight.requires_grad());
    }
    assert!(!lora.is_training(), "training mode is switched off at the end");
}

fn train_bytes(tiny: &Tiny, train: &[Example], seed: u64) -> (Vec<u8>, TrainReport) {
    let mut lora = adapter(&tiny.llama, seed);
    let report = train_lora(&tiny.llama, &mut lora, train, &spec(6, seed), tiny.tokenizer.eos_id(), &NoProgress)
        .expect("trains");
    (lora.to_safetensors().expect("serialises"), report)
}

#[test]
fn the_same_seed_gives_the_same_adapter_bytes() {
    let tiny = tiny();
    let (train, _) = examples(&tiny.tokenizer);
    let (first, first_report) = train_bytes(&tiny, &train, 5);
    let (second, second_report) = train_bytes(&tiny, &train, 5);
    assert_eq!(first_report.loss_curve, second_report.loss_curve);
    assert!(first == second, "same seed, different adapters");
    let (other, _) = train_bytes(&tiny, &train, 6);
    assert!(first != other, "another seed gives another adapter");
}

#[test]
fn training_refuses_an_empty_example_list() {
    let tiny = tiny();
    let mut lora = adapter(&tiny.llama, 1);
    let error = train_lora(&tiny.llama, &mut lora, &[], &spec(3, 1), 0, &NoProgress).expect_err("no examples");
    assert!(error.to_string().contains("no training examples"), "{error}");
}

#[test]
fn the_training_forward_equals_the_model_in_f32_and_stays_close_in_bf16() {
    use adapterci_engine::train::{BaseCompute, TrainingModel};
    let tiny = tiny();
    let lora = support::lora(&tiny.llama, 4, 0.0, 9);
    // B is zero after init: give it values so the deltas count.
    tch::manual_seed(4);
    for mut b in lora.trainable_parameters().into_iter().skip(1).step_by(2) {
        let _ = tch::no_grad(|| b.uniform_(-0.1, 0.1));
    }
    let ids = Tensor::from_slice(&[5i64, 80, 17, 300, 42, 9, 77, 120, 3, 11, 64, 200]).view([2, 6]);
    let reference = tch::no_grad(|| tiny.llama.forward_hidden(&ids, 0, None, Some(&lora)));
    let f32_model = TrainingModel::new(&tiny.llama, BaseCompute::F32).expect("f32 model");
    let f32_hidden = tch::no_grad(|| f32_model.forward_hidden(&ids, Some(&lora)));
    assert!(f32_hidden.equal(&reference), "the f32 training forward must equal Llama::forward_hidden");
    let bf16_model = TrainingModel::new(&tiny.llama, BaseCompute::Bf16).expect("bf16 model");
    let bf16_hidden = tch::no_grad(|| bf16_model.forward_hidden(&ids, Some(&lora)));
    let relative = (&bf16_hidden - &reference).norm().double_value(&[]) / reference.norm().double_value(&[]);
    assert!(relative > 0.0 && relative < 0.05, "bf16 relative error {relative}");
    let logits = tch::no_grad(|| tiny.llama.lm_head(&reference));
    assert!(tch::no_grad(|| f32_model.lm_head(&reference)).equal(&logits));
}
