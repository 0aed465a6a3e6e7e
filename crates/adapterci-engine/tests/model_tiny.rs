//! The BaseModel facade on a tiny random model: loading, digest, generation, teacher-forced logits, adapters
//! and load errors.

use adapterci_core::Digest;
use adapterci_core::training::{AdapterConfig, LoraTarget};
use adapterci_engine::EngineError;
use adapterci_engine::chat::ChatMessage;
use adapterci_engine::config::LlamaConfig;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::generate::{FinishReason, GenerationParams};
use adapterci_engine::gguf::{GgufFile, GgufValue, write_gguf};
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::model::{BaseModel, LoadedAdapter, model_config_and_digest};
use adapterci_engine::tiny::write_tiny_model;

fn tiny(seed: u64) -> (tempfile::TempDir, std::path::PathBuf, BaseModel) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, seed).expect("write");
    let model = BaseModel::load(&path, DeviceChoice::Cpu).expect("load");
    (dir, path, model)
}

fn greedy(max_new_tokens: usize) -> GenerationParams {
    GenerationParams { max_new_tokens, ..GenerationParams::default() }
}

#[test]
fn loads_a_tiny_model_with_its_tokenizer_and_digest() {
    let (_dir, path, model) = tiny(1);
    assert_eq!(model.config(), &LlamaConfig::tiny(model.tokenizer().vocab_size()));
    assert_eq!(model.digest(), &Digest::of(&std::fs::read(&path).expect("read")));
    let config_and_digest = model_config_and_digest(&path).expect("shapes and digest");
    assert_eq!(config_and_digest, (model.config().clone(), model.digest().clone()), "what loading gives");
    assert_eq!(model.name(), "adapterci-tiny");
    assert!(!model.is_cuda());
    let text = "the assistant says hello";
    assert_eq!(model.tokenizer().decode(&model.tokenizer().encode(text, false)), text);
}

#[test]
fn the_same_seed_writes_the_same_model() {
    let (_a, first, _) = tiny(5);
    let (_b, second, _) = tiny(5);
    let (_c, other, _) = tiny(6);
    let read = |p: &std::path::Path| std::fs::read(p).expect("read");
    assert_eq!(read(&first), read(&second));
    assert_ne!(read(&first), read(&other));
}

#[test]
fn generation_agrees_with_teacher_forced_logits() {
    let (_dir, _path, model) = tiny(2);
    let prompt = model
        .tokenizer()
        .render_chat(&[ChatMessage::user("say hello")], true)
        .map(|text| model.tokenizer().encode(&text, true))
        .expect("chat prompt");
    let generation = model.generate(&prompt, None, &greedy(6)).expect("generate");
    assert_eq!(generation.tokens.len(), 6);
    assert_eq!(generation.finish_reason, FinishReason::Length);
    let mut sequence = prompt.clone();
    sequence.extend(&generation.tokens[..5]);
    let logits = model.logits(&sequence, None).expect("logits");
    assert_eq!((logits.len(), logits[0].len()), (sequence.len(), model.config().vocab_size));
    for (step, &token) in generation.tokens.iter().enumerate() {
        let row = &logits[prompt.len() - 1 + step];
        let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32);
        assert_eq!(argmax, Some(token), "step {step}");
    }
}

fn adapter_config(layers: Vec<usize>) -> AdapterConfig {
    AdapterConfig { rank: 2, alpha: 4.0, targets: vec![LoraTarget::Q, LoraTarget::Up], layers, dtype: "f16".into() }
}

#[test]
fn a_fresh_adapter_loads_and_leaves_the_output_unchanged() {
    let (_dir, _path, model) = tiny(3);
    let lora =
        LoraWeights::init_standard(&adapter_config(vec![1]), 0.1, model.config(), 4, tch::Device::Cpu).expect("init");
    let adapter = model.load_adapter(&lora.to_safetensors().expect("encode")).expect("load adapter");
    assert_eq!(adapter.config(), &adapter_config(vec![1]));
    assert_eq!(adapter.size_bytes(), 2 * (2 * 64 + 64 * 2 + 2 * 64 + 128 * 2));
    let ids = model.tokenizer().encode("hello there", false);
    assert_eq!(model.logits(&ids, Some(&adapter)).expect("with"), model.logits(&ids, None).expect("without"));
    let direct = LoadedAdapter::from_lora(lora);
    assert!(!direct.lora().is_training());
}

#[test]
fn an_adapter_for_another_model_is_refused() {
    let (_dir, _path, model) = tiny(3);
    let bigger = LlamaConfig { num_layers: 6, ..model.config().clone() };
    let lora = LoraWeights::init_standard(&adapter_config(vec![5]), 0.0, &bigger, 4, tch::Device::Cpu).expect("init");
    let error = model.load_adapter(&lora.to_safetensors().expect("encode")).expect_err("wrong model").to_string();
    assert!(error.contains("layer 5 does not exist"), "{error}");
}

#[test]
fn logits_reject_bad_tokens() {
    let (_dir, _path, model) = tiny(4);
    let check = |ids: &[u32], expected: &str| {
        let error = model.logits(ids, None).expect_err("should fail").to_string();
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
    };
    check(&[], "no tokens");
    check(&[1, 2, 9999], "token 2 is 9999, outside the vocabulary of 512");
    check(&vec![1; 513], "context length 512");
}

type Metadata = Vec<(String, GgufValue)>;

fn check_load_error(path: &std::path::Path, expected: &str) {
    check_load_error_on(path, DeviceChoice::Cpu, expected);
}

fn check_load_error_on(path: &std::path::Path, device: DeviceChoice, expected: &str) {
    let error = BaseModel::load(path, device).expect_err("should fail");
    let message = error.to_string();
    assert!(message.contains(expected), "{message:?} should contain {expected:?}");
}

#[test]
fn load_errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.gguf");
    check_load_error(&missing, "missing.gguf");
    assert!(matches!(BaseModel::load(&missing, DeviceChoice::Cpu), Err(EngineError::Io { .. })));

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just some text").expect("write");
    check_load_error(&text, "not a GGUF file");

    let (_tiny_dir, tiny_path, _) = tiny(9);
    let file = GgufFile::open(&tiny_path).expect("open");
    let rewrite = |name: &str, edit: &dyn Fn(&mut Metadata)| {
        let mut metadata: Vec<_> = file.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        edit(&mut metadata);
        let tensors: Vec<_> = file
            .tensor_names()
            .into_iter()
            .map(|n| {
                let (shape, data) = file.dequantize(n).expect("tensor");
                (n.to_owned(), shape, data)
            })
            .collect();
        let path = dir.path().join(name);
        write_gguf(&path, &metadata, &tensors).expect("write");
        path
    };
    let gemma = rewrite("gemma.gguf", &|m| {
        m.retain(|(k, _)| k != "general.architecture");
        m.push(("general.architecture".into(), GgufValue::String("gemma".into())));
    });
    check_load_error(&gemma, "architecture \"gemma\" is not supported");
    let no_tokens = rewrite("no-tokens.gguf", &|m| m.retain(|(k, _)| k != "tokenizer.ggml.tokens"));
    check_load_error(&no_tokens, "tokenizer.ggml.tokens");
    check_load_error_on(&tiny_path, DeviceChoice::Cuda(999), "cuda:999 is not available");
}
