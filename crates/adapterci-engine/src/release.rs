//! The base release file: a palettized base model in one safetensors file.
//!
//! Tensors: for every palettized matrix `NAME` (GGUF tensor names, q/k rows in the Hugging Face layout):
//! `NAME.lut` (F16 `[groups, 2^bits]`, group-major, each group's table sorted), `NAME.idx` (U8, the indices
//! row-major and packed little-end first: element `e` in byte `e / (8 / bits)` at bit `(e % (8 / bits)) * bits`)
//! and `NAME.scale` (F16 `[rows]`, when row scales are on). Unpalettized tensors (norms; the embedding unless
//! palettized) are stored as themselves (F32 or F16).
//!
//! Metadata (`__metadata__`): `adapterci.format = "base-release"`, `adapterci.format_version = "1"`,
//! `adapterci.manifest` ([`ReleaseManifest`] as JSON: the source model's digest, bits per operation, group
//! size, table layout, bits-per-weight accounting, the digest of every tensor's bytes), `adapterci.config`
//! (the decoder shape) and `adapterci.tokenizer` (the tokenizer, so a release serves without its source GGUF).
//! Format version 2 adds one thing: a palettized tensor's spec may name a [`crate::palettize::Rotation`] (its
//! served weight is the dequantized one times `Qᵀ`). A release with no rotated tensor is written as version 1,
//! byte for byte as before, and a reader that only knows version 1 refuses a rotated one rather than serving it
//! unrotated. Format version 1 is frozen by `tests/fixtures/base_release_v1.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use adapterci_core::Digest;
use half::f16;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::EngineError;
use crate::allocate::{Method, linear_ops};
use crate::config::LlamaConfig;
use crate::llama::Llama;
use crate::palettize::{PaletteSpec, PalettizedTensor};
use crate::tokenizer::TokenizerSpec;

pub const RELEASE_FORMAT: &str = "base-release";
/// The newest format version this build writes and reads.
pub const RELEASE_FORMAT_VERSION: u32 = 2;
/// The first format version whose tensors may be rotated.
const ROTATION_SINCE: u32 = 2;
const KEY_FORMAT: &str = "adapterci.format";
const KEY_VERSION: &str = "adapterci.format_version";
const KEY_MANIFEST: &str = "adapterci.manifest";
const KEY_CONFIG: &str = "adapterci.config";
const KEY_TOKENIZER: &str = "adapterci.tokenizer";
const EMBEDDING: &str = "token_embd.weight";

/// One palettized matrix in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseTensor {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub spec: PaletteSpec,
}

/// What a base release is: its source, how every operation was palettized, and what that costs in bits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    pub format_version: u32,
    /// sha256 of the source model file (the uncompressed teacher).
    pub source_model_digest: Digest,
    pub source_model_name: String,
    pub method: Method,
    /// Palettized matrices (the linear operations, and the embedding when palettized).
    pub palettized: Vec<ReleaseTensor>,
    /// `"groups x 2^bits fp16, group-major, sorted; indices row-major, packed little-end first"`.
    pub table_layout: String,
    /// Bits per weight of the linear operations (indices, tables and scales counted).
    pub linear_bpw: f64,
    /// Bits per weight of every stored tensor over every parameter.
    pub whole_model_bpw: f64,
    /// sha256 over every tensor's bytes in name order (detects a flipped bit that the header cannot).
    pub payload_digest: Digest,
    pub code_version: String,
    /// Linear inputs are quantized per token to this many bits when the release is served (symmetric absmax
    /// integers, simulated in f32); absent: full-precision activations. Optional, so format v1 files without
    /// it still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_bits: Option<u8>,
}

/// Activation bits a release may ask for.
pub const ACTIVATION_BITS: std::ops::RangeInclusive<u8> = 4..=8;

