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
use tch::{Device, Kind, Tensor};

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
        let mut roots = SquareRoots::default();
        for &layer in &config.layers {
            for &target in &config.targets {
                let h = hessians.get(layer, target).ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "calibrated recovery init: no input statistics for layer {layer} {}",
                        target.as_str()
                    ))
                })?;
                let device = student.device();
                let error = teacher.linear_weight(layer, target).to_device(device)
                    - student.linear_weight(layer, target).to_kind(Kind::Float);
                let (s, s_inv) = roots.of(layer, h, device)?;
                let (a, b) = low_rank_correction(&error, s, s_inv, config.rank, scale)?;
                pairs.insert((layer, target), (a.set_requires_grad(true), b.set_requires_grad(true)));
            }
        }
        Ok(())
    })?;
    LoraWeights::from_pairs(config.clone(), options, pairs, teacher.config())
}

/// [`damped_square_root`]s of the statistics, one per distinct input: q/k/v and gate/up read the same input, so
/// one root serves them all. Kept for one layer at a time (ask layer by layer).
#[derive(Default)]
pub(crate) struct SquareRoots {
    layer: Option<usize>,
    by_input: BTreeMap<usize, (Tensor, Tensor)>,
}

impl SquareRoots {
    /// The root of `h`, the statistics of an input of `layer`, on `device`.
    pub(crate) fn of(&mut self, layer: usize, h: &Tensor, device: Device) -> Result<&(Tensor, Tensor), EngineError> {
        if self.layer != Some(layer) {
            self.by_input.clear();
            self.layer = Some(layer);
        }
        Ok(match self.by_input.entry(h.data_ptr() as usize) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(damped_square_root(&h.to_kind(Kind::Float).to_device(device))?)
            }
        })
    }
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
