//! Hugging Face PEFT interop: an adapter as PEFT saves one (`adapter_config.json` + `adapter_model.safetensors`)
//! and back.
//!
//! The weights use PEFT's key names (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, what
//! `save_pretrained` writes: no adapter name) in the same `[r, in]` / `[out, r]` layout as ours, so the export
//! is a re-labelling, not a conversion. The config carries PEFT's `LoraConfig` fields; importing accepts what
//! this engine computes the same way as PEFT (LoRA on the seven linear modules of a Llama decoder, any layers,
//! rsLoRA, rank and alpha patterns) and refuses the rest (DoRA, biases, `modules_to_save`, ...) by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use adapterci_core::training::{AdapterConfig, LoraTarget};
use regex::Regex;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};
use tch::{Device, Tensor};

use super::options::module_name;
use super::{LoraOptions, LoraWeights, adapter_error, encode_safetensors, peft_key, read_tensor, storage_kind};
use crate::EngineError;
use crate::config::LlamaConfig;

/// PEFT's config file name in an adapter directory.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's weights file name in an adapter directory.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The two files of a PEFT adapter directory.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftFiles {
    /// `adapter_config.json`, pretty-printed with sorted keys.
    pub config_json: String,
    /// `adapter_model.safetensors`.
    pub safetensors: Vec<u8>,
}

/// PEFT's short module name (`q_proj`, `gate_proj`, ...).
pub fn peft_module(target: LoraTarget) -> &'static str {
    let full = target.hf_module();
    full.rsplit('.').next().unwrap_or(full)
}

fn number(value: f64) -> Value {
    // PEFT writes integral alphas as integers; an integer reads back identical in Python and here.
    if value.fract() == 0.0 && value.abs() < 1e15 { json!(value as i64) } else { json!(value) }
}

/// `lora` (for `model`) as PEFT files, for a base model PEFT knows as `base_model_name_or_path` (a hub id or a
/// directory). Weights keep the adapter's storage dtype.
pub fn export_peft(
    lora: &LoraWeights,
    model: &LlamaConfig,
    base_model_name_or_path: &str,
) -> Result<PeftFiles, EngineError> {
    let config = lora.config();
    let options = lora.options();
    let mut targets: Vec<&str> = config.targets.iter().map(|&t| peft_module(t)).collect();
    targets.sort_unstable();
    let every_layer = config.layers.len() == model.num_layers;
    let layers_to_transform = if every_layer { Value::Null } else { json!(config.layers) };
    let alpha_pattern: serde_json::Map<String, Value> =
        options.alpha_pattern.iter().map(|(k, &v)| (k.clone(), number(v))).collect();
    let peft_config = json!({
        "alpha_pattern": alpha_pattern,
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": layers_to_transform,
        "lora_alpha": number(config.alpha),
        "lora_dropout": lora.dropout(),
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": config.rank,
        "rank_pattern": options.rank_pattern,
        "revision": null,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": options.use_rslora,
    });
    let config_json = serde_json::to_string_pretty(&peft_config)
        .map_err(|e| adapter_error(format!("cannot encode adapter_config.json: {e}")))?;

    let (kind, dtype) = storage_kind(&config.dtype)?;
    let mut encoded = BTreeMap::new();
    for (layer, target) in lora.modules() {
        let Some((a, b)) = lora.get(layer, target) else { continue };
        for (matrix, tensor) in [("A", a), ("B", b)] {
            let stored = tensor.detach().to_device(Device::Cpu).to_kind(kind).contiguous();
            let mut bytes = vec![0u8; stored.numel() * kind.elt_size_in_bytes()];
            stored.f_copy_data_u8(&mut bytes, stored.numel())?;
            let shape: Vec<usize> = stored.size().iter().map(|&d| d as usize).collect();
            encoded.insert(peft_key(layer, target, matrix), (shape, bytes));
        }
    }
    // PEFT's own files carry `{"format": "pt"}`, which `safetensors.torch.load_file` expects.
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    Ok(PeftFiles { config_json: config_json + "\n", safetensors: encode_safetensors(&encoded, dtype, &metadata) })
}

