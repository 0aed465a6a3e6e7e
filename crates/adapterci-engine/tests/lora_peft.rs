//! PEFT interop on the tiny model, without Python: the committed fixture (made by
//! `scripts/peft/peft_roundtrip.py --fixture` with HF PEFT) holds an engine-trained adapter and a PEFT-trained
//! one with the logits PEFT computed for each; the engine must import both and give the same logits. Also:
//! unsupported PEFT configs are refused by name, options survive our own file format, merge and unmerge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use adapterci_core::training::{AdapterConfig, LoraTarget};
use adapterci_engine::LlamaConfig;
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::merge::{delta_weight, merge, merged_state_dict, unmerge, write_merged_state_dict};
use adapterci_engine::lora::peft::{PeftFiles, export_peft, import_peft, read_peft_dir};
use adapterci_engine::lora::{LoraOptions, LoraWeights};
use adapterci_engine::tiny::write_tiny_model;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap()).unwrap()
}

struct Tiny {
    config: LlamaConfig,
    llama: Llama,
    _dir: tempfile::TempDir,
}

fn tiny(seed: u64) -> Tiny {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, seed).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    let llama = Llama::load(&file, &config, Device::Cpu).unwrap();
    Tiny { config, llama, _dir: dir }
}

fn fixture_model() -> Tiny {
    tiny(expected()["tiny_seed"].as_u64().unwrap())
}

fn logits(llama: &Llama, ids: &[i64], lora: Option<&LoraWeights>) -> Tensor {
    let input = Tensor::from_slice(ids).unsqueeze(0);
    tch::no_grad(|| llama.forward(&input, 0, None, lora)).squeeze_dim(0).to_kind(Kind::Float)
}

fn fixture_logits(key: &str) -> Tensor {
    let rows: Vec<Vec<f32>> = serde_json::from_value(expected()[key].clone()).unwrap();
    let width = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).reshape([-1, width])
}

