//! LoRA weights: standard initialisation, the low-rank delta added to a linear operation, and the adapter file
//! (safetensors with PEFT's key names and an `adapterci` metadata header).
//!
//! For a base weight `W [out, in]`, the adapter holds `A [r, in]` and `B [out, r]` and a linear operation
//! becomes `x W^T + (alpha / r) * dropout(x) A^T B^T`, as in PEFT's `lora.Linear`. Weights compute in f32;
//! the file stores them as f16 (default), bf16 or f32.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use adapterci_core::training::{AdapterConfig, LoraTarget};
use rand::{Rng, SeedableRng, rngs::StdRng};
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::EngineError;
use crate::config::LlamaConfig;

pub mod merge;
pub mod options;
pub mod peft;
#[cfg(test)]
mod tests;

pub use options::LoraOptions;

/// The format tag in the metadata header of adapter files this engine writes.
pub const ADAPTER_FORMAT: &str = "adapterci";

struct LoraPair {
    /// `[r, in]`
    a: Tensor,
    /// `[out, r]`
    b: Tensor,
    /// `alpha / r` of this module (or `alpha / sqrt(r)` with rsLoRA), with its own rank and alpha.
    scale: f64,
}

/// The A/B matrices of one adapter for every (layer, target) it declares, on one device.
pub struct LoraWeights {
    config: AdapterConfig,
    options: LoraOptions,
    pairs: BTreeMap<(usize, LoraTarget), LoraPair>,
    scale: f64,
    dropout: f64,
    training: bool,
    /// Where this adapter's dropout masks come from: a seed (set per training step) and how many masks were
    /// drawn since. Masks are hashed from the two on the tensor's device, never from torch's generator, which
    /// is global to the process (see [`LoraWeights::set_dropout_seed`]).
    dropout_seed: u64,
    masks_drawn: AtomicU64,
}

impl std::fmt::Debug for LoraWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraWeights")
            .field("config", &self.config)
            .field("options", &self.options)
            .field("dropout", &self.dropout)
            .field("training", &self.training)
            .finish()
    }
}

fn adapter_error(reason: impl Into<String>) -> EngineError {
    EngineError::Adapter(reason.into())
}

/// `(in, out)` of `target`'s weight in the Hugging Face layout.
pub fn target_dims(model: &LlamaConfig, target: LoraTarget) -> (usize, usize) {
    let (h, ffn) = (model.hidden_size, model.intermediate_size);
    let kv = model.num_kv_heads * model.head_dim;
    match target {
        LoraTarget::Q | LoraTarget::O => (h, h),
        LoraTarget::K | LoraTarget::V => (h, kv),
        LoraTarget::Gate | LoraTarget::Up => (h, ffn),
        LoraTarget::Down => (ffn, h),
    }
}

/// The PEFT key of `target`'s A (`"A"`) or B (`"B"`) matrix in `layer`.
pub fn peft_key(layer: usize, target: LoraTarget, matrix: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{matrix}.weight", target.hf_module())
}

fn storage_kind(dtype: &str) -> Result<(Kind, Dtype), EngineError> {
    match dtype {
        "f16" => Ok((Kind::Half, Dtype::F16)),
        "bf16" => Ok((Kind::BFloat16, Dtype::BF16)),
        "f32" => Ok((Kind::Float, Dtype::F32)),
        other => Err(adapter_error(format!("dtype {other:?} is not one of f16, bf16, f32"))),
    }
}

