//! What the steps of a base-release build derive from the calibration statistics more than once, made once per
//! input and kept beside them (q/k/v share one input, gate/up another):
//! - each input's rotated statistics `Qᵀ H Q`, which every operation that reads the input is palettized under, in
//!   the sensitivity pass and again in the palettization;
//! - each input's damped square root `(S, S⁻¹)` (an eigendecomposition), which the sensitivities' low-rank
//!   corrections, the low-rank rounds of the palettization and the recovery's calibrated start all solve with.
//!
//! Only the latest layer's are kept unless a build that reads them again asks for every layer's
//! ([`Hessians::keep_rotated`], [`Hessians::keep_square_roots`]), until it forgets them. On SmolLM2-135M every
//! layer's statistics are 30 x (3 x 576² + 1536²) f32, 403 MB; every layer's rotated statistics as much again,
//! their square roots twice as much.

use std::collections::HashMap;

use adapterci_core::training::LoraTarget;
use tch::{Device, Kind, Tensor};

use super::{Hessians, input_owner};
use crate::EngineError;
use crate::palettize::Rotation;
use crate::recover::damped_square_root;

/// The derived statistics kept, by (layer, the operation owning the input, ...).
#[derive(Default)]
pub(super) struct Derived {
    /// Keep every layer's rotated statistics, not only the latest layer's.
    keep_rotated: bool,
    rotated: HashMap<(usize, LoraTarget, Rotation, Device), Tensor>,
    /// Keep every layer's square roots, not only the latest layer's.
    keep_square_roots: bool,
    square_roots: HashMap<(usize, LoraTarget, Device), (Tensor, Tensor)>,
    /// How many rotated statistics and square roots were made: what the tests that check they are shared count.
    #[cfg(test)]
    made: (usize, usize),
}

impl Hessians {
    /// `Qᵀ H Q` ([`Rotation::rotate_hessian`]) of the statistics of the input of `target` in `layer`, f32 on
    /// `device`: made at the first ask and kept for the operations sharing the input (and, after
    /// [`Hessians::keep_rotated`], for every later ask); `None` without statistics for that input.
    pub fn rotated(&self, layer: usize, target: LoraTarget, rotation: Rotation, device: Device) -> Option<Tensor> {
        let hessian = self.get(layer, target)?;
        let key = (layer, input_owner(target), rotation, device);
        let mut derived = self.derived.borrow_mut();
        if let Some(rotated) = derived.rotated.get(&key) {
            return Some(rotated.shallow_clone());
        }
        let rotated = rotation.rotate_hessian(hessian, device);
        #[cfg(test)]
        {
            derived.made.0 += 1;
        }
        if !derived.keep_rotated {
            derived.rotated.retain(|kept, _| kept.0 == layer);
        }
        derived.rotated.insert(key, rotated.shallow_clone());
        Some(rotated)
    }

    /// Keeps the rotated statistics of every layer once made, until [`Hessians::forget_rotated`]: for a build
    /// that palettizes every operation twice (its sensitivities, then the release).
    pub fn keep_rotated(&mut self) {
        self.derived.get_mut().keep_rotated = true;
    }

    /// Drops the rotated statistics kept, and keeps only the latest layer's from now on.
    pub fn forget_rotated(&self) {
        let mut derived = self.derived.borrow_mut();
        derived.keep_rotated = false;
        derived.rotated.clear();
    }

    /// `(S, S⁻¹)`, the damped square root ([`damped_square_root`]) of the statistics of the input of `target` in
    /// `layer`, f32 on `device`: made at the first ask and kept for the operations sharing the input (and, after
    /// [`Hessians::keep_square_roots`], for every later ask); `None` without statistics for that input.
    pub fn square_root(
        &self,
        layer: usize,
        target: LoraTarget,
        device: Device,
    ) -> Result<Option<(Tensor, Tensor)>, EngineError> {
        let Some(hessian) = self.get(layer, target) else {
            return Ok(None);
        };
        let key = (layer, input_owner(target), device);
        let mut derived = self.derived.borrow_mut();
        if let Some((s, s_inv)) = derived.square_roots.get(&key) {
            return Ok(Some((s.shallow_clone(), s_inv.shallow_clone())));
        }
        let (s, s_inv) = damped_square_root(&hessian.to_kind(Kind::Float).to_device(device))?;
        #[cfg(test)]
        {
            derived.made.1 += 1;
        }
        if !derived.keep_square_roots {
            derived.square_roots.retain(|kept, _| kept.0 == layer);
        }
        derived.square_roots.insert(key, (s.shallow_clone(), s_inv.shallow_clone()));
        Ok(Some((s, s_inv)))
    }

    /// Keeps the square roots of every layer once made, until they are forgotten: for a build whose sensitivities
    /// (or low-rank rounds) and recovery's calibrated start both solve with them.
    pub fn keep_square_roots(&mut self) {
        self.derived.get_mut().keep_square_roots = true;
    }

    /// How many rotated statistics and square roots these statistics have made so far, and for how many inputs.
    #[cfg(test)]
    pub(crate) fn derivations_made(&self) -> (usize, usize, usize) {
        let (rotated, square_roots) = self.derived.borrow().made;
        (rotated, square_roots, self.by_input.len())
    }

    /// Drops the square roots kept of `layer` (every layer's: `None`), once no step will read them again.
    pub fn forget_square_roots(&self, layer: Option<usize>) {
        let mut derived = self.derived.borrow_mut();
        derived.square_roots.retain(|kept, _| layer.is_some_and(|l| kept.0 != l));
    }
}
