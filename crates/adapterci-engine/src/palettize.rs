//! Palettization: each weight matrix becomes small lookup tables (LUTs) of fp16 entries, one per group of
//! output channels (rows), and packed 2-, 4- or 8-bit indices into them, optionally with an fp16 scale per row.
//!
//! The tables come from k-means over the group's (row-normalized) values, optionally weighted by each input
//! channel's importance (activation statistics: the diagonal of `XᵀX` on calibration text, as in sensitive
//! k-means). The indices come from nearest-entry assignment or, with a Hessian `H = XᵀX`, from GPTQ-style error
//! compensation onto the table's grid (Frantar et al.): columns are assigned in order and each column's
//! rounding error is spread over the columns not yet assigned through the Cholesky factor of `H⁻¹`.
//!
//! Bits per weight are counted honestly: indices, table entries (16 bits each) and row scales (16 bits each).

use half::f16;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::EngineError;

pub mod rotation;
#[cfg(test)]
mod tests;
mod trainable;

pub use rotation::Rotation;
pub use trainable::TrainablePalettes;

/// How one matrix is palettized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaletteSpec {
    /// 2 (4 entries), 4 (16 entries) or 8 (256 entries).
    pub bits: u8,
    /// Rows (output channels) sharing one table.
    pub group_rows: usize,
    /// Divide each row by its largest magnitude before clustering, and store that scale (fp16) per row.
    pub row_scale: bool,
    /// Palettize `W Q` instead of `W` and serve `P(W Q) Qᵀ` ([`Rotation`]; no bits: only its seed is stored).
    /// Absent in releases written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

impl PaletteSpec {
    pub fn new(bits: u8, group_rows: usize) -> PaletteSpec {
        PaletteSpec { bits, group_rows, row_scale: true, rotation: None }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        if !matches!(self.bits, 2 | 4 | 8) {
            return Err(EngineError::InvalidConfig(format!("palette bits must be 2, 4 or 8, got {}", self.bits)));
        }
        if self.group_rows == 0 {
            return Err(EngineError::InvalidConfig("palette group_rows must be at least 1".to_string()));
        }
        Ok(())
    }

    pub fn entries(&self) -> usize {
        1 << self.bits
    }

    /// Storage bits of a `[rows, cols]` matrix: indices + tables + row scales.
    pub fn storage_bits(&self, rows: usize, cols: usize) -> u64 {
        let groups = rows.div_ceil(self.group_rows) as u64;
        let index_bits = (rows * cols) as u64 * u64::from(self.bits);
        let table_bits = groups * self.entries() as u64 * 16;
        let scale_bits = if self.row_scale { rows as u64 * 16 } else { 0 };
        index_bits + table_bits + scale_bits
    }

    /// `values Qᵀ` when rotated (the served weight from the palettized `values`, `[rows, cols]`), else `values`.
    pub fn unrotate(&self, values: Tensor) -> Tensor {
        match &self.rotation {
            Some(r) => {
                let cols = values.size()[1] as usize;
                values.matmul(&r.unrotation(cols, values.device()))
            }
            None => values,
        }
    }

    /// [`PaletteSpec::storage_bits`] per weight.
    pub fn bits_per_weight(&self, rows: usize, cols: usize) -> f64 {
        self.storage_bits(rows, cols) as f64 / (rows * cols) as f64
    }
}

/// Calibration statistics for one matrix's input: `hessian = XᵀX` over calibration tokens, `[cols, cols]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calibration<'a> {
    pub hessian: Option<&'a Tensor>,
    /// Weight k-means by the Hessian's diagonal (input channel energy).
    pub weighted: bool,
    /// Assign indices with GPTQ error compensation (needs the Hessian).
    pub compensate: bool,
    /// Rounds of refitting after the assignment (needs the Hessian): with the indices fixed, solve each group's
    /// table entries and then each row's scale for the least output error `tr((W − Ŵ) H (W − Ŵ)ᵀ)` (a small
    /// least-squares problem per group), then assign the indices again onto the refitted tables. The best round
    /// (by the same error) is kept, so more rounds never do worse than none. Applies to 2- and 4-bit tables.
    pub refit_rounds: usize,
}

