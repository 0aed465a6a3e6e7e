//! Per-operation bit allocation in the spirit of Talaria: measure each linear operation's sensitivity (the
//! KL divergence to the uncompressed model on calibration text when that operation alone drops to 2 bits, and
//! in builds with the recovery adapter's calibrated low-rank correction of that drop added: [`Sensitivity`]),
//! its bytes and its estimated share of decode time, then choose 2 or 4 bits per operation so that the average
//! bits per weight (tables and scales counted) meets a target at the least total sensitivity.

use adapterci_core::training::LoraTarget;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::EngineError;
use crate::calibrate::{Hessians, batch_tensor, kl_per_position};
use crate::config::LlamaConfig;
use crate::dataset::SeededRng;
use crate::llama::Llama;
use crate::palettize::{Calibration, PaletteSpec, PalettizedTensor, Rotation, palettize_with_rotated};

mod sequential;
#[cfg(test)]
mod tests;

pub use sequential::palettize_sequential;

/// One linear operation of the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearOp {
    pub layer: usize,
    pub target: LoraTarget,
    pub rows: usize,
    pub cols: usize,
}

impl LinearOp {
    /// The GGUF-style tensor name, e.g. `blk.3.ffn_down.weight`.
    pub fn name(&self) -> String {
        format!("blk.{}.{}.weight", self.layer, gguf_suffix(self.target))
    }

    pub fn params(&self) -> usize {
        self.rows * self.cols
    }
}

/// The GGUF tensor stem of a target (`attn_q`, ..., `ffn_down`).
pub fn gguf_suffix(target: LoraTarget) -> &'static str {
    match target {
        LoraTarget::Q => "attn_q",
        LoraTarget::K => "attn_k",
        LoraTarget::V => "attn_v",
        LoraTarget::O => "attn_output",
        LoraTarget::Gate => "ffn_gate",
        LoraTarget::Up => "ffn_up",
        LoraTarget::Down => "ffn_down",
    }
}

/// Every linear operation, layer by layer, in [`LoraTarget::ALL`] order.
pub fn linear_ops(config: &LlamaConfig) -> Vec<LinearOp> {
    let (h, kv, ffn) = (config.hidden_size, config.num_kv_heads * config.head_dim, config.intermediate_size);
    let mut ops = Vec::new();
    for layer in 0..config.num_layers {
        for target in LoraTarget::ALL {
            let (rows, cols) = match target {
                LoraTarget::Q | LoraTarget::O => (h, h),
                LoraTarget::K | LoraTarget::V => (kv, h),
                LoraTarget::Gate | LoraTarget::Up => (ffn, h),
                LoraTarget::Down => (h, ffn),
            };
            ops.push(LinearOp { layer, target, rows, cols });
        }
    }
    ops
}

/// How every operation is palettized (the bits aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Method {
    /// Rows sharing one table at 4 (and 8) bits.
    pub group_rows: usize,
    /// Rows sharing one table at 2 bits.
    pub group_rows_2bit: usize,
    pub row_scale: bool,
    /// k-means weighted by input-channel energy (needs calibration).
    pub weighted: bool,
    /// GPTQ error compensation (needs calibration).
    pub compensate: bool,
    /// Rounds of least-squares refitting of tables and row scales after the assignment (needs calibration; see
    /// [`Calibration::refit_rounds`]).
    #[serde(default)]
    pub refit_rounds: usize,
    /// Take each operation's statistics layer by layer on the model whose earlier operations are already
    /// palettized ([`palettize_sequential`]) instead of all at once on the uncompressed model.
    #[serde(default)]
    pub sequential: bool,
    /// Rounds of palettizing jointly with the recovery adapter's calibrated start (LoftQ's alternation under the
    /// statistics): the palettization of `W − L`, with `L` the best rank-[`JOINT_RANK`] correction of the
    /// previous round's error, keeping the round with the least error left after its correction. The release
    /// alone is then further from `W`, and closer together with its recovery adapter's start. 0: off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub low_rank_rounds: usize,
    /// Palettize every operation rotated ([`Rotation`]: `W Q` under `Qᵀ H Q`, served as `P(W Q) Qᵀ`). Absent in
    /// a stored method means not rotated, which was all there was before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