/// A decoded release: the manifest, the decoder shape, the tokenizer and the tensors.
pub struct BaseRelease {
    pub manifest: ReleaseManifest,
    pub config: LlamaConfig,
    pub tokenizer: TokenizerSpec,
    palettized: BTreeMap<String, PalettizedTensor>,
    dense: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl std::fmt::Debug for BaseRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseRelease").field("manifest", &self.manifest).finish()
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> EngineError {
    EngineError::Gguf { path: path.to_path_buf(), reason: format!("base release: {}", reason.into()) }
}

/// The palettized matrices of a release and how they were made.
pub struct ReleaseContents<'a> {
    pub source_model_digest: Digest,
    pub source_model_name: String,
    pub method: Method,
    pub config: &'a LlamaConfig,
    pub tokenizer: &'a TokenizerSpec,
    /// Linear operations in [`linear_ops`] order.
    pub linear: Vec<PalettizedTensor>,
    /// The embedding palettized, or `None` to store it as F16.
    pub embedding: Option<PalettizedTensor>,
    /// The source decoder (norms, and the embedding when not palettized).
    pub source: &'a Llama,
    /// Per-token activation bits of the linear inputs at serve time (see [`ReleaseManifest::activation_bits`]).
    pub activation_bits: Option<u8>,
}