/// Writes `files` into `dir` (created when absent) under PEFT's file names.
pub fn write_peft_dir(dir: &Path, files: &PeftFiles) -> Result<(), EngineError> {
    let io = |path: &Path, source| EngineError::Io { path: path.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let config = dir.join(PEFT_CONFIG_FILE);
    std::fs::write(&config, &files.config_json).map_err(|e| io(&config, e))?;
    let weights = dir.join(PEFT_WEIGHTS_FILE);
    std::fs::write(&weights, &files.safetensors).map_err(|e| io(&weights, e))
}

/// Reads a PEFT adapter directory (as `save_pretrained` writes it).
pub fn read_peft_dir(dir: &Path) -> Result<PeftFiles, EngineError> {
    let io = |path: &Path, source| EngineError::Io { path: path.to_owned(), source };
    let config = dir.join(PEFT_CONFIG_FILE);
    let config_json = std::fs::read_to_string(&config).map_err(|e| io(&config, e))?;
    let weights = dir.join(PEFT_WEIGHTS_FILE);
    let safetensors = std::fs::read(&weights).map_err(|e| io(&weights, e))?;
    Ok(PeftFiles { config_json, safetensors })
}

fn unsupported(field: &str, value: &Value) -> EngineError {
    adapter_error(format!("adapter_config.json: {field} = {value} is not supported (only plain LoRA imports)"))
}

/// Fields whose non-default values change what the adapter computes in ways this engine does not implement.
const MUST_BE_FALSE: [&str; 4] = ["use_dora", "lora_bias", "fan_in_fan_out", "use_qalora"];
const MUST_BE_EMPTY: [&str; 7] = [
    "modules_to_save",
    "layer_replication",
    "target_parameters",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "exclude_modules",
    "megatron_config",
];

fn check_supported(config: &serde_json::Map<String, Value>) -> Result<(), EngineError> {
    match config.get("peft_type") {
        Some(Value::String(kind)) if kind == "LORA" => {}
        Some(other) => return Err(unsupported("peft_type", other)),
        None => return Err(adapter_error("adapter_config.json has no peft_type (not a PEFT adapter?)")),
    }
    match config.get("task_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(task)) if task == "CAUSAL_LM" => {}
        Some(other) => return Err(unsupported("task_type", other)),
    }
    for field in MUST_BE_FALSE {
        match config.get(field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(other) => return Err(unsupported(field, other)),
        }
    }
    for field in MUST_BE_EMPTY {
        match config.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.is_empty() => {}
            Some(Value::Object(items)) if items.is_empty() => {}
            Some(other) => return Err(unsupported(field, other)),
        }
    }
    match config.get("bias") {
        None | Some(Value::Null) => {}
        Some(Value::String(bias)) if bias == "none" => {}
        Some(other) => return Err(unsupported("bias", other)),
    }
    match config.get("layers_pattern") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p == "layers" => {}
        Some(Value::Array(p)) if p.is_empty() || p.as_slice() == [json!("layers")] => {}
        Some(other) => return Err(unsupported("layers_pattern", other)),
    }
    Ok(())
}

