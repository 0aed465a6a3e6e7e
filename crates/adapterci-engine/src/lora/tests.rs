//! Tests of LoRA initialisation, the adapter file format and its validation.

use std::collections::HashMap;

use safetensors::tensor::TensorView;

use super::*;
use crate::llama::tests::tiny_model;

fn model() -> LlamaConfig {
    LlamaConfig::tiny(512)
}

fn config(dtype: &str) -> AdapterConfig {
    AdapterConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Down],
        layers: vec![0, 1],
        dtype: dtype.into(),
    }
}

fn trained(dtype: &str) -> LoraWeights {
    let mut lora = LoraWeights::init_standard(&config(dtype), 0.0, &model(), 11, Device::Cpu).expect("init");
    randomize_b_for_tests(&mut lora, 5);
    lora
}

#[test]
fn init_is_kaiming_uniform_a_and_zero_b_and_seeded() {
    let model = model();
    let lora = LoraWeights::init_standard(&config("f16"), 0.1, &model, 42, Device::Cpu).expect("init");
    for &layer in &[0, 1] {
        for target in [LoraTarget::Q, LoraTarget::V, LoraTarget::Down] {
            let (a, b) = lora.get(layer, target).expect("pair");
            let (fan_in, out) = target_dims(&model, target);
            assert_eq!((a.size(), b.size()), (vec![4, fan_in as i64], vec![out as i64, 4]));
            let bound = 1.0 / (fan_in as f64).sqrt();
            assert!(a.abs().max().double_value(&[]) <= bound);
            assert!(a.abs().max().double_value(&[]) > 0.8 * bound, "A should fill its range");
            assert_eq!(b.abs().max().double_value(&[]), 0.0);
            assert!(a.requires_grad() && b.requires_grad());
        }
    }
    assert!(lora.get(0, LoraTarget::K).is_none());
    assert_eq!(lora.scale(), 2.0);
    let again = LoraWeights::init_standard(&config("f16"), 0.1, &model, 42, Device::Cpu).expect("init");
    let other = LoraWeights::init_standard(&config("f16"), 0.1, &model, 43, Device::Cpu).expect("init");
    let a = |l: &LoraWeights| l.get(1, LoraTarget::Down).expect("pair").0.shallow_clone();
    assert!(a(&lora).equal(&a(&again)), "same seed, same A");
    assert!(!a(&lora).equal(&a(&other)), "another seed, another A");
}

#[test]
fn init_rejects_configs_that_do_not_fit_the_model() {
    let check = |edit: &dyn Fn(&mut AdapterConfig), dropout: f64, expected: &str| {
        let mut config = config("f16");
        edit(&mut config);
        let message = LoraWeights::init_standard(&config, dropout, &model(), 1, Device::Cpu)
            .expect_err("should fail")
            .to_string();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    };
    check(&|c| c.rank = 0, 0.0, "rank 0");
    check(&|c| c.alpha = f64::NAN, 0.0, "alpha");
    check(&|c| c.targets.clear(), 0.0, "no targets");
    check(&|c| c.targets.push(LoraTarget::Q), 0.0, "target \"q\" is listed twice");
    check(&|c| c.layers = vec![0, 2], 0.0, "layer 2 does not exist");
    check(&|c| c.layers = vec![1, 0], 0.0, "sorted");
    check(&|c| c.layers.clear(), 0.0, "no layers");
    check(&|c| c.dtype = "f64".into(), 0.0, "dtype \"f64\"");
    check(&|_| {}, 1.0, "dropout 1");
}

#[test]
fn trainable_parameters_share_storage_and_need_gradients() {
    let lora = trained("f32");
    let params = lora.trainable_parameters();
    assert_eq!(params.len(), 2 * 3 * 2);
    let (a, b) = lora.get(0, LoraTarget::Q).expect("pair");
    assert_eq!(params[0].data_ptr(), a.data_ptr());
    assert_eq!(params[1].data_ptr(), b.data_ptr());
    assert!(params.iter().all(Tensor::requires_grad));
    assert_eq!(lora.num_parameters(), params.iter().map(Tensor::numel).sum::<usize>());
    assert_eq!(lora.size_bytes(), 4 * lora.num_parameters());
}

#[test]
fn dropout_applies_only_while_training() {
    let mut lora = trained("f32");
    lora.set_dropout(0.5);
    let x = Tensor::ones([3, 64], (Kind::Float, Device::Cpu));
    let eval = lora.delta(0, LoraTarget::Q, &x).expect("delta");
    let (a, b) = lora.get(0, LoraTarget::Q).expect("pair");
    let expected = x.matmul(&a.tr()).matmul(&b.tr()) * 2.0;
    assert!((&eval - expected).abs().max().double_value(&[]) < 1e-5);
    lora.set_training(true);
    let train = lora.delta(0, LoraTarget::Q, &x).expect("delta");
    assert!((&eval - train).abs().max().double_value(&[]) > 1e-3, "dropout should change the delta");
    assert!(lora.delta(0, LoraTarget::K, &x).is_none());
}

