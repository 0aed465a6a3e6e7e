//! Tests of the streamed merged state dict: the same bytes as the in-memory merge it replaced, written one
//! bounded piece at a time, and write failures reported as errors.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::rc::Rc;

use adapterci_core::training::{AdapterConfig, LoraTarget};
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind};

use super::*;
use crate::config::LlamaConfig;
use crate::gguf::GgufFile;
use crate::lora::randomize_b_for_tests;
use crate::lora::{TensorLayout, write_safetensors_streamed};
use crate::tiny::write_model;
use crate::tokenizer::tiny_tokenizer_spec;

/// A tiny model (tied or untied embedding) and an adapter with random B on every target of layer 1 only, so
/// the file has adapted and untouched linear weights.
struct Fixture {
    _dir: tempfile::TempDir,
    llama: Llama,
    lora: LoraWeights,
}

fn fixture(tie_word_embeddings: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny.gguf");
    let spec = tiny_tokenizer_spec();
    let config = LlamaConfig { tie_word_embeddings, ..LlamaConfig::tiny(spec.tokens.len()) };
    write_model(&path, &config, &spec, 7).expect("write model");
    let file = GgufFile::open(&path).expect("open");
    let config = LlamaConfig::from_gguf(&file).expect("config");
    let llama = Llama::load(&file, &config, Device::Cpu).expect("load");
    let adapter =
        AdapterConfig { rank: 4, alpha: 8.0, targets: LoraTarget::ALL.to_vec(), layers: vec![1], dtype: "f32".into() };
    let mut lora = LoraWeights::init_standard(&adapter, 0.0, &config, 3, Device::Cpu).expect("adapter");
    randomize_b_for_tests(&mut lora, 5);
    Fixture { _dir: dir, llama, lora }
}

/// The merge as it was before it streamed (commit 75c7d33), encoder included: every merged tensor built in
/// memory, then the safetensors layout written from them. The streamed bytes must equal these.
fn reference_merged_state_dict(llama: &Llama, lora: &LoraWeights) -> Vec<u8> {
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
    let weights = llama.weights();
    assert_eq!(names.len(), weights.len());
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, weight) in names.into_iter().zip(weights) {
        let mut tensor = weight.to_device(Device::Cpu).to_kind(Kind::Float);
        if let Some((layer, target)) =
            lora.modules().into_iter().find(|&(l, t)| name == format!("model.layers.{l}.{}.weight", t.hf_module()))
            && let Some(delta) = delta_weight(lora, layer, target)
        {
            tensor = tensor.f_add(&delta.to_device(Device::Cpu)).expect("add");
        }
        let tensor = tensor.contiguous();
        let mut bytes = vec![0u8; tensor.numel() * 4];
        tensor.f_copy_data_u8(&mut bytes, tensor.numel()).expect("copy");
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        tensors.insert(name, (shape, bytes));
    }
    // the encoder of that time: one dtype, so the data is in name order; the header a serde_json map
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut offset = 0;
    for (name, (shape, bytes)) in &tensors {
        let entry = serde_json::json!({
            "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes.len()]
        });
        header.insert(name.clone(), entry);
        offset += bytes.len();
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    for (_, bytes) in tensors.values() {
        out.extend(bytes);
    }
    out
}

#[test]
fn streamed_bytes_equal_the_in_memory_merge() {
    for tied in [true, false] {
        let Fixture { llama, lora, .. } = fixture(tied);
        let want = reference_merged_state_dict(&llama, &lora);
        assert!(merged_state_dict(&llama, &lora).expect("merge") == want, "merged_state_dict, tied {tied}");
        let mut written = Vec::new();
        let length = write_merged_state_dict(&llama, &lora, &mut written).expect("write");
        assert_eq!(length, want.len() as u64);
        assert!(written == want, "write_merged_state_dict, tied {tied}");
    }
}

/// Records the size of every write and the bytes written.
#[derive(Default)]
struct RecordingWriter {
    bytes: Vec<u8>,
    writes: Vec<usize>,
}