/// A palettized `[rows, cols]` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct PalettizedTensor {
    pub rows: usize,
    pub cols: usize,
    pub spec: PaletteSpec,
    /// `groups x entries` table entries, group-major.
    pub lut: Vec<f16>,
    /// Row-major indices packed little-end first: element `e` lives in byte `e / (8 / bits)` at bit offset
    /// `(e % (8 / bits)) * bits`.
    pub indices: Vec<u8>,
    /// One scale per row when `spec.row_scale`.
    pub scales: Option<Vec<f16>>,
}

impl PalettizedTensor {
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(self.spec.group_rows)
    }

    pub fn storage_bits(&self) -> u64 {
        self.spec.storage_bits(self.rows, self.cols)
    }

    /// Checks that the parts have the lengths the shape and spec imply (a release file may be corrupt).
    pub fn validate(&self) -> Result<(), String> {
        self.spec.validate().map_err(|e| e.to_string())?;
        let lut = self.groups() * self.spec.entries();
        if self.lut.len() != lut {
            return Err(format!("table has {} entries, expected {lut}", self.lut.len()));
        }
        let packed = packed_len(self.rows * self.cols, self.spec.bits);
        if self.indices.len() != packed {
            return Err(format!("indices have {} bytes, expected {packed}", self.indices.len()));
        }
        match (&self.scales, self.spec.row_scale) {
            (Some(s), true) if s.len() == self.rows => Ok(()),
            (None, false) => Ok(()),
            (Some(s), _) => {
                Err(format!("{} row scales for {} rows (row_scale {})", s.len(), self.rows, self.spec.row_scale))
            }
            (None, true) => Err("row scales are missing".to_string()),
        }
    }

    /// The unpacked indices, row-major.
    pub fn unpacked_indices(&self) -> Vec<u8> {
        unpack_indices(&self.indices, self.rows * self.cols, self.spec.bits)
    }

    /// The f32 matrix `[rows, cols]` on `device`: `lut[group(row)][index] * scale[row]`, times `Qᵀ` when rotated.
    pub fn dequantize(&self, device: Device) -> Tensor {
        self.spec.unrotate(self.fit(device).dequantize(&group_of_row(self.rows, self.spec, device)))
    }

    /// The parts as tensors on `device`: tables `[groups, k]` and scales `[rows, 1]` in f32, indices `[rows,
    /// cols]` int64.
    fn fit(&self, device: Device) -> Fit {
        let f32s = |values: &[f16]| -> Vec<f32> { values.iter().map(|v| v.to_f32()).collect() };
        let tables = Tensor::from_slice(&f32s(&self.lut))
            .reshape([self.groups() as i64, self.spec.entries() as i64])
            .to_device(device);
        let indices = Tensor::from_slice(&self.unpacked_indices())
            .reshape([self.rows as i64, self.cols as i64])
            .to_device(device)
            .to_kind(Kind::Int64);
        let scales = self.scales.as_ref().map(|s| Tensor::from_slice(&f32s(s)).unsqueeze(1).to_device(device));
        Fit { tables, indices, scales }
    }
}

/// Each group's table sorted ascending (stable: a sorted table stays as it is) and the indices remapped to it.
fn sorted_tables(tables: &Tensor, indices: &Tensor, group_of_row: &Tensor) -> (Tensor, Tensor) {
    let (sorted, order) = tables.sort_stable(true, 1, false);
    let remap = order.argsort(1, false).index_select(0, group_of_row);
    (sorted, remap.gather(1, indices, false))
}

/// The table (group) of each row, `[rows]` int64.
fn group_of_row(rows: usize, spec: PaletteSpec, device: Device) -> Tensor {
    Tensor::arange(rows as i64, (Kind::Int64, device)).floor_divide_scalar(spec.group_rows as i64)
}

/// Bytes of `count` packed `bits`-bit indices.
pub fn packed_len(count: usize, bits: u8) -> usize {
    count.div_ceil(8 / bits as usize)
}

/// Packs indices (each `< 2^bits`) little-end first.
pub fn pack_indices(values: &[u8], bits: u8) -> Vec<u8> {
    let per_byte = 8 / bits as usize;
    let mut out = vec![0u8; packed_len(values.len(), bits)];
    for (e, &v) in values.iter().enumerate() {
        out[e / per_byte] |= v << ((e % per_byte) * bits as usize);
    }
    out
}

/// The inverse of [`pack_indices`] for `count` values.
pub fn unpack_indices(packed: &[u8], count: usize, bits: u8) -> Vec<u8> {
    let per_byte = 8 / bits as usize;
    let mask = ((1u16 << bits) - 1) as u8;
    (0..count).map(|e| (packed[e / per_byte] >> ((e % per_byte) * bits as usize)) & mask).collect()
}