/// The (layer, target) pairs PEFT would wrap for this config on a Llama model of `num_layers` layers.
fn selected_modules(
    config: &serde_json::Map<String, Value>,
    num_layers: usize,
) -> Result<BTreeSet<(usize, LoraTarget)>, EngineError> {
    let all = || (0..num_layers).flat_map(|l| LoraTarget::ALL.into_iter().map(move |t| (l, t)));
    let others = ["lm_head", "model.embed_tokens"];
    match config.get("target_modules") {
        Some(Value::String(all_linear)) if all_linear == "all-linear" => Ok(all().collect()),
        Some(Value::String(pattern)) => {
            let regex = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| adapter_error(format!("adapter_config.json: target_modules {pattern:?}: {e}")))?;
            if let Some(other) = others.iter().find(|name| regex.is_match(name)) {
                return Err(adapter_error(format!(
                    "adapter_config.json: target_modules {pattern:?} matches {other}; only the decoder's linear \
                     modules can carry an adapter here"
                )));
            }
            Ok(all().filter(|&(l, t)| regex.is_match(&module_name(l, t))).collect())
        }
        Some(Value::Array(names)) => {
            let names = names
                .iter()
                .map(|n| n.as_str().ok_or_else(|| unsupported("target_modules", n)))
                .collect::<Result<Vec<_>, _>>()?;
            let matches = |name: &str, module: &str| module == name || module.ends_with(&format!(".{name}"));
            if let Some(name) = names.iter().find(|name| !all().any(|(l, t)| matches(name, &module_name(l, t)))) {
                return Err(adapter_error(format!(
                    "adapter_config.json: target module {name:?} is not one of q_proj, k_proj, v_proj, o_proj, \
                     gate_proj, up_proj, down_proj"
                )));
            }
            let layers = layers_to_transform(config.get("layers_to_transform"))?;
            if let Some(bad) = layers.iter().flatten().find(|&&l| l >= num_layers) {
                return Err(adapter_error(format!(
                    "adapter_config.json: layers_to_transform names layer {bad}; the model has {num_layers}"
                )));
            }
            Ok(all()
                .filter(|&(l, t)| names.iter().any(|name| matches(name, &module_name(l, t))))
                .filter(|(l, _)| layers.as_ref().is_none_or(|layers| layers.contains(l)))
                .collect())
        }
        Some(other) => Err(unsupported("target_modules", other)),
        None => Err(adapter_error("adapter_config.json has no target_modules")),
    }
}

/// PEFT's `layers_to_transform`: absent, null or `[]` for every layer, else one index or a list of them.
fn layers_to_transform(value: Option<&Value>) -> Result<Option<Vec<usize>>, EngineError> {
    let index = |v: &Value| v.as_u64().map(|n| n as usize);
    let layers = match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::Array(list)) if list.is_empty() => Some(None),
        Some(Value::Array(list)) => list.iter().map(index).collect::<Option<Vec<_>>>().map(Some),
        Some(one) => index(one).map(|layer| Some(vec![layer])),
    };
    layers.ok_or_else(|| unsupported("layers_to_transform", value.unwrap_or(&Value::Null)))
}

fn options_from_config(config: &serde_json::Map<String, Value>) -> Result<LoraOptions, EngineError> {
    let use_rslora = match config.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(unsupported("use_rslora", other)),
    };
    let mut options = LoraOptions { use_rslora, ..LoraOptions::default() };
    for (field, value) in config.get("rank_pattern").and_then(Value::as_object).into_iter().flatten() {
        let rank = value.as_u64().ok_or_else(|| unsupported(&format!("rank_pattern[{field:?}]"), value))?;
        options.rank_pattern.insert(field.clone(), rank as usize);
    }
    for (field, value) in config.get("alpha_pattern").and_then(Value::as_object).into_iter().flatten() {
        let alpha = value.as_f64().ok_or_else(|| unsupported(&format!("alpha_pattern[{field:?}]"), value))?;
        options.alpha_pattern.insert(field.clone(), alpha);
    }
    Ok(options)
}

fn dtype_name(dtype: Dtype) -> Option<&'static str> {
    match dtype {
        Dtype::F32 => Some("f32"),
        Dtype::F16 => Some("f16"),
        Dtype::BF16 => Some("bf16"),
        _ => None,
    }
}

