//! A GGUF v3 writer for F32 tensors and metadata: tiny test models and fixtures.

use std::path::Path;

use super::{DEFAULT_ALIGNMENT, GgufValue, gguf_error, parse::MAGIC};
use crate::EngineError;

/// Writes a GGUF v3 file of F32 tensors (shapes outermost first). `general.alignment` in `metadata`, when
/// present, sets the alignment; otherwise it is 32.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<(), EngineError> {
    let bytes = encode_gguf(metadata, tensors).map_err(|reason| gguf_error(path, reason))?;
    std::fs::write(path, bytes).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })
}

/// The bytes [`write_gguf`] writes; `Err` names the tensor or key that cannot be encoded.
pub(crate) fn encode_gguf(
    metadata: &[(String, GgufValue)],
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Vec<u8>, String> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        if shape.iter().product::<usize>() != data.len() {
            return Err(format!("tensor {name:?}: shape {shape:?} does not fit its {} values", data.len()));
        }
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push(RawTensorData { name: name.clone(), shape: shape.clone(), type_id: 0, bytes });
    }
    encode_raw(metadata, &raw)
}

/// A tensor as stored: any ggml type id and its encoded bytes (tests use it to craft quantized tensors).
pub(crate) struct RawTensorData {
    pub name: String,
    /// Outermost first.
    pub shape: Vec<usize>,
    pub type_id: u32,
    pub bytes: Vec<u8>,
}

pub(crate) fn encode_raw(metadata: &[(String, GgufValue)], tensors: &[RawTensorData]) -> Result<Vec<u8>, String> {
    let alignment = match metadata.iter().find(|(key, _)| key == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, GgufValue::U32(a))) if *a > 0 && a.is_power_of_two() => *a as usize,
        Some((_, other)) => return Err(format!("general.alignment must be a u32 power of two, found {other:?}")),
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut out, key);
        out.extend_from_slice(&value_type(value).map_err(|r| format!("metadata key {key:?}: {r}"))?.to_le_bytes());
        write_value(&mut out, value).map_err(|r| format!("metadata key {key:?}: {r}"))?;
    }

    let mut relative_offset = 0usize;
    for tensor in tensors {
        if tensor.shape.is_empty() || tensor.shape.len() > 4 {
            return Err(format!("tensor {:?}: {} dimensions, expected 1 to 4", tensor.name, tensor.shape.len()));
        }
        write_string(&mut out, &tensor.name);
        out.extend_from_slice(&(tensor.shape.len() as u32).to_le_bytes());
        for &dim in tensor.shape.iter().rev() {
            out.extend_from_slice(&(dim as u64).to_le_bytes());
        }
        out.extend_from_slice(&tensor.type_id.to_le_bytes());
        out.extend_from_slice(&(relative_offset as u64).to_le_bytes());
        relative_offset = (relative_offset + tensor.bytes.len()).div_ceil(alignment) * alignment;
    }
    for tensor in tensors {
        out.resize(out.len().div_ceil(alignment) * alignment, 0);
        out.extend_from_slice(&tensor.bytes);
    }
    Ok(out)
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(value: &GgufValue) -> Result<u32, String> {
    Ok(match value {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(items) => {
            array_element_type(items)?;
            9
        }
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    })
}

/// GGUF arrays are homogeneous; an empty array is written as an array of u32.
fn array_element_type(items: &[GgufValue]) -> Result<u32, String> {
    let Some(first) = items.first() else { return Ok(4) };
    let element_type = value_type(first)?;
    for (i, item) in items.iter().enumerate() {
        if value_type(item)? != element_type {
            return Err(format!(
                "array mixes {} and {} (element {i}); GGUF arrays hold one type",
                first.type_name(),
                item.type_name()
            ));
        }
    }
    Ok(element_type)
}

fn write_value(out: &mut Vec<u8>, value: &GgufValue) -> Result<(), String> {
    match value {
        GgufValue::U8(v) => out.push(*v),
        GgufValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::Array(items) => {
            out.extend_from_slice(&array_element_type(items)?.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item)?;
            }
        }
    }
    Ok(())
}