const KMEANS_ITERATIONS: usize = 30;
const GPTQ_BLOCK: i64 = 128;
const GPTQ_DAMPING: f64 = 0.01;

/// Palettizes `weight` (`[rows, cols]`, any float kind, any device; work happens on its device).
pub fn palettize(
    weight: &Tensor,
    spec: PaletteSpec,
    calibration: Calibration<'_>,
) -> Result<PalettizedTensor, EngineError> {
    palettize_with_rotated(weight, spec, calibration, None)
}

/// [`palettize`] given `rotated_hessian`, the statistics `calibration.hessian` rotated by `spec.rotation`
/// ([`Rotation::rotate_hessian`]), when the caller has them: the operations that read one input, and rounds that
/// palettize one operation again, then rotate them once. `None`: rotated here when the spec is.
pub fn palettize_with_rotated(
    weight: &Tensor,
    spec: PaletteSpec,
    calibration: Calibration<'_>,
    rotated_hessian: Option<&Tensor>,
) -> Result<PalettizedTensor, EngineError> {
    spec.validate()?;
    let size = weight.size();
    if size.len() != 2 || size[0] < 1 || size[1] < 1 {
        return Err(EngineError::InvalidConfig(format!("palettize needs a non-empty matrix, got shape {size:?}")));
    }
    let (rows, cols) = (size[0] as usize, size[1] as usize);
    for h in [calibration.hessian, rotated_hessian].into_iter().flatten() {
        if h.size() != [cols as i64, cols as i64] {
            return Err(EngineError::InvalidConfig(format!(
                "hessian {:?} does not fit {cols} input columns",
                h.size()
            )));
        }
    }
    if rotated_hessian.is_some() && (spec.rotation.is_none() || calibration.hessian.is_none()) {
        return Err(EngineError::InvalidConfig(
            "rotated statistics for an unrotated spec or without statistics".into(),
        ));
    }
    tch::no_grad(|| {
        let device = weight.device();
        let (w, rotated_hessian) = match &spec.rotation {
            Some(r) => {
                let rotated = match rotated_hessian {
                    Some(h) => Some(h.to_kind(Kind::Float).to_device(device)),
                    None => calibration.hessian.map(|h| r.rotate_hessian(h, device)),
                };
                (rotation::rotate_weight(weight, r), rotated)
            }
            None => (weight.to_kind(Kind::Float), None),
        };
        let (normalized, scales) = if spec.row_scale {
            let scales = w.abs().amax([1], true).clamp_min(1e-8).to_kind(Kind::Half).to_kind(Kind::Float);
            (&w / &scales, Some(scales))
        } else {
            (w.shallow_clone(), None)
        };
        let hessian = rotated_hessian.or_else(|| calibration.hessian.map(|h| h.to_kind(Kind::Float).to_device(device)));
        let importance = match (&hessian, calibration.weighted) {
            (Some(h), true) => Some(h.diagonal(0, 0, 1).clamp_min(0.0) + 1e-8),
            _ => None,
        };
        let tables = group_tables(&normalized, spec, importance.as_ref());
        let group_of_row = group_of_row(rows, spec, device);
        let assign = |normalized: &Tensor, tables: &Tensor| {
            let row_tables = tables.index_select(0, &group_of_row);
            match (&hessian, calibration.compensate) {
                (Some(h), true) => gptq_assign(normalized, &row_tables, h),
                _ => nearest(normalized, &row_tables),
            }
        };
        let indices = assign(&normalized, &tables);
        let (tables, indices, scales) = match &hessian {
            // 8-bit tables (256 entries) lose little and would make the per-row one-hot products 16x larger
            Some(h) if calibration.refit_rounds > 0 && spec.bits <= 4 => {
                let mut best = Fit { tables, indices, scales };
                let mut best_error = best.output_error(&w, &group_of_row, h);
                let mut current = best.shallow_clone();
                for _ in 0..calibration.refit_rounds {
                    current = current.refit(&w, &group_of_row, h);
                    let normalized = match &current.scales {
                        Some(s) => &w / s,
                        None => w.shallow_clone(),
                    };
                    let refitted_error = current.output_error(&w, &group_of_row, h);
                    if refitted_error < best_error {
                        (best, best_error) = (current.shallow_clone(), refitted_error);
                    }
                    current.indices = assign(&normalized, &current.tables);
                    let error = current.output_error(&w, &group_of_row, h);
                    if error < best_error {
                        (best, best_error) = (current.shallow_clone(), error);
                    }
                }
                (best.tables, best.indices, best.scales)
            }
            _ => (tables, indices, scales),
        };
        Fit { tables, indices, scales }.into_palettized(rows, cols, spec)
    })
}

