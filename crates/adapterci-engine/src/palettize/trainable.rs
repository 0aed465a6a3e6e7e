//! Palettized operations whose table entries and row scales train (the indices stay fixed), so that the
//! accuracy-recovery adapter can fine-tune them with the LoRA: they are part of the release at no extra bits, and
//! gradient descent on the end-to-end KL can move them where the per-operation least-squares fit could not (as
//! scale tuning does in PEQA and EfficientQAT). A weight is `tables[group(row)][index] * scale[row] * factor[row]`:
//! the entries train as they are (row-normalized, within [-1, 1]); the scales through a factor that starts at 1,
//! so one learning rate moves both by similar relative amounts.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::{Fit, PalettizedTensor, Rotation, group_of_row};
use crate::EngineError;
use crate::allocate::LinearOp;
use crate::llama::Llama;

struct TrainableOp {
    op: LinearOp,
    spec: super::PaletteSpec,
    /// `[groups, k]` f32, trains.
    tables: Tensor,
    /// `[rows, 1]` f32: the stored scales, and the factor on them that trains.
    scales: Option<(Tensor, Tensor)>,
    /// `[rows, cols]` u8 (widened to int64 when used).
    indices: Tensor,
    group_of_row: Tensor,
    /// `Qᵀ` `[cols, cols]` when the operation is palettized rotated.
    unrotate: Option<Tensor>,
}

impl TrainableOp {
    /// The current parts (the tables and scale factors still carrying their gradients).
    fn fit(&self) -> Fit {
        Fit {
            tables: self.tables.shallow_clone(),
            indices: self.indices.to_kind(Kind::Int64),
            scales: self.scales.as_ref().map(|(scales, factors)| scales * factors),
        }
    }

    fn weight(&self) -> Tensor {
        let values = self.fit().dequantize(&self.group_of_row);
        match &self.unrotate {
            Some(qt) => values.matmul(qt),
            None => values,
        }
    }

    fn names(&self) -> (String, String) {
        let name = self.op.name();
        (format!("{name}.lut"), format!("{name}.scale_factor"))
    }
}

/// Every linear operation's palettization, with trainable tables and row scales.
pub struct TrainablePalettes {
    ops: Vec<TrainableOp>,
}

impl std::fmt::Debug for TrainablePalettes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainablePalettes").field("ops", &self.ops.len()).finish()
    }
}

impl TrainablePalettes {
    /// `parts[i]` is the palettization of `ops[i]`; the tensors live on `device`.
    pub fn new(ops: &[LinearOp], parts: &[PalettizedTensor], device: Device) -> Result<Self, EngineError> {
        if ops.len() != parts.len() {
            return Err(EngineError::InvalidConfig(format!(
                "{} palettized operations for {} linear operations",
                parts.len(),
                ops.len()
            )));
        }
        let mut trainable = Vec::with_capacity(ops.len());
        // one `Qᵀ` per seed and width, shared by the operations that use it (210 copies would hold ~0.5 GB)
        let mut unrotations: HashMap<(Rotation, usize), Tensor> = HashMap::new();
        for (op, part) in ops.iter().zip(parts) {
            if [part.rows, part.cols] != [op.rows, op.cols] {
                return Err(EngineError::InvalidConfig(format!(
                    "{}: palettized {}x{}, the operation is {}x{}",
                    op.name(),
                    part.rows,
                    part.cols,
                    op.rows,
                    op.cols
                )));
            }
            part.validate().map_err(|reason| EngineError::InvalidConfig(format!("{}: {reason}", op.name())))?;
            let Fit { tables, indices, scales } = part.fit(device);
            trainable.push(TrainableOp {
                op: *op,
                spec: part.spec,
                tables: tables.set_requires_grad(true),
                scales: scales.map(|s| {
                    let factors = s.ones_like().set_requires_grad(true);
                    (s, factors)
                }),
                indices: indices.to_kind(Kind::Uint8),
                group_of_row: group_of_row(part.rows, part.spec, device),
                unrotate: part.spec.rotation.map(|r| {
                    unrotations.entry((r, part.cols)).or_insert_with(|| r.unrotation(part.cols, device)).shallow_clone()
                }),
            });
        }
        Ok(TrainablePalettes { ops: trainable })
    }

    /// The tensors that train: every table and every scale factor.
    pub fn parameters(&self) -> Vec<Tensor> {
        let mut all = Vec::new();
        for op in &self.ops {
            all.push(op.tables.shallow_clone());
            all.extend(op.scales.as_ref().map(|(_, f)| f.shallow_clone()));
        }
        all
    }

    /// Sets every operation's weight in `student` to the current tables and scales, differentiably: call it
    /// before each forward pass that trains them.
    pub fn apply(&self, student: &mut Llama) -> Result<(), EngineError> {
        for op in &self.ops {
            student.set_linear_weight(op.op.layer, op.op.target, op.weight())?;
        }
        Ok(())
    }

    /// The stored form of the trained palettizations (fp16 entries and scales, sorted tables), in `ops` order.
    pub fn to_parts(&self) -> Result<Vec<PalettizedTensor>, EngineError> {
        tch::no_grad(|| self.ops.iter().map(|op| op.fit().into_palettized(op.op.rows, op.op.cols, op.spec)).collect())
    }

    /// The trained tensors by name (for a checkpoint).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut named = Vec::new();
        for op in &self.ops {
            let (lut, factor) = op.names();
            named.push((lut, op.tables.detach().to_device(Device::Cpu)));
            if let Some((_, f)) = &op.scales {
                named.push((factor, f.detach().to_device(Device::Cpu)));
            }
        }
        named
    }

    /// Loads tensors that [`TrainablePalettes::state`] wrote; every one must be there, with its shape.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), EngineError> {
        let find = |name: &str, like: &Tensor| -> Result<Tensor, EngineError> {
            match named.iter().find(|(n, _)| n == name) {
                Some((_, t)) if t.size() == like.size() => Ok(t.to_kind(Kind::Float)),
                Some((_, t)) => Err(EngineError::Training(format!(
                    "palette checkpoint: {name} is {:?}, expected {:?}",
                    t.size(),
                    like.size()
                ))),
                None => Err(EngineError::Training(format!("palette checkpoint: {name} is missing"))),
            }
        };
        for op in &mut self.ops {
            let (lut, factor) = op.names();
            let tables = find(&lut, &op.tables)?;
            let factors = match &op.scales {
                Some((_, f)) => Some(find(&factor, f)?),
                None => None,
            };
            tch::no_grad(|| {
                op.tables.copy_(&tables);
                if let (Some((_, f)), Some(loaded)) = (&mut op.scales, &factors) {
                    f.copy_(loaded);
                }
            });
        }
        Ok(())
    }
}