#[test]
fn dropout_masks_follow_the_adapters_seed_not_torchs_generator() {
    let dropping = |seed: u64| {
        let mut lora = trained("f32");
        lora.set_dropout(0.5);
        lora.set_training(true);
        lora.set_dropout_seed(seed);
        lora
    };
    let x = Tensor::ones([16, 64], (Kind::Float, Device::Cpu));
    let first = dropping(7);
    tch::manual_seed(1);
    let a1 = first.delta(0, LoraTarget::Q, &x).expect("delta");
    let a2 = first.delta(0, LoraTarget::Q, &x).expect("delta");
    // another adapter with the same seed, after other draws from torch's generator, draws the same masks in turn
    tch::manual_seed(2);
    let _ = Tensor::rand([1000], (Kind::Float, Device::Cpu));
    let again = dropping(7);
    assert!(a1.equal(&again.delta(0, LoraTarget::Q, &x).expect("delta")));
    assert!(a2.equal(&again.delta(0, LoraTarget::Q, &x).expect("delta")));
    // each draw, and each seed, gives other masks
    assert!(!a1.equal(&a2));
    assert!(!a1.equal(&dropping(8).delta(0, LoraTarget::Q, &x).expect("delta")));
    // a new seed starts the count again
    let mut reseeded = dropping(9);
    let _ = reseeded.delta(0, LoraTarget::Q, &x);
    reseeded.set_dropout_seed(7);
    assert!(a1.equal(&reseeded.delta(0, LoraTarget::Q, &x).expect("delta")));
}

/// Wellons' `lowbias32` on `u32`, the reference for the device hash.
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

#[test]
fn dropout_mask_is_the_reference_hash_and_keeps_one_minus_p() {
    let (p, key) = (0.3, 0xDEAD_BEEF_1234_5678u64);
    let count = 200_000;
    let mask = dropout_mask(&[count / 8, 8], key, p, Kind::Float, Device::Cpu).reshape([-1]);
    let values: Vec<f32> = Vec::try_from(&mask).expect("floats");
    let threshold = (p * 4_294_967_296.0).round() as u64;
    let scale = (1.0 / (1.0 - p)) as f32;
    for (index, &value) in values.iter().enumerate() {
        let hashed = lowbias32(lowbias32((index as u32).wrapping_add(key as u32)) ^ (key >> 32) as u32);
        let expected = if u64::from(hashed) >= threshold { scale } else { 0.0 };
        assert_eq!(value, expected, "element {index}");
    }
    let kept = values.iter().filter(|&&v| v > 0.0).count() as f64 / count as f64;
    // 0.7 ± 5 standard deviations of a binomial share over 200,000 draws
    assert!((kept - 0.7).abs() < 5.0 * (0.21f64 / count as f64).sqrt(), "kept {kept}");
}

fn header(bytes: &[u8]) -> HashMap<String, String> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).expect("metadata");
    metadata.metadata().clone().expect("header")
}

#[test]
fn round_trips_through_safetensors_in_each_dtype() {
    for (dtype, kind) in [("f16", Kind::Half), ("bf16", Kind::BFloat16), ("f32", Kind::Float)] {
        let lora = trained(dtype);
        let bytes = lora.to_safetensors().expect("encode");
        let header = header(&bytes);
        assert_eq!(header["format"], "adapterci");
        assert_eq!((header["rank"].as_str(), header["alpha"].as_str()), ("4", "8"));
        assert_eq!((header["targets"].as_str(), header["layers"].as_str()), ("q,v,down", "0,1"));
        assert_eq!(header["dtype"], dtype);
        let file = SafeTensors::deserialize(&bytes).expect("safetensors");
        let a = file.tensor("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight").expect("A");
        assert_eq!(a.shape(), [4, 128]);
        let b = file.tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").expect("B");
        assert_eq!(b.shape(), [32, 4]);
        assert_eq!(file.len(), 12);
        assert!(bytes.len() - lora.size_bytes() < 4096, "{dtype}: the file is the weights plus a header");

        assert!((0..4).all(|_| lora.to_safetensors().expect("encode") == bytes), "{dtype}: bytes must not vary");

        let read = LoraWeights::from_safetensors(&bytes, &model(), Device::Cpu).expect("decode");
        assert_eq!(read.config(), lora.config());
        assert!(!read.is_training());
        for (&(layer, target), pair) in &lora.pairs {
            let (a, b) = read.get(layer, target).expect("pair");
            for (original, decoded) in [(&pair.a, a), (&pair.b, b)] {
                let stored = original.detach().to_kind(kind).to_kind(Kind::Float);
                assert!(stored.equal(decoded), "{dtype} {layer} {target:?}");
            }
        }
        assert_eq!(read.to_safetensors().expect("encode again"), bytes, "{dtype}: read then written is the same file");
    }
}

