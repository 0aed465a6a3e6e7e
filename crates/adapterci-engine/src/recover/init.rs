//! A calibrated start for the recovery adapter: each LoRA pair begins as the best rank-r correction of its
//! operation's palettization error under the calibration statistics, instead of zero (as CLoQ does for
//! quantized LLMs; LoftQ without the statistics). With `E = W − Ŵ` (uncompressed minus palettized) and
//! `H = XᵀX` over calibration inputs, `min ‖(E − s·B·A) Xᵀ‖` over rank-r `B·A` is solved in closed form: with
//! `S = H^{1/2}` (eigendecomposition, damped), the top-r SVD `U Σ Vᵀ` of `E S` gives `s·B·A = U Σ Vᵀ S⁻¹`.
//! Each rank-one term `σᵢ uᵢ wᵢ` (`wᵢ = vᵢᵀ S⁻¹`) is split so that `A`'s row and `B`'s column have the same
//! norm, `√(σᵢ‖wᵢ‖/s)`: the split then does not depend on the statistics' scale (a sum over however many
//! tokens), and both factors start at the magnitudes the optimizer's steps are sized for. An unbalanced split
//! (`A` a tenth of its usual size) measured worse: the first steps moved `A` by half its size.

use std::collections::BTreeMap;

use adapterci_core::training::AdapterConfig;
use tch::{Kind, Tensor};

use crate::EngineError;
use crate::calibrate::Hessians;
use crate::llama::Llama;
use crate::lora::{LoraOptions, LoraWeights};

/// Eigenvalues below this share of the mean are raised to it (as GPTQ damps its Hessian), which bounds how
/// much `S⁻¹` can amplify directions the calibration text barely reached.
const DAMPING: f64 = 0.01;

/// The recovery adapter of shape `config` started at each operation's calibrated rank-r correction of
/// `teacher − student`; both factors require gradients.
pub fn calibrated_init(
    config: &AdapterConfig,
    teacher: &Llama,
    student: &Llama,
    hessians: &Hessians,
) -> Result<LoraWeights, EngineError> {
    let options = LoraOptions::default();
    let scale = options.scale(config.rank, config.alpha);
    let mut pairs = BTreeMap::new();
    tch::no_grad(|| -> Result<(), EngineError> {
        for &layer in &config.layers {
            for &target in &config.targets {
                let device = student.device();
                // made here, or kept since the build's sensitivities solved with them
                let (s, s_inv) = hessians.square_root(layer, target, device)?.ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "calibrated recovery init: no input statistics for layer {layer} {}",
                        target.as_str()
                    ))
                })?;
                let error = teacher.linear_weight(layer, target).to_device(device)
                    - student.linear_weight(layer, target).to_kind(Kind::Float);
                let (a, b) = low_rank_correction(&error, &s, &s_inv, config.rank, scale)?;
                pairs.insert((layer, target), (a.set_requires_grad(true), b.set_requires_grad(true)));
            }
            // the start is the last step that reads them
            hessians.forget_square_roots(Some(layer));
        }
        Ok(())
    })?;
    LoraWeights::from_pairs(config.clone(), options, pairs, teacher.config())
}

/// `(S, S⁻¹)` with `S = H^{1/2}`, eigenvalues floored at [`DAMPING`] of their mean.
pub fn damped_square_root(h: &Tensor) -> Result<(Tensor, Tensor), EngineError> {
    let (values, vectors) = h.f_linalg_eigh("L")?;
    let floor = (values.mean(Kind::Float) * DAMPING).clamp_min(1e-12);
    let root = values.maximum(&floor).sqrt();
    let s = (&vectors * root.unsqueeze(0)).matmul(&vectors.tr());
    let s_inv = (&vectors * root.reciprocal().unsqueeze(0)).matmul(&vectors.tr());
    Ok((s, s_inv))
}

/// The rank-`rank` minimizer of `‖(error − C) S‖` as its terms: `(U [out, r], σ [r], W [r, in])` with
/// `C = U diag(σ) W` (`W = Vᵀ S⁻¹`, from the SVD `U Σ Vᵀ` of `error · S`).
fn top_terms(error: &Tensor, s: &Tensor, s_inv: &Tensor, rank: usize) -> Result<(Tensor, Tensor, Tensor), EngineError> {
    let (u, sigma, v) = error.matmul(s).f_svd(true, true)?;
    let r = (rank as i64).min(sigma.size()[0]);
    Ok((u.narrow(1, 0, r), sigma.narrow(0, 0, r), v.tr().narrow(0, 0, r).matmul(s_inv)))
}

/// The best rank-`rank` correction `C` of `error` under the statistics: `min ‖(error − C) S‖` (`[out, in]`).
pub fn best_low_rank(error: &Tensor, s: &Tensor, s_inv: &Tensor, rank: usize) -> Result<Tensor, EngineError> {
    let (u, sigma, w) = top_terms(error, s, s_inv, rank)?;
    Ok((u * sigma.unsqueeze(0)).matmul(&w))
}

/// `(A [r, in], B [out, r])` with `scale·B·A` the rank-`rank` minimizer of `‖(error − scale·B·A) S‖`.
fn low_rank_correction(
    error: &Tensor,
    s: &Tensor,
    s_inv: &Tensor,
    rank: usize,
    scale: f64,
) -> Result<(Tensor, Tensor), EngineError> {
    let (u, sigma, w) = top_terms(error, s, s_inv, rank)?;
    let norms = w.norm_scalaropt_dim(2, [1].as_slice(), true).clamp_min(1e-30);
    let size = (sigma.unsqueeze(1) * &norms / scale).sqrt();
    let a = &w / &norms * &size;
    let b = u * size.squeeze_dim(1).unsqueeze(0);
    let finite = a.isfinite().all().int64_value(&[]) == 1 && b.isfinite().all().int64_value(&[]) == 1;
    if !finite {
        return Err(EngineError::Training("calibrated recovery init: the correction is not finite".into()));
    }
    Ok((a.contiguous(), b.contiguous()))
}