/// Reads a PEFT adapter for `model`: every unsupported option, module outside the seven linear ones, missing or
/// extra tensor and wrong shape is an error naming it. The adapter keeps the weights' dtype for storage.
pub fn import_peft(files: &PeftFiles, model: &LlamaConfig, device: Device) -> Result<LoraWeights, EngineError> {
    let parsed: Value = serde_json::from_str(&files.config_json)
        .map_err(|e| adapter_error(format!("adapter_config.json is not valid JSON: {e}")))?;
    let config = parsed.as_object().ok_or_else(|| adapter_error("adapter_config.json is not a JSON object"))?;
    check_supported(config)?;
    let rank = config.get("r").and_then(Value::as_u64).ok_or_else(|| {
        adapter_error(format!(
            "adapter_config.json: r = {} is not a positive integer",
            config.get("r").unwrap_or(&Value::Null)
        ))
    })? as usize;
    let alpha = match config.get("lora_alpha") {
        Some(value) => value.as_f64().ok_or_else(|| unsupported("lora_alpha", value))?,
        None => 8.0, // PEFT's default
    };
    let dropout = config.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let options = options_from_config(config)?;
    let selected = selected_modules(config, model.num_layers)?;
    if selected.is_empty() {
        return Err(adapter_error("adapter_config.json selects no module of this model"));
    }
    let layers: Vec<usize> = selected.iter().map(|(l, _)| *l).collect::<BTreeSet<_>>().into_iter().collect();
    let targets: Vec<LoraTarget> =
        LoraTarget::ALL.into_iter().filter(|t| selected.iter().any(|(_, s)| s == t)).collect();
    if layers.len() * targets.len() != selected.len() {
        return Err(adapter_error(format!(
            "adapter_config.json selects different modules in different layers; this engine needs the same \
             targets ({}) in every adapted layer ({layers:?})",
            targets.iter().map(|&t| peft_module(t)).collect::<Vec<_>>().join(", ")
        )));
    }

    let file = SafeTensors::deserialize(&files.safetensors)
        .map_err(|e| adapter_error(format!("adapter_model.safetensors is not a safetensors file: {e}")))?;
    let mut expected = BTreeMap::new();
    for &(layer, target) in &selected {
        let (module_rank, _) = options.rank_and_alpha(rank, alpha, layer, target)?;
        let (fan_in, out) = super::target_dims(model, target);
        expected.insert(peft_key(layer, target, "A"), ((layer, target), [module_rank, fan_in]));
        expected.insert(peft_key(layer, target, "B"), ((layer, target), [out, module_rank]));
    }
    let mut names = file.names();
    names.sort_unstable();
    if let Some(extra) = names.iter().find(|name| !expected.contains_key(**name)) {
        return Err(adapter_error(format!(
            "adapter_model.safetensors holds {extra:?}, which the config does not describe (only lora_A/lora_B \
             of the selected modules can be imported)"
        )));
    }
    let first = names.first().ok_or_else(|| adapter_error("adapter_model.safetensors holds no tensors"))?;
    let dtype = file.tensor(first).map_err(|e| adapter_error(e.to_string()))?.dtype();
    let storage = dtype_name(dtype)
        .ok_or_else(|| adapter_error(format!("tensor {first:?} is {dtype:?}; expected F32, F16 or BF16")))?;
    let mut matrices: BTreeMap<(usize, LoraTarget), (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, (module, shape)) in &expected {
        let tensor = read_tensor(&file, name, *shape, dtype, device)?;
        let entry = matrices.entry(*module).or_default();
        if name.ends_with("lora_A.weight") { entry.0 = Some(tensor) } else { entry.1 = Some(tensor) }
    }
    let matrices =
        matrices.into_iter().filter_map(|(module, (a, b))| Some((module, (a?, b?)))).collect::<BTreeMap<_, _>>();
    let adapter = AdapterConfig { rank, alpha, targets, layers, dtype: storage.to_owned() };
    let mut lora = LoraWeights::from_pairs(adapter, options, matrices, model)?;
    lora.set_dropout(dropout);
    Ok(lora)
}