/// The rank the joint palettization corrects with: the recovery adapter's ([`crate::recover::RecoverySpec`]).
pub const JOINT_RANK: usize = 16;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for Method {
    fn default() -> Self {
        // measured on SmolLM2-135M (examples/palette_probe.rs): with GPTQ, 32-row tables at 4 bits reconstruct
        // as well as 8-row ones for fewer bits; at 2 bits, 8-row tables with row scales. Three refit rounds took
        // the unrotated sensitive 3.5-bpw mix from perplexity 47.87 to 45.47 (examples/palette_ablation.rs), but
        // once rotated they no longer pay: 38.79 without, 39.26 with, for 31% more build time; the H200 release
        // that met issue 3's target was built without them (docs/benchmarks.md). Sequential statistics did not
        // pay (see allocate/sequential.rs)
        Method {
            group_rows: 32,
            group_rows_2bit: 8,
            row_scale: true,
            weighted: true,
            compensate: true,
            refit_rounds: 0,
            sequential: false,
            low_rank_rounds: 0,
            // the sensitive 3.5-bpw mix of SmolLM2-135M palettized with the product's statistics: perplexity 46.89
            // unrotated, 39.26 rotated (docs/benchmarks.md, sixth CPU session)
            rotation: Some(Rotation { seed: 1 }),
        }
    }
}

impl Method {
    pub fn spec(&self, bits: u8) -> PaletteSpec {
        let group_rows = if bits <= 2 { self.group_rows_2bit } else { self.group_rows };
        PaletteSpec { bits, group_rows, row_scale: self.row_scale, rotation: self.rotation }
    }

    pub fn label(&self) -> String {
        let mut parts = vec![format!("{} rows/table at 4 bits, {} at 2 bits", self.group_rows, self.group_rows_2bit)];
        if self.row_scale {
            parts.push("row scales".into());
        }
        if self.weighted {
            parts.push("activation-weighted k-means".into());
        }
        if self.compensate {
            parts.push("GPTQ compensation".into());
        }
        if self.refit_rounds > 0 {
            parts.push(format!("{} table refit rounds", self.refit_rounds));
        }
        if self.sequential {
            parts.push("sequential statistics".into());
        }
        if self.low_rank_rounds > 0 {
            parts.push(format!("{} rounds jointly with a rank-{JOINT_RANK} correction", self.low_rank_rounds));
        }
        if let Some(r) = self.rotation {
            parts.push(format!("input channels rotated (seed {})", r.seed));
        }
        parts.join(", ")
    }
}

/// Palettizes one operation of `llama` at `bits` with `method`.
pub fn palettize_op(
    llama: &Llama,
    hessians: Option<&Hessians>,
    op: &LinearOp,
    bits: u8,
    method: Method,
) -> Result<PalettizedTensor, EngineError> {
    let device = llama.linear_weight(op.layer, op.target).device();
    let statistics = match hessians {
        Some(h) => InputStatistics::of_op(h, op, method, device)?,
        None => None,
    };
    palettize_op_with(llama, statistics.as_ref(), op, bits, method)
}

/// The statistics `H` of an operation's input and what palettizing under them with a [`Method`] derives from
/// them: `Qᵀ H Q` for its rotation, and `H`'s damped square root for its low-rank rounds. Made once per input, so
/// that the operations that read it (q/k/v, gate/up) and the rounds that palettize one of them again
/// ([`Method::low_rank_rounds`]) share them.
pub struct InputStatistics<'a> {
    pub hessian: &'a Tensor,
    /// `Qᵀ H Q` for the method's rotation ([`crate::palettize::Rotation::rotate_hessian`]).
    pub rotated: Option<Tensor>,
    /// `(S, S⁻¹)` ([`crate::recover::damped_square_root`]), for the method's low-rank rounds.
    pub square_root: Option<(Tensor, Tensor)>,
}