/// Checks an adapter's shape against the model: rank, alpha, targets, layers and dtype.
pub fn validate_config(config: &AdapterConfig, model: &LlamaConfig) -> Result<(), EngineError> {
    if config.rank == 0 || config.rank > model.hidden_size {
        return Err(adapter_error(format!("rank {} must be between 1 and {}", config.rank, model.hidden_size)));
    }
    if !(config.alpha.is_finite() && config.alpha > 0.0) {
        return Err(adapter_error(format!("alpha {} must be a positive number", config.alpha)));
    }
    if config.targets.is_empty() {
        return Err(adapter_error("the adapter has no targets"));
    }
    if let Some(dup) = config.targets.iter().enumerate().find(|(i, t)| config.targets[..*i].contains(t)) {
        return Err(adapter_error(format!("target {:?} is listed twice", dup.1.as_str())));
    }
    if config.layers.is_empty() {
        return Err(adapter_error("the adapter has no layers"));
    }
    if let Some(bad) = config.layers.iter().find(|&&layer| layer >= model.num_layers) {
        return Err(adapter_error(format!("layer {bad} does not exist: the model has {} layers", model.num_layers)));
    }
    if config.layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(adapter_error(format!("layers {:?} must be sorted and distinct", config.layers)));
    }
    storage_kind(&config.dtype).map(|_| ())
}

impl LoraWeights {
    /// A fresh adapter as PEFT initialises one: A kaiming-uniform (`a = sqrt(5)`, i.e. uniform in
    /// `±1/sqrt(in)`) from a generator seeded with `seed`, B zero, both requiring gradients. The adapter
    /// leaves the model's output unchanged until B moves.
    pub fn init_standard(
        config: &AdapterConfig,
        dropout: f64,
        model: &LlamaConfig,
        seed: u64,
        device: Device,
    ) -> Result<LoraWeights, EngineError> {
        LoraWeights::init_with_options(config, &LoraOptions::default(), dropout, model, seed, device)
    }

    /// [`LoraWeights::init_standard`] with rsLoRA and per-module rank/alpha; default options give the same
    /// values as `init_standard` for the same seed.
    pub fn init_with_options(
        config: &AdapterConfig,
        options: &LoraOptions,
        dropout: f64,
        model: &LlamaConfig,
        seed: u64,
        device: Device,
    ) -> Result<LoraWeights, EngineError> {
        validate_config(config, model)?;
        options.validate(model.hidden_size)?;
        check_dropout(dropout)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pairs = BTreeMap::new();
        for &layer in &config.layers {
            for target in LoraTarget::ALL.into_iter().filter(|t| config.targets.contains(t)) {
                let (rank, alpha) = options.rank_and_alpha(config.rank, config.alpha, layer, target)?;
                let (fan_in, out) = target_dims(model, target);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let values: Vec<f32> = (0..rank * fan_in).map(|_| rng.random_range(-bound..bound)).collect();
                let a = Tensor::from_slice(&values).reshape([rank as i64, fan_in as i64]).to_device(device);
                let b = Tensor::zeros([out as i64, rank as i64], (Kind::Float, device));
                let (a, b) = (a.set_requires_grad(true), b.set_requires_grad(true));
                pairs.insert((layer, target), LoraPair { a, b, scale: options.scale(rank, alpha) });
            }
        }
        Ok(LoraWeights::new(config.clone(), options.clone(), pairs, dropout))
    }

    fn new(
        config: AdapterConfig,
        options: LoraOptions,
        pairs: BTreeMap<(usize, LoraTarget), LoraPair>,
        dropout: f64,
    ) -> LoraWeights {
        let scale = options.scale(config.rank, config.alpha);
        LoraWeights { config, options, pairs, scale, dropout, training: false, dropout_seed: 0, masks_drawn: 0.into() }
    }

