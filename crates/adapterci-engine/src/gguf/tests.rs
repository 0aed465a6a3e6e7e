//! Tests of the GGUF reader and writer: round trips, dimension order, dequantization and malformed input.

use std::path::PathBuf;

use super::writer::{RawTensorData, encode_gguf, encode_raw};
use super::*;

fn s(value: &str) -> GgufValue {
    GgufValue::String(value.to_owned())
}

fn write_temp(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

fn open_bytes(bytes: &[u8]) -> Result<GgufFile, EngineError> {
    let (_dir, path) = write_temp(bytes);
    GgufFile::open(&path)
}

/// Opening `bytes` must fail with a GGUF error whose reason contains every one of `expected`.
fn check_error(bytes: &[u8], expected: &[&str]) {
    match open_bytes(bytes) {
        Err(EngineError::Gguf { path, reason }) => {
            assert!(path.ends_with("model.gguf"), "error should name the file: {path:?}");
            for needle in expected {
                assert!(reason.contains(needle), "reason {reason:?} should contain {needle:?}");
            }
        }
        Err(other) => panic!("expected a GGUF error, got {other:?}"),
        Ok(_) => panic!("expected an error containing {expected:?}"),
    }
}

fn all_value_types() -> Vec<(String, GgufValue)> {
    vec![
        ("a.u8".into(), GgufValue::U8(200)),
        ("a.i8".into(), GgufValue::I8(-100)),
        ("a.u16".into(), GgufValue::U16(60000)),
        ("a.i16".into(), GgufValue::I16(-30000)),
        ("a.u32".into(), GgufValue::U32(4_000_000_000)),
        ("a.i32".into(), GgufValue::I32(-2_000_000_000)),
        ("a.u64".into(), GgufValue::U64(1 << 40)),
        ("a.i64".into(), GgufValue::I64(-(1 << 40))),
        ("a.f32".into(), GgufValue::F32(1.5e-5)),
        ("a.f64".into(), GgufValue::F64(100000.0)),
        ("a.bool".into(), GgufValue::Bool(true)),
        ("a.string".into(), s("héllo")),
        ("a.strings".into(), GgufValue::Array(vec![s("x"), s(""), s("<|im_end|>")])),
        ("a.i32s".into(), GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-3)])),
        ("a.nested".into(), GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U8(1)]), GgufValue::Array(vec![])])),
    ]
}

fn simple_file() -> Vec<u8> {
    let tensors = vec![
        ("token_embd.weight".to_owned(), vec![3, 5], (0..15).map(|v| v as f32).collect()),
        ("norm".to_owned(), vec![5], vec![1.0, -2.0, 3.5, 0.0, 1e-3]),
    ];
    encode_gguf(&all_value_types(), &tensors).expect("encode")
}

#[test]
fn round_trip_keeps_metadata_and_tensors() {
    let (_dir, path) = write_temp(b"");
    let tensors = vec![
        ("token_embd.weight".to_owned(), vec![3, 5], (0..15).map(|v| v as f32 * 0.25).collect::<Vec<_>>()),
        ("blk.0.attn_norm.weight".to_owned(), vec![5], vec![1.0, -2.0, 3.5, 0.0, 1e-3]),
        ("four_d".to_owned(), vec![2, 1, 3, 2], (0..12).map(|v| -(v as f32)).collect()),
    ];
    write_gguf(&path, &all_value_types(), &tensors).expect("write");
    let file = GgufFile::open(&path).expect("open");
    assert_eq!(file.version(), 3);
    for (key, value) in all_value_types() {
        assert_eq!(file.get(&key), Some(&value), "{key}");
    }
    assert_eq!(file.tensor_names(), vec!["token_embd.weight", "blk.0.attn_norm.weight", "four_d"]);
    for (name, shape, data) in &tensors {
        let (read_shape, read_data) = file.dequantize(name).expect("dequantize");
        assert_eq!(&read_shape, shape, "{name}");
        assert_eq!(&read_data, data, "{name}");
        assert_eq!(file.tensor_info(name).expect("info").offset % DEFAULT_ALIGNMENT, 0);
    }
}