/// An F32 safetensors file of `tensors` with the header `fields`.
fn encode(tensors: &[(String, Vec<usize>, Vec<f32>)], fields: &[(&str, &str)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<_> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), data).expect("view")))
        .collect();
    let header = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    safetensors::serialize(views, Some(header)).expect("serialize")
}

const HEADER: [(&str, &str); 6] =
    [("format", "adapterci"), ("rank", "2"), ("alpha", "4"), ("targets", "k"), ("layers", "1"), ("dtype", "f32")];

fn good_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    vec![
        (peft_key(1, LoraTarget::K, "A"), vec![2, 64], vec![0.01; 128]),
        (peft_key(1, LoraTarget::K, "B"), vec![32, 2], vec![0.02; 64]),
    ]
}

fn check_rejected(bytes: &[u8], expected: &str) {
    let message = LoraWeights::from_safetensors(bytes, &model(), Device::Cpu).expect_err("should fail").to_string();
    assert!(message.starts_with("adapter: "), "{message}");
    assert!(message.contains(expected), "{message:?} should contain {expected:?}");
}

fn with_field(key: &str, value: &str) -> Vec<(&'static str, String)> {
    HEADER.iter().map(|(k, v)| (*k, if *k == key { value.to_owned() } else { (*v).to_owned() })).collect()
}

fn encode_with(tensors: &[(String, Vec<usize>, Vec<f32>)], fields: &[(&str, String)]) -> Vec<u8> {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    encode(tensors, &fields)
}

#[test]
fn reads_a_handmade_file_and_rejects_broken_ones() {
    let lora = LoraWeights::from_safetensors(&encode(&good_tensors(), &HEADER), &model(), Device::Cpu).expect("read");
    assert_eq!(lora.config().targets, vec![LoraTarget::K]);
    assert_eq!(lora.scale(), 2.0);

    check_rejected(b"not a safetensors file", "not a safetensors file");
    check_rejected(&encode(&good_tensors(), &HEADER[1..]), "no \"format\"");
    check_rejected(&encode_with(&good_tensors(), &with_field("format", "pt")), "format is \"pt\"");
    check_rejected(&encode_with(&good_tensors(), &with_field("rank", "two")), "\"rank\" is \"two\"");
    check_rejected(&encode_with(&good_tensors(), &with_field("targets", "k,qkv")), "unknown target \"qkv\"");
    check_rejected(&encode_with(&good_tensors(), &with_field("layers", "1,7")), "layer 7 does not exist");
    check_rejected(&encode_with(&good_tensors(), &with_field("dtype", "f16")), "is F32, the header says F16");
    check_rejected(&encode_with(&good_tensors(), &with_field("rank", "3")), "has shape [2, 64], expected [3, 64]");

    let mut missing = good_tensors();
    missing.pop();
    check_rejected(
        &encode(&missing, &HEADER),
        "\"base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight\" is missing",
    );
    let mut extra = good_tensors();
    extra.push((peft_key(0, LoraTarget::K, "A"), vec![2, 64], vec![0.0; 128]));
    check_rejected(
        &encode(&extra, &HEADER),
        "\"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight\" is not one of",
    );
    let mut transposed = good_tensors();
    transposed[1].1 = vec![2, 32];
    check_rejected(&encode(&transposed, &HEADER), "has shape [2, 32], expected [32, 2]");
    let mut nan = good_tensors();
    nan[0].2[5] = f32::NAN;
    check_rejected(&encode(&nan, &HEADER), "NaN");
}

#[test]
fn a_read_adapter_changes_the_model_like_the_written_one() {
    let tiny = tiny_model(12);
    let lora = trained("f32");
    let read = LoraWeights::from_safetensors(&lora.to_safetensors().expect("encode"), &tiny.config, Device::Cpu)
        .expect("decode");
    let input = Tensor::from_slice(&[1i64, 5, 9, 200]).unsqueeze(0);
    let (written, loaded) = tch::no_grad(|| {
        (tiny.llama.forward(&input, 0, None, Some(&lora)), tiny.llama.forward(&input, 0, None, Some(&read)))
    });
    assert!(written.equal(&loaded));
}
