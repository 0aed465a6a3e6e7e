//! What the steps of a base-release build derive from the calibration statistics more than once, made once per
//! input and kept beside them: each input's rotated statistics `Qᵀ H Q`, which every operation that reads the input
//! is palettized under (q/k/v share one input, gate/up another), in the sensitivity pass and again in the
//! palettization. Only the latest layer's are kept unless a build that reads them again asks for every layer's
//! ([`Hessians::keep_rotated`]), until it forgets them: on SmolLM2-135M every layer's rotated statistics are as
//! large as the statistics themselves, 30 x (3 x 576² + 1536²) f32, 403 MB.

use std::collections::HashMap;

use adapterci_core::training::LoraTarget;
use tch::{Device, Tensor};

use super::{Hessians, input_owner};
use crate::palettize::Rotation;

/// The derived statistics kept, by (layer, the operation owning the input, ...).
#[derive(Default)]
pub(super) struct Derived {
    /// Keep every layer's rotated statistics, not only the latest layer's.
    keep_rotated: bool,
    rotated: HashMap<(usize, LoraTarget, Rotation, Device), Tensor>,
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
}
