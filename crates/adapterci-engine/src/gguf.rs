//! GGUF v2/v3 reader over a memory map: header, metadata, tensor infos and dequantization to f32.
//!
//! Format reference: ggml's `docs/gguf.md` and `gguf-py/gguf/constants.py`. GGUF lists a tensor's dimensions
//! fastest-varying first (`ne[0]` is the row length); [`TensorInfo::shape`] is outermost first, so
//! `token_embd.weight` reads as `[vocab, hidden]`, the row-major layout torch expects.

mod dequant;
mod parse;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::EngineError;

pub use writer::write_gguf;

/// The alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The GGUF name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// The value as a signed integer when it is an integer of any width that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a float when it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            // Integers are accepted because some converters write e.g. `rope.freq_base` as an integer.
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// The storage type of a tensor (ggml's `ggml_type`), limited to those this reader can dequantize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl GgmlType {
    /// The type for a ggml type id, or the id's ggml name when this reader cannot dequantize it.
    pub fn from_id(id: u32) -> Result<GgmlType, String> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            other => return Err(unsupported_type_name(other)),
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// Elements per block: a row length must be a multiple of it.
    pub fn block_elements(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => 32,
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
        }
    }
}

fn unsupported_type_name(id: u32) -> String {
    const NAMES: [&str; 42] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
        "NVFP4",
        "?",
    ];
    match NAMES.get(id as usize) {
        Some(name) if *name != "?" => format!("ggml type {id} ({name})"),
        _ => format!("unknown ggml type {id}"),
    }
}

/// Where a tensor lives in the file and how it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Outermost dimension first (the reverse of GGUF's `ne` order).
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: usize,
    pub n_bytes: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open GGUF file: parsed header and metadata, and the memory map its tensors are read from.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: usize,
    data_offset: usize,
    mmap: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

pub(crate) fn gguf_error(path: &Path, reason: impl Into<String>) -> EngineError {
    EngineError::Gguf { path: path.to_path_buf(), reason: reason.into() }
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap, EngineError> {
    let io_error = |source| EngineError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_error)?;
    // SAFETY: the map is read-only and every access is bounds-checked against its length. Truncating the file
    // while it is mapped could fault, as it would for llama.cpp or candle; model files are not edited in place.
    unsafe { Mmap::map(&file) }.map_err(io_error)
}

impl GgufFile {
    /// Opens and validates a GGUF file: every tensor's data must lie inside the file.
    pub fn open(path: &Path) -> Result<GgufFile, EngineError> {
        let mmap = map_file(path)?;
        let parsed = parse::parse(&mmap).map_err(|reason| gguf_error(path, reason))?;
        let tensor_index = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            tensor_index,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file (e.g. to digest it).
    pub fn as_bytes(&self) -> &[u8] {
        &self.mmap
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&GgufValue, EngineError> {
        self.get(key).ok_or_else(|| gguf_error(&self.path, format!("metadata key {key:?} is missing")))
    }

    fn wrong_type(&self, key: &str, expected: &str, value: &GgufValue) -> EngineError {
        gguf_error(&self.path, format!("metadata key {key:?} should be {expected}, found {}", value.type_name()))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, EngineError> {
        let value = self.require(key)?;
        value.as_str().ok_or_else(|| self.wrong_type(key, "a string", value))
    }

    /// Any integer type whose value fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32, EngineError> {
        let value = self.require(key)?;
        let number = value.as_i64().ok_or_else(|| self.wrong_type(key, "an integer", value))?;
        u32::try_from(number)
            .map_err(|_| gguf_error(&self.path, format!("metadata key {key:?} is {number}, outside 0..=4294967295")))
    }

    /// Any float or integer, converted to f32.
    pub fn get_f32(&self, key: &str) -> Result<f32, EngineError> {
        let value = self.require(key)?;
        value.as_f64().map(|v| v as f32).ok_or_else(|| self.wrong_type(key, "a number", value))
    }

    fn get_array(&self, key: &str) -> Result<&[GgufValue], EngineError> {
        match self.require(key)? {
            GgufValue::Array(items) => Ok(items),
            other => Err(self.wrong_type(key, "an array", other)),
        }
    }

    pub fn get_string_array(&self, key: &str) -> Result<Vec<String>, EngineError> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    let found = item.type_name();
                    gguf_error(
                        &self.path,
                        format!("metadata key {key:?}: element {i} should be a string, found {found}"),
                    )
                })
            })
            .collect()
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, EngineError> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(|| {
                    gguf_error(&self.path, format!("metadata key {key:?}: element {i} is not an i32 ({item:?})"))
                })
            })
            .collect()
    }

    /// Tensor names in file order.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's raw stored bytes.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], EngineError> {
        let info = self.tensor_info(name).ok_or_else(|| gguf_error(&self.path, format!("no tensor named {name:?}")))?;
        // `parse` checked that the range lies inside the file.
        self.mmap
            .get(info.offset..info.offset + info.n_bytes)
            .ok_or_else(|| gguf_error(&self.path, format!("tensor {name:?} lies past the end of the file")))
    }

    /// The tensor as f32 values, row-major, with its shape outermost first.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), EngineError> {
        let bytes = self.tensor_bytes(name)?;
        let info = &self.tensors[self.tensor_index[name]];
        let mut out = vec![0.0f32; info.n_elements()];
        dequant::dequantize_into(info.ggml_type, bytes, &mut out)
            .map_err(|reason| gguf_error(&self.path, format!("tensor {name:?}: {reason}")))?;
        Ok((info.shape.clone(), out))
    }
}