/// A matrix's palettization in the making: sorted fp16 tables `[groups, k]`, indices `[rows, cols]` and fp16 row
/// scales `[rows, 1]` (all f32 / int64 on the weight's device).
struct Fit {
    tables: Tensor,
    indices: Tensor,
    scales: Option<Tensor>,
}

impl Fit {
    /// The stored form: entries and scales rounded to fp16, each group's table sorted (its indices remapped).
    fn into_palettized(self, rows: usize, cols: usize, spec: PaletteSpec) -> Result<PalettizedTensor, EngineError> {
        let device = self.tables.device();
        let rounded = self.tables.to_kind(Kind::Half).to_kind(Kind::Float);
        let (tables, indices) = sorted_tables(&rounded, &self.indices, &group_of_row(rows, spec, device));
        let flat: Vec<u8> = Vec::<i64>::try_from(indices.to_device(Device::Cpu).reshape([-1]))
            .map_err(EngineError::from)?
            .into_iter()
            .map(|i| i as u8)
            .collect();
        let halves = |t: &Tensor| -> Result<Vec<f16>, EngineError> {
            let values = Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]))?;
            Ok(values.into_iter().map(f16::from_f32).collect())
        };
        Ok(PalettizedTensor {
            rows,
            cols,
            spec,
            lut: halves(&tables)?,
            indices: pack_indices(&flat, spec.bits),
            scales: self.scales.as_ref().map(halves).transpose()?,
        })
    }

    fn shallow_clone(&self) -> Fit {
        Fit {
            tables: self.tables.shallow_clone(),
            indices: self.indices.shallow_clone(),
            scales: self.scales.as_ref().map(Tensor::shallow_clone),
        }
    }

    /// The table values each weight points at, before the row scale: `[rows, cols]`.
    fn values(&self, group_of_row: &Tensor) -> Tensor {
        self.tables.index_select(0, group_of_row).gather(1, &self.indices, false)
    }

    fn dequantize(&self, group_of_row: &Tensor) -> Tensor {
        let values = self.values(group_of_row);
        match &self.scales {
            Some(s) => values * s,
            None => values,
        }
    }

    /// `tr((W − Ŵ) H (W − Ŵ)ᵀ)`.
    fn output_error(&self, w: &Tensor, group_of_row: &Tensor, h: &Tensor) -> f64 {
        let e = w - self.dequantize(group_of_row);
        (e.matmul(h) * &e).sum(Kind::Float).double_value(&[])
    }

    /// With the indices fixed: each group's table by least squares on the output error, rounded to fp16 and
    /// re-sorted (indices remapped), then each row's scale likewise.
    fn refit(&self, w: &Tensor, group_of_row: &Tensor, h: &Tensor) -> Fit {
        let rows = w.size()[0];
        let (groups, k) = (self.tables.size()[0], self.tables.size()[1]);
        let device = w.device();
        let ones;
        let scales = match &self.scales {
            Some(s) => s,
            None => {
                ones = Tensor::ones([rows, 1], (Kind::Float, device));
                &ones
            }
        };
        // row r approximates w_r ≈ s_r O_r t, with O_r the one-hot [cols, k] of its indices: the normal equations
        // of each group are (Σ s_r² O_rᵀ H O_r) t = Σ s_r O_rᵀ H w_r
        let one_hot = self.indices.one_hot(k).to_kind(Kind::Float);
        let weight_sq = scales.square().reshape([rows, 1, 1]);
        let gram = one_hot.transpose(1, 2).matmul(&h.matmul(&one_hot)) * weight_sq;
        let hw = w.matmul(h) * scales;
        let rhs = one_hot.transpose(1, 2).matmul(&hw.unsqueeze(2)).squeeze_dim(2);
        let a = Tensor::zeros([groups, k, k], (Kind::Float, device)).index_add(0, group_of_row, &gram);
        let b = Tensor::zeros([groups, k], (Kind::Float, device)).index_add(0, group_of_row, &rhs);
        // a ridge toward the old entries keeps an unused entry where it was and the solve well posed
        let ridge = (a.diagonal(0, 1, 2).mean_dim([1].as_slice(), true, Kind::Float) * 1e-6).clamp_min(1e-12);
        let eye = Tensor::eye(k, (Kind::Float, device)).unsqueeze(0);
        let lhs = &a + &eye * ridge.unsqueeze(2);
        let rhs = &b + &self.tables * &ridge;
        let solved = match Tensor::f_linalg_solve(&lhs, &rhs.unsqueeze(2), true) {
            Ok(t) => t.squeeze_dim(2),
            Err(_) => return self.shallow_clone(),
        };
        let finite = solved.isfinite().all().int64_value(&[]) == 1;
        let tables = if finite { solved.to_kind(Kind::Half).to_kind(Kind::Float) } else { self.tables.shallow_clone() };
        let (tables, indices) = sorted_tables(&tables, &self.indices, group_of_row);
        let mut fit = Fit { tables, indices, scales: self.scales.as_ref().map(Tensor::shallow_clone) };
        if self.scales.is_some() {
            // s_r = (w_rᵀ H q_r) / (q_rᵀ H q_r) with q_r the row's table values
            let q = fit.values(group_of_row);
            let hq = q.matmul(h);
            let num = (w * &hq).sum_dim_intlist([1].as_slice(), true, Kind::Float);
            let den = (&q * &hq).sum_dim_intlist([1].as_slice(), true, Kind::Float);
            let fitted = (&num / den.clamp_min(1e-30)).to_kind(Kind::Half).to_kind(Kind::Float);
            let usable = den.gt(0.0).logical_and(&fitted.gt(0.0)).logical_and(&fitted.isfinite());
            fit.scales = Some(fitted.where_self(&usable, scales));
        }
        fit
    }
}

