//! The decoder's forward pass for training, with the frozen base matmuls in a chosen precision.
//!
//! Same computation as [`Llama::forward_hidden`] without a KV cache (it reads the same weights through the
//! model's accessors; a test checks the f32 path equals it to rounding). Because the whole graph is ours, the
//! activations stay 2-D `[tokens, width]`, the query, key and value projections run as one matmul over their
//! concatenated weights (and the gate and up projections as another), each LoRA update is added inside its
//! second matmul (`addmm`), and the bf16 path casts each input once per fused matmul. With [`BaseCompute::Bf16`] the seven
//! linear operations and the LM head multiply bf16 copies of the frozen weights by bf16-rounded activations
//! and return f32, while norms, attention, the LoRA deltas, the loss and the optimizer stay f32: on CPUs with
//! AVX-512 BF16 the bf16 matmuls run several times faster, and the adapter still learns in f32.
//!
//! When the model has activation bits (a base release with `activation_bits`, see
//! [`Llama::set_activation_bits`]), every linear input is fake-quantized per token exactly where
//! [`Llama::forward`] does it, with the same function: the input of each of the seven linear operations (once
//! per fused q/k/v and gate/up matmul, which share their input), seen by both the frozen base matmul and the
//! LoRA update; not the LM head. So a task adapter trains on the activations it is served with. The rounding
//! has a zero derivative, so the quantized input is formed as `q + (x - x.detach())`: its value is exactly `q`,
//! and its gradient with respect to `x` is the identity (a straight-through estimator), which lets the loss
//! reach the earlier layers' adapters through the linear operations and not only through the residual stream.

use adapterci_core::training::{BasePrecision, LoraTarget};
use tch::{Kind, Tensor};

use crate::EngineError;
use crate::config::LlamaConfig;
use crate::llama::{Llama, apply_rope, fake_quantize_per_token, rope_tables};
use crate::lora::LoraWeights;

/// Precision of the frozen base weights in training matmuls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BaseCompute {
    /// The model's own f32 weights: what inference computes.
    #[default]
    F32,
    /// bf16 copies of the linear and LM-head weights (activations rounded to bf16 at those matmuls).
    Bf16,
}

impl From<BasePrecision> for BaseCompute {
    fn from(precision: BasePrecision) -> Self {
        match precision {
            BasePrecision::F32 => BaseCompute::F32,
            BasePrecision::Bf16 => BaseCompute::Bf16,
        }
    }
}

struct LayerWeights {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// `[q; k; v]` rows concatenated, in the compute kind.
    qkv: Tensor,
    o: Tensor,
    /// `[gate; up]` rows concatenated.
    gate_up: Tensor,
    down: Tensor,
}

/// The weights a training forward reads, in the compute kind; borrows nothing from the model after creation
/// (f32 tensors are shallow clones sharing its storage).
pub struct TrainingModel {
    config: LlamaConfig,
    kind: Kind,
    embedding: Tensor,
    final_norm: Tensor,
    lm_head: Tensor,
    layers: Vec<LayerWeights>,
    rope_cos: Tensor,
    rope_sin: Tensor,
    /// The model's [`Llama::activation_bits`]: linear inputs are fake-quantized per token to this many bits.
    activation_bits: Option<u8>,
}

impl std::fmt::Debug for TrainingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingModel")
            .field("kind", &self.kind)
            .field("activation_bits", &self.activation_bits)
            .finish()
    }
}

impl TrainingModel {
    pub fn new(llama: &Llama, compute: BaseCompute) -> Result<TrainingModel, EngineError> {
        let config = llama.config().clone();
        let kind = match compute {
            BaseCompute::F32 => Kind::Float,
            BaseCompute::Bf16 => Kind::BFloat16,
        };
        let in_kind = |t: &Tensor| if kind == Kind::Float { t.shallow_clone() } else { t.to_kind(kind) };
        // `Llama::weights` order: embedding, final norm, [output], then per layer attn_norm, q, k, v, o,
        // ffn_norm, gate, up, down.
        let weights = llama.weights();
        let first_layer = if config.tie_word_embeddings { 2 } else { 3 };
        if weights.len() != first_layer + 9 * config.num_layers {
            return Err(EngineError::InvalidConfig(format!(
                "the model lists {} weight tensors, expected {}",
                weights.len(),
                first_layer + 9 * config.num_layers
            )));
        }
        let layers = (0..config.num_layers)
            .map(|i| {
                let w = &weights[first_layer + 9 * i..first_layer + 9 * (i + 1)];
                let weight = |target| llama.linear_weight(i, target);
                let cat = |targets: &[LoraTarget]| {
                    let parts: Vec<&Tensor> = targets.iter().map(|&t| weight(t)).collect();
                    Tensor::cat(&parts, 0).to_kind(kind)
                };
                LayerWeights {
                    attn_norm: w[0].shallow_clone(),
                    ffn_norm: w[5].shallow_clone(),
                    qkv: cat(&[LoraTarget::Q, LoraTarget::K, LoraTarget::V]),
                    o: in_kind(weight(LoraTarget::O)),
                    gate_up: cat(&[LoraTarget::Gate, LoraTarget::Up]),
                    down: in_kind(weight(LoraTarget::Down)),
                }
            })
            .collect();
        let (rope_cos, rope_sin) = rope_tables(&config, llama.device());
        Ok(TrainingModel {
            kind,
            embedding: weights[0].shallow_clone(),
            final_norm: weights[1].shallow_clone(),
            lm_head: in_kind(llama.lm_head_weight()),
            layers,
            rope_cos,
            rope_sin,
            activation_bits: llama.activation_bits(),
            config,
        })
    }