fn ids() -> Vec<i64> {
    serde_json::from_value(expected()["ids"].clone()).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_matches_peft(adapter_dir: &str, key: &str) -> LoraWeights {
    let tiny = fixture_model();
    let files = read_peft_dir(&fixture_dir().join(adapter_dir)).unwrap();
    let lora = import_peft(&files, &tiny.config, Device::Cpu).unwrap();
    let ours = logits(&tiny.llama, &ids(), Some(&lora));
    let peft = fixture_logits(key);
    let base = logits(&tiny.llama, &ids(), None);
    let tolerance = expected()["tolerance"].as_f64().unwrap();
    assert!(max_diff(&ours, &peft) < tolerance, "{adapter_dir}: {} >= {tolerance}", max_diff(&ours, &peft));
    assert!(max_diff(&base, &peft) > 100.0 * tolerance, "{adapter_dir}: the adapter must change the logits");
    lora
}

#[test]
fn a_peft_trained_adapter_imports_with_peft_s_logits() {
    let lora = check_matches_peft("peft", "peft_logits_of_peft_adapter");
    let config = lora.config();
    assert_eq!((config.rank, config.alpha, config.layers.clone()), (8, 16.0, vec![1]));
    assert_eq!(config.targets, LoraTarget::ALL.to_vec());
    assert_eq!(config.dtype, "f32");
    assert!(lora.options().use_rslora);
    assert_eq!(lora.get(1, LoraTarget::Down).unwrap().0.size(), vec![4, 128]);
    assert_eq!(lora.scale_of(1, LoraTarget::Down), Some(16.0 / 2.0));
    assert_eq!(lora.scale_of(1, LoraTarget::O), Some(4.0 / 8f64.sqrt()));
    assert_eq!(lora.scale_of(1, LoraTarget::Q), Some(16.0 / 8f64.sqrt()));
}

#[test]
fn an_engine_trained_adapter_gives_the_logits_peft_computed_and_re_exports_byte_for_byte() {
    let lora = check_matches_peft("ours", "peft_logits_of_engine_adapter");
    let tiny = fixture_model();
    let exported = export_peft(&lora, &tiny.config, "tiny.gguf").unwrap();
    let committed = read_peft_dir(&fixture_dir().join("ours")).unwrap();
    assert_eq!(exported.config_json, committed.config_json);
    assert!(exported.safetensors == committed.safetensors, "re-exported weights differ from the fixture");
}

/// The fixture's PEFT adapter with `edit` applied to its config.
fn edited(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> PeftFiles {
    let mut files = read_peft_dir(&fixture_dir().join("peft")).unwrap();
    let mut config: Value = serde_json::from_str(&files.config_json).unwrap();
    edit(config.as_object_mut().unwrap());
    files.config_json = config.to_string();
    files
}

fn check_refused(files: &PeftFiles, expected: &str) {
    let tiny = tiny(1);
    let message = import_peft(files, &tiny.config, Device::Cpu).expect_err("should be refused").to_string();
    assert!(message.contains(expected), "{message:?} should contain {expected:?}");
}

#[test]
fn unsupported_peft_configs_are_refused_by_name() {
    let set = |key: &'static str, value: Value| {
        move |c: &mut serde_json::Map<String, Value>| {
            c.insert(key.to_owned(), value.clone());
        }
    };
    check_refused(&edited(set("use_dora", Value::Bool(true))), "use_dora = true is not supported");
    check_refused(&edited(set("bias", "all".into())), "bias = \"all\" is not supported");
    check_refused(&edited(set("peft_type", "IA3".into())), "peft_type = \"IA3\"");
    check_refused(&edited(set("modules_to_save", serde_json::json!(["lm_head"]))), "modules_to_save");
    check_refused(&edited(set("fan_in_fan_out", Value::Bool(true))), "fan_in_fan_out");
    check_refused(
        &edited(set("target_modules", serde_json::json!(["q_proj", "lm_head"]))),
        "\"lm_head\" is not one of",
    );
    check_refused(&edited(set("target_modules", ".*lm_head".into())), "matches lm_head");
    check_refused(&edited(set("layers_to_transform", serde_json::json!([1, 5]))), "layer 5; the model has 2");
    check_refused(&edited(set("r", Value::from(-1))), "r = -1");
    check_refused(
        &edited(|c| {
            c.remove("peft_type");
        }),
        "no peft_type",
    );
    // q in layer 0 and v in layer 1 is not a (layers x targets) grid.
    check_refused(
        &edited(set("target_modules", r"model\.layers\.(0\.self_attn\.q_proj|1\.self_attn\.v_proj)".into())),
        "different modules in different layers",
    );
    // The config describes every layer but the file holds layer 1 only.
    check_refused(
        &edited(set("layers_to_transform", Value::Null)),
        "layers.0.mlp.down_proj.lora_A.weight\" is missing",
    );
    // The config says rank 4 for q_proj but the file holds rank 8.
    check_refused(
        &edited(set("rank_pattern", serde_json::json!({"down_proj": 4, "q_proj": 4}))),
        "has shape [8, 64], expected [4, 64]",
    );
    let mut files = edited(|_| {});
    files.config_json = "{not json".into();
    check_refused(&files, "not valid JSON");
}

#[test]
fn extra_tensors_in_a_peft_file_are_refused() {
    let tiny = fixture_model();
    let lora = import_peft(&read_peft_dir(&fixture_dir().join("peft")).unwrap(), &tiny.config, Device::Cpu).unwrap();
    // An adapter over both layers exported, then described as layer 1 only: layer 0's tensors are extra.
    let mut config = lora.config().clone();
    config.layers = vec![0, 1];
    let wide = LoraWeights::init_with_options(&config, lora.options(), 0.0, &tiny.config, 1, Device::Cpu).unwrap();
    let mut files = export_peft(&wide, &tiny.config, "tiny.gguf").unwrap();
    let mut json: Value = serde_json::from_str(&files.config_json).unwrap();
    json["layers_to_transform"] = serde_json::json!([1]);
    files.config_json = json.to_string();
    check_refused(&files, "model.layers.0.");
}

#[test]
fn rank_patterns_and_rslora_survive_our_own_adapter_file() {
    let tiny = tiny(2);
    let config = AdapterConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![LoraTarget::Q, LoraTarget::Down],
        layers: vec![0, 1],
        dtype: "f32".into(),
    };
    let options = LoraOptions {
        use_rslora: true,
        rank_pattern: BTreeMap::from([("model.layers.1.mlp.down_proj".to_owned(), 2)]),
        alpha_pattern: BTreeMap::from([("q_proj".to_owned(), 3.0)]),
    };
    let lora = LoraWeights::init_with_options(&config, &options, 0.0, &tiny.config, 5, Device::Cpu).unwrap();
    assert_eq!(lora.get(1, LoraTarget::Down).unwrap().0.size(), vec![2, 128]);
    assert_eq!(lora.get(0, LoraTarget::Down).unwrap().0.size(), vec![4, 128]);
    let bytes = lora.to_safetensors().unwrap();
    let read = LoraWeights::from_safetensors(&bytes, &tiny.config, Device::Cpu).unwrap();
    assert_eq!(read.options(), &options);
    assert_eq!(read.scale_of(1, LoraTarget::Down), Some(8.0 / 2f64.sqrt()));
    assert_eq!(read.scale_of(0, LoraTarget::Q), Some(3.0 / 2.0));
    assert_eq!(read.to_safetensors().unwrap(), bytes);
    // A plain adapter's header has none of the new keys, so files written before them read the same.
    let plain = LoraWeights::init_standard(&config, 0.0, &tiny.config, 5, Device::Cpu).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&plain.to_safetensors().unwrap()).unwrap();
    let header = metadata.metadata().clone().unwrap();
    assert!(!header.contains_key("use_rslora") && !header.contains_key("rank_pattern"), "{header:?}");
}

