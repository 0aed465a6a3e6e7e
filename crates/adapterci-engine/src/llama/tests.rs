//! Tests of the decoder against a plain reference written the other way round (GGUF layout, interleaved rotary
//! pairs, repeated KV heads, explicit softmax), the KV cache, the tied embedding and LoRA.

use adapterci_core::training::{AdapterConfig, LoraTarget};
use tch::{Device, Kind, Tensor};

use super::*;
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::lora::LoraWeights;
use crate::tiny::{write_model, write_tiny_model};
use crate::tokenizer::tiny_tokenizer_spec;

pub(crate) struct TinyModel {
    _dir: tempfile::TempDir,
    pub file: GgufFile,
    pub config: LlamaConfig,
    pub llama: Llama,
}

pub(crate) fn tiny_model(seed: u64) -> TinyModel {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, seed).expect("write tiny model");
    load(dir, &path)
}

fn load(dir: tempfile::TempDir, path: &std::path::Path) -> TinyModel {
    let file = GgufFile::open(path).expect("open");
    let config = LlamaConfig::from_gguf(&file).expect("config");
    let llama = Llama::load(&file, &config, Device::Cpu).expect("load");
    TinyModel { _dir: dir, file, config, llama }
}

fn ids(tokens: &[i64]) -> Tensor {
    Tensor::from_slice(tokens).unsqueeze(0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const PROMPT: [i64; 12] = [1, 40, 300, 17, 256, 99, 2, 480, 33, 150, 7, 511];

fn gguf_weight(file: &GgufFile, name: &str) -> Tensor {
    let (shape, data) = file.dequantize(name).expect("tensor");
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&data).reshape(shape.as_slice()).to_kind(Kind::Double)
}

/// llama.cpp's conversion permutation (the inverse of `unpermute_rows`), for moving a LoRA delta into the
/// GGUF layout the reference uses.
fn permute_rows(weight: &Tensor, heads: i64) -> Tensor {
    let (rows, cols) = (weight.size()[0], weight.size()[1]);
    weight.reshape([heads, 2, rows / heads / 2, cols]).transpose(1, 2).reshape([rows, cols])
}

/// `W` of `target` in GGUF layout, with the adapter's `scale * B A` merged in (permuted like `W` for q/k).
fn merged(model: &TinyModel, layer: usize, target: LoraTarget, gguf_name: &str, lora: Option<&LoraWeights>) -> Tensor {
    let weight = gguf_weight(&model.file, &format!("blk.{layer}.{gguf_name}.weight"));
    let Some((a, b)) = lora.and_then(|lora| lora.get(layer, target)) else { return weight };
    let delta = b.to_kind(Kind::Double).matmul(&a.to_kind(Kind::Double)) * lora.map_or(0.0, |l| l.scale());
    let delta = match target {
        LoraTarget::Q => permute_rows(&delta, model.config.num_heads as i64),
        LoraTarget::K => permute_rows(&delta, model.config.num_kv_heads as i64),
        _ => delta,
    };
    weight + delta
}

fn reference_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    x / (x.square().mean_dim(-1, true, Kind::Double) + eps).sqrt() * weight
}

/// Rotates pairs `(2i, 2i+1)` of every head by `pos * base^(-2i/d)` (llama.cpp's rope on GGUF-layout rows).
fn reference_rope(x: &Tensor, heads: i64, head_dim: i64, base: f64) -> Tensor {
    let t = x.size()[0];
    let pairs = x.reshape([t, heads, head_dim / 2, 2]);
    let (even, odd) = (pairs.select(3, 0), pairs.select(3, 1));
    let i = Tensor::arange(head_dim / 2, (Kind::Double, Device::Cpu));
    let inv_freq = (i * (-2.0 * base.ln() / head_dim as f64)).exp();
    let angle = Tensor::arange(t, (Kind::Double, Device::Cpu)).unsqueeze(1) * inv_freq.unsqueeze(0);
    let (cos, sin) = (angle.cos().unsqueeze(1), angle.sin().unsqueeze(1));
    let rotated_even = &even * &cos - &odd * &sin;
    let rotated_odd = &even * &sin + &odd * &cos;
    Tensor::stack(&[rotated_even, rotated_odd], 3).reshape([t, heads * head_dim])
}