    /// An adapter from explicit `(A [r, in], B [out, r])` f32 pairs (an imported or merged adapter); every
    /// (layer, target) of `config` must be present with the rank `options` give it.
    pub(crate) fn from_pairs(
        config: AdapterConfig,
        options: LoraOptions,
        mut matrices: BTreeMap<(usize, LoraTarget), (Tensor, Tensor)>,
        model: &LlamaConfig,
    ) -> Result<LoraWeights, EngineError> {
        validate_config(&config, model)?;
        options.validate(model.hidden_size)?;
        let mut pairs = BTreeMap::new();
        for &layer in &config.layers {
            for &target in &config.targets {
                let (rank, alpha) = options.rank_and_alpha(config.rank, config.alpha, layer, target)?;
                let (a, b) = matrices
                    .remove(&(layer, target))
                    .ok_or_else(|| adapter_error(format!("no weights for {}", options::module_name(layer, target))))?;
                let (fan_in, out) = target_dims(model, target);
                let expected = (vec![rank as i64, fan_in as i64], vec![out as i64, rank as i64]);
                if (a.size(), b.size()) != expected {
                    return Err(adapter_error(format!(
                        "{}: A {:?} and B {:?}, expected {:?} and {:?}",
                        options::module_name(layer, target),
                        a.size(),
                        b.size(),
                        expected.0,
                        expected.1
                    )));
                }
                pairs.insert((layer, target), LoraPair { a, b, scale: options.scale(rank, alpha) });
            }
        }
        if let Some((layer, target)) = matrices.keys().next() {
            return Err(adapter_error(format!(
                "weights for {} are outside the adapter's targets and layers",
                options::module_name(*layer, *target)
            )));
        }
        Ok(LoraWeights::new(config, options, pairs, 0.0))
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    pub fn options(&self) -> &LoraOptions {
        &self.options
    }

    /// The adapter's own scale: `alpha / rank` (`alpha / sqrt(rank)` with rsLoRA). Modules named by a rank or
    /// alpha pattern have their own ([`LoraWeights::scale_of`]).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The scale of `target` in `layer`, when the adapter has it.
    pub fn scale_of(&self, layer: usize, target: LoraTarget) -> Option<f64> {
        self.pairs.get(&(layer, target)).map(|pair| pair.scale)
    }

    /// Every (layer, target) the adapter holds, in layer then target order.
    pub fn modules(&self) -> Vec<(usize, LoraTarget)> {
        self.pairs.keys().copied().collect()
    }

    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Dropout applies only while training.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    pub fn set_dropout(&mut self, p: f64) {
        self.dropout = p.clamp(0.0, 0.999);
    }

    /// Names the dropout masks that follow: the `n`-th mask drawn after this call is a hash of (`seed`, `n`,
    /// element index), so a training that sets a seed per step (from its own seed and the step) draws the same
    /// masks whether it runs alone, beside other trainings in the process, or resumed from a checkpoint.
    pub fn set_dropout_seed(&mut self, seed: u64) {
        self.dropout_seed = seed;
        *self.masks_drawn.get_mut() = 0;
    }

    /// `x` with dropout applied while training (kept values scaled by `1 / (1 - p)`), else `x` itself.
    fn dropped(&self, x: &Tensor) -> Tensor {
        if !(self.training && self.dropout > 0.0) {
            return x.shallow_clone();
        }
        let n = self.masks_drawn.fetch_add(1, Ordering::Relaxed);
        let key = crate::dataset::SeededRng::new(self.dropout_seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
        x * dropout_mask(&x.size(), key, self.dropout, x.kind(), x.device())
    }

    /// `(A, B)` of `target` in `layer`, when the adapter has it.
    pub fn get(&self, layer: usize, target: LoraTarget) -> Option<(&Tensor, &Tensor)> {
        self.pairs.get(&(layer, target)).map(|pair| (&pair.a, &pair.b))
    }

    /// Every A and B (A then B per (layer, target), in layer then target order), as shallow clones sharing
    /// storage with the adapter. Gradients are switched on for them, so an adapter read from a file can be
    /// trained further.
    pub fn trainable_parameters(&self) -> Vec<Tensor> {
        let mut out = Vec::with_capacity(2 * self.pairs.len());
        for pair in self.pairs.values() {
            for tensor in [&pair.a, &pair.b] {
                let mut clone = tensor.shallow_clone();
                if !clone.requires_grad() {
                    clone = clone.set_requires_grad(true);
                }
                out.push(clone);
            }
        }
        out
    }

    /// Number of adapter values.
    pub fn num_parameters(&self) -> usize {
        self.pairs.values().map(|pair| pair.a.numel() + pair.b.numel()).sum()
    }

    /// Bytes the weights take in the file's dtype.
    pub fn size_bytes(&self) -> usize {
        let per_value = if self.config.dtype == "f32" { 4 } else { 2 };
        self.num_parameters() * per_value
    }

    /// `scale * dropout(x) A^T B^T` for `target` in `layer`, or `None` when the adapter does not touch it.
    pub(crate) fn delta(&self, layer: usize, target: LoraTarget, x: &Tensor) -> Option<Tensor> {
        let pair = self.pairs.get(&(layer, target))?;
        let low_rank = self.dropped(x).linear::<Tensor>(&pair.a, None);
        // Scaling the rank-r intermediate is cheaper than scaling the output and equal up to rounding.
        Some((low_rank * pair.scale).linear::<Tensor>(&pair.b, None))
    }

    /// `base + scale * dropout(x) A^T B^T` for 2-D `x` `[N, in]` and `base` `[N, out]`, with the add fused into
    /// the second matmul (`addmm`); `None` when the adapter does not touch `target` in `layer`.
    pub(crate) fn add_delta(&self, layer: usize, target: LoraTarget, x: &Tensor, base: &Tensor) -> Option<Tensor> {
        let pair = self.pairs.get(&(layer, target))?;
        let low_rank = self.dropped(x).linear::<Tensor>(&pair.a, None);
        Some(base.addmm(&(low_rank * pair.scale), &pair.b.tr()))
    }

    /// The adapter file: PEFT key names, weights in `config.dtype`, and a metadata header with
    /// `format`, `rank`, `alpha`, `targets`, `layers` and `dtype` as strings.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, EngineError> {
        let (kind, dtype) = storage_kind(&self.config.dtype)?;
        let mut encoded = BTreeMap::new();
        for (&(layer, target), pair) in &self.pairs {
            for (matrix, tensor) in [("A", &pair.a), ("B", &pair.b)] {
                let stored = tensor.detach().to_device(Device::Cpu).to_kind(kind).contiguous();
                let mut bytes = vec![0u8; stored.numel() * kind.elt_size_in_bytes()];
                stored.f_copy_data_u8(&mut bytes, stored.numel())?;
                let shape: Vec<usize> = stored.size().iter().map(|&d| d as usize).collect();
                encoded.insert(peft_key(layer, target, matrix), (shape, bytes));
            }
        }
        Ok(encode_safetensors(&encoded, dtype, &self.metadata_header()))
    }

    /// The header; `use_rslora`, `rank_pattern` and `alpha_pattern` (JSON objects) only when set, so a plain
    /// adapter's file is what it was before they existed.
    fn metadata_header(&self) -> BTreeMap<String, String> {
        let targets: Vec<&str> = self.config.targets.iter().map(|t| t.as_str()).collect();
        let layers: Vec<String> = self.config.layers.iter().map(usize::to_string).collect();
        let mut header = BTreeMap::from([
            ("format".to_owned(), ADAPTER_FORMAT.to_owned()),
            ("rank".to_owned(), self.config.rank.to_string()),
            ("alpha".to_owned(), self.config.alpha.to_string()),
            ("targets".to_owned(), targets.join(",")),
            ("layers".to_owned(), layers.join(",")),
            ("dtype".to_owned(), self.config.dtype.clone()),
        ]);
        if self.options.use_rslora {
            header.insert("use_rslora".to_owned(), "true".to_owned());
        }
        if !self.options.rank_pattern.is_empty() {
            header.insert("rank_pattern".to_owned(), serde_json::json!(self.options.rank_pattern).to_string());
        }
        if !self.options.alpha_pattern.is_empty() {
            header.insert("alpha_pattern".to_owned(), serde_json::json!(self.options.alpha_pattern).to_string());
        }
        header
    }

    /// Reads an adapter file written by [`LoraWeights::to_safetensors`], checking every tensor's name, dtype
    /// and shape against the header and `model`. The result is in inference mode (no dropout, no gradients).
    pub fn from_safetensors(bytes: &[u8], model: &LlamaConfig, device: Device) -> Result<LoraWeights, EngineError> {
        let (_, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| adapter_error(format!("not a safetensors file: {e}")))?;
        let header = metadata.metadata().clone().unwrap_or_default();
        let config = config_from_header(&header)?;
        let options = options_from_header(&header)?;
        validate_config(&config, model)?;
        options.validate(model.hidden_size)?;
        let (_, dtype) = storage_kind(&config.dtype)?;
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| adapter_error(format!("not a safetensors file: {e}")))?;

        let mut expected = BTreeMap::new();
        for &layer in &config.layers {
            for &target in &config.targets {
                let (fan_in, out) = target_dims(model, target);
                let (rank, _) = options.rank_and_alpha(config.rank, config.alpha, layer, target)?;
                expected.insert(peft_key(layer, target, "A"), [rank, fan_in]);
                expected.insert(peft_key(layer, target, "B"), [out, rank]);
            }
        }
        let mut names = file.names();
        names.sort_unstable();
        if let Some(unknown) = names.iter().find(|name| !expected.contains_key(**name)) {
            return Err(adapter_error(format!(
                "tensor {unknown:?} is not one of the adapter's (targets {:?}, layers {:?}, rank {})",
                header.get("targets").map(String::as_str).unwrap_or_default(),
                config.layers,
                config.rank
            )));
        }
        let mut pairs = BTreeMap::new();
        for &layer in &config.layers {
            for &target in &config.targets {
                let a = read_tensor(
                    &file,
                    &peft_key(layer, target, "A"),
                    expected_shape(&expected, layer, target, "A"),
                    dtype,
                    device,
                )?;
                let b = read_tensor(
                    &file,
                    &peft_key(layer, target, "B"),
                    expected_shape(&expected, layer, target, "B"),
                    dtype,
                    device,
                )?;
                let (rank, alpha) = options.rank_and_alpha(config.rank, config.alpha, layer, target)?;
                pairs.insert((layer, target), LoraPair { a, b, scale: options.scale(rank, alpha) });
            }
        }
        Ok(LoraWeights::new(config, options, pairs, 0.0))
    }
}