impl<'a> InputStatistics<'a> {
    /// What palettizing with `method` on `device` uses of the statistics `hessian`.
    pub fn of(hessian: &'a Tensor, method: Method, device: Device) -> Result<InputStatistics<'a>, EngineError> {
        let square_root = match method.low_rank_rounds {
            0 => None,
            _ => Some(crate::recover::damped_square_root(&hessian.to_kind(Kind::Float).to_device(device))?),
        };
        Ok(InputStatistics {
            hessian,
            rotated: method.rotation.map(|r| r.rotate_hessian(hessian, device)),
            square_root,
        })
    }

    /// The statistics of `op`'s input in `hessians`, with what `hessians` keeps derived from them; `None` without
    /// statistics for that input.
    fn of_op(
        hessians: &'a Hessians,
        op: &LinearOp,
        method: Method,
        device: Device,
    ) -> Result<Option<InputStatistics<'a>>, EngineError> {
        let Some(hessian) = hessians.get(op.layer, op.target) else {
            return Ok(None);
        };
        let rotated = method.rotation.and_then(|r| hessians.rotated(op.layer, op.target, r, device));
        let square_root = match method.low_rank_rounds {
            0 => None,
            _ => hessians.square_root(op.layer, op.target, device)?,
        };
        Ok(Some(InputStatistics { hessian, rotated, square_root }))
    }
}

/// [`palettize_op`] with the `statistics` of this operation's input given directly.
pub fn palettize_op_with(
    llama: &Llama,
    statistics: Option<&InputStatistics<'_>>,
    op: &LinearOp,
    bits: u8,
    method: Method,
) -> Result<PalettizedTensor, EngineError> {
    let calibration = Calibration {
        hessian: statistics.map(|s| s.hessian),
        weighted: method.weighted,
        compensate: method.compensate,
        refit_rounds: method.refit_rounds,
    };
    let rotated = statistics.and_then(|s| s.rotated.as_ref());
    let spec = method.spec(bits);
    let weight = llama.linear_weight(op.layer, op.target);
    let first = palettize_with_rotated(weight, spec, calibration, rotated)?;
    match statistics.filter(|_| method.low_rank_rounds > 0) {
        Some(s) => {
            let square_root = match &s.square_root {
                Some((root, inverse)) => (root.shallow_clone(), inverse.shallow_clone()),
                None => crate::recover::damped_square_root(&s.hessian.to_kind(Kind::Float).to_device(weight.device()))?,
            };
            jointly_with_low_rank(weight, s.hessian, &square_root, first, method.low_rank_rounds, &mut |target| {
                palettize_with_rotated(target, spec, calibration, rotated)
            })
        }
        None => Ok(first),
    }
}

/// LoftQ's alternation under the statistics `h` (with `square_root` = `(S, S⁻¹)` of them, on `weight`'s device):
/// from `first` (the palettization of `weight`), `rounds` times palettize `weight − L` with `L` the best
/// rank-[`JOINT_RANK`] correction of the last round's error; returns the round whose error after its correction,
/// `tr((W − Ŵ − L) H (W − Ŵ − L)ᵀ)`, is least.
fn jointly_with_low_rank(
    weight: &Tensor,
    h: &Tensor,
    (s, s_inv): &(Tensor, Tensor),
    first: PalettizedTensor,
    rounds: usize,
    palettize: &mut dyn FnMut(&Tensor) -> Result<PalettizedTensor, EngineError>,
) -> Result<PalettizedTensor, EngineError> {
    tch::no_grad(|| {
        let device = weight.device();
        let w = weight.to_kind(Kind::Float);
        let h = h.to_kind(Kind::Float).to_device(device);
        let corrected = |p: &PalettizedTensor| -> Result<(f64, Tensor), EngineError> {
            let error = &w - p.dequantize(device);
            let correction = crate::recover::best_low_rank(&error, s, s_inv, JOINT_RANK)?;
            let left = error - &correction;
            Ok(((left.matmul(&h) * &left).sum(Kind::Float).double_value(&[]), correction))
        };
        let (mut best_error, mut correction) = corrected(&first)?;
        let mut best = first;
        for _ in 0..rounds {
            let candidate = palettize(&(&w - &correction))?;
            let (error, next) = corrected(&candidate)?;
            if !error.is_finite() {
                break;
            }
            if error < best_error {
                (best, best_error) = (candidate, error);
            }
            correction = next;
        }
        Ok(best)
    })
}

/// Average bits per weight over `ops` with `bits[i]` each (tables and scales counted).
pub fn average_bpw(ops: &[LinearOp], bits: &[u8], method: Method) -> f64 {
    let (stored, params) = ops.iter().zip(bits).fold((0u64, 0u64), |(s, p), (op, &b)| {
        (s + method.spec(b).storage_bits(op.rows, op.cols), p + op.params() as u64)
    });
    stored as f64 / params.max(1) as f64
}