#[test]
fn shape_is_outermost_first_while_the_file_lists_ne0_first() {
    let bytes = encode_gguf(&[], &[("w".to_owned(), vec![3, 5], vec![0.0; 15])]).expect("encode");
    // Header (4+4+8+8), name length 8 + "w", n_dims 4, then ne[0] and ne[1].
    let dims_at = 24 + 8 + 1 + 4;
    let ne0 = u64::from_le_bytes(bytes[dims_at..dims_at + 8].try_into().expect("8 bytes"));
    let ne1 = u64::from_le_bytes(bytes[dims_at + 8..dims_at + 16].try_into().expect("8 bytes"));
    assert_eq!((ne0, ne1), (5, 3), "GGUF lists the row length first");
    let file = open_bytes(&bytes).expect("open");
    assert_eq!(file.tensor_info("w").expect("info").shape, vec![3, 5]);
}

#[test]
fn custom_alignment_is_honoured() {
    let metadata = vec![("general.alignment".to_owned(), GgufValue::U32(64))];
    let tensors = vec![("a".to_owned(), vec![3], vec![1.0, 2.0, 3.0]), ("b".to_owned(), vec![2], vec![4.0, 5.0])];
    let file = open_bytes(&encode_gguf(&metadata, &tensors).expect("encode")).expect("open");
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    assert_eq!(file.tensor_info("b").expect("b").offset - file.data_offset(), 64);
    assert_eq!(file.dequantize("b").expect("b").1, vec![4.0, 5.0]);
}

#[test]
fn typed_getters_accept_fitting_integers_and_name_the_key_otherwise() {
    let file = open_bytes(&simple_file()).expect("open");
    assert_eq!(file.get_u32("a.u8").expect("u8"), 200);
    assert!(file.get_u32("a.u64").map_err(|e| e.to_string()).expect_err("too big").contains("\"a.u64\""));
    assert_eq!(file.get_f32("a.f64").expect("f64"), 100000.0);
    assert_eq!(file.get_f32("a.i16").expect("i16"), -30000.0);
    assert_eq!(file.get_str("a.string").expect("string"), "héllo");
    assert_eq!(file.get_string_array("a.strings").expect("strings"), vec!["x", "", "<|im_end|>"]);
    assert_eq!(file.get_i32_array("a.i32s").expect("i32s"), vec![1, -3]);

    let check = |result: Result<String, EngineError>, expected: &[&str]| {
        let message = result.expect_err("should fail").to_string();
        for needle in expected {
            assert!(message.contains(needle), "{message:?} should contain {needle:?}");
        }
    };
    check(file.get_u32("llama.block_count").map(|v| v.to_string()), &["\"llama.block_count\"", "missing"]);
    check(file.get_u32("a.i8").map(|v| v.to_string()), &["\"a.i8\"", "-100"]);
    check(file.get_u32("a.string").map(|v| v.to_string()), &["\"a.string\"", "integer", "string"]);
    check(file.get_str("a.u8").map(str::to_owned), &["\"a.u8\"", "string", "u8"]);
    check(file.get_f32("a.bool").map(|v| v.to_string()), &["\"a.bool\"", "number"]);
    check(file.get_string_array("a.i32s").map(|v| v.join(",")), &["\"a.i32s\"", "element 0"]);
    check(file.get_i32_array("a.string").map(|v| format!("{v:?}")), &["\"a.string\"", "array"]);
    check(file.dequantize("missing.weight").map(|_| String::new()), &["no tensor named \"missing.weight\""]);
}

fn f16_bits(value: f32) -> [u8; 2] {
    half::f16::from_f32(value).to_le_bytes()
}

