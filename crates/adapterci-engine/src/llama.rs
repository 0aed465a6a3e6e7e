//! The Llama decoder in f32 on libtorch: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU, tied
//! embedding, an in-place KV cache and LoRA on every linear operation.
//!
//! Reference: Hugging Face transformers `models/llama/modeling_llama.py` (and candle's `models/llama.rs`).
//! GGUF stores `attn_q`/`attn_k` rows permuted for llama.cpp's interleaved rotary layout; they are un-permuted
//! at load (as transformers does when it reads a GGUF), so the weights, the `rotate_half` rotary embedding
//! and PEFT adapters all use the Hugging Face layout.

use adapterci_core::training::LoraTarget;
use tch::{Device, Kind, Tensor};

use crate::EngineError;
use crate::config::LlamaConfig;
use crate::gguf::{GgufFile, gguf_error};
use crate::kv_cache::KvCache;
use crate::lora::LoraWeights;

#[cfg(test)]
pub(crate) mod tests;

struct Layer {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl Layer {
    fn weight_mut(&mut self, target: LoraTarget) -> &mut Tensor {
        match target {
            LoraTarget::Q => &mut self.q,
            LoraTarget::K => &mut self.k,
            LoraTarget::V => &mut self.v,
            LoraTarget::O => &mut self.o,
            LoraTarget::Gate => &mut self.gate,
            LoraTarget::Up => &mut self.up,
            LoraTarget::Down => &mut self.down,
        }
    }

    fn weight(&self, target: LoraTarget) -> &Tensor {
        match target {
            LoraTarget::Q => &self.q,
            LoraTarget::K => &self.k,
            LoraTarget::V => &self.v,
            LoraTarget::O => &self.o,
            LoraTarget::Gate => &self.gate,
            LoraTarget::Up => &self.up,
            LoraTarget::Down => &self.down,
        }
    }
}

/// A loaded Llama decoder. Weights are f32 and never require gradients.
pub struct Llama {
    config: LlamaConfig,
    device: Device,
    /// `[vocab, hidden]`; also the LM head when the embedding is tied (held once).
    embedding: Tensor,
    /// `[vocab, hidden]` when the model has its own `output.weight`.
    output: Option<Tensor>,
    final_norm: Tensor,
    layers: Vec<Layer>,
    /// `[max_positions, head_dim]` rotary tables, as transformers computes them in f32.
    rope_cos: Tensor,
    rope_sin: Tensor,
    /// Fake-quantize linear inputs per token to this many bits (see [`Llama::set_activation_bits`]).
    activation_bits: Option<u8>,
}

/// Returns the f32 tensor of a GGUF tensor name with exactly the given shape (see [`Llama::load_with`]).
pub type TensorSource<'a> = &'a dyn Fn(&str, &[usize]) -> Result<Tensor, EngineError>;

/// Called with `(layer, target, input)` for the input `[..., in]` of every linear operation.
pub type LinearObserver<'a> = &'a dyn Fn(usize, LoraTarget, &Tensor);

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("config", &self.config).field("device", &self.device).finish()
    }
}

/// Undoes llama.cpp's conversion permutation of q/k rows: GGUF row `h*d + 2i + p` holds Hugging Face row
/// `h*d + p*d/2 + i` (`d` = head dim). Mirrors transformers' `_reverse_permute_weights`.
fn unpermute_rows(weight: Tensor, heads: usize) -> Tensor {
    let size = weight.size();
    let (rows, cols) = (size[0], size[1]);
    let half = rows / heads as i64 / 2;
    weight.reshape([heads as i64, half, 2, cols]).transpose(1, 2).reshape([rows, cols])
}

pub(crate) fn rope_tables(config: &LlamaConfig, device: Device) -> (Tensor, Tensor) {
    let head_dim = config.head_dim as i64;
    let exponents =
        Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, Device::Cpu)).to_kind(Kind::Float) / head_dim as f64;
    let inv_freq = Tensor::from(config.rope_theta as f32).pow(&exponents).reciprocal();
    let positions = Tensor::arange(config.max_position_embeddings as i64, (Kind::Float, Device::Cpu));
    let freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
    let angles = Tensor::cat(&[&freqs, &freqs], 1);
    (angles.cos().to_device(device), angles.sin().to_device(device))
}