/// What an operation's sensitivity measures: the KL divergence to the uncompressed model with that operation
/// alone at 2 bits, as palettized or together with the recovery adapter's calibrated start for it. The default
/// (what a record without the field measured) is the plain one; builds use the corrected one
/// ([`crate::release_build::BuildOptions`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensitivity {
    /// The operation at 2 bits.
    #[default]
    TwoBit,
    /// The operation at 2 bits plus the best low-rank correction of its error under the calibration statistics
    /// (the recovery adapter's calibrated start, at its rank): what is left for the recovery to train away.
    /// Operations whose 2-bit error is mostly low-rank then rank as cheap.
    Corrected,
}

impl Sensitivity {
    pub fn is_default(&self) -> bool {
        *self == Sensitivity::default()
    }

    /// A phrase for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Sensitivity::TwoBit => "KL with the operation alone at 2 bits",
            Sensitivity::Corrected => "KL with the operation alone at 2 bits plus its calibrated low-rank correction",
        }
    }
}

/// How [`measure_sensitivities`] measures: the 2-bit palettization, the correction added to it, and how many
/// sequences go through the model at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensitivitySpec {
    /// How the 2-bit weights are palettized: one-shot, without refitting (a ranking, which the refit, a few
    /// percent on every operation, barely moves, at a fraction of the cost), so the refit, sequential and
    /// low-rank rounds of this method are not used.
    pub method: Method,
    /// With a rank, each 2-bit weight plus its best correction of that rank ([`Sensitivity::Corrected`]); `None`:
    /// the 2-bit weight alone ([`Sensitivity::TwoBit`]).
    pub correction_rank: Option<usize>,
    /// Calibration sequences per forward pass.
    pub batch: usize,
}