fn check_dequant(type_id: u32, row: usize, bytes: Vec<u8>, expected: &[f32]) {
    let tensor = RawTensorData { name: "q".into(), shape: vec![expected.len() / row, row], type_id, bytes };
    let file = open_bytes(&encode_raw(&[], &[tensor]).expect("encode")).expect("open");
    let (shape, values) = file.dequantize("q").expect("dequantize");
    assert_eq!(shape, vec![expected.len() / row, row]);
    assert_eq!(values, expected, "ggml type {type_id}");
}

#[test]
fn dequantizes_float_formats() {
    let values = [1.0f32, -0.5, 65504.0, 3.0e-5];
    check_dequant(1, 2, values.iter().flat_map(|&v| f16_bits(v)).collect(), &[1.0, -0.5, 65504.0, 2.9981136e-5]);
    let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    check_dequant(30, 4, bf16, &[1.0, -0.5, 65536.0, 3.0040741e-5]);
}

#[test]
fn dequantizes_q8_0_and_q4_blocks() {
    let mut q8 = f16_bits(0.5).to_vec();
    q8.extend((0..32).map(|j: i32| (j * 8 - 128) as i8 as u8));
    check_dequant(8, 32, q8, &(0..32).map(|j| (j * 8 - 128) as f32 * 0.5).collect::<Vec<_>>());

    // Low nibbles hold values 0..16 of the block, high nibbles values 16..32.
    let nibbles: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
    let mut q4_0 = f16_bits(2.0).to_vec();
    q4_0.extend(&nibbles);
    let expected: Vec<f32> =
        (0..16).map(|j| (j - 8) as f32 * 2.0).chain((0..16).map(|j| (15 - j - 8) as f32 * 2.0)).collect();
    check_dequant(2, 32, q4_0, &expected);

    let mut q4_1 = [f16_bits(0.5), f16_bits(-1.0)].concat();
    q4_1.extend(&nibbles);
    let expected: Vec<f32> =
        (0..16).map(|j| j as f32 * 0.5 - 1.0).chain((0..16).map(|j| (15 - j) as f32 * 0.5 - 1.0)).collect();
    check_dequant(3, 32, q4_1, &expected);
}

#[test]
fn dequantizes_q5_blocks() {
    // The fifth bit of value j is bit j of qh: set it for every third value.
    let qh: u32 = (0..32).filter(|j| j % 3 == 0).map(|j| 1u32 << j).sum();
    let nibbles: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
    let five_bit = |j: usize| {
        let low = if j < 16 { j } else { 15 - (j - 16) };
        low + if j.is_multiple_of(3) { 16 } else { 0 }
    };
    let mut q5_0 = f16_bits(0.25).to_vec();
    q5_0.extend(qh.to_le_bytes());
    q5_0.extend(&nibbles);
    check_dequant(6, 32, q5_0, &(0..32).map(|j| (five_bit(j) as f32 - 16.0) * 0.25).collect::<Vec<_>>());

    let mut q5_1 = [f16_bits(0.25), f16_bits(3.0)].concat();
    q5_1.extend(qh.to_le_bytes());
    q5_1.extend(&nibbles);
    check_dequant(7, 32, q5_1, &(0..32).map(|j| five_bit(j) as f32 * 0.25 + 3.0).collect::<Vec<_>>());
}

// ---- malformed input ----

fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(version.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend(kvs.to_le_bytes());
    out
}

fn push_str(out: &mut Vec<u8>, value: &str) {
    out.extend((value.len() as u64).to_le_bytes());
    out.extend(value.as_bytes());
}

#[test]
fn rejects_short_or_foreign_headers() {
    check_error(b"", &["truncated", "magic", "offset 0"]);
    check_error(b"GGU", &["truncated", "magic"]);
    check_error(b"GGML\x03\0\0\0", &["not a GGUF file"]);
    check_error(b"GGUF\x03\0", &["truncated", "version", "offset 4"]);
    check_error(&header(1, 0, 0), &["unsupported GGUF version 1"]);
    check_error(&header(0x0300_0000, 0, 0), &["unsupported GGUF version"]);
    check_error(&header(3, 0, 0)[..12], &["truncated", "tensor count", "offset 8"]);
    check_error(&header(3, 0, 0)[..20], &["truncated", "metadata count", "offset 16"]);
}