fn tensor_bytes_f32(t: &Tensor) -> Result<(Vec<usize>, Vec<u8>), EngineError> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let shape = t.size().iter().map(|&d| d as usize).collect();
    let values = Vec::<f32>::try_from(t.reshape([-1]))?;
    Ok((shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
}

fn f16_bytes(values: &[f16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a release file's bytes.
pub fn write_release(contents: &ReleaseContents<'_>) -> Result<Vec<u8>, EngineError> {
    check_activation_bits(contents.activation_bits).map_err(EngineError::InvalidConfig)?;
    let ops = linear_ops(contents.config);
    if ops.len() != contents.linear.len() {
        return Err(EngineError::InvalidConfig(format!(
            "{} palettized operations for {} linear operations",
            contents.linear.len(),
            ops.len()
        )));
    }
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut palettized = Vec::new();
    let mut add_palettized = |name: String, p: &PalettizedTensor, tensors: &mut BTreeMap<_, _>| {
        tensors.insert(format!("{name}.lut"), (Dtype::F16, vec![p.groups(), p.spec.entries()], f16_bytes(&p.lut)));
        tensors.insert(format!("{name}.idx"), (Dtype::U8, vec![p.indices.len()], p.indices.clone()));
        if let Some(scales) = &p.scales {
            tensors.insert(format!("{name}.scale"), (Dtype::F16, vec![scales.len()], f16_bytes(scales)));
        }
        palettized.push(ReleaseTensor { name, rows: p.rows, cols: p.cols, spec: p.spec });
    };
    let (mut linear_bits, mut linear_params, mut stored_bits, mut all_params) = (0u64, 0u64, 0u64, 0u64);
    for (op, p) in ops.iter().zip(&contents.linear) {
        if (p.rows, p.cols) != (op.rows, op.cols) {
            return Err(EngineError::InvalidConfig(format!(
                "{} is {}x{}, expected {}x{}",
                op.name(),
                p.rows,
                p.cols,
                op.rows,
                op.cols
            )));
        }
        add_palettized(op.name(), p, &mut tensors);
        linear_bits += p.storage_bits();
        linear_params += op.params() as u64;
    }
    stored_bits += linear_bits;
    all_params += linear_params;
    let source = contents.source;
    match &contents.embedding {
        Some(p) => {
            add_palettized(EMBEDDING.to_string(), p, &mut tensors);
            stored_bits += p.storage_bits();
            all_params += (p.rows * p.cols) as u64;
        }
        None => {
            let e = source.embedding_weight().to_device(Device::Cpu).to_kind(Kind::Half).contiguous();
            let shape: Vec<usize> = e.size().iter().map(|&d| d as usize).collect();
            let mut bytes = vec![0u8; e.numel() * 2];
            e.f_copy_data_u8(&mut bytes, e.numel())?;
            stored_bits += e.numel() as u64 * 16;
            all_params += e.numel() as u64;
            tensors.insert(EMBEDDING.to_string(), (Dtype::F16, shape, bytes));
        }
    }
    for (name, t) in norm_tensors(source) {
        let (shape, bytes) = tensor_bytes_f32(&t)?;
        stored_bits += (bytes.len() * 8) as u64;
        all_params += shape.iter().product::<usize>() as u64;
        tensors.insert(name, (Dtype::F32, shape, bytes));
    }
    let format_version = if palettized.iter().any(|t| t.spec.rotation.is_some()) { ROTATION_SINCE } else { 1 };
    let manifest = ReleaseManifest {
        format_version,
        source_model_digest: contents.source_model_digest.clone(),
        source_model_name: contents.source_model_name.clone(),
        method: contents.method,
        palettized,
        table_layout: "lut: groups x 2^bits fp16, group-major, each sorted; idx: row-major, packed little-end first"
            .to_string(),
        linear_bpw: linear_bits as f64 / linear_params.max(1) as f64,
        whole_model_bpw: stored_bits as f64 / all_params.max(1) as f64,
        payload_digest: payload_digest(tensors.iter().map(|(n, (_, _, b))| (n.as_str(), b.as_slice()))),
        code_version: env!("CARGO_PKG_VERSION").to_string(),
        activation_bits: contents.activation_bits,
    };
    let metadata = BTreeMap::from([
        (KEY_FORMAT.to_string(), RELEASE_FORMAT.to_string()),
        (KEY_VERSION.to_string(), format_version.to_string()),
        (KEY_MANIFEST.to_string(), to_json(&manifest)?),
        (KEY_CONFIG.to_string(), to_json(contents.config)?),
        (KEY_TOKENIZER.to_string(), to_json(contents.tokenizer)?),
    ]);
    Ok(crate::lora::encode_safetensors_typed(
        tensors.iter().map(|(name, (dtype, shape, bytes))| (name.as_str(), *dtype, shape.as_slice(), bytes.as_slice())),
        &metadata,
    ))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, EngineError> {
    serde_json::to_string(value).map_err(|e| EngineError::InvalidConfig(format!("json: {e}")))
}

fn norm_tensors(source: &Llama) -> Vec<(String, Tensor)> {
    let mut out = vec![("output_norm.weight".to_string(), source.final_norm_weight().shallow_clone())];
    for layer in 0..source.config().num_layers {
        let (attn, ffn) = source.norm_weights(layer);
        out.push((format!("blk.{layer}.attn_norm.weight"), attn.shallow_clone()));
        out.push((format!("blk.{layer}.ffn_norm.weight"), ffn.shallow_clone()));
    }
    out
}

fn payload_digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> Digest {
    let mut all = Vec::new();
    for (name, bytes) in tensors {
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        all.extend_from_slice(bytes);
    }
    Digest::of(&all)
}

/// True when `bytes` look like a safetensors file (an 8-byte header length, then `{`).
pub fn looks_like_release(bytes: &[u8]) -> bool {
    bytes.len() > 9 && bytes[8] == b'{' && !bytes.starts_with(b"GGUF")
}

/// Whether the file at `path` starts like a base release (safetensors) rather than a GGUF.
pub fn is_release_path(path: &Path) -> Result<bool, EngineError> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    let n = file.read(&mut head).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    Ok(looks_like_release(&head[..n]))
}

impl BaseRelease {
    /// Decodes and checks a release file: format and version, manifest, config, tokenizer, every tensor's
    /// dtype, shape and length, and the payload digest. `path` names the file in errors.
    pub fn read(bytes: &[u8], path: &Path) -> Result<BaseRelease, EngineError> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().ok_or_else(|| bad(path, "no metadata header"))?;
        let get = |key: &str| meta.get(key).ok_or_else(|| bad(path, format!("metadata key {key:?} is missing")));
        if get(KEY_FORMAT)? != RELEASE_FORMAT {
            return Err(bad(path, format!("{KEY_FORMAT} is {:?}, not {RELEASE_FORMAT:?}", get(KEY_FORMAT)?)));
        }
        let version = get(KEY_VERSION)?;
        let format_version = match version.parse::<u32>() {
            Ok(v) if (1..=RELEASE_FORMAT_VERSION).contains(&v) => v,
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "format version {version:?} is not supported (this build reads 1 to {RELEASE_FORMAT_VERSION})"
                    ),
                ));
            }
        };
        let parse = |key: &str| -> Result<serde_json::Value, EngineError> {
            serde_json::from_str(get(key)?).map_err(|e| bad(path, format!("{key}: {e}")))
        };
        let manifest: ReleaseManifest =
            serde_json::from_value(parse(KEY_MANIFEST)?).map_err(|e| bad(path, format!("{KEY_MANIFEST}: {e}")))?;
        check_activation_bits(manifest.activation_bits).map_err(|e| bad(path, format!("{KEY_MANIFEST}: {e}")))?;
        if manifest.format_version != format_version {
            return Err(bad(
                path,
                format!(
                    "{KEY_MANIFEST}: format_version {} but {KEY_VERSION} is {format_version}",
                    manifest.format_version
                ),
            ));
        }
        if let Some(t) = manifest.palettized.iter().find(|t| t.spec.rotation.is_some())
            && format_version < ROTATION_SINCE
        {
            return Err(bad(
                path,
                format!("{KEY_MANIFEST}: {} is rotated, which format version {format_version} cannot say", t.name),
            ));
        }
        let config: LlamaConfig =
            serde_json::from_value(parse(KEY_CONFIG)?).map_err(|e| bad(path, format!("{KEY_CONFIG}: {e}")))?;
        config.validate().map_err(|e| bad(path, format!("{KEY_CONFIG}: {e}")))?;
        let tokenizer: TokenizerSpec =
            serde_json::from_value(parse(KEY_TOKENIZER)?).map_err(|e| bad(path, format!("{KEY_TOKENIZER}: {e}")))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(path, format!("tensors: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let digest = payload_digest(names.iter().filter_map(|n| st.tensor(n).ok().map(|t| (n.as_str(), t.data()))));
        if digest != manifest.payload_digest {
            return Err(bad(
                path,
                format!(
                    "payload digest {digest} does not match the manifest's {}: the file is corrupt",
                    manifest.payload_digest
                ),
            ));
        }
        let raw = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, &[u8]), EngineError> {
            let t = st.tensor(name).map_err(|_| bad(path, format!("tensor {name:?} is missing")))?;
            if t.dtype() != dtype {
                return Err(bad(path, format!("tensor {name:?} is {:?}, expected {dtype:?}", t.dtype())));
            }
            Ok((t.shape().to_vec(), t.data()))
        };
        let halves = |bytes: &[u8]| bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>();
        let mut palettized = BTreeMap::new();
        for entry in &manifest.palettized {
            let (_, lut) = raw(&format!("{}.lut", entry.name), Dtype::F16)?;
            let (_, idx) = raw(&format!("{}.idx", entry.name), Dtype::U8)?;
            let scales = match entry.spec.row_scale {
                true => Some(halves(raw(&format!("{}.scale", entry.name), Dtype::F16)?.1)),
                false => None,
            };
            let p = PalettizedTensor {
                rows: entry.rows,
                cols: entry.cols,
                spec: entry.spec,
                lut: halves(lut),
                indices: idx.to_vec(),
                scales,
            };
            p.validate().map_err(|e| bad(path, format!("{}: {e}", entry.name)))?;
            if p.unpacked_indices().iter().any(|&i| usize::from(i) >= p.spec.entries()) {
                return Err(bad(path, format!("{}: an index points past its table", entry.name)));
            }
            palettized.insert(entry.name.clone(), p);
        }
        let mut dense = BTreeMap::new();
        for name in &names {
            if name.ends_with(".lut") || name.ends_with(".idx") || name.ends_with(".scale") {
                continue;
            }
            let t = st.tensor(name).map_err(|e| bad(path, format!("{name}: {e}")))?;
            let values: Vec<f32> = match t.dtype() {
                Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => halves(t.data()).into_iter().map(f16::to_f32).collect(),
                other => return Err(bad(path, format!("tensor {name:?} has unsupported dtype {other:?}"))),
            };
            dense.insert(name.clone(), (t.shape().to_vec(), values));
        }
        for op in linear_ops(&config) {
            if !palettized.contains_key(&op.name()) {
                return Err(bad(path, format!("operation {} is not in the release", op.name())));
            }
        }
        Ok(BaseRelease { manifest, config, tokenizer, palettized, dense })
    }

    /// Reads and checks the release at `path`.
    pub fn open(path: &Path) -> Result<(BaseRelease, Digest), EngineError> {
        let bytes = std::fs::read(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
        let release = BaseRelease::read(&bytes, path)?;
        Ok((release, Digest::of(&bytes)))
    }

    pub fn palettized(&self, name: &str) -> Option<&PalettizedTensor> {
        self.palettized.get(name)
    }

    /// Every linear operation's palettization, in [`linear_ops`] order (a release stores them all).
    pub fn linear_parts(&self, path: &Path) -> Result<Vec<PalettizedTensor>, EngineError> {
        linear_ops(&self.config)
            .iter()
            .map(|op| {
                let name = op.name();
                self.palettized.get(&name).cloned().ok_or_else(|| bad(path, format!("{name} is not palettized")))
            })
            .collect()
    }

    /// The palettized embedding, when the release palettizes it.
    pub fn embedding_part(&self) -> Option<&PalettizedTensor> {
        self.palettized.get(EMBEDDING)
    }

    /// The decoder with every palettized matrix dequantized to f32 at load.
    pub fn to_llama(&self, device: Device, path: &Path) -> Result<Llama, EngineError> {
        let source = |name: &str, shape: &[usize]| -> Result<Tensor, EngineError> {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            if let Some(p) = self.palettized.get(name) {
                if [p.rows, p.cols] != shape {
                    return Err(bad(path, format!("{name} is {}x{}, the config implies {shape:?}", p.rows, p.cols)));
                }
                return Ok(p.dequantize(Device::Cpu));
            }
            match self.dense.get(name) {
                Some((s, values)) if s == shape => Ok(Tensor::from_slice(values).reshape(dims.as_slice())),
                Some((s, _)) => Err(bad(path, format!("{name} has shape {s:?}, the config implies {shape:?}"))),
                None => Err(bad(path, format!("tensor {name:?} is missing"))),
            }
        };
        let mut llama = Llama::load_with(&self.config, device, &source, false)?;
        llama.set_activation_bits(self.manifest.activation_bits);
        Ok(llama)
    }
}