/// `[B, H, T, D]` rotated by the tables' rows `[start, start + T)` (transformers' `apply_rotary_pos_emb`).
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let rotated = Tensor::cat(&[&x.narrow(3, half, half).neg(), &x.narrow(3, 0, half)], 3);
    x * cos + rotated * sin
}

impl Llama {
    /// Dequantizes every tensor of a `llama` GGUF to f32 on `device`; a missing or misshapen tensor is an error
    /// naming it.
    pub fn load(file: &GgufFile, config: &LlamaConfig, device: Device) -> Result<Llama, EngineError> {
        let source = |name: &str, shape: &[usize]| -> Result<Tensor, EngineError> {
            let info =
                file.tensor_info(name).ok_or_else(|| gguf_error(file.path(), format!("missing tensor {name:?}")))?;
            if info.shape != shape {
                return Err(gguf_error(
                    file.path(),
                    format!("tensor {name:?} has shape {:?}, the config implies {shape:?}", info.shape),
                ));
            }
            let (_, data) = file.dequantize(name)?;
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Ok(Tensor::from_slice(&data).reshape(dims.as_slice()))
        };
        Llama::load_with(config, device, &source, true)
    }

    /// Builds the decoder from `source(gguf_name, shape)`, which returns f32 CPU tensors of exactly that shape
    /// under the GGUF tensor names. With `gguf_layout`, q/k rows are un-permuted from llama.cpp's layout;
    /// without it they are taken as already in the Hugging Face layout (base releases store them so).
    pub fn load_with(
        config: &LlamaConfig,
        device: Device,
        source: TensorSource<'_>,
        gguf_layout: bool,
    ) -> Result<Llama, EngineError> {
        let (h, kv_dim) = (config.hidden_size, config.num_kv_heads * config.head_dim);
        let (vocab, ffn) = (config.vocab_size, config.intermediate_size);
        let tensor = |name: &str, shape: &[usize]| -> Result<Tensor, EngineError> {
            Ok(source(name, shape)?.to_kind(Kind::Float).to_device(device))
        };
        let unpermute = |weight: Tensor, heads: usize| if gguf_layout { unpermute_rows(weight, heads) } else { weight };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let name = |suffix: &str| format!("blk.{i}.{suffix}.weight");
            layers.push(Layer {
                attn_norm: tensor(&name("attn_norm"), &[h])?,
                q: unpermute(tensor(&name("attn_q"), &[h, h])?, config.num_heads),
                k: unpermute(tensor(&name("attn_k"), &[kv_dim, h])?, config.num_kv_heads),
                v: tensor(&name("attn_v"), &[kv_dim, h])?,
                o: tensor(&name("attn_output"), &[h, h])?,
                ffn_norm: tensor(&name("ffn_norm"), &[h])?,
                gate: tensor(&name("ffn_gate"), &[ffn, h])?,
                up: tensor(&name("ffn_up"), &[ffn, h])?,
                down: tensor(&name("ffn_down"), &[h, ffn])?,
            });
        }
        let output = match config.tie_word_embeddings {
            true => None,
            false => Some(tensor("output.weight", &[vocab, h])?),
        };
        let (rope_cos, rope_sin) = rope_tables(config, device);
        Ok(Llama {
            config: config.clone(),
            device,
            embedding: tensor("token_embd.weight", &[vocab, h])?,
            output,
            final_norm: tensor("output_norm.weight", &[h])?,
            layers,
            rope_cos,
            rope_sin,
            activation_bits: None,
        })
    }

    /// A second decoder sharing every weight tensor with this one (no copy): replace some of its weights with
    /// [`Llama::set_linear_weight`] to compare a compressed model with its source.
    pub fn shallow_copy(&self) -> Llama {
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                attn_norm: l.attn_norm.shallow_clone(),
                q: l.q.shallow_clone(),
                k: l.k.shallow_clone(),
                v: l.v.shallow_clone(),
                o: l.o.shallow_clone(),
                ffn_norm: l.ffn_norm.shallow_clone(),
                gate: l.gate.shallow_clone(),
                up: l.up.shallow_clone(),
                down: l.down.shallow_clone(),
            })
            .collect();
        Llama {
            config: self.config.clone(),
            device: self.device,
            embedding: self.embedding.shallow_clone(),
            output: self.output.as_ref().map(Tensor::shallow_clone),
            final_norm: self.final_norm.shallow_clone(),
            layers,
            rope_cos: self.rope_cos.shallow_clone(),
            rope_sin: self.rope_sin.shallow_clone(),
            activation_bits: self.activation_bits,
        }
    }

    /// Replaces the weight of `target` in `layer` (`[out, in]`, Hugging Face layout); the shape must match.
    pub fn set_linear_weight(&mut self, layer: usize, target: LoraTarget, weight: Tensor) -> Result<(), EngineError> {
        let slot = match self.layers.get_mut(layer) {
            Some(l) => l.weight_mut(target),
            None => return Err(EngineError::InvalidConfig(format!("layer {layer} does not exist"))),
        };
        if slot.size() != weight.size() {
            return Err(EngineError::InvalidConfig(format!(
                "layer {layer} {}: new weight {:?} does not match {:?}",
                target.as_str(),
                weight.size(),
                slot.size()
            )));
        }
        *slot = weight.to_kind(Kind::Float).to_device(self.device);
        Ok(())
    }

    /// Replaces the token embedding (also the LM head when tied); the shape must match.
    pub fn set_embedding(&mut self, weight: Tensor) -> Result<(), EngineError> {
        if self.embedding.size() != weight.size() {
            return Err(EngineError::InvalidConfig(format!(
                "new embedding {:?} does not match {:?}",
                weight.size(),
                self.embedding.size()
            )));
        }
        self.embedding = weight.to_kind(Kind::Float).to_device(self.device);
        Ok(())
    }

    /// Quantizes the input of every linear operation to `bits`-bit integers per token (symmetric, absmax
    /// scale) and back, simulating integer activations; `None` turns it off.
    pub fn set_activation_bits(&mut self, bits: Option<u8>) {
        self.activation_bits = bits;
    }

    pub fn activation_bits(&self) -> Option<u8> {
        self.activation_bits
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The token embedding `[vocab, hidden]`.
    pub fn embedding_weight(&self) -> &Tensor {
        &self.embedding
    }

    /// The final RMSNorm weight `[hidden]`.
    pub fn final_norm_weight(&self) -> &Tensor {
        &self.final_norm
    }

    /// The attention and FFN RMSNorm weights of `layer`. Panics when the layer does not exist.
    pub fn norm_weights(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.layers[layer].attn_norm, &self.layers[layer].ffn_norm)
    }

    /// The LM head `[vocab, hidden]`: the embedding itself when tied.
    pub fn lm_head_weight(&self) -> &Tensor {
        self.output.as_ref().unwrap_or(&self.embedding)
    }

    /// The base weight of `target` in `layer`, `[out, in]` in the Hugging Face layout.
    pub fn linear_weight(&self, layer: usize, target: LoraTarget) -> &Tensor {
        self.layers[layer].weight(target)
    }

    /// Every distinct weight tensor (the tied embedding once).
    pub fn weights(&self) -> Vec<&Tensor> {
        let mut all = vec![&self.embedding, &self.final_norm];
        all.extend(&self.output);
        for layer in &self.layers {
            all.extend([&layer.attn_norm, &layer.q, &layer.k, &layer.v, &layer.o]);
            all.extend([&layer.ffn_norm, &layer.gate, &layer.up, &layer.down]);
        }
        all
    }

    /// Logits `[B, T, vocab]` f32 for `input_ids` `[B, T]` (int64) at positions `[start_pos, start_pos + T)`.
    ///
    /// With a cache, keys and values are written in place at `[start_pos, start_pos + T)` and attention covers
    /// `[0, start_pos + T)`; without one, `start_pos` must be 0. Batches must be right-padded: causal attention
    /// keeps real tokens from seeing the padding after them. Panics when the preconditions of
    /// [`Llama::check_forward`] do not hold; callers with untrusted input call that first.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        start_pos: usize,
        cache: Option<&mut KvCache>,
        lora: Option<&LoraWeights>,
    ) -> Tensor {
        let hidden = self.forward_hidden(input_ids, start_pos, cache, lora);
        self.lm_head(&hidden)
    }

    /// The final-normed hidden states `[B, T, hidden]` (the LM head not applied): generation applies the head
    /// to the last position only.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        start_pos: usize,
        cache: Option<&mut KvCache>,
        lora: Option<&LoraWeights>,
    ) -> Tensor {
        self.forward_hidden_observed(input_ids, start_pos, cache, lora, None)
    }

    /// [`Llama::forward_hidden`] that shows every linear operation's input to `observer` (calibration).
    pub fn forward_hidden_observed(
        &self,
        input_ids: &Tensor,
        start_pos: usize,
        mut cache: Option<&mut KvCache>,
        lora: Option<&LoraWeights>,
        observer: Option<LinearObserver<'_>>,
    ) -> Tensor {
        if let Err(error) = self.check_forward(input_ids, start_pos, cache.as_deref()) {
            panic!("Llama::forward called with bad arguments: {error}");
        }
        let seq_len = input_ids.size()[1];
        let cos = self.rope_cos.narrow(0, start_pos as i64, seq_len);
        let sin = self.rope_sin.narrow(0, start_pos as i64, seq_len);
        let mask = attention_mask(start_pos, seq_len as usize, self.device);
        let mut x = self.embed(input_ids);
        for (index, layer) in self.layers.iter().enumerate() {
            let context = LayerContext { index, start_pos, cos: &cos, sin: &sin, mask: mask.as_ref(), lora, observer };
            x = self.layer_forward(layer, &x, &context, cache.as_deref_mut());
        }
        if let Some(cache) = cache {
            cache.set_len(start_pos + seq_len as usize);
        }
        self.rms_norm(&x, &self.final_norm)
    }

    /// The token embeddings `[B, T, hidden]` of `[B, T]` ids: the input of layer 0.
    pub fn embed(&self, input_ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embedding, input_ids, -1, false, false)
    }

    /// Layer `index` alone on its input `x` (`[B, T, hidden]` at positions `0..T`, causal, no cache or adapter),
    /// showing its linear inputs to `observer`: layer-by-layer calibration. Panics when `index` is not a layer
    /// or `T` exceeds the context length (callers pass their own model's shapes).
    pub fn layer_observed(&self, index: usize, x: &Tensor, observer: Option<LinearObserver<'_>>) -> Tensor {
        let seq_len = x.size()[1];
        let cos = self.rope_cos.narrow(0, 0, seq_len);
        let sin = self.rope_sin.narrow(0, 0, seq_len);
        let context = LayerContext { index, start_pos: 0, cos: &cos, sin: &sin, mask: None, lora: None, observer };
        self.layer_forward(&self.layers[index], x, &context, None)
    }

    /// Logits for hidden states `[..., hidden]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Tensor {
        hidden.linear::<Tensor>(self.lm_head_weight(), None)
    }

    /// Checks what [`Llama::forward`] requires: `[B, T]` int64 ids with `T >= 1`, positions inside the rotary
    /// table, and a cache of the same batch with room for them whose filled length reaches `start_pos`.
    pub fn check_forward(
        &self,
        input_ids: &Tensor,
        start_pos: usize,
        cache: Option<&KvCache>,
    ) -> Result<(), EngineError> {
        let bad = |reason: String| Err(EngineError::InvalidConfig(reason));
        let size = input_ids.size();
        if size.len() != 2 || size[1] < 1 || size[0] < 1 || input_ids.kind() != Kind::Int64 {
            return bad(format!(
                "input ids must be a non-empty [batch, seq] int64 tensor, got {size:?} {:?}",
                input_ids.kind()
            ));
        }
        let end = start_pos + size[1] as usize;
        if end > self.config.max_position_embeddings {
            return bad(format!(
                "positions up to {end} exceed the model's context length {}",
                self.config.max_position_embeddings
            ));
        }
        match cache {
            None if start_pos != 0 => bad(format!("start position {start_pos} needs a KV cache")),
            Some(cache) if cache.num_layers() != self.config.num_layers || cache.batch() != size[0] as usize => {
                bad(format!("KV cache for batch {} does not fit input batch {}", cache.batch(), size[0]))
            }
            Some(cache) if end > cache.capacity() => {
                bad(format!("positions up to {end} exceed the KV cache capacity {}", cache.capacity()))
            }
            Some(cache) if start_pos > cache.len() => {
                bad(format!("start position {start_pos} is past the {} cached positions", cache.len()))
            }
            _ => Ok(()),
        }
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        x.rms_norm([self.config.hidden_size as i64], Some(weight), self.config.rms_norm_eps)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        context: &LayerContext<'_>,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let normed = self.rms_norm(x, &layer.attn_norm);
        let attention = self.attention(layer, &normed, context, cache);
        let x = x + attention;
        let normed = self.rms_norm(&x, &layer.ffn_norm);
        let gate = self.linear(layer, context, LoraTarget::Gate, &normed);
        let up = self.linear(layer, context, LoraTarget::Up, &normed);
        let ffn = self.linear(layer, context, LoraTarget::Down, &(gate.silu() * up));
        x + ffn
    }

    fn attention(&self, layer: &Layer, x: &Tensor, context: &LayerContext<'_>, cache: Option<&mut KvCache>) -> Tensor {
        let (batch, seq_len) = (x.size()[0], x.size()[1]);
        let (heads, kv_heads) = (self.config.num_heads as i64, self.config.num_kv_heads as i64);
        let head_dim = self.config.head_dim as i64;
        let split = |t: Tensor, n: i64| t.view([batch, seq_len, n, head_dim]).transpose(1, 2);
        let q = split(self.linear(layer, context, LoraTarget::Q, x), heads);
        let k = split(self.linear(layer, context, LoraTarget::K, x), kv_heads);
        let v = split(self.linear(layer, context, LoraTarget::V, x), kv_heads);
        let q = apply_rope(&q, context.cos, context.sin);
        let k = apply_rope(&k, context.cos, context.sin);
        let (k, v) = match cache {
            Some(cache) => cache.write(context.index, context.start_pos, &k, &v),
            None => (k, v),
        };
        let scale = 1.0 / (head_dim as f64).sqrt();
        let out = if seq_len == 1 {
            // One query per sequence sees every cached key: fold the query heads of each group into the
            // query axis so SDPA needs neither a mask nor repeated keys.
            let group = heads / kv_heads;
            let q = q.reshape([batch, kv_heads, group, head_dim]);
            Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, scale, false)
                .reshape([batch, heads, 1, head_dim])
        } else {
            let causal = context.mask.is_none();
            Tensor::scaled_dot_product_attention(&q, &k, &v, context.mask, 0.0, causal, scale, true)
        };
        let out = out.transpose(1, 2).reshape([batch, seq_len, heads * head_dim]);
        self.linear(layer, context, LoraTarget::O, &out)
    }

    /// Every linear operation of a layer: `x W^T`, plus `scale * dropout(x) A^T B^T` when the adapter has an
    /// entry for this (layer, target).
    fn linear(&self, layer: &Layer, context: &LayerContext<'_>, target: LoraTarget, x: &Tensor) -> Tensor {
        if let Some(observe) = context.observer {
            observe(context.index, target, x);
        }
        let quantized;
        let x = match self.activation_bits {
            Some(bits) => {
                quantized = fake_quantize_per_token(x, bits);
                &quantized
            }
            None => x,
        };
        let base = x.linear::<Tensor>(layer.weight(target), None);
        match context.lora.and_then(|lora| lora.delta(context.index, target, x)) {
            Some(delta) => base + delta,
            None => base,
        }
    }
}