#[test]
fn rejects_absurd_counts() {
    check_error(&header(3, u64::MAX, 0), &["tensor count", "offset 8", "18446744073709551615"]);
    check_error(&header(3, 0, 1 << 40), &["metadata count", "offset 16"]);
    let mut bytes = header(3, 0, 1);
    push_str(&mut bytes, "tokens");
    bytes.extend(9u32.to_le_bytes());
    bytes.extend(8u32.to_le_bytes());
    bytes.extend((1u64 << 50).to_le_bytes());
    check_error(&bytes, &["\"tokens\"", "array length"]);
}

#[test]
fn rejects_bad_metadata_values() {
    let entry = |key: &str, value_type: u32, value: &[u8]| {
        let mut bytes = header(3, 0, 1);
        push_str(&mut bytes, key);
        bytes.extend(value_type.to_le_bytes());
        bytes.extend(value);
        bytes
    };
    // A key whose length runs past the end of the file.
    let mut long_key = header(3, 0, 1);
    long_key.extend(1000u64.to_le_bytes());
    long_key.extend(b"general.name and then the file ends");
    check_error(&long_key, &["key of metadata entry 0", "offset 24", "length 1000", "past the end"]);

    let mut long_value = 500u64.to_le_bytes().to_vec();
    long_value.extend(b"short");
    check_error(&entry("general.name", 8, &long_value), &["\"general.name\"", "length 500", "past the end"]);
    check_error(&entry("x.weird", 13, &[0; 8]), &["\"x.weird\"", "unknown value type 13", "offset"]);
    check_error(&entry("x.flag", 7, &[2]), &["\"x.flag\"", "bool", "expected 0 or 1"]);
    check_error(&entry("x.u32", 4, &[1, 2]), &["\"x.u32\"", "truncated", "u32 value"]);
    let mut bad_utf8 = 2u64.to_le_bytes().to_vec();
    bad_utf8.extend([0xff, 0xfe]);
    check_error(&entry("x.text", 8, &bad_utf8), &["\"x.text\"", "UTF-8"]);
    let mut bad_element = 99u32.to_le_bytes().to_vec();
    bad_element.extend(1u64.to_le_bytes());
    check_error(&entry("x.list", 9, &bad_element), &["\"x.list\"", "unknown array element type 99"]);
    let mut truncated_element = 8u32.to_le_bytes().to_vec();
    truncated_element.extend(2u64.to_le_bytes());
    truncated_element.extend(1u64.to_le_bytes());
    truncated_element.extend(b"a");
    truncated_element.extend(1u64.to_le_bytes());
    check_error(&entry("x.list", 9, &truncated_element), &["\"x.list\"", "array element 1", "past the end"]);

    let duplicated = encode_gguf(&[("k".into(), GgufValue::U8(1)), ("k".into(), GgufValue::U8(2))], &[]);
    check_error(&duplicated.expect("encode"), &["\"k\"", "appears twice"]);
    let alignment = encode_gguf(&[("general.alignment".into(), GgufValue::U32(3))], &[]);
    assert!(alignment.is_err(), "the writer refuses a bad alignment too");
}

fn raw_file(tensors: Vec<RawTensorData>) -> Vec<u8> {
    encode_raw(&[], &tensors).expect("encode")
}

fn raw(name: &str, shape: Vec<usize>, type_id: u32, n_bytes: usize) -> RawTensorData {
    RawTensorData { name: name.into(), shape, type_id, bytes: vec![0; n_bytes] }
}