/// Logits `[T, vocab]` in f64, computed the plain way from the GGUF tensors.
fn reference_logits(model: &TinyModel, tokens: &[i64], lora: Option<&LoraWeights>) -> Tensor {
    let c = &model.config;
    let (heads, kv_heads, d) = (c.num_heads as i64, c.num_kv_heads as i64, c.head_dim as i64);
    let t = tokens.len() as i64;
    let embedding = gguf_weight(&model.file, "token_embd.weight");
    let mut x = embedding.index_select(0, &Tensor::from_slice(tokens));
    let causal = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).tril(0);
    for layer in 0..c.num_layers {
        let w = |target, name| merged(model, layer, target, name, lora);
        let norm = |name: &str| gguf_weight(&model.file, &format!("blk.{layer}.{name}.weight"));
        let n = reference_rms_norm(&x, &norm("attn_norm"), c.rms_norm_eps);
        let q = reference_rope(&n.matmul(&w(LoraTarget::Q, "attn_q").tr()), heads, d, c.rope_theta);
        let k = reference_rope(&n.matmul(&w(LoraTarget::K, "attn_k").tr()), kv_heads, d, c.rope_theta);
        let v = n.matmul(&w(LoraTarget::V, "attn_v").tr());
        let mut outputs = Vec::new();
        for head in 0..heads {
            let kv = head / (heads / kv_heads);
            let (qh, kh, vh) = (q.narrow(1, head * d, d), k.narrow(1, kv * d, d), v.narrow(1, kv * d, d));
            let scores = qh.matmul(&kh.tr()) / (d as f64).sqrt();
            let scores = scores.masked_fill(&causal.logical_not(), f64::NEG_INFINITY);
            outputs.push(scores.softmax(-1, Kind::Double).matmul(&vh));
        }
        x = &x + Tensor::cat(&outputs, 1).matmul(&w(LoraTarget::O, "attn_output").tr());
        let n = reference_rms_norm(&x, &norm("ffn_norm"), c.rms_norm_eps);
        let gate = n.matmul(&w(LoraTarget::Gate, "ffn_gate").tr());
        let up = n.matmul(&w(LoraTarget::Up, "ffn_up").tr());
        x = &x + (gate.silu() * up).matmul(&w(LoraTarget::Down, "ffn_down").tr());
    }
    let x = reference_rms_norm(&x, &gguf_weight(&model.file, "output_norm.weight"), c.rms_norm_eps);
    x.matmul(&embedding.tr())
}

#[test]
fn matches_the_plain_reference_with_interleaved_rotary_pairs() {
    let model = tiny_model(7);
    let logits = tch::no_grad(|| model.llama.forward(&ids(&PROMPT), 0, None, None));
    assert_eq!(logits.size(), vec![1, PROMPT.len() as i64, model.config.vocab_size as i64]);
    assert_eq!(logits.kind(), Kind::Float);
    let reference = reference_logits(&model, &PROMPT, None);
    let diff = max_abs_diff(&logits.squeeze_dim(0).to_kind(Kind::Double), &reference);
    assert!(diff < 1e-4, "max |logit - reference| = {diff}");
    assert!(reference.std(true).double_value(&[]) > 0.1, "the tiny model's logits should not be flat");
}

#[test]
fn the_tied_embedding_is_held_once_and_is_the_lm_head() {
    let model = tiny_model(1);
    let llama = &model.llama;
    assert!(model.config.tie_word_embeddings);
    assert_eq!(llama.lm_head_weight().data_ptr(), llama.embedding_weight().data_ptr());
    let weights = llama.weights();
    let mut pointers: Vec<usize> = weights.iter().map(|w| w.data_ptr() as usize).collect();
    pointers.sort_unstable();
    pointers.dedup();
    assert_eq!(pointers.len(), weights.len(), "every weight has its own storage, none is a copy");
    let c = &model.config;
    let (h, kv, ffn) = (c.hidden_size, c.num_kv_heads * c.head_dim, c.intermediate_size);
    let per_layer = 2 * h + 2 * h * h + 2 * kv * h + 3 * ffn * h;
    let total: usize = weights.iter().map(|w| w.numel()).sum();
    assert_eq!(total, c.vocab_size * h + h + c.num_layers * per_layer, "no second embedding");
    assert!(weights.iter().all(|w| !w.requires_grad()));
}