/// One sorted, fp16-rounded table per group of rows: weighted 1-D k-means (Lloyd) from quantile seeds.
fn group_tables(normalized: &Tensor, spec: PaletteSpec, importance: Option<&Tensor>) -> Tensor {
    let (rows, cols) = (normalized.size()[0], normalized.size()[1]);
    let g = spec.group_rows as i64;
    let full = rows / g;
    let mut parts = Vec::new();
    if full > 0 {
        let values = normalized.narrow(0, 0, full * g).reshape([full, g * cols]);
        let weights = importance.map(|imp| imp.repeat([g]).unsqueeze(0).expand([full, g * cols], false));
        parts.push(kmeans_batched(&values, weights.as_ref(), spec.entries() as i64));
    }
    let rest = rows - full * g;
    if rest > 0 {
        let values = normalized.narrow(0, full * g, rest).reshape([1, rest * cols]);
        let weights = importance.map(|imp| imp.repeat([rest]).unsqueeze(0));
        parts.push(kmeans_batched(&values, weights.as_ref(), spec.entries() as i64));
    }
    Tensor::cat(&parts, 0)
}

/// Weighted k-means over each row of `values` (`[batch, n]`), `k` sorted centroids per row, rounded to fp16.
fn kmeans_batched(values: &Tensor, weights: Option<&Tensor>, k: i64) -> Tensor {
    let (batch, n) = (values.size()[0], values.size()[1]);
    let device = values.device();
    let sorted = values.sort(1, false).0;
    let positions =
        ((Tensor::arange(k, (Kind::Float, device)) + 0.5) / k as f64 * n as f64).to_kind(Kind::Int64).clamp(0, n - 1);
    let mut centroids = sorted.index_select(1, &positions);
    let ones;
    let weights = match weights {
        Some(w) => w,
        None => {
            ones = values.ones_like();
            &ones
        }
    };
    for _ in 0..KMEANS_ITERATIONS {
        let assignment = nearest_sorted(values, &centroids);
        let sums = Tensor::zeros([batch, k], (Kind::Float, device)).scatter_add(1, &assignment, &(values * weights));
        let mass = Tensor::zeros([batch, k], (Kind::Float, device)).scatter_add(1, &assignment, weights);
        let updated = &sums / mass.clamp_min(1e-20);
        // an empty cluster keeps its centroid
        centroids = updated.where_self(&mass.gt(0.0), &centroids).sort(1, false).0;
    }
    centroids.to_kind(Kind::Half).to_kind(Kind::Float).sort(1, false).0
}