/// The safetensors layout (8-byte header length, JSON header padded with spaces to 8 bytes, data) for tensors of
/// one dtype: [`encode_safetensors_typed`].
pub(crate) fn encode_safetensors(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>,
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    encode_safetensors_typed(one_dtype(tensors, dtype), metadata)
}

fn one_dtype(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>,
    dtype: Dtype,
) -> impl Iterator<Item = (&str, Dtype, &[usize], &[u8])> {
    tensors.iter().map(move |(name, (shape, bytes))| (name.as_str(), dtype, shape.as_slice(), bytes.as_slice()))
}

/// The safetensors layout (8-byte header length, JSON header padded with spaces to 8 bytes, data), written
/// here rather than by `safetensors::serialize` because that one orders the `__metadata__` keys by a
/// `HashMap`: the same adapter or release must give the same bytes (and so the same digest) every time. The data
/// is laid out as `safetensors::serialize` lays it out (the widest dtype first, then by name), which keeps every
/// tensor aligned to its element size.
pub(crate) fn encode_safetensors_typed<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut out = Vec::new();
    match write_safetensors_typed(tensors, metadata, &mut out) {
        Ok(_) => out,
        Err(error) => unreachable!("a Vec takes every write: {error}"),
    }
}

/// [`encode_safetensors_typed`]'s bytes written to `out`; returns how many.
pub(crate) fn write_safetensors_typed<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &BTreeMap<String, String>,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let tensors: Vec<_> = tensors.into_iter().collect();
    let layouts: Vec<_> = tensors
        .iter()
        .map(|&(name, dtype, shape, bytes)| TensorLayout { name, dtype, shape, len: bytes.len() })
        .collect();
    write_safetensors_streamed(&layouts, metadata, out, std::convert::identity, |index, out| {
        out.write_all(tensors[index].3)
    })
}