/// `None`, or bits in [`ACTIVATION_BITS`].
pub fn check_activation_bits(bits: Option<u8>) -> Result<(), String> {
    match bits {
        Some(b) if !ACTIVATION_BITS.contains(&b) => Err(format!(
            "activation_bits {b} is out of range: use {} to {} (or none)",
            ACTIVATION_BITS.start(),
            ACTIVATION_BITS.end()
        )),
        _ => Ok(()),
    }
}

/// The metadata key naming the base release a recovery adapter was trained for.
pub const KEY_RECOVERY_BINDING: &str = "adapterci.base_release_digest";

/// Splits a safetensors file into its JSON header and the data after it.
fn split_safetensors(bytes: &[u8]) -> Result<(serde_json::Map<String, serde_json::Value>, &[u8]), String> {
    let len = bytes.get(..8).ok_or("shorter than a safetensors header")?;
    let n = u64::from_le_bytes(len.try_into().map_err(|_| "bad header length")?) as usize;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or("the header runs past the end of the file")?;
    let json: serde_json::Value = serde_json::from_slice(header).map_err(|e| format!("header is not JSON: {e}"))?;
    match json {
        serde_json::Value::Object(map) => Ok((map, &bytes[8 + n..])),
        _ => Err("header is not a JSON object".to_string()),
    }
}

