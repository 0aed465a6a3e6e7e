//! Parses a GGUF byte buffer into metadata and tensor infos; every failure names what and where.

use std::collections::{BTreeMap, HashSet};

use super::{DEFAULT_ALIGNMENT, GgmlType, GgufValue, TensorInfo};

pub(super) const MAGIC: &[u8; 4] = b"GGUF";
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are allowed by the format; deeper nesting than this is certainly corrupt.
const MAX_ARRAY_DEPTH: usize = 4;

pub(super) struct Parsed {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    pub data_offset: usize,
}

/// A cursor over the file that reports the offset of anything it cannot read.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} at offset {} needs {n} bytes but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count that must be satisfiable by the bytes left, given each item needs at least `min_item_bytes`.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, String> {
        let at = self.pos;
        let count = self.u64(what)?;
        let fits = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(min_item_bytes))
            .is_some_and(|needed| needed <= self.remaining());
        if !fits {
            return Err(format!(
                "{what} at offset {at} is {count}, more than the {} bytes left in the file can hold",
                self.remaining()
            ));
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{what} at offset {at} has length {len}, past the end of the file ({} bytes remain)",
                self.remaining()
            ));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} at offset {at} is not valid UTF-8"))
    }
}

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut cursor = Cursor { bytes, pos: 0 };
    let magic = cursor.take(4, "magic")?;
    if magic != MAGIC {
        return Err(format!("not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""));
    }
    let version = cursor.u32("version")?;
    if version != 2 && version != 3 {
        return Err(format!("unsupported GGUF version {version} (this reader supports 2 and 3)"));
    }
    // A tensor info needs at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes.
    let tensor_count = cursor.count("tensor count", 24)?;
    // A metadata entry needs at least 8 (key length) + 4 (type) + 1 (value) bytes.
    let metadata_count = cursor.count("metadata count", 13)?;

    let mut metadata = BTreeMap::new();
    for index in 0..metadata_count {
        let key_at = cursor.pos;
        let key = cursor.string(&format!("key of metadata entry {index}"))?;
        let value = read_value_of_declared_type(&mut cursor, 0)
            .map_err(|reason| format!("metadata key {key:?} (entry {index}, at offset {key_at}): {reason}"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!("metadata key {key:?} appears twice (second at offset {key_at})"));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as usize,
        Some(other) => {
            return Err(format!("general.alignment must be a u32 power of two, found {other:?}"));
        }
    };

    let mut raw_tensors = Vec::with_capacity(tensor_count);
    let mut names = HashSet::with_capacity(tensor_count);
    for index in 0..tensor_count {
        let raw = read_tensor_info(&mut cursor, index)?;
        if !names.insert(raw.name.clone()) {
            return Err(format!("tensor {:?} appears twice", raw.name));
        }
        raw_tensors.push(raw);
    }

    let data_offset = cursor.pos.div_ceil(alignment) * alignment;
    let tensors = raw_tensors
        .into_iter()
        .map(|raw| place_tensor(raw, data_offset, alignment, bytes.len()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parsed { version, metadata, tensors, alignment, data_offset })
}

fn read_value_of_declared_type(cursor: &mut Cursor<'_>, depth: usize) -> Result<GgufValue, String> {
    let type_at = cursor.pos;
    let value_type = cursor.u32("value type")?;
    read_value(cursor, value_type, depth).map_err(|reason| {
        if reason.starts_with("unknown value type") { format!("{reason} at offset {type_at}") } else { reason }
    })
}

/// The smallest encoding of a value of `value_type`, used to bound array counts before allocating.
fn min_value_bytes(value_type: u32) -> usize {
    match value_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12, // element type + count
        _ => 1,
    }
}

fn read_value(cursor: &mut Cursor<'_>, value_type: u32, depth: usize) -> Result<GgufValue, String> {
    Ok(match value_type {
        0 => GgufValue::U8(cursor.array::<1>("u8 value")?[0]),
        1 => GgufValue::I8(i8::from_le_bytes(cursor.array("i8 value")?)),
        2 => GgufValue::U16(u16::from_le_bytes(cursor.array("u16 value")?)),
        3 => GgufValue::I16(i16::from_le_bytes(cursor.array("i16 value")?)),
        4 => GgufValue::U32(cursor.u32("u32 value")?),
        5 => GgufValue::I32(i32::from_le_bytes(cursor.array("i32 value")?)),
        6 => GgufValue::F32(f32::from_le_bytes(cursor.array("f32 value")?)),
        7 => {
            let at = cursor.pos;
            match cursor.array::<1>("bool value")?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                other => return Err(format!("bool value at offset {at} is {other}, expected 0 or 1")),
            }
        }
        8 => GgufValue::String(cursor.string("string value")?),
        9 => read_array(cursor, depth)?,
        10 => GgufValue::U64(cursor.u64("u64 value")?),
        11 => GgufValue::I64(i64::from_le_bytes(cursor.array("i64 value")?)),
        12 => GgufValue::F64(f64::from_le_bytes(cursor.array("f64 value")?)),
        other => return Err(format!("unknown value type {other}")),
    })
}

fn read_array(cursor: &mut Cursor<'_>, depth: usize) -> Result<GgufValue, String> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {}", cursor.pos));
    }
    let type_at = cursor.pos;
    let element_type = cursor.u32("array element type")?;
    if element_type > 12 {
        return Err(format!("unknown array element type {element_type} at offset {type_at}"));
    }
    let count = cursor.count("array length", min_value_bytes(element_type))?;
    let mut items = Vec::with_capacity(count);
    for index in 0..count {
        let item =
            read_value(cursor, element_type, depth + 1).map_err(|reason| format!("array element {index}: {reason}"))?;
        items.push(item);
    }
    Ok(GgufValue::Array(items))
}