/// Index of the nearest of each row's sorted centroids (`[batch, k]`) for every value (`[batch, n]`).
fn nearest_sorted(values: &Tensor, centroids: &Tensor) -> Tensor {
    let k = centroids.size()[1];
    let midpoints = (centroids.narrow(1, 0, k - 1) + centroids.narrow(1, 1, k - 1)) / 2.0;
    values.contiguous().searchsorted(&midpoints.contiguous(), false, false, "left", None::<Tensor>)
}

/// Nearest-entry assignment of every value of `w` (`[rows, cols]`) to its row's table (`[rows, k]`).
fn nearest(w: &Tensor, row_tables: &Tensor) -> Tensor {
    nearest_sorted(w, row_tables)
}

/// GPTQ onto per-row tables: returns `[rows, cols]` indices.
fn gptq_assign(w: &Tensor, row_tables: &Tensor, hessian: &Tensor) -> Tensor {
    let cols = w.size()[1];
    let device = w.device();
    let h = hessian.copy();
    let diag = h.diagonal(0, 0, 1);
    let dead = diag.eq(0.0);
    let w = w.copy();
    // a column the calibration never excited: any value is as good, keep it out of the solve
    let _ = h.diagonal(0, 0, 1).masked_fill_(&dead, 1.0);
    let damp = GPTQ_DAMPING * h.diagonal(0, 0, 1).mean(Kind::Float).double_value(&[]);
    let _ = h.diagonal(0, 0, 1).g_add_scalar_(damp);
    let upper = match cholesky_inverse_upper(&h) {
        Some(u) => u,
        None => return nearest(&w, row_tables),
    };
    let indices = Tensor::zeros([w.size()[0], cols], (Kind::Int64, device));
    let mut start = 0;
    while start < cols {
        let count = GPTQ_BLOCK.min(cols - start);
        let block = w.narrow(1, start, count).copy();
        let u_block = upper.narrow(0, start, count).narrow(1, start, count);
        let errors = Tensor::zeros([w.size()[0], count], (Kind::Float, device));
        for i in 0..count {
            let column = block.select(1, i);
            let idx = nearest_sorted(&column.unsqueeze(1), row_tables).squeeze_dim(1);
            let q = row_tables.gather(1, &idx.unsqueeze(1), false).squeeze_dim(1);
            indices.select(1, start + i).copy_(&idx);
            let d = u_block.get(i).get(i);
            let err = (&column - &q) / &d;
            if i + 1 < count {
                let tail = u_block.get(i).narrow(0, i + 1, count - i - 1);
                let update = err.unsqueeze(1).matmul(&tail.unsqueeze(0));
                let mut rest = block.narrow(1, i + 1, count - i - 1);
                let _ = rest.g_sub_(&update);
            }
            errors.select(1, i).copy_(&err);
        }
        if start + count < cols {
            let cross = upper.narrow(0, start, count).narrow(1, start + count, cols - start - count);
            let mut rest = w.narrow(1, start + count, cols - start - count);
            let _ = rest.g_sub_(&errors.matmul(&cross));
        }
        start += count;
    }
    indices
}

/// The upper Cholesky factor of `H⁻¹`, or `None` when `H` is not positive definite even after damping.
fn cholesky_inverse_upper(h: &Tensor) -> Option<Tensor> {
    let lower = h.f_linalg_cholesky(false).ok()?;
    let inverse = lower.f_cholesky_inverse(false).ok()?;
    let upper = inverse.f_linalg_cholesky(true).ok()?;
    let finite = upper.isfinite().all().int64_value(&[]) == 1;
    finite.then_some(upper)
}

/// Relative reconstruction error `‖(W − Ŵ) X‖ / ‖W X‖` measured through the Hessian (`tr(E H Eᵀ)`), or the
/// plain Frobenius ratio without one.
pub fn reconstruction_error(weight: &Tensor, approx: &Tensor, hessian: Option<&Tensor>) -> f64 {
    tch::no_grad(|| {
        let w = weight.to_kind(Kind::Float);
        let e = &w - approx.to_kind(Kind::Float).to_device(w.device());
        match hessian {
            Some(h) => {
                let h = h.to_kind(Kind::Float).to_device(w.device());
                let num = (e.matmul(&h) * &e).sum(Kind::Float).double_value(&[]);
                let den = (w.matmul(&h) * &w).sum(Kind::Float).double_value(&[]);
                (num / den.max(1e-30)).sqrt()
            }
            None => (e.square().sum(Kind::Float).double_value(&[])
                / w.square().sum(Kind::Float).double_value(&[]).max(1e-30))
            .sqrt(),
        }
    })
}
