//! Task-adapter training on a base with activation bits: the training forward quantizes the linear inputs per
//! token exactly as `Llama::forward` serves them, the adapter still gets gradients (straight-through), and a
//! short run on a base release that records `activation_bits` lowers the loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::training::{AdapterConfig, LoraTarget, NoProgress, TrainSpec};
use adapterci_engine::allocate::{Method, linear_ops, palettize_op};
use adapterci_engine::dataset::{Example, parse_jsonl, tokenize_records};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::model::BaseModel;
use adapterci_engine::release_build::{BuildOptions, release_file};
use adapterci_engine::tiny::write_tiny_model;
use adapterci_engine::train::{BaseCompute, Batch, TrainingModel, train_lora};
use tch::{Device, Tensor};

mod support;
use support::{adapter, learnable_jsonl};

/// A rank-4 adapter on every linear operation with B drawn nonzero, so every update counts in the forward
/// and A gets a gradient too.
fn adapter_with_nonzero_b(llama: &Llama, seed: u64) -> LoraWeights {
    let config = AdapterConfig {
        rank: 4,
        alpha: 8.0,
        targets: LoraTarget::ALL.to_vec(),
        layers: (0..llama.config().num_layers).collect(),
        dtype: "f32".into(),
    };
    let lora = LoraWeights::init_standard(&config, 0.0, llama.config(), seed, Device::Cpu).expect("init");
    tch::manual_seed(seed as i64);
    for mut b in lora.trainable_parameters().into_iter().skip(1).step_by(2) {
        let _ = tch::no_grad(|| b.uniform_(-0.1, 0.1));
    }
    lora
}

fn ids() -> Tensor {
    Tensor::from_slice(&[5i64, 80, 17, 300, 42, 9, 77, 120, 3, 11, 64, 200]).view([2, 6])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn training_logits(llama: &Llama, compute: BaseCompute, lora: &LoraWeights) -> Tensor {
    let model = TrainingModel::new(llama, compute).expect("training model");
    assert_eq!(model.activation_bits(), llama.activation_bits(), "the training model takes the llama's bits");
    tch::no_grad(|| model.lm_head(&model.forward_hidden(&ids(), Some(lora))))
}

#[test]
fn the_training_forward_quantizes_linear_inputs_exactly_like_llama_forward() {
    let mut tiny = support::tiny(3);
    let lora = adapter_with_nonzero_b(&tiny.llama, 9);
    let plain = tch::no_grad(|| tiny.llama.forward(&ids(), 0, None, Some(&lora)));
    for bits in [4u8, 8] {
        tiny.llama.set_activation_bits(Some(bits));
        let served = tch::no_grad(|| tiny.llama.forward(&ids(), 0, None, Some(&lora)));
        let trained = training_logits(&tiny.llama, BaseCompute::F32, &lora);
        let diff = max_abs_diff(&trained, &served);
        assert!(diff < 1e-4, "{bits}-bit training logits differ from the served ones by {diff}");
        // the quantization is visible in the logits, so the comparison above could fail
        let quantization = max_abs_diff(&served, &plain);
        assert!(quantization > 1e-3, "{bits}-bit inputs change the served logits by only {quantization}");
        // bf16 base matmuls: close at 8 bits. At 4 bits on this random tiny model the bf16 rounding upstream
        // flips quantization levels and moves the logits about as much as the 4-bit quantization itself
        // (measured: 0.28 relative vs 0.33), so only finiteness is asserted there.
        let bf16 = training_logits(&tiny.llama, BaseCompute::Bf16, &lora);
        let relative = (&bf16 - &served).norm().double_value(&[]) / served.norm().double_value(&[]);
        assert!(relative.is_finite() && (bits == 4 || relative < 0.05), "{bits}-bit bf16 relative error {relative}");
    }
    // without bits the training forward is the unquantized one, which differs from the 4-bit served logits
    tiny.llama.set_activation_bits(None);
    let unquantized = training_logits(&tiny.llama, BaseCompute::F32, &lora);
    assert!(max_abs_diff(&unquantized, &plain) < 1e-4);
    tiny.llama.set_activation_bits(Some(4));
    let served4 = tch::no_grad(|| tiny.llama.forward(&ids(), 0, None, Some(&lora)));
    assert!(max_abs_diff(&unquantized, &served4) > 1e-3, "unquantized training logits must differ from 4-bit ones");
}

/// Gradients of every adapter tensor for one batch through the training forward.
fn gradients(llama: &Llama, lora: &LoraWeights, examples: &[Example]) -> Vec<Tensor> {
    let model = TrainingModel::new(llama, BaseCompute::F32).expect("training model");
    let refs: Vec<&Example> = examples.iter().collect();
    let parameters = lora.trainable_parameters();
    for p in &parameters {
        let mut grad = p.grad();
        if grad.defined() {
            let _ = grad.zero_();
        }
    }
    Batch::new(&refs, 0, Device::Cpu).loss_with(&model, Some(lora)).backward();
    parameters.iter().map(|p| p.grad().copy()).collect()
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.flatten(0, -1), b.flatten(0, -1));
    a.dot(&b).double_value(&[]) / (a.norm().double_value(&[]) * b.norm().double_value(&[])).max(1e-30)
}