#[test]
fn merge_bakes_the_adapter_in_and_unmerge_takes_it_out() {
    let mut tiny = fixture_model();
    let lora = import_peft(&read_peft_dir(&fixture_dir().join("ours")).unwrap(), &tiny.config, Device::Cpu).unwrap();
    let ids = ids();
    let with_adapter = logits(&tiny.llama, &ids, Some(&lora));
    let base = logits(&tiny.llama, &ids, None);
    let q0 = tiny.llama.linear_weight(0, LoraTarget::Q).copy();

    let state = merged_state_dict(&tiny.llama, &lora).unwrap();
    let mut written = Vec::new();
    assert_eq!(write_merged_state_dict(&tiny.llama, &lora, &mut written).unwrap(), state.len() as u64);
    assert!(written == state, "the writer gets the same bytes");
    let mut too_small = [0u8; 64];
    let error = write_merged_state_dict(&tiny.llama, &lora, &mut &mut too_small[..]).unwrap_err();
    assert!(matches!(error, adapterci_engine::EngineError::Output(_)), "a failed write is reported: {error}");
    let file = safetensors::SafeTensors::deserialize(&state).unwrap();
    assert_eq!(file.len(), 2 + 9 * tiny.config.num_layers, "embedding, final norm and 9 tensors per layer");
    // every tensor under its Hugging Face name: an adapted module is its weight plus `scale * B A`, the rest is
    // the model's own
    let read = |name: &str| {
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        Tensor::f_from_data_size(view.data(), &shape, Kind::Float).unwrap()
    };
    assert!(read("model.embed_tokens.weight").equal(tiny.llama.embedding_weight()));
    assert!(read("model.norm.weight").equal(tiny.llama.final_norm_weight()));
    for layer in 0..tiny.config.num_layers {
        let (attention_norm, ffn_norm) = tiny.llama.norm_weights(layer);
        assert!(read(&format!("model.layers.{layer}.input_layernorm.weight")).equal(attention_norm));
        assert!(read(&format!("model.layers.{layer}.post_attention_layernorm.weight")).equal(ffn_norm));
        for target in LoraTarget::ALL {
            let name = format!("model.layers.{layer}.{}.weight", target.hf_module());
            let weight = tiny.llama.linear_weight(layer, target);
            let want = match delta_weight(&lora, layer, target) {
                Some(delta) => {
                    assert!(delta.abs().max().double_value(&[]) > 1e-3, "{name}: the adapter changes nothing");
                    weight + delta
                }
                None => weight.shallow_clone(),
            };
            assert!(max_diff(&read(&name), &want) < 1e-6, "{name}");
        }
    }
    assert!(tiny.llama.linear_weight(0, LoraTarget::Q).equal(&q0), "merged_state_dict leaves the model alone");

    merge(&mut tiny.llama, &lora).unwrap();
    let merged = logits(&tiny.llama, &ids, None);
    assert!(max_diff(&merged, &with_adapter) < 1e-4, "merged: {}", max_diff(&merged, &with_adapter));
    assert!(max_diff(&merged, &base) > 1e-2);
    unmerge(&mut tiny.llama, &lora).unwrap();
    assert!(max_diff(tiny.llama.linear_weight(0, LoraTarget::Q), &q0) < 1e-6);
    assert!(max_diff(&logits(&tiny.llama, &ids, None), &base) < 1e-4);
}