struct LayerContext<'a> {
    index: usize,
    start_pos: usize,
    cos: &'a Tensor,
    sin: &'a Tensor,
    /// `None` when plain causal masking is right (no cached prefix).
    mask: Option<&'a Tensor>,
    lora: Option<&'a LoraWeights>,
    observer: Option<LinearObserver<'a>>,
}

/// Symmetric per-token (last axis) quantization to `bits`-bit integers and back. When `x` carries a gradient the
/// rounding is passed straight through (the value is the quantized one, the gradient that of the identity):
/// rounding's own gradient is zero, which would cut every adapter's gradient through the linear inputs.
pub(crate) fn fake_quantize_per_token(x: &Tensor, bits: u8) -> Tensor {
    let levels = f64::from((1u32 << (bits.clamp(2, 16) - 1)) - 1);
    let quantized = tch::no_grad(|| {
        let scale = x.abs().amax([-1], true).clamp_min(1e-8) / levels;
        (x / &scale).round().clamp(-levels, levels) * scale
    });
    if x.requires_grad() { quantized + (x - x.detach()) } else { quantized }
}

/// For queries at `[start, start + t)` over keys `[0, start + t)`: `None` when SDPA's own causal mask (aligned
/// top-left) is right, otherwise a boolean mask letting query `i` see keys up to `start + i`.
fn attention_mask(start: usize, t: usize, device: Device) -> Option<Tensor> {
    if start == 0 || t == 1 {
        return None;
    }
    let keys = Tensor::arange((start + t) as i64, (Kind::Int64, device));
    let queries = Tensor::arange_start(start as i64, (start + t) as i64, (Kind::Int64, device));
    Some(keys.unsqueeze(0).le_tensor(&queries.unsqueeze(1)))
}