#[test]
fn rejects_bad_tensor_infos() {
    let mut truncated = raw_file(vec![raw("blk.0.ffn_up.weight", vec![2, 4], 0, 32)]);
    truncated.truncate(truncated.len() - 1);
    check_error(&truncated, &["\"blk.0.ffn_up.weight\"", "past the end of the file"]);
    check_error(&raw_file(vec![raw("t", vec![2, 32], 16, 64)]), &["\"t\"", "ggml type 16 (IQ2_XXS)", "not supported"]);
    check_error(&raw_file(vec![raw("t", vec![1, 32], 77, 64)]), &["\"t\"", "unknown ggml type 77"]);
    check_error(&raw_file(vec![raw("t", vec![2, 16], 2, 18)]), &["\"t\"", "row length 16", "Q4_0"]);
    check_error(&raw_file(vec![raw("t", vec![1, 1 << 62, 8], 0, 0)]), &["\"t\"", "too"]);
    check_error(&raw_file(vec![raw("t", vec![2], 0, 8), raw("t", vec![2], 0, 8)]), &["\"t\"", "appears twice"]);

    // Hand-edit the tensor info: zero dimensions, then a misaligned data offset.
    let good = raw_file(vec![raw("t", vec![2], 0, 8)]);
    let n_dims_at = 24 + 8 + 1;
    let mut zero_dims = good.clone();
    zero_dims[n_dims_at..n_dims_at + 4].copy_from_slice(&0u32.to_le_bytes());
    check_error(&zero_dims, &["\"t\"", "0 dimensions"]);
    let offset_at = n_dims_at + 4 + 8 + 4;
    let mut misaligned = good;
    misaligned[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
    check_error(&misaligned, &["\"t\"", "offset 4", "alignment 32"]);
    let mut header_cut = raw_file(vec![raw("t", vec![2], 0, 8)]);
    header_cut.truncate(offset_at + 3);
    check_error(&header_cut, &["\"t\"", "truncated", "data offset"]);
}

/// A deterministic K-quant block; expected sums come from gguf-py's `quants.dequantize` on the same bytes
/// (`block()` in Python: `((i*37 + 11) * 7 + (i >> 3)) % 256`, then the f16 scale fields overwritten).
fn k_block(n_bytes: usize, f16_fields: &[(usize, f32)]) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..n_bytes).map(|i| (((i * 37 + 11) * 7 + (i >> 3)) % 256) as u8).collect();
    for &(at, value) in f16_fields {
        bytes[at..at + 2].copy_from_slice(&f16_bits(value));
    }
    bytes
}

fn check_k_quant(type_id: u32, bytes: Vec<u8>, sum: f64, weighted_sum: f64, first: [f32; 4]) {
    let tensor = RawTensorData { name: "k".into(), shape: vec![1, 256], type_id, bytes };
    let file = open_bytes(&encode_raw(&[], &[tensor]).expect("encode")).expect("open");
    let (_, values) = file.dequantize("k").expect("dequantize");
    let total: f64 = values.iter().map(|&v| v as f64).sum();
    let weighted: f64 = values.iter().enumerate().map(|(i, &v)| v as f64 * (i + 1) as f64).sum();
    assert_eq!(values[..4], first, "ggml type {type_id}");
    assert_eq!((total, weighted), (sum, weighted_sum), "ggml type {type_id}");
}

#[test]
#[allow(clippy::excessive_precision)] // exact binary fractions, as gguf-py printed them
fn dequantizes_k_quants_like_gguf_py() {
    check_k_quant(
        12,
        k_block(144, &[(0, 0.03125), (2, 0.0078125)]),
        1606.3125,
        205485.125,
        [11.421875, 1.265625, 3.609375, 5.953125],
    );
    check_k_quant(
        13,
        k_block(176, &[(0, 0.015625), (2, 0.01171875)]),
        1519.90625,
        197381.46875,
        [6.9765625, 1.8984375, 9.3203125, 4.2421875],
    );
    check_k_quant(
        14,
        k_block(210, &[(208, 0.001953125)]),
        21.494140625,
        6990.533203125,
        [0.533203125, 5.6875, -3.376953125, -1.06640625],
    );
}