impl Write for RecordingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        self.writes.push(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn largest_tensor_bytes(file: &[u8]) -> usize {
    let file = SafeTensors::deserialize(file).expect("parse");
    file.tensors().iter().map(|(_, view)| view.data().len()).max().expect("tensors")
}

#[test]
fn the_merged_model_is_written_a_bounded_piece_at_a_time() {
    let Fixture { llama, lora, .. } = fixture(false);
    let want = reference_merged_state_dict(&llama, &lora);
    let header = 8 + u64::from_le_bytes(want[..8].try_into().expect("8 bytes")) as usize;
    let largest_tensor = largest_tensor_bytes(&want);
    assert!(largest_tensor > 4096 && largest_tensor < want.len() / 3, "the model is {} bytes", want.len());

    // pieces of 1024 f32: no write holds more than 4 KiB of data, though whole tensors are larger
    let mut recorded = RecordingWriter::default();
    let length = write_merged_in_chunks(&llama, &lora, &mut recorded, 1024).expect("write");
    assert!(recorded.bytes == want, "the same bytes in pieces");
    assert_eq!(length, want.len() as u64);
    assert_eq!(recorded.writes[..2], [8, header - 8], "the length and the header come first");
    let largest_data_write = recorded.writes[2..].iter().copied().max().expect("data");
    assert_eq!(largest_data_write, 4096);

    // the default piece is 1 MiB, more than the tiny model's largest tensor: one write per tensor at most
    let mut recorded = RecordingWriter::default();
    write_merged_state_dict(&llama, &lora, &mut recorded).expect("write");
    assert!(recorded.bytes == want);
    assert_eq!(recorded.writes.iter().copied().max(), Some(largest_tensor.max(header - 8)));
}

#[test]
fn the_encoder_asks_for_each_tensor_after_the_previous_one_is_written() {
    // Out of file order and of two dtypes: the file holds the f32 tensors first, then by name.
    let data: [(&str, Dtype, &[usize], Vec<u8>); 3] = [
        ("b", Dtype::F32, &[2, 3], (0..24).collect()),
        ("c", Dtype::F16, &[5], (24..34).collect()),
        ("a", Dtype::F32, &[4], (34..50).collect()),
    ];
    let layouts: Vec<_> = data
        .iter()
        .map(|(name, dtype, shape, bytes)| TensorLayout { name, dtype: *dtype, shape, len: bytes.len() })
        .collect();
    let received = Rc::new(Cell::new(0));
    let mut out = SharedCount { bytes: Vec::new(), count: Rc::clone(&received) };
    let mut asked = Vec::new();
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let length = write_safetensors_streamed(&layouts, &metadata, &mut out, std::convert::identity, |index, out| {
        // what the writer has received when a tensor's data is asked for: nothing is held back
        asked.push((data[index].0, received.get()));
        out.write_all(&data[index].3)
    })
    .expect("write");
    let header = 8 + u64::from_le_bytes(out.bytes[..8].try_into().expect("8 bytes")) as usize;
    assert_eq!(asked, [("a", header), ("b", header + 16), ("c", header + 16 + 24)]);
    assert_eq!(length, out.bytes.len() as u64);
    let tensors = data.iter().map(|(name, dtype, shape, bytes)| (*name, *dtype, *shape, bytes.as_slice()));
    assert!(out.bytes == crate::lora::encode_safetensors_typed(tensors, &metadata), "one encoder");
    let file = SafeTensors::deserialize(&out.bytes).expect("parse");
    for (name, dtype, shape, bytes) in &data {
        let view = file.tensor(name).expect("tensor");
        assert_eq!((view.dtype(), view.shape(), view.data()), (*dtype, *shape, bytes.as_slice()), "{name}");
    }
}

/// A `Vec` writer whose byte count another owner can read while it is borrowed.
struct SharedCount {
    bytes: Vec<u8>,
    count: Rc<Cell<usize>>,
}

impl Write for SharedCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        self.count.set(self.bytes.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_tensor_with_other_than_its_declared_length_is_an_error() {
    let layouts = [TensorLayout { name: "w", dtype: Dtype::F32, shape: &[2], len: 8 }];
    let metadata = BTreeMap::new();
    let error = write_safetensors_streamed(&layouts, &metadata, &mut Vec::new(), std::convert::identity, |_, out| {
        out.write_all(&[0; 7])
    })
    .expect_err("7 bytes for 8");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(error.to_string(), "tensor \"w\" gave 7 bytes of data but its header says 8");
}

/// Takes `capacity` bytes, then fails every write.
struct FailingWriter {
    capacity: usize,
    written: usize,
    failed_writes: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written == self.capacity {
            self.failed_writes += 1;
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.capacity - self.written);
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_write_failing_midway_is_an_error_and_the_last_write() {
    let Fixture { llama, lora, .. } = fixture(true);
    let file = merged_state_dict(&llama, &lora).expect("merge");
    let (total, header) = (file.len(), 8 + u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize);
    // in the length, in the header, at the first data byte, midway through the data, at the last byte
    for capacity in [0, 3, header / 2, header, (header + total) / 2, total - 1] {
        let mut out = FailingWriter { capacity, written: 0, failed_writes: 0 };
        let error = write_merged_state_dict(&llama, &lora, &mut out).expect_err("the writer fails");
        assert!(matches!(&error, EngineError::Output(io) if io.to_string() == "disk full"), "{capacity}: {error}");
        assert_eq!((out.written, out.failed_writes), (capacity, 1), "{capacity}: stops at the first failure");
    }
    let mut out = FailingWriter { capacity: total, written: 0, failed_writes: 0 };
    assert_eq!(write_merged_state_dict(&llama, &lora, &mut out).expect("fits"), total as u64);
}
