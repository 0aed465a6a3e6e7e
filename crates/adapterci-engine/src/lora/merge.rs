//! Merging an adapter into the base weights (`W + scale * B A`) and taking it out again, and the merged model
//! as a Hugging Face safetensors state dict (what PEFT's `merge_and_unload()` followed by `save_pretrained`
//! gives).

use std::collections::BTreeMap;
use std::io::Write;

use adapterci_core::training::LoraTarget;
use safetensors::Dtype;
use tch::{Device, Kind, Tensor};

use super::{LoraWeights, encode_safetensors, write_safetensors};
use crate::EngineError;
use crate::llama::Llama;

/// `scale * B A` (`[out, in]`, f32) of `target` in `layer`, when the adapter has it.
pub fn delta_weight(lora: &LoraWeights, layer: usize, target: LoraTarget) -> Option<Tensor> {
    let (a, b) = lora.get(layer, target)?;
    let scale = lora.scale_of(layer, target)?;
    Some(tch::no_grad(|| b.detach().matmul(&a.detach()) * scale))
}

fn check_fits(llama: &Llama, lora: &LoraWeights) -> Result<(), EngineError> {
    super::validate_config(lora.config(), llama.config())
}

/// Adds every `scale * B A` of `lora` to `llama`'s weights in place; the model then computes with the adapter
/// baked in and must be used without it. The `&mut` says the caller holds the model alone while its weights
/// change. [`unmerge`] takes it out again (equal up to f32 rounding).
pub fn merge(llama: &mut Llama, lora: &LoraWeights) -> Result<(), EngineError> {
    apply(llama, lora, 1.0)
}

/// Subtracts what [`merge`] added.
pub fn unmerge(llama: &mut Llama, lora: &LoraWeights) -> Result<(), EngineError> {
    apply(llama, lora, -1.0)
}

fn apply(llama: &mut Llama, lora: &LoraWeights, sign: f64) -> Result<(), EngineError> {
    check_fits(llama, lora)?;
    for (layer, target) in lora.modules() {
        let Some(delta) = delta_weight(lora, layer, target) else { continue };
        // The shallow clone shares storage with the model's weight, so the in-place add changes the model.
        let mut weight = llama.linear_weight(layer, target).shallow_clone();
        let delta = delta.to_device(weight.device()).to_kind(weight.kind());
        let _ = tch::no_grad(|| weight.f_add_(&(delta * sign)))?;
    }
    Ok(())
}

/// Tensors by name: shape and little-endian bytes.
type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<u8>)>;

/// The Hugging Face names of [`Llama::weights`]'s tensors, in its order.
fn hf_names(llama: &Llama) -> Vec<String> {
    let config = llama.config();
    let mut names = vec!["model.embed_tokens.weight".to_owned(), "model.norm.weight".to_owned()];
    if !config.tie_word_embeddings {
        names.push("lm_head.weight".to_owned());
    }
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        names.push(format!("{p}.input_layernorm.weight"));
        for target in [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O] {
            names.push(format!("{p}.{}.weight", target.hf_module()));
        }
        names.push(format!("{p}.post_attention_layernorm.weight"));
        for target in [LoraTarget::Gate, LoraTarget::Up, LoraTarget::Down] {
            names.push(format!("{p}.{}.weight", target.hf_module()));
        }
    }
    names
}

/// The whole model with `lora` merged, as an f32 safetensors state dict with Hugging Face Llama names (q/k in
/// Hugging Face's layout). The model itself is left unchanged.
pub fn merged_state_dict(llama: &Llama, lora: &LoraWeights) -> Result<Vec<u8>, EngineError> {
    let (tensors, metadata) = merged_tensors(llama, lora)?;
    Ok(encode_safetensors(&tensors, Dtype::F32, &metadata))
}

/// [`merged_state_dict`]'s bytes written to `out` (a file, say) rather than returned: the serialized model is
/// never held in memory besides its tensors. Returns how many bytes were written.
pub fn write_merged_state_dict(llama: &Llama, lora: &LoraWeights, out: &mut impl Write) -> Result<u64, EngineError> {
    let (tensors, metadata) = merged_tensors(llama, lora)?;
    write_safetensors(&tensors, Dtype::F32, &metadata, out).map_err(EngineError::Output)
}

/// The merged model's f32 tensors by Hugging Face name (shape and little-endian bytes), and the metadata header.
fn merged_tensors(llama: &Llama, lora: &LoraWeights) -> Result<(NamedTensors, BTreeMap<String, String>), EngineError> {
    check_fits(llama, lora)?;
    let names = hf_names(llama);
    let weights = llama.weights();
    if names.len() != weights.len() {
        return Err(EngineError::InvalidConfig(format!(
            "the model has {} weight tensors, expected {}",
            weights.len(),
            names.len()
        )));
    }
    let mut encoded = BTreeMap::new();
    for (name, weight) in names.into_iter().zip(weights) {
        let mut tensor = weight.to_device(Device::Cpu).to_kind(Kind::Float);
        if let Some((layer, target)) =
            lora.modules().into_iter().find(|&(l, t)| name == format!("model.layers.{l}.{}.weight", t.hf_module()))
            && let Some(delta) = delta_weight(lora, layer, target)
        {
            // Not `+=`: on the CPU `tensor` may still share storage with the model's weight.
            tensor = tensor.f_add(&delta.to_device(Device::Cpu))?;
        }
        let tensor = tensor.contiguous();
        let mut bytes = vec![0u8; tensor.numel() * 4];
        tensor.f_copy_data_u8(&mut bytes, tensor.numel())?;
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        encoded.insert(name, (shape, bytes));
    }
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    Ok((encoded, metadata))
}