    /// The per-token activation bits of the linear inputs, taken from the model at construction.
    pub fn activation_bits(&self) -> Option<u8> {
        self.activation_bits
    }

    /// The input of a linear operation as the base matmul and the LoRA update see it: `x` itself, or with
    /// activation bits `x` fake-quantized per token by [`Llama`]'s own function, with a straight-through
    /// gradient (see the module docs).
    fn linear_input(&self, x: &Tensor) -> Tensor {
        let Some(bits) = self.activation_bits else {
            return x.shallow_clone();
        };
        fake_quantize_per_token(x, bits)
    }

    fn matmul(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        if self.kind == Kind::Float {
            x.linear::<Tensor>(weight, None)
        } else {
            x.to_kind(self.kind).linear::<Tensor>(weight, None).to_kind(Kind::Float)
        }
    }

    /// `base` plus the adapter's update of `target` for the 2-D input `x` (or `base` alone).
    fn with_lora(index: usize, target: LoraTarget, x: &Tensor, base: Tensor, lora: Option<&LoraWeights>) -> Tensor {
        match lora.and_then(|lora| lora.add_delta(index, target, x, &base)) {
            Some(sum) => sum,
            None => base,
        }
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        x.rms_norm([self.config.hidden_size as i64], Some(weight), self.config.rms_norm_eps)
    }

    /// Final-normed hidden states `[B, T, hidden]` f32 for right-padded `input_ids` `[B, T]` from position 0.
    pub fn forward_hidden(&self, input_ids: &Tensor, lora: Option<&LoraWeights>) -> Tensor {
        self.forward_hidden_with(input_ids, None, None, lora)
    }

    /// [`TrainingModel::forward_hidden`] with per-token rotary positions `[B, T]` and a boolean attention mask
    /// `[B, 1, T, T]` (packed rows); `None` for either means positions `0..T` and causal attention.
    pub fn forward_hidden_with(
        &self,
        input_ids: &Tensor,
        position_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        lora: Option<&LoraWeights>,
    ) -> Tensor {
        let (batch, seq_len) = (input_ids.size()[0], input_ids.size()[1]);
        let (cos, sin) = match position_ids {
            None => (self.rope_cos.narrow(0, 0, seq_len), self.rope_sin.narrow(0, 0, seq_len)),
            Some(positions) => {
                let rows = |table: &Tensor| {
                    let width = table.size()[1];
                    table.index_select(0, &positions.reshape([-1])).view([batch, 1, seq_len, width])
                };
                (rows(&self.rope_cos), rows(&self.rope_sin))
            }
        };
        let hidden = self.config.hidden_size as i64;
        let ffn_width = self.config.intermediate_size as i64;
        let mut x = Tensor::embedding(&self.embedding, input_ids, -1, false, false).view([-1, hidden]);
        for index in 0..self.layers.len() {
            let layer = &self.layers[index];
            let normed = self.rms_norm(&x, &layer.attn_norm);
            let attention = self.attention(index, &normed, (batch, seq_len), &cos, &sin, attention_mask, lora);
            x = &x + attention;
            let normed = self.linear_input(&self.rms_norm(&x, &layer.ffn_norm));
            let gate_up = self.matmul(&normed, &layer.gate_up);
            let gate = Self::with_lora(index, LoraTarget::Gate, &normed, gate_up.narrow(1, 0, ffn_width), lora);
            let up = Self::with_lora(index, LoraTarget::Up, &normed, gate_up.narrow(1, ffn_width, ffn_width), lora);
            let activated = self.linear_input(&(gate.silu() * up));
            let ffn = Self::with_lora(index, LoraTarget::Down, &activated, self.matmul(&activated, &layer.down), lora);
            x = &x + ffn;
        }
        self.rms_norm(&x, &self.final_norm).view([batch, seq_len, hidden])
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        index: usize,
        x: &Tensor,
        (batch, seq_len): (i64, i64),
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        lora: Option<&LoraWeights>,
    ) -> Tensor {
        let (heads, kv_heads) = (self.config.num_heads as i64, self.config.num_kv_heads as i64);
        let head_dim = self.config.head_dim as i64;
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let x = &self.linear_input(x);
        let qkv = self.matmul(x, &self.layers[index].qkv);
        let project = |target, start, width, n| {
            let sum = Self::with_lora(index, target, x, qkv.narrow(1, start, width), lora);
            sum.view([batch, seq_len, n, head_dim]).transpose(1, 2)
        };
        let q = project(LoraTarget::Q, 0, q_width, heads);
        let k = project(LoraTarget::K, q_width, kv_width, kv_heads);
        let v = project(LoraTarget::V, q_width + kv_width, kv_width, kv_heads);
        let q = apply_rope(&q, cos, sin);
        let k = apply_rope(&k, cos, sin);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let out = if let Some(mask) = mask {
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, scale, true)
        } else if seq_len == 1 {
            let group = heads / kv_heads;
            let q = q.reshape([batch, kv_heads, group, head_dim]);
            Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, scale, false)
                .reshape([batch, heads, 1, head_dim])
        } else {
            Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, scale, true)
        };
        let out = self.linear_input(&out.transpose(1, 2).reshape([batch * seq_len, q_width]));
        Self::with_lora(index, LoraTarget::O, &out, self.matmul(&out, &self.layers[index].o), lora)
    }

    /// f32 logits for hidden states `[..., hidden]`.
    pub fn lm_head(&self, hidden: &Tensor) -> Tensor {
        self.matmul(hidden, &self.lm_head)
    }
}