/// The recovery adapter file with the digest of the release it was trained for added to its metadata.
pub fn bind_recovery_adapter(adapter: &[u8], release_digest: &Digest) -> Result<Vec<u8>, EngineError> {
    let (mut header, data) =
        split_safetensors(adapter).map_err(|e| EngineError::Adapter(format!("recovery adapter: {e}")))?;
    let metadata = header.entry("__metadata__").or_insert_with(|| serde_json::json!({}));
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(EngineError::Adapter("recovery adapter: __metadata__ is not an object".to_string()));
    };
    metadata.insert(KEY_RECOVERY_BINDING.to_string(), serde_json::Value::String(release_digest.to_string()));
    let mut json = serde_json::to_vec(&header).map_err(|e| EngineError::Adapter(e.to_string()))?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    Ok(out)
}

/// Refuses a recovery adapter that names no release, or another release than `release_digest`.
pub fn check_recovery_adapter(adapter: &[u8], release_digest: &Digest) -> Result<(), EngineError> {
    let (header, _) = split_safetensors(adapter).map_err(|e| EngineError::Adapter(format!("recovery adapter: {e}")))?;
    let bound = header.get("__metadata__").and_then(|m| m.get(KEY_RECOVERY_BINDING)).and_then(|v| v.as_str());
    match bound {
        Some(digest) if digest == release_digest.to_string() => Ok(()),
        Some(digest) => Err(EngineError::Adapter(format!(
            "this recovery adapter was trained for base release {digest}, not for {release_digest}; train one for this release (adapterci-base recover)"
        ))),
        None => Err(EngineError::Adapter(format!(
            "this adapter names no base release ({KEY_RECOVERY_BINDING} is missing): it is not a recovery adapter"
        ))),
    }
}