#[test]
fn an_untied_model_uses_its_output_weight() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("untied.gguf");
    let spec = tiny_tokenizer_spec();
    let config = LlamaConfig { tie_word_embeddings: false, ..LlamaConfig::tiny(spec.tokens.len()) };
    write_model(&path, &config, &spec, 3).expect("write");
    let model = load(dir, &path);
    assert!(!model.config.tie_word_embeddings);
    assert_ne!(model.llama.lm_head_weight().data_ptr(), model.llama.embedding_weight().data_ptr());
    let output = gguf_weight(&model.file, "output.weight");
    assert_eq!(max_abs_diff(&model.llama.lm_head_weight().to_kind(Kind::Double), &output), 0.0);
}

/// Runs `chunks` (lengths summing to `PROMPT.len()`) through one cache and compares every position's logits
/// with a full forward pass; the cache's storage must not move.
fn check_cached_decoding(model: &TinyModel, chunks: &[usize]) {
    let full = tch::no_grad(|| model.llama.forward(&ids(&PROMPT), 0, None, None));
    let mut cache = KvCache::new(&model.config, 1, 32, Device::Cpu);
    let pointers: Vec<_> = (0..model.config.num_layers).map(|l| cache.storage_ptrs(l)).collect();
    let mut start = 0;
    for &len in chunks {
        let step =
            tch::no_grad(|| model.llama.forward(&ids(&PROMPT[start..start + len]), start, Some(&mut cache), None));
        let diff = max_abs_diff(&step, &full.narrow(1, start as i64, len as i64));
        assert!(diff < 1e-4, "chunks {chunks:?}: positions {start}..{} differ by {diff}", start + len);
        start += len;
        assert_eq!(cache.len(), start);
    }
    let after: Vec<_> = (0..model.config.num_layers).map(|l| cache.storage_ptrs(l)).collect();
    assert_eq!(pointers, after, "the cache was reallocated");
}

#[test]
fn cached_decoding_gives_the_logits_of_a_full_forward() {
    let model = tiny_model(2);
    check_cached_decoding(&model, &[5, 1, 1, 1, 1, 1, 1, 1]);
    check_cached_decoding(&model, &[1; 12]);
    check_cached_decoding(&model, &[5, 4, 1, 2]);
    check_cached_decoding(&model, &[12]);
}

#[test]
fn a_batch_gives_the_logits_of_its_rows_alone() {
    let model = tiny_model(4);
    let other: Vec<i64> = PROMPT.iter().rev().copied().collect();
    let batch = Tensor::stack(&[ids(&PROMPT).squeeze_dim(0), ids(&other).squeeze_dim(0)], 0);
    let together = tch::no_grad(|| model.llama.forward(&batch, 0, None, None));
    for (row, tokens) in [(0, &PROMPT[..]), (1, &other[..])] {
        let alone = tch::no_grad(|| model.llama.forward(&ids(tokens), 0, None, None));
        assert!(max_abs_diff(&together.get(row), &alone.get(0)) < 1e-4);
    }
}

