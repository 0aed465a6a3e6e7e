//! Input-channel rotations for palettization (incoherence processing, as in QuIP# and QuaRot): a matrix `W` is
//! palettized as `W Q` under the statistics `Qᵀ H Q` and served as `P(W Q) Qᵀ`; `Q` is orthogonal, so nothing
//! changes where nothing is lost. Mixing every input channel into every column spreads a few large weights and a
//! few loud input channels over all of them, which is what a 4-entry table handles worst.
//!
//! `Q = diag(s) C`: random signs `s` from a seed (our own generator, so that every machine and device builds the
//! same matrix) and `C` the orthonormal DCT-II, which exists for every size. On SmolLM2-135M
//! (`examples/rotation_probe.rs`) it lowers the output error as much as a Haar-random orthogonal matrix (and, in
//! an earlier version of that probe, as a randomized Hadamard one). Only the seed is stored: no bits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// A seeded orthogonal rotation of a matrix's input channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rotation {
    pub seed: u64,
}

/// splitmix64: a small, fully specified generator (the signs must be the same on every machine).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rotation {
    /// The `[n, n]` f32 matrix `Q` on `device` (orthogonal to f32 rounding). Built once per seed and size.
    pub fn matrix(&self, n: usize, device: Device) -> Tensor {
        type Built = Mutex<HashMap<(u64, usize), Arc<Vec<f32>>>>;
        static BUILT: OnceLock<Built> = OnceLock::new();
        let built = BUILT.get_or_init(Default::default);
        let key = (self.seed, n);
        let cached = built.lock().ok().and_then(|b| b.get(&key).cloned());
        let q = cached.unwrap_or_else(|| {
            let q = Arc::new(self.build(n));
            if let Ok(mut b) = built.lock() {
                b.insert(key, q.clone());
            }
            q
        });
        Tensor::from_slice(q.as_slice()).reshape([n as i64, n as i64]).to_device(device)
    }

    /// `Qᵀ`, contiguous: what a palettized weight is multiplied by when served (one kernel for every caller, so
    /// that they agree to the bit).
    pub fn unrotation(&self, n: usize, device: Device) -> Tensor {
        self.matrix(n, device).transpose(0, 1).contiguous()
    }

    /// `Qᵀ H Q` for the statistics `hessian` (`[n, n]`) of an input, f32 on `device`: what every operation that reads
    /// the input is palettized under when rotated (one kernel for every caller, so that they agree to the bit).
    pub fn rotate_hessian(&self, hessian: &Tensor, device: Device) -> Tensor {
        let q = self.matrix(hessian.size()[0] as usize, device);
        q.transpose(0, 1).matmul(&hessian.to_kind(Kind::Float).to_device(device)).matmul(&q)
    }

    /// Row `i` of `Q` is `s_i` times row `i` of `Cᵀ`: `Q[i][k] = s_i sqrt(c_k / n) cos(π (2i + 1) k / 2n)`,
    /// `c_0 = 1`, `c_k = 2`.
    fn build(&self, n: usize) -> Vec<f32> {
        let mut state = self.seed ^ (n as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let signs: Vec<f64> = (0..n).map(|_| if splitmix64(&mut state) >> 63 == 0 { 1.0 } else { -1.0 }).collect();
        let mut q = Vec::with_capacity(n * n);
        for (i, sign) in signs.iter().enumerate() {
            for k in 0..n {
                let c = if k == 0 { 1.0 } else { 2.0 };
                let angle = std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * n) as f64;
                q.push((sign * (c / n as f64).sqrt() * angle.cos()) as f32);
            }
        }
        q
    }
}

/// `W Q` for palettizing `weight` (`[rows, cols]`) rotated, f32 on its device.
pub(super) fn rotate_weight(weight: &Tensor, rotation: &Rotation) -> Tensor {
    let q = rotation.matrix(weight.size()[1] as usize, weight.device());
    weight.to_kind(Kind::Float).matmul(&q)
}
