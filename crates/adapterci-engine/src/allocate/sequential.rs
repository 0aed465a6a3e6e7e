//! Layer-by-layer ("sequential") palettization: each operation's calibration statistics `XᵀX` are taken on
//! the inputs it sees in the model whose earlier operations are already palettized, so the error compensation
//! of every operation also corrects what the operations before it got wrong (GPTQ's sequential mode).
//!
//! The calibration sequences are embedded once; then, layer after layer, the attention inputs (q/k/v), the
//! attention output's input (o), the MLP inputs (gate/up) and the MLP output's input (down) are observed in
//! turn, each stage palettized with the statistics of its input after the stages before it, and the layer's
//! output becomes the next layer's input. Costs about five forward passes of the calibration text.
//!
//! Measured on SmolLM2-135M with 4,096 calibration tokens (`examples/palette_ablation.rs`), it did not pay: the
//! sensitive 3.5-bpw mix with refit scored perplexity 46.36 sequential vs 45.47 one-shot, and the asymmetric
//! target of GPTAQ (`Ŵ X̃` fitted to the teacher's `W X`) 53.69. It stays an option
//! ([`super::Method::sequential`], off by default) for larger calibration sets.

use std::cell::RefCell;

use adapterci_core::training::LoraTarget;
use tch::{Kind, Tensor};

use super::{InputStatistics, LinearOp, Method, palettize_op_with};
use crate::EngineError;
use crate::calibrate::batch_tensor;
use crate::llama::Llama;
use crate::palettize::PalettizedTensor;

/// The stages of a layer, in the order their inputs are computed; each stage's operations share its input.
const STAGES: [&[LoraTarget]; 4] = [
    &[LoraTarget::Q, LoraTarget::K, LoraTarget::V],
    &[LoraTarget::O],
    &[LoraTarget::Gate, LoraTarget::Up],
    &[LoraTarget::Down],
];

/// Palettizes every operation of `ops` at `bits[i]` with `method`, layer by layer on `calibration` (equal-length
/// token sequences, `batch` at a time). Returns the tensors in `ops` order and the palettized decoder.
/// `progress(done, total)` after each layer.
pub fn palettize_sequential(
    teacher: &Llama,
    ops: &[LinearOp],
    bits: &[u8],
    method: Method,
    calibration: &[Vec<u32>],
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<PalettizedTensor>, Llama), EngineError> {
    if bits.len() != ops.len() {
        return Err(EngineError::InvalidConfig(format!("{} bit choices for {} operations", bits.len(), ops.len())));
    }
    if calibration.is_empty() {
        return Err(EngineError::InvalidConfig("sequential palettization needs calibration sequences".into()));
    }
    let layers = teacher.config().num_layers;
    let mut student = teacher.shallow_copy();
    let mut hidden: Vec<Tensor> = tch::no_grad(|| {
        calibration
            .chunks(batch.max(1))
            .map(|c| Ok(student.embed(&batch_tensor(c, teacher.device())?)))
            .collect::<Result<_, EngineError>>()
    })?;
    let mut out: Vec<Option<PalettizedTensor>> = vec![None; ops.len()];
    for layer in 0..layers {
        for stage in STAGES {
            let hessian = stage_hessian(&student, layer, stage[0], &hidden);
            let statistics = InputStatistics::of(&hessian, method, teacher.device())?;
            for &target in stage {
                let Some(i) = ops.iter().position(|op| op.layer == layer && op.target == target) else {
                    continue;
                };
                let p = palettize_op_with(teacher, Some(&statistics), &ops[i], bits[i], method)?;
                student.set_linear_weight(layer, target, p.dequantize(teacher.device()))?;
                out[i] = Some(p);
            }
        }
        hidden = tch::no_grad(|| hidden.iter().map(|x| student.layer_observed(layer, x, None)).collect());
        progress(layer + 1, layers);
    }
    let parts = out
        .into_iter()
        .zip(ops)
        .map(|(p, op)| {
            p.ok_or_else(|| EngineError::InvalidConfig(format!("{} is not a layer of the model", op.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((parts, student))
}

/// `XᵀX` of the input of `target` in `layer` of `student` over the layer inputs `hidden`.
fn stage_hessian(student: &Llama, layer: usize, target: LoraTarget, hidden: &[Tensor]) -> Tensor {
    let sum: RefCell<Option<Tensor>> = RefCell::new(None);
    let observer = |index: usize, seen: LoraTarget, x: &Tensor| {
        if index != layer || seen != target {
            return;
        }
        let width = x.size().last().copied().unwrap_or(0);
        let flat = x.reshape([-1, width]).to_kind(Kind::Float);
        let xtx = flat.transpose(0, 1).matmul(&flat);
        let mut sum = sum.borrow_mut();
        *sum = Some(match sum.take() {
            Some(s) => s + xtx,
            None => xtx,
        });
    };
    tch::no_grad(|| {
        for x in hidden {
            let _ = student.layer_observed(layer, x, Some(&observer));
        }
    });
    let width = student.linear_weight(layer, target).size()[1];
    sum.into_inner().unwrap_or_else(|| Tensor::zeros([width, width], (Kind::Float, student.device())))
}