#[test]
fn check_forward_rejects_what_forward_cannot_do() {
    let model = tiny_model(5);
    let llama = &model.llama;
    let mut cache = KvCache::new(&model.config, 1, 8, Device::Cpu);
    let check = |result: Result<(), EngineError>, expected: &str| {
        let message = result.expect_err("should fail").to_string();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    };
    check(llama.check_forward(&ids(&PROMPT), 3, None), "needs a KV cache");
    check(llama.check_forward(&ids(&PROMPT), 0, Some(&cache)), "exceed the KV cache capacity 8");
    check(llama.check_forward(&ids(&[1, 2]), 2, Some(&cache)), "past the 0 cached positions");
    check(llama.check_forward(&Tensor::from_slice(&[1i64, 2]), 0, None), "[batch, seq]");
    check(llama.check_forward(&ids(&[1]).to_kind(Kind::Int), 0, None), "int64");
    let long: Vec<i64> = vec![1; model.config.max_position_embeddings + 1];
    check(llama.check_forward(&ids(&long), 0, None), "context length");
    let batch2 = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
    check(llama.check_forward(&batch2, 0, Some(&cache)), "does not fit input batch 2");
    let _prefill = tch::no_grad(|| llama.forward(&ids(&[1, 2, 3]), 0, Some(&mut cache), None));
    assert!(llama.check_forward(&ids(&[4]), 3, Some(&cache)).is_ok());
    assert!(llama.check_forward(&ids(&[4]), 1, Some(&cache)).is_ok(), "rewinding overwrites the cache");
}

#[test]
fn load_names_a_missing_or_misshapen_tensor() {
    let model = tiny_model(6);
    let rewrite = |drop: &str, reshape: Option<(&str, Vec<usize>)>| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("broken.gguf");
        let metadata: Vec<_> = model.file.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let tensors: Vec<_> = model
            .file
            .tensor_names()
            .into_iter()
            .filter(|name| *name != drop)
            .map(|name| {
                let (mut shape, data) = model.file.dequantize(name).expect("tensor");
                if let Some((target, new_shape)) = &reshape
                    && name == *target
                {
                    shape = new_shape.clone();
                }
                (name.to_owned(), shape, data)
            })
            .collect();
        crate::gguf::write_gguf(&path, &metadata, &tensors).expect("write");
        let file = GgufFile::open(&path).expect("open");
        Llama::load(&file, &model.config, Device::Cpu).expect_err("should fail").to_string()
    };
    let message = rewrite("blk.1.ffn_up.weight", None);
    assert!(message.contains("missing tensor \"blk.1.ffn_up.weight\""), "{message}");
    let message = rewrite("", Some(("blk.0.attn_k.weight", vec![64, 32])));
    assert!(message.contains("\"blk.0.attn_k.weight\" has shape [64, 32]"), "{message}");
}

fn adapter_config(targets: &[LoraTarget], layers: &[usize]) -> AdapterConfig {
    AdapterConfig { rank: 4, alpha: 8.0, targets: targets.to_vec(), layers: layers.to_vec(), dtype: "f32".into() }
}

#[test]
fn a_fresh_adapter_leaves_logits_unchanged() {
    let model = tiny_model(8);
    let lora =
        LoraWeights::init_standard(&adapter_config(&LoraTarget::ALL, &[0, 1]), 0.0, &model.config, 1, Device::Cpu)
            .expect("init");
    let base = tch::no_grad(|| model.llama.forward(&ids(&PROMPT), 0, None, None));
    let with_adapter = tch::no_grad(|| model.llama.forward(&ids(&PROMPT), 0, None, Some(&lora)));
    assert_eq!(max_abs_diff(&base, &with_adapter), 0.0);
}

#[test]
fn adapter_deltas_match_merged_weights_for_every_target() {
    let model = tiny_model(9);
    let mut lora =
        LoraWeights::init_standard(&adapter_config(&LoraTarget::ALL, &[1]), 0.0, &model.config, 2, Device::Cpu)
            .expect("init");
    crate::lora::randomize_b_for_tests(&mut lora, 3);
    let logits = tch::no_grad(|| model.llama.forward(&ids(&PROMPT), 0, None, Some(&lora)));
    let reference = reference_logits(&model, &PROMPT, Some(&lora));
    let diff = max_abs_diff(&logits.squeeze_dim(0).to_kind(Kind::Double), &reference);
    assert!(diff < 1e-4, "max |logit - merged reference| = {diff}");
    let base = reference_logits(&model, &PROMPT, None);
    assert!(max_abs_diff(&reference, &base) > 1e-2, "the adapter should change the logits");
}
