//! Merging an adapter into the base weights (`W + scale * B A`) and taking it out again, and the merged model
//! as a Hugging Face safetensors state dict (what PEFT's `merge_and_unload()` followed by `save_pretrained`
//! gives).

use std::collections::BTreeMap;
use std::io::Write;

use adapterci_core::training::LoraTarget;
use safetensors::Dtype;
use tch::{Device, Kind, Tensor};

use super::{LoraWeights, TensorLayout, write_safetensors_streamed};
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

/// The most elements of a merged tensor copied out of libtorch and written at once (1 MiB of f32).
const CHUNK_ELEMENTS: usize = 1 << 18;

/// One tensor of the merged state dict: its Hugging Face name, the model's weight and, for a linear weight the
/// adapter has, the module whose delta is added.
struct MergedEntry<'a> {
    name: String,
    weight: &'a Tensor,
    module: Option<(usize, LoraTarget)>,
    shape: Vec<usize>,
}

/// The Hugging Face names of [`Llama::weights`]'s tensors, in its order, each with its (layer, target) when
/// it is a linear weight.
fn hf_names(llama: &Llama) -> Vec<(String, Option<(usize, LoraTarget)>)> {
    let config = llama.config();
    let mut names = vec![("model.embed_tokens.weight".to_owned(), None), ("model.norm.weight".to_owned(), None)];
    if !config.tie_word_embeddings {
        names.push(("lm_head.weight".to_owned(), None));
    }
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        let linear = |target: LoraTarget| (format!("{p}.{}.weight", target.hf_module()), Some((i, target)));
        names.push((format!("{p}.input_layernorm.weight"), None));
        names.extend([LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O].map(linear));
        names.push((format!("{p}.post_attention_layernorm.weight"), None));
        names.extend([LoraTarget::Gate, LoraTarget::Up, LoraTarget::Down].map(linear));
    }
    names
}

/// The whole model with `lora` merged, as an f32 safetensors state dict with Hugging Face Llama names (q/k in
/// Hugging Face's layout): [`write_merged_state_dict`]'s bytes, in memory. The model itself is left unchanged.
pub fn merged_state_dict(llama: &Llama, lora: &LoraWeights) -> Result<Vec<u8>, EngineError> {
    let mut bytes = Vec::new();
    write_merged_state_dict(llama, lora, &mut bytes)?;
    Ok(bytes)
}

/// The merged state dict ([`merged_state_dict`]) written to `out` (a file, say) tensor by tensor: the header
/// is computed from the weights' shapes, then each merged tensor is computed, written and dropped before the
/// next, so besides the model this holds about one tensor (and a 1 MiB copy of part of it), never the merged
/// model. Returns how many bytes were written; a failed write is [`EngineError::Output`].
pub fn write_merged_state_dict(llama: &Llama, lora: &LoraWeights, out: &mut impl Write) -> Result<u64, EngineError> {
    write_merged_in_chunks(llama, lora, out, CHUNK_ELEMENTS)
}

/// [`write_merged_state_dict`] writing at most `chunk_elements` f32 values of a tensor at once.
fn write_merged_in_chunks(
    llama: &Llama,
    lora: &LoraWeights,
    out: &mut impl Write,
    chunk_elements: usize,
) -> Result<u64, EngineError> {
    let entries = merged_entries(llama, lora)?;
    let layouts: Vec<_> = entries
        .iter()
        .map(|entry| TensorLayout {
            name: &entry.name,
            dtype: Dtype::F32,
            shape: &entry.shape,
            len: entry.shape.iter().product::<usize>() * 4,
        })
        .collect();
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let mut chunk = Vec::new();
    write_safetensors_streamed(&layouts, &metadata, out, EngineError::Output, |index, out| {
        let tensor = merged_tensor(&entries[index], lora)?;
        write_f32_data(&tensor, chunk_elements, &mut chunk, out)
    })
}

/// The merged state dict's tensors, in [`Llama::weights`]'s order, with their shapes; nothing computed yet.
fn merged_entries<'a>(llama: &'a Llama, lora: &LoraWeights) -> Result<Vec<MergedEntry<'a>>, EngineError> {
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
    let adapted = lora.modules();
    Ok(names
        .into_iter()
        .zip(weights)
        .map(|((name, module), weight)| MergedEntry {
            name,
            weight,
            module: module.filter(|module| adapted.contains(module)),
            shape: weight.size().iter().map(|&d| d as usize).collect(),
        })
        .collect())
}

/// `entry`'s weight in f32 on the CPU, plus `scale * B A` when the adapter has its module.
fn merged_tensor(entry: &MergedEntry<'_>, lora: &LoraWeights) -> Result<Tensor, EngineError> {
    let mut tensor = entry.weight.to_device(Device::Cpu).to_kind(Kind::Float);
    if let Some((layer, target)) = entry.module
        && let Some(delta) = delta_weight(lora, layer, target)
    {
        // Not `+=`: on the CPU `tensor` may still share storage with the model's weight.
        tensor = tensor.f_add(&delta.to_device(Device::Cpu))?;
    }
    let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    if shape != entry.shape {
        return Err(EngineError::InvalidConfig(format!(
            "merged {} has shape {shape:?}, its weight {:?}",
            entry.name, entry.shape
        )));
    }
    Ok(tensor)
}

/// Writes `tensor`'s f32 values (little-endian on every platform libtorch runs on) in pieces of at most
/// `chunk_elements`, copied through `chunk`.
fn write_f32_data(
    tensor: &Tensor,
    chunk_elements: usize,
    chunk: &mut Vec<u8>,
    out: &mut dyn Write,
) -> Result<(), EngineError> {
    let flat = tensor.f_contiguous()?.f_reshape([-1])?;
    let numel = flat.numel();
    let mut start = 0;
    while start < numel {
        let n = chunk_elements.min(numel - start);
        chunk.resize(n * 4, 0);
        flat.f_narrow(0, start as i64, n as i64)?.f_copy_data_u8(chunk, n)?;
        out.write_all(chunk).map_err(EngineError::Output)?;
        start += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