/// One tensor as a safetensors header describes it; its data comes later, from
/// [`write_safetensors_streamed`]'s callback.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorLayout<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    /// Bytes of data: the header's offsets are computed from these alone.
    pub len: usize,
}

/// The one safetensors encoder: writes the header, computed from `layouts` alone, then calls
/// `write_data(index into layouts, out)` for each tensor in file order, which must write exactly that
/// tensor's `len` bytes. Nothing is held back between calls, so a caller may compute a tensor in the callback
/// and drop it before the next one (a merged model is never whole in memory). `io_error` turns this
/// function's own failures into `E`: a failed header write, and a callback that wrote the wrong number of
/// bytes (the header would lie). Returns the number of bytes written.
pub(crate) fn write_safetensors_streamed<W: Write, E>(
    layouts: &[TensorLayout<'_>],
    metadata: &BTreeMap<String, String>,
    out: &mut W,
    io_error: impl Fn(std::io::Error) -> E,
    mut write_data: impl FnMut(usize, &mut dyn Write) -> Result<(), E>,
) -> Result<u64, E> {
    let mut order: Vec<usize> = (0..layouts.len()).collect();
    order.sort_by(|&left, &right| {
        let (left, right) = (&layouts[left], &layouts[right]);
        right.dtype.cmp(&left.dtype).then(left.name.cmp(right.name))
    });
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut offset = 0;
    for &index in &order {
        let TensorLayout { name, dtype, shape, len } = layouts[index];
        let entry = serde_json::json!({
            "dtype": dtype.to_string(), "shape": shape, "data_offsets": [offset, offset + len]
        });
        header.insert(name.to_owned(), entry);
        offset += len;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(&io_error)?;
    out.write_all(&header).map_err(&io_error)?;
    for &index in &order {
        let mut counted = CountingWriter { inner: &mut *out, written: 0 };
        write_data(index, &mut counted)?;
        let TensorLayout { name, len, .. } = layouts[index];
        if counted.written != len {
            return Err(io_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("tensor {name:?} gave {} bytes of data but its header says {len}", counted.written),
            )));
        }
    }
    Ok((8 + header.len() + offset) as u64)
}

