//! Layer-by-layer ("sequential") palettization with an asymmetric target: each operation sees the inputs `X̃`
//! of the model whose earlier operations are already palettized, and is fitted so that `Ŵ X̃` matches what the
//! uncompressed model computes on its own inputs, `W X` — so it also corrects what the operations before it
//! got wrong (GPTQ's sequential mode with the asymmetric objective of GPTAQ).
//!
//! `‖Ŵ X̃ − W X‖²` equals `tr((Ŵ − W*) H̃ (Ŵ − W*)ᵀ)` plus a constant, with `H̃ = X̃ᵀX̃`, `C = X̃ᵀX` and the
//! target `W* = W Cᵀ H̃⁻¹ = W + W (C − H̃)ᵀ H̃⁻¹` (the inverse damped by the usual 1%, on the correction only),
//! so the ordinary palettization (GPTQ and the refit) of `W*` under `H̃` minimizes it.
//!
//! The calibration sequences are embedded once; then, layer after layer, the attention inputs (q/k/v), the
//! attention output's input (o), the MLP inputs (gate/up) and the MLP output's input (down) are observed in
//! turn in both models, each stage palettized after the stages before it, and each model's layer output
//! becomes its next layer's input. Costs about ten forward passes of the calibration text.

use std::cell::RefCell;

use adapterci_core::training::LoraTarget;
use tch::{Kind, Tensor};

use super::{LinearOp, Method};
use crate::EngineError;
use crate::calibrate::batch_tensor;
use crate::llama::Llama;
use crate::palettize::{Calibration, PalettizedTensor, palettize};

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
    let mut teacher_hidden: Vec<Tensor> = hidden.iter().map(Tensor::shallow_clone).collect();
    let mut out: Vec<Option<PalettizedTensor>> = vec![None; ops.len()];
    for layer in 0..layers {
        for stage in STAGES {
            let (hessian, cross) = stage_statistics(teacher, &student, layer, stage[0], &teacher_hidden, &hidden);
            let damped = &hessian
                + Tensor::eye(hessian.size()[0], (Kind::Float, hessian.device()))
                    * (0.01 * hessian.diagonal(0, 0, 1).mean(Kind::Float).double_value(&[])).max(1e-8);
            for &target in stage {
                let Some(i) = ops.iter().position(|op| op.layer == layer && op.target == target) else {
                    continue;
                };
                let weight = teacher.linear_weight(layer, target).to_kind(Kind::Float);
                // W* = W + Δ with (H̃ + λI) Δᵀ = (C − H̃) Wᵀ: W Cᵀ H̃⁻¹ written so that the damping touches only
                // the correction (Δ = 0 where the inputs agree, as in the first stage)
                let shift = (&cross - &hessian).matmul(&weight.transpose(0, 1));
                let target_weight = match Tensor::f_linalg_solve(&damped, &shift, true) {
                    Ok(d) if d.isfinite().all().int64_value(&[]) == 1 => &weight + d.transpose(0, 1),
                    _ => weight,
                };
                let calibration = Calibration {
                    hessian: Some(&hessian),
                    weighted: method.weighted,
                    compensate: method.compensate,
                    refit_rounds: method.refit_rounds,
                };
                let p = palettize(&target_weight, method.spec(bits[i]), calibration)?;
                student.set_linear_weight(layer, target, p.dequantize(teacher.device()))?;
                out[i] = Some(p);
            }
        }
        hidden = tch::no_grad(|| hidden.iter().map(|x| student.layer_observed(layer, x, None)).collect());
        teacher_hidden =
            tch::no_grad(|| teacher_hidden.iter().map(|x| teacher.layer_observed(layer, x, None)).collect());
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

/// `(X̃ᵀX̃, X̃ᵀX)` of the input of `target` in `layer`: `X̃` what `student` computes from its layer inputs
/// `hidden`, `X` what `teacher` computes from its own, `teacher_hidden` (the same positions).
fn stage_statistics(
    teacher: &Llama,
    student: &Llama,
    layer: usize,
    target: LoraTarget,
    teacher_hidden: &[Tensor],
    hidden: &[Tensor],
) -> (Tensor, Tensor) {
    let seen: RefCell<Option<Tensor>> = RefCell::new(None);
    let observer = |index: usize, which: LoraTarget, x: &Tensor| {
        if index == layer && which == target {
            let width = x.size().last().copied().unwrap_or(0);
            *seen.borrow_mut() = Some(x.reshape([-1, width]).to_kind(Kind::Float));
        }
    };
    let width = student.linear_weight(layer, target).size()[1];
    let zeros = || Tensor::zeros([width, width], (Kind::Float, student.device()));
    let (mut gram, mut cross) = (zeros(), zeros());
    tch::no_grad(|| {
        for (x_teacher, x_student) in teacher_hidden.iter().zip(hidden) {
            let _ = teacher.layer_observed(layer, x_teacher, Some(&observer));
            let Some(x) = seen.borrow_mut().take() else { continue };
            let _ = student.layer_observed(layer, x_student, Some(&observer));
            let Some(x_tilde) = seen.borrow_mut().take() else { continue };
            let xt = x_tilde.transpose(0, 1);
            gram += xt.matmul(&x_tilde);
            cross += xt.matmul(&x);
        }
    });
    (gram, cross)
}
