//! Calibration for compression: text the uncompressed (teacher) model writes itself from varied prompts, the
//! input statistics `H = XᵀX` of every linear operation on it, and the comparison of a compressed (student)
//! model with its teacher on any token sequences (cross-entropy, perplexity, top-1 agreement, KL divergence).

use std::cell::RefCell;
use std::collections::BTreeMap;

use adapterci_core::training::LoraTarget;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::EngineError;
use crate::chat::ChatMessage;
use crate::dataset::SeededRng;
use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::tokenizer::Tokenizer;

mod derived;

/// The built-in prompt stems the teacher continues: stories, explanations, instructions, lists, dialogue,
/// code. One per line; lines starting with `chat:` are rendered as a user turn of the chat template.
pub const TEACHER_PROMPTS: &str = include_str!("calibrate/prompts.txt");

/// Non-overlapping chunks of exactly `len` tokens of `text` (the tail shorter than `len` is dropped).
pub fn chunk_tokens(tokenizer: &Tokenizer, text: &str, len: usize) -> Vec<Vec<u32>> {
    let ids = tokenizer.encode(text, false);
    ids.chunks_exact(len.max(1)).map(<[u32]>::to_vec).collect()
}

/// The prompts of [`TEACHER_PROMPTS`] (or `custom`) tokenized, chat lines rendered with the template.
pub fn prompt_ids(tokenizer: &Tokenizer, custom: Option<&str>) -> Result<Vec<Vec<u32>>, EngineError> {
    let mut out = Vec::new();
    for line in custom.unwrap_or(TEACHER_PROMPTS).lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ids = match line.strip_prefix("chat:") {
            Some(question) => {
                let rendered = tokenizer.render_chat(&[ChatMessage::user(question.trim())], true)?;
                tokenizer.encode(&rendered, true)
            }
            None => tokenizer.encode(line, false),
        };
        if !ids.is_empty() {
            out.push(ids);
        }
    }
    if out.is_empty() {
        return Err(EngineError::InvalidConfig("no teacher prompts".to_string()));
    }
    Ok(out)
}

/// How the teacher writes calibration text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherTextSpec {
    /// Sequences to write.
    pub sequences: usize,
    /// Tokens per sequence, prompt included.
    pub seq_len: usize,
    /// Sequences sampled together.
    pub batch: usize,
    pub temperature: f64,
    pub seed: u64,
}

/// `spec.sequences` sequences of `spec.seq_len` tokens: each starts from a prompt (cycled in a seeded order)
/// and continues with the teacher's samples. A batch's prompts are cut to the batch's shortest prompt so that
/// the batch decodes in lockstep. `progress(done, total)` after each batch.
pub fn teacher_text(
    teacher: &Llama,
    prompts: &[Vec<u32>],
    spec: &TeacherTextSpec,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<u32>>, EngineError> {
    if prompts.is_empty() || spec.sequences == 0 || spec.batch == 0 || spec.seq_len < 2 {
        return Err(EngineError::InvalidConfig("teacher text needs prompts, sequences, batch and seq_len >= 2".into()));
    }
    let mut order: Vec<usize> = (0..spec.sequences).map(|i| i % prompts.len()).collect();
    let mut rng = SeededRng::new(spec.seed);
    rng.shuffle(&mut order);
    // similar lengths together, so little of each prompt is cut
    order.sort_by_key(|&i| prompts[i].len());
    let device = teacher.device();
    let mut out = Vec::with_capacity(spec.sequences);
    for chunk in order.chunks(spec.batch) {
        let keep = chunk.iter().map(|&i| prompts[i].len()).min().unwrap_or(1).clamp(1, spec.seq_len - 1);
        let rows: Vec<i64> = chunk.iter().flat_map(|&i| prompts[i][..keep].iter().map(|&t| i64::from(t))).collect();
        let b = chunk.len() as i64;
        let mut ids = Tensor::from_slice(&rows).reshape([b, keep as i64]).to_device(device);
        let mut cache = KvCache::new(teacher.config(), chunk.len(), spec.seq_len, device);
        tch::no_grad(|| {
            let mut next_input = ids.shallow_clone();
            let mut pos = 0;
            while (ids.size()[1] as usize) < spec.seq_len {
                let hidden = teacher.forward_hidden(&next_input, pos, Some(&mut cache), None);
                pos += next_input.size()[1] as usize;
                let last = hidden.select(1, hidden.size()[1] - 1);
                let logits = teacher.lm_head(&last).to_kind(Kind::Float);
                let probs = (logits / spec.temperature.max(1e-3)).softmax(-1, Kind::Float);
                let sampled = sample_rows(&probs, &mut rng);
                ids = Tensor::cat(&[&ids, &sampled], 1);
                next_input = sampled;
            }
        });
        let ids = ids.to_device(Device::Cpu);
        for r in 0..chunk.len() as i64 {
            let row = Vec::<i64>::try_from(ids.get(r))?;
            out.push(row.into_iter().map(|t| t as u32).collect());
        }
        progress(out.len(), spec.sequences);
    }
    Ok(out)
}

/// One token id per row of `probs` (`[rows, vocab]`, each row a distribution), `[rows, 1]` int64 on its device,
/// drawn by inverse CDF with one uniform from `rng` per row. The draws depend on `rng` alone: torch's own
/// generator (`multinomial`) is global to the process, so text written beside other work in one process
/// (adapterd's builds, threaded tests) would not be the text its seed names.
fn sample_rows(probs: &Tensor, rng: &mut SeededRng) -> Tensor {
    let cdf = probs.cumsum(-1, Kind::Float);
    let (rows, vocab) = (cdf.size()[0], cdf.size()[1]);
    let uniforms: Vec<f32> = (0..rows).map(|_| rng.open_unit() as f32).collect();
    // scaled by each row's total, so the last token is reachable whatever the rounding of the sum
    let draws =
        Tensor::from_slice(&uniforms).to_device(probs.device()).unsqueeze(1) * cdf.select(1, vocab - 1).unsqueeze(1);
    // the first index whose cumulative probability reaches the draw: zero-probability tokens are never chosen
    cdf.lt_tensor(&draws).sum_dim_intlist(-1, true, Kind::Int64).clamp_max(vocab - 1)
}

/// `H = Σ xᵀx` over calibration tokens for the input of every linear operation, keyed by (layer, target).
/// Operations that share an input (q/k/v, gate/up) share one tensor, and what is derived from it
/// (`calibrate/derived.rs`).
pub struct Hessians {
    by_input: BTreeMap<(usize, LoraTarget), Tensor>,
    pub tokens: usize,
    derived: RefCell<derived::Derived>,
}

impl std::fmt::Debug for Hessians {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hessians").field("inputs", &self.by_input.len()).field("tokens", &self.tokens).finish()
    }
}