/// Counts the bytes that reach `inner`.
struct CountingWriter<W> {
    inner: W,
    written: usize,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn expected_shape(
    expected: &BTreeMap<String, [usize; 2]>,
    layer: usize,
    target: LoraTarget,
    matrix: &str,
) -> [usize; 2] {
    expected.get(&peft_key(layer, target, matrix)).copied().unwrap_or_default()
}

/// A dropout mask of `shape`: `1 / (1 - p)` where an element is kept, 0 where it is dropped (each with
/// probability `p`), decided by a 32-bit integer hash (Wellons' `lowbias32`, twice) of the element's index and
/// `key`, computed on `device`. Products wrap in int64 and are masked back to 32 bits, so the result is the same
/// on every device.
pub(crate) fn dropout_mask(shape: &[i64], key: u64, p: f64, kind: Kind, device: Device) -> Tensor {
    const LOW32: i64 = 0xFFFF_FFFF;
    // `x · c mod 2³²` for `x, c < 2³²`, in halves of `c` so that no int64 product overflows
    let mul32 =
        |x: &Tensor, c: i64| ((x * (c >> 16)).bitwise_and(0xFFFF) * 65_536 + x * (c & 0xFFFF)).bitwise_and(LOW32);
    let lowbias32 = |x: Tensor| {
        let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(16));
        let x = mul32(&x, 0x7FEB_352D);
        let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(15));
        let x = mul32(&x, 0x846C_A68B);
        x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(16))
    };
    let count: i64 = shape.iter().product();
    let index = Tensor::arange(count, (Kind::Int64, device));
    let first = lowbias32((index + (key & 0xFFFF_FFFF) as i64).bitwise_and(LOW32));
    let hashed = lowbias32(first.bitwise_xor((key >> 32) as i64));
    // kept when the hash, uniform on [0, 2³²), is at least p·2³²
    let threshold = (p * 4_294_967_296.0).round() as i64;
    (hashed.ge(threshold).to_kind(kind) * (1.0 / (1.0 - p))).reshape(shape)
}