fn examples(tiny: &support::Tiny) -> Vec<Example> {
    let dataset = parse_jsonl(learnable_jsonl().as_bytes()).expect("valid dataset");
    tokenize_records(&dataset.records, &tiny.tokenizer, 64).expect("fits")
}

#[test]
fn one_step_at_4_bits_gives_finite_nonzero_gradients_and_8_bits_passes_them_straight_through() {
    let mut tiny = support::tiny(3);
    let lora = adapter_with_nonzero_b(&tiny.llama, 5);
    let batch: Vec<Example> = examples(&tiny).into_iter().take(4).collect();
    let unquantized = gradients(&tiny.llama, &lora, &batch);
    tiny.llama.set_activation_bits(Some(4));
    let four = gradients(&tiny.llama, &lora, &batch);
    assert_eq!(four.len(), 2 * LoraTarget::ALL.len() * tiny.llama.config().num_layers);
    for (index, grad) in four.iter().enumerate() {
        let norm = grad.norm().double_value(&[]);
        let matrix = if index % 2 == 0 { "A" } else { "B" };
        assert!(norm.is_finite() && norm > 0.0, "4-bit gradient of adapter tensor {index} ({matrix}): norm {norm}");
    }
    // At 8 bits the quantization error is small: with the straight-through estimator the gradients of every
    // adapter tensor, the first layer's included, stay close to the unquantized model's.
    tiny.llama.set_activation_bits(Some(8));
    let eight = gradients(&tiny.llama, &lora, &batch);
    for (index, (q, full)) in eight.iter().zip(&unquantized).enumerate() {
        let similarity = cosine(q, full);
        assert!(similarity > 0.99, "8-bit gradient of adapter tensor {index}: cosine {similarity} to unquantized");
    }
}

#[test]
fn a_release_with_activation_bits_trains_task_adapters_on_quantized_inputs_and_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_tiny_model(&gguf, 21).unwrap();
    let source = BaseModel::load(&gguf, DeviceChoice::Cpu).unwrap();
    // uncalibrated 4-bit palettization: enough for a release file, no calibration text needed
    let method = Method { group_rows: 8, group_rows_2bit: 4, weighted: false, compensate: false, ..Method::default() };
    let parts = linear_ops(source.config())
        .iter()
        .map(|op| palettize_op(source.llama(), None, op, 4, method).unwrap())
        .collect();
    let options = BuildOptions { method, activation_bits: Some(4), ..BuildOptions::default() };
    let path = dir.path().join("release.safetensors");
    std::fs::write(&path, release_file(&source, &options, parts, None).unwrap()).unwrap();

    // the path the worker's backend takes: BaseModel::load of the release, then train_lora on its llama
    let base = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    assert_eq!(base.llama().activation_bits(), Some(4));
    let model = TrainingModel::new(base.llama(), BaseCompute::F32).unwrap();
    assert_eq!(model.activation_bits(), Some(4), "the release's bits reach the training forward");

    let dataset = parse_jsonl(learnable_jsonl().as_bytes()).unwrap();
    let all = tokenize_records(&dataset.records, base.tokenizer(), 64).unwrap();
    let refs: Vec<&Example> = all.iter().collect();
    let batch = Batch::new(&refs, 0, Device::Cpu);
    // the served (Llama::forward, 4-bit inputs) loss before and after
    let served_loss = |lora: &LoraWeights| tch::no_grad(|| batch.loss(base.llama(), Some(lora)).double_value(&[]));
    let mut lora = adapter(base.llama(), 7);
    let before = served_loss(&lora);
    let training_before = tch::no_grad(|| batch.loss_with(&model, Some(&lora)).double_value(&[]));
    assert!((before - training_before).abs() < 1e-4, "served {before} vs training {training_before} loss");
    let spec = TrainSpec { steps: 30, batch_size: 8, learning_rate: 1e-2, seed: 1, ..TrainSpec::default() };
    let report = train_lora(base.llama(), &mut lora, &all, &spec, 0, &NoProgress).unwrap();
    let after = served_loss(&lora);
    assert!(after.is_finite() && after < 0.8 * before, "served loss {before} -> {after}");
    let (first, last) = (report.loss_curve[0].1, report.final_loss(5));
    assert!(last < first, "training loss {first} -> {last}");
}