/// The operation whose input `target` shares.
pub(crate) fn input_owner(target: LoraTarget) -> LoraTarget {
    match target {
        LoraTarget::K | LoraTarget::V => LoraTarget::Q,
        LoraTarget::Up => LoraTarget::Gate,
        other => other,
    }
}

impl Hessians {
    /// `XᵀX` for the input of `target` in `layer`, `[in, in]` f32 on the model's device.
    pub fn get(&self, layer: usize, target: LoraTarget) -> Option<&Tensor> {
        self.by_input.get(&(layer, input_owner(target)))
    }
}

/// Runs `sequences` through `llama` (`batch` at a time) and accumulates every linear input's `XᵀX`.
pub fn collect_hessians(llama: &Llama, sequences: &[Vec<u32>], batch: usize) -> Result<Hessians, EngineError> {
    let sums: RefCell<BTreeMap<(usize, LoraTarget), Tensor>> = RefCell::new(BTreeMap::new());
    let observer = |layer: usize, target: LoraTarget, x: &Tensor| {
        if input_owner(target) != target {
            return;
        }
        let width = x.size().last().copied().unwrap_or(0);
        let flat = x.reshape([-1, width]).to_kind(Kind::Float);
        let xtx = flat.transpose(0, 1).matmul(&flat);
        let mut sums = sums.borrow_mut();
        match sums.get_mut(&(layer, target)) {
            Some(sum) => {
                let _ = sum.g_add_(&xtx);
            }
            None => {
                sums.insert((layer, target), xtx);
            }
        }
    };
    let mut tokens = 0;
    tch::no_grad(|| -> Result<(), EngineError> {
        for chunk in sequences.chunks(batch.max(1)) {
            let ids = batch_tensor(chunk, llama.device())?;
            tokens += ids.numel();
            let _ = llama.forward_hidden_observed(&ids, 0, None, None, Some(&observer));
        }
        Ok(())
    })?;
    Ok(Hessians { by_input: sums.into_inner(), tokens, derived: RefCell::default() })
}

/// Equal-length token rows as a `[B, T]` int64 tensor on `device`.
pub fn batch_tensor(rows: &[Vec<u32>], device: Device) -> Result<Tensor, EngineError> {
    let len = rows.first().map_or(0, Vec::len);
    if len == 0 || rows.iter().any(|r| r.len() != len) {
        return Err(EngineError::InvalidConfig("calibration sequences must be non-empty and of equal length".into()));
    }
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| i64::from(t)).collect();
    Ok(Tensor::from_slice(&flat).reshape([rows.len() as i64, len as i64]).to_device(device))
}

/// How a student model compares with its teacher on some sequences (next-token prediction).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Mean next-token cross-entropy of the student (nats).
    pub cross_entropy: f64,
    pub perplexity: f64,
    /// Share of positions where the student's most likely next token is the teacher's.
    pub top1_agreement: f64,
    /// Mean KL(teacher ‖ student) per position (nats).
    pub kl_divergence: f64,
    /// Positions scored.
    pub positions: usize,
}