fn check_dropout(dropout: f64) -> Result<(), EngineError> {
    if (0.0..1.0).contains(&dropout) {
        Ok(())
    } else {
        Err(adapter_error(format!("dropout {dropout} must be in [0, 1)")))
    }
}

fn read_tensor(
    file: &SafeTensors<'_>,
    name: &str,
    shape: [usize; 2],
    dtype: Dtype,
    device: Device,
) -> Result<Tensor, EngineError> {
    let view = file.tensor(name).map_err(|_| adapter_error(format!("tensor {name:?} is missing")))?;
    if view.dtype() != dtype {
        return Err(adapter_error(format!("tensor {name:?} is {:?}, the header says {dtype:?}", view.dtype())));
    }
    if view.shape() != shape {
        return Err(adapter_error(format!("tensor {name:?} has shape {:?}, expected {shape:?}", view.shape())));
    }
    let kind = storage_kind_of(dtype);
    let tensor = Tensor::f_from_data_size(view.data(), &[shape[0] as i64, shape[1] as i64], kind)?
        .to_kind(Kind::Float)
        .to_device(device);
    let finite = tensor.isfinite().all().int64_value(&[]) != 0;
    if !finite {
        return Err(adapter_error(format!("tensor {name:?} holds NaN or infinite values")));
    }
    Ok(tensor)
}

fn storage_kind_of(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        _ => Kind::Float,
    }
}

fn config_from_header(header: &HashMap<String, String>) -> Result<AdapterConfig, EngineError> {
    let field = |key: &str| {
        header
            .get(key)
            .ok_or_else(|| adapter_error(format!("metadata header has no {key:?} (not an adapterci adapter?)")))
    };
    let format = field("format")?;
    if format != ADAPTER_FORMAT {
        return Err(adapter_error(format!("metadata format is {format:?}, expected {ADAPTER_FORMAT:?}")));
    }
    let number_error = |key: &str, value: &str| adapter_error(format!("metadata {key:?} is {value:?}, not a number"));
    let rank = field("rank")?;
    let rank = rank.parse::<usize>().map_err(|_| number_error("rank", rank))?;
    let alpha = field("alpha")?;
    let alpha = alpha.parse::<f64>().map_err(|_| number_error("alpha", alpha))?;
    let targets = split_list(field("targets")?)
        .map(|name| {
            LoraTarget::ALL
                .into_iter()
                .find(|t| t.as_str() == name)
                .ok_or_else(|| adapter_error(format!("metadata \"targets\" names unknown target {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let layers = split_list(field("layers")?)
        .map(|item| item.parse::<usize>().map_err(|_| number_error("layers", item)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AdapterConfig { rank, alpha, targets, layers, dtype: field("dtype")?.clone() })
}

fn options_from_header(header: &HashMap<String, String>) -> Result<LoraOptions, EngineError> {
    let use_rslora = match header.get("use_rslora").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(adapter_error(format!("metadata \"use_rslora\" is {other:?}, not true or false"))),
    };
    fn pattern<T: serde::de::DeserializeOwned>(
        header: &HashMap<String, String>,
        key: &str,
    ) -> Result<BTreeMap<String, T>, EngineError> {
        header.get(key).map_or(Ok(BTreeMap::new()), |text| {
            serde_json::from_str(text).map_err(|e| adapter_error(format!("metadata {key:?} is not a JSON object: {e}")))
        })
    }
    Ok(LoraOptions {
        use_rslora,
        rank_pattern: pattern(header, "rank_pattern")?,
        alpha_pattern: pattern(header, "alpha_pattern")?,
    })
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// Gives every B random values (a trained adapter's stand-in) so tests can see the adapter's effect.
#[cfg(test)]
pub(crate) fn randomize_b_for_tests(lora: &mut LoraWeights, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for pair in lora.pairs.values_mut() {
        let size = pair.b.size();
        let values: Vec<f32> = (0..pair.b.numel()).map(|_| rng.random_range(-0.2..0.2)).collect();
        pair.b = Tensor::from_slice(&values).reshape(size.as_slice()).to_device(pair.b.device());
    }
}