struct RawTensor {
    name: String,
    shape: Vec<usize>,
    ggml_type: GgmlType,
    relative_offset: u64,
    n_bytes: usize,
}

fn read_tensor_info(cursor: &mut Cursor<'_>, index: usize) -> Result<RawTensor, String> {
    let at = cursor.pos;
    let name = cursor.string(&format!("name of tensor info {index}"))?;
    let context = |reason: String| format!("tensor {name:?} (info {index}, at offset {at}): {reason}");
    let n_dims = cursor.u32("dimension count").map_err(context)?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(context(format!("has {n_dims} dimensions, expected 1 to {MAX_DIMS}")));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let dim = cursor.u64("dimension").map_err(context)?;
        let dim = usize::try_from(dim).map_err(|_| context(format!("dimension {dim} is too large")))?;
        ne.push(dim);
    }
    let type_id = cursor.u32("ggml type").map_err(context)?;
    let ggml_type =
        GgmlType::from_id(type_id).map_err(|name| context(format!("uses {name}, which is not supported")))?;
    let relative_offset = cursor.u64("data offset").map_err(context)?;

    let n_elements = ne
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| context(format!("shape {ne:?} has too many elements")))?;
    let block = ggml_type.block_elements();
    if ne[0] % block != 0 {
        return Err(context(format!("row length {} is not a multiple of the {ggml_type:?} block size {block}", ne[0])));
    }
    let n_bytes = (n_elements / block)
        .checked_mul(ggml_type.block_bytes())
        .ok_or_else(|| context(format!("shape {ne:?} is too large")))?;
    ne.reverse();
    Ok(RawTensor { name, shape: ne, ggml_type, relative_offset, n_bytes })
}

fn place_tensor(raw: RawTensor, data_offset: usize, alignment: usize, file_len: usize) -> Result<TensorInfo, String> {
    let name = &raw.name;
    if !raw.relative_offset.is_multiple_of(alignment as u64) {
        return Err(format!(
            "tensor {name:?}: data offset {} is not a multiple of the alignment {alignment}",
            raw.relative_offset
        ));
    }
    let start = usize::try_from(raw.relative_offset).ok().and_then(|o| o.checked_add(data_offset));
    let end = start.and_then(|s| s.checked_add(raw.n_bytes));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(TensorInfo {
            name: raw.name,
            shape: raw.shape,
            ggml_type: raw.ggml_type,
            offset: start,
            n_bytes: raw.n_bytes,
        }),
        _ => Err(format!(
            "tensor {name:?}: data at offset {} + {} bytes lies past the end of the file ({file_len} bytes)",
            data_offset as u128 + raw.relative_offset as u128,
            raw.n_bytes
        )),
    }
}