/// KL(teacher ‖ student) per position for logits `[N, V]`.
pub(crate) fn kl_per_position(teacher_logits: &Tensor, student_logits: &Tensor) -> Tensor {
    let t = teacher_logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let s = student_logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    (t.exp() * (&t - s)).sum_dim_intlist([-1].as_slice(), false, Kind::Float)
}

/// `model`'s top-1 next-token id at every position of each sequence: what another implementation's outputs on the
/// same tokens (llama.cpp's quantizations, say) are scored against for top-1 agreement.
pub fn top1_ids(model: &Llama, sequences: &[Vec<u32>]) -> Result<Vec<Vec<i64>>, EngineError> {
    tch::no_grad(|| {
        sequences
            .iter()
            .map(|sequence| {
                let ids = batch_tensor(std::slice::from_ref(sequence), model.device())?;
                let logits = model.forward(&ids, 0, None, None);
                Ok(Vec::<i64>::try_from(logits.argmax(-1, false).reshape([-1]).to_device(Device::Cpu))?)
            })
            .collect()
    })
}

/// Scores `student` (with `lora` when given) against `teacher` on `sequences`, `batch` rows at a time.
pub fn compare(
    teacher: &Llama,
    student: &Llama,
    lora: Option<&LoraWeights>,
    sequences: &[Vec<u32>],
    batch: usize,
) -> Result<Agreement, EngineError> {
    let (mut ce_sum, mut kl_sum, mut agree, mut positions) = (0.0, 0.0, 0i64, 0usize);
    tch::no_grad(|| -> Result<(), EngineError> {
        for chunk in sequences.chunks(batch.max(1)) {
            let ids = batch_tensor(chunk, student.device())?;
            let (b, t) = (ids.size()[0], ids.size()[1]);
            if t < 2 {
                continue;
            }
            let inputs = ids.narrow(1, 0, t - 1);
            let targets = ids.narrow(1, 1, t - 1).reshape([-1]);
            let vocab = student.config().vocab_size as i64;
            let s = student.forward(&inputs, 0, None, lora).reshape([-1, vocab]).to_kind(Kind::Float);
            let tl = teacher.forward(&inputs.to_device(teacher.device()), 0, None, None).reshape([-1, vocab]);
            let tl = tl.to_device(student.device()).to_kind(Kind::Float);
            ce_sum += s.cross_entropy_for_logits(&targets).double_value(&[]) * (b * (t - 1)) as f64;
            kl_sum += kl_per_position(&tl, &s).sum(Kind::Float).double_value(&[]);
            agree += s.argmax(-1, false).eq_tensor(&tl.argmax(-1, false)).sum(Kind::Int64).int64_value(&[]);
            positions += (b * (t - 1)) as usize;
        }
        Ok(())
    })?;
    if positions == 0 {
        return Err(EngineError::InvalidConfig("no positions to compare (sequences shorter than 2 tokens)".into()));
    }
    let cross_entropy = ce_sum / positions as f64;
    Ok(Agreement {
        cross_entropy,
        perplexity: cross_entropy.exp(),
        top1_agreement: agree as f64 / positions as f64,
        kl_divergence: kl_sum / positions as f64,
        positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sampled_from_their_own_distribution_and_never_a_zero_probability_token() {
        let probs = Tensor::from_slice(&[0.5f32, 0.0, 0.3, 0.2, 0.0, 0.0, 0.0, 1.0]).reshape([2, 4]);
        let mut rng = SeededRng::new(7);
        let mut counts = [[0usize; 4]; 2];
        let draws = 20_000;
        for _ in 0..draws {
            let ids = Vec::<i64>::try_from(sample_rows(&probs, &mut rng).reshape([2])).unwrap();
            for (row, id) in ids.into_iter().enumerate() {
                counts[row][id as usize] += 1;
            }
        }
        assert_eq!(counts[0][1], 0, "a zero-probability token was drawn");
        assert_eq!(counts[1], [0, 0, 0, draws], "a one-hot row draws its token only");
        // 20,000 draws: the binomial standard deviation of each share is under 0.004
        for (id, want) in [(0, 0.5), (2, 0.3), (3, 0.2)] {
            let share = counts[0][id] as f64 / draws as f64;
            assert!((share - want).abs() < 0.02, "token {id}: share {share}, probability {want}");
        }
        let mut again = SeededRng::new(7);
        let first = Vec::<i64>::try_from(sample_rows(&probs, &mut again).reshape([2])).unwrap();
        let mut same = SeededRng::new(7);
        assert_eq!(first, Vec::<i64>::try_from(sample_rows(&probs, &mut same).reshape([2])).unwrap());
    }
}