/// The sensitivity of every operation of `teacher`: mean KL(teacher ‖ model with only that operation at 2 bits)
/// per position on `calibration` sequences, measured as `spec` says, the 2-bit weights palettized under
/// `hessians`. `progress(done, total)` after each operation.
pub fn measure_sensitivities(
    teacher: &Llama,
    hessians: &Hessians,
    ops: &[LinearOp],
    calibration: &[Vec<u32>],
    spec: SensitivitySpec,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>, EngineError> {
    let method = Method { refit_rounds: 0, sequential: false, low_rank_rounds: 0, ..spec.method };
    let two_bit = ops
        .iter()
        .map(|op| Ok(palettize_op(teacher, Some(hessians), op, 2, method)?.dequantize(teacher.device())))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let two_bit = match spec.correction_rank {
        Some(rank) => with_low_rank_corrections(teacher, hessians, ops, two_bit, rank)?,
        None => two_bit,
    };
    sensitivities_of(teacher, ops, &two_bit, calibration, spec.batch, progress)
}

/// Each `approximations[i]` (of `ops[i]`'s weight) plus its best rank-`rank` correction under the statistics: the
/// weights the recovery adapter's calibrated start serves ([`crate::recover::calibrated_init`]).
pub fn with_low_rank_corrections(
    teacher: &Llama,
    hessians: &Hessians,
    ops: &[LinearOp],
    approximations: Vec<Tensor>,
    rank: usize,
) -> Result<Vec<Tensor>, EngineError> {
    let device = teacher.device();
    tch::no_grad(|| {
        ops.iter()
            .zip(approximations)
            .map(|(op, approximation)| {
                let (s, s_inv) = hessians.square_root(op.layer, op.target, device)?.ok_or_else(|| {
                    EngineError::InvalidConfig(format!("no input statistics for {} to correct", op.name()))
                })?;
                let error = teacher.linear_weight(op.layer, op.target).to_kind(Kind::Float) - &approximation;
                Ok(approximation + crate::recover::best_low_rank(&error, &s, &s_inv, rank)?)
            })
            .collect()
    })
}

/// [`measure_sensitivities`] with every operation's 2-bit weight already made (`low_bit[i]` for `ops[i]`).
pub fn sensitivities_of(
    teacher: &Llama,
    ops: &[LinearOp],
    low_bit: &[Tensor],
    calibration: &[Vec<u32>],
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>, EngineError> {
    let batches: Vec<Tensor> =
        calibration.chunks(batch.max(1)).map(|c| batch_tensor(c, teacher.device())).collect::<Result<_, _>>()?;
    let vocab = teacher.config().vocab_size as i64;
    let teacher_logits: Vec<Tensor> = tch::no_grad(|| {
        batches.iter().map(|ids| teacher.forward(ids, 0, None, None).reshape([-1, vocab]).to_kind(Kind::Half)).collect()
    });
    let mut student = teacher.shallow_copy();
    let mut out = Vec::with_capacity(ops.len());
    for (i, (op, weight)) in ops.iter().zip(low_bit).enumerate() {
        student.set_linear_weight(op.layer, op.target, weight.shallow_clone())?;
        let (sum, count) = tch::no_grad(|| {
            batches.iter().zip(&teacher_logits).fold((0.0, 0i64), |(sum, count), (ids, t)| {
                let s = student.forward(ids, 0, None, None).reshape([-1, vocab]);
                let kl = kl_per_position(t, &s);
                (sum + kl.sum(Kind::Float).double_value(&[]), count + kl.numel() as i64)
            })
        });
        student.set_linear_weight(op.layer, op.target, teacher.linear_weight(op.layer, op.target).shallow_clone())?;
        out.push(sum / count.max(1) as f64);
        progress(i + 1, ops.len());
    }
    Ok(out)
}

/// 2 or 4 bits per operation with the least total sensitivity at 2 bits such that the average bits per weight
/// lies in `[target_bpw - 0.05, target_bpw]` (or as close below the target as the operations allow; never above
/// it unless even every operation at 2 bits is): a 0/1 knapsack over the bits each operation saves, in steps of
/// 1e-4 bits per weight, with each candidate's exact average checked against the target.
pub fn allocate_bits(
    ops: &[LinearOp],
    sensitivities: &[f64],
    method: Method,
    target_bpw: f64,
) -> Result<Vec<u8>, EngineError> {
    if ops.len() != sensitivities.len() {
        return Err(EngineError::InvalidConfig(format!(
            "{} sensitivities for {} operations",
            sensitivities.len(),
            ops.len()
        )));
    }
    check_target(ops, method, target_bpw)?;
    let all_four = vec![4u8; ops.len()];
    let params: f64 = ops.iter().map(|op| op.params() as f64).sum();
    let need = average_bpw(ops, &all_four, method) - target_bpw;
    if need <= 0.0 {
        return Ok(all_four);
    }
    const UNIT: f64 = 1e-4;
    let saved: Vec<usize> =
        ops.iter().map(|op| (two_bit_saving(op, method) as f64 / params / UNIT).round() as usize).collect();
    let capacity: usize = saved.iter().sum();
    // best[s] = least sensitivity saving exactly s units; choice[i][s] = op i taken to reach s
    let mut best = vec![f64::INFINITY; capacity + 1];
    best[0] = 0.0;
    let mut taken = vec![vec![false; capacity + 1]; ops.len()];
    for (i, &units) in saved.iter().enumerate() {
        let cost = sensitivities[i].max(0.0);
        for s in (units..=capacity).rev() {
            let candidate = best[s - units] + cost;
            if candidate < best[s] {
                best[s] = candidate;
                taken[i][s] = true;
            }
        }
    }
    let low = (need / UNIT).ceil() as usize;
    let high = ((need + 0.05) / UNIT).floor() as usize;
    let reachable = |s: usize| best.get(s).is_some_and(|c| c.is_finite());
    let bits_saving = |mut s: usize| {
        let mut bits = all_four.clone();
        for i in (0..ops.len()).rev() {
            if s > 0 && taken[i][s] {
                bits[i] = 2;
                s -= saved[i];
            }
        }
        bits
    };
    // Each operation's saving is rounded to the unit, so a sum at `need` can still land a few thousandths of a
    // bit above the target: take the first candidate whose exact average meets it, the savings in the window
    // least sensitivity first, then the larger ones; failing all, the largest saving below the window.
    let mut window: Vec<usize> = (low..=high.min(capacity)).filter(|&s| reachable(s)).collect();
    window.sort_by(|&a, &b| best[a].total_cmp(&best[b]));
    let larger = (high.min(capacity) + 1..=capacity).filter(|&s| reachable(s));
    let meeting = window.into_iter().chain(larger).map(bits_saving).find(|b| average_bpw(ops, b, method) <= target_bpw);
    Ok(meeting
        .or_else(|| (0..low.min(capacity + 1)).rev().find(|&s| reachable(s)).map(bits_saving))
        .unwrap_or(all_four))
}

fn check_target(ops: &[LinearOp], method: Method, target_bpw: f64) -> Result<(), EngineError> {
    let all_two = average_bpw(ops, &vec![2u8; ops.len()], method);
    if !(target_bpw.is_finite() && target_bpw >= all_two) {
        return Err(EngineError::InvalidConfig(format!(
            "target {target_bpw} bits per weight is below {all_two:.3}, every operation at 2 bits"
        )));
    }
    Ok(())
}

/// An allocation at the same bits as [`allocate_bits`] reaches (the same window below the target) with the
/// operations at 2 bits picked at random from `seed` instead of by sensitivity: the baseline the sensitivity
/// allocation must beat. It is [`allocate_bits`] over random costs proportional to each operation's saving, so
/// every operation is as likely to be picked per bit it saves, whatever its size.
pub fn arbitrary_bits(ops: &[LinearOp], method: Method, target_bpw: f64, seed: u64) -> Result<Vec<u8>, EngineError> {
    let mut rng = SeededRng::new(seed);
    let costs: Vec<f64> = ops
        .iter()
        .map(|op| two_bit_saving(op, method) as f64 * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .collect();
    allocate_bits(ops, &costs, method, target_bpw)
}

/// Bits of storage `op` saves at 2 bits instead of 4 (indices, tables and scales).
fn two_bit_saving(op: &LinearOp, method: Method) -> u64 {
    method.spec(4).storage_bits(op.rows, op.cols).saturating_sub(method.spec(2).storage_bits(op.rows, op.cols))
}

/// One row of the analysis table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRow {
    pub name: String,
    pub layer: usize,
    pub target: String,
    pub params: usize,
    pub bits: u8,
    pub bytes: u64,
    /// KL divergence (nats per token) when this operation alone is at 2 bits (see [`BitAnalysis::sensitivity`]).
    pub sensitivity: f64,
    /// Estimated share of decode time: decode reads every weight once per token, so bytes over all bytes read
    /// per token (linear operations and the LM head).
    pub decode_share: f64,
}

/// The per-operation table `adapterctl base analyze` prints and draws.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BitAnalysis {
    pub method: Method,
    pub target_bpw: f64,
    pub achieved_bpw: f64,
    pub rows: Vec<OpRow>,
    pub total_params: usize,
    pub total_bytes: u64,
    /// Bytes of the LM head read per decoded token (counted in the decode shares).
    pub lm_head_bytes: u64,
    /// Sum of the sensitivities of the operations at 2 bits.
    pub chosen_sensitivity: f64,
    /// What the sensitivities measure.
    #[serde(default, skip_serializing_if = "Sensitivity::is_default")]
    pub sensitivity: Sensitivity,
}

impl BitAnalysis {
    pub fn new(
        ops: &[LinearOp],
        bits: &[u8],
        sensitivities: &[f64],
        method: Method,
        target_bpw: f64,
        lm_head_bytes: u64,
    ) -> BitAnalysis {
        let bytes: Vec<u64> =
            ops.iter().zip(bits).map(|(op, &b)| method.spec(b).storage_bits(op.rows, op.cols).div_ceil(8)).collect();
        let total_bytes: u64 = bytes.iter().sum();
        let read_per_token = (total_bytes + lm_head_bytes).max(1) as f64;
        let rows = ops
            .iter()
            .enumerate()
            .map(|(i, op)| OpRow {
                name: op.name(),
                layer: op.layer,
                target: op.target.as_str().to_string(),
                params: op.params(),
                bits: bits[i],
                bytes: bytes[i],
                sensitivity: sensitivities.get(i).copied().unwrap_or(f64::NAN),
                decode_share: bytes[i] as f64 / read_per_token,
            })
            .collect();
        let chosen_sensitivity = bits.iter().zip(sensitivities).filter(|(b, _)| **b == 2).map(|(_, s)| s).sum::<f64>();
        BitAnalysis {
            method,
            target_bpw,
            achieved_bpw: average_bpw(ops, bits, method),
            rows,
            total_params: ops.iter().map(LinearOp::params).sum(),
            total_bytes,
            lm_head_bytes,
            chosen_sensitivity,
            sensitivity: Sensitivity::default(),
        }
    }

    /// A fixed-width text table with totals.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<26} {:>9} {:>4} {:>10} {:>12} {:>8}\n",
            "operation", "params", "bits", "bytes", "sensitivity", "decode%"
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:<26} {:>9} {:>4} {:>10} {:>12.5} {:>7.2}%\n",
                r.name,
                r.params,
                r.bits,
                r.bytes,
                r.sensitivity,
                100.0 * r.decode_share
            ));
        }
        let two = self.rows.iter().filter(|r| r.bits == 2).count();
        let share: f64 = self.rows.iter().map(|r| r.decode_share).sum();
        out.push_str(&format!(
            "{:<26} {:>9} {:>4} {:>10} {:>12.5} {:>7.2}%\n",
            "total (linear)",
            self.total_params,
            "",
            self.total_bytes,
            self.chosen_sensitivity,
            100.0 * share
        ));
        out.push_str(&format!(
            "{} of {} operations at 2 bits; {:.4} bits per weight (target {:.2}); method: {}\n",
            two,
            self.rows.len(),
            self.achieved_bpw,
            self.target_bpw,
            self.method.label()
        ));
        out.push_str(&format!("sensitivity: {} (nats per token)\n", self.sensitivity.label()));
        out
    }

    /// An SVG chart: one bar per operation (height = sensitivity on a log scale, colour = bits), layers
    /// along the x axis, the estimated decode share as a line.
    pub fn to_svg(&self) -> String {
        let (bar, gap, left, top, height) = (6.0, 1.0, 70.0, 50.0, 300.0);
        let n = self.rows.len() as f64;
        let width = left + n * (bar + gap) + 40.0;
        let positive: Vec<f64> = self.rows.iter().map(|r| r.sensitivity).filter(|s| *s > 0.0).collect();
        let max = positive.iter().copied().fold(1e-12, f64::max).log10().ceil();
        let min = positive.iter().copied().fold(f64::INFINITY, f64::min).max(1e-12).log10().floor().min(max - 1.0);
        let y = |s: f64| top + height * (1.0 - ((s.max(1e-12).log10() - min) / (max - min)).clamp(0.0, 1.0));
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n",
            top + height + 70.0
        );
        svg.push_str(&format!(
            "<text x=\"{left}\" y=\"20\" font-size=\"14\">Per-operation sensitivity (KL at 2 bits, log scale) and bits: {:.3} bpw, target {:.2}</text>\n",
            self.achieved_bpw, self.target_bpw
        ));
        svg.push_str(&format!(
            "<text x=\"{left}\" y=\"38\"><tspan fill=\"#d62728\">■ 2 bits</tspan>  <tspan fill=\"#1f77b4\">■ 4 bits</tspan>  <tspan fill=\"#2ca02c\">— est. decode share (right axis)</tspan></text>\n"
        ));
        for decade in (min as i64)..=(max as i64) {
            let yy = y(10f64.powi(decade as i32));
            svg.push_str(&format!(
                "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{:.1}\">1e{decade}</text>\n",
                width - 40.0,
                yy + 4.0
            ));
        }
        let max_share = self.rows.iter().map(|r| r.decode_share).fold(1e-12, f64::max);
        let mut line = String::new();
        for (i, r) in self.rows.iter().enumerate() {
            let x = left + i as f64 * (bar + gap);
            let yy = y(r.sensitivity);
            let colour = if r.bits == 2 { "#d62728" } else { "#1f77b4" };
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{yy:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} {} bits, sensitivity {:.3e}, {:.2}% of decode</title></rect>\n",
                (top + height - yy).max(0.5),
                r.name,
                r.bits,
                r.sensitivity,
                100.0 * r.decode_share
            ));
            line.push_str(&format!("{:.1},{:.1} ", x + bar / 2.0, top + height * (1.0 - r.decode_share / max_share)));
            if r.target == LoraTarget::ALL[0].as_str() && r.layer % 5 == 0 {
                svg.push_str(&format!("<text x=\"{x:.1}\" y=\"{:.0}\">L{}</text>\n", top + height + 16.0, r.layer));
            }
        }
        svg.push_str(&format!("<polyline points=\"{line}\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"1\"/>\n"));
        svg.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" fill=\"#2ca02c\">{:.1}%</text>\n",
            width - 38.0,
            top + 4.0,
            100.0 * max_share
        ));
        svg.push_str(&format!(
            "<text x=\"{left}\" y=\"{:.0}\">operations by layer (q k v o gate up down per layer); hover a bar for details</text>\n",
            top + height + 40.0
        ));
        svg.push_str("</svg>\n");
        svg
    }
}
