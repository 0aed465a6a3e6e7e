//! Training checkpoints: enough state to continue after a kill with no progress lost beyond the last one.
//!
//! A checkpoint holds the completed step count, the adapter's tensors, AdamW's moments and step count, the
//! loss curve so far and a fingerprint of the job. Batch order and the learning rate are functions of the
//! seed and the step, and dropout is reseeded from them every step, so nothing else is needed for the resumed
//! run to take the same path. The file (`checkpoint.safetensors`, f32 tensors plus a JSON header) is written
//! to a temporary name, synced and renamed over the previous one, so a kill at any moment leaves either the
//! old checkpoint or the new one, never a torn file. The accuracy-recovery trainer keeps its optimizers' state
//! in the same format, in files of its own (`recover/checkpoint.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::EngineError;

/// The checkpoint file's name inside the checkpoint directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Where and how often to checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSettings {
    pub dir: PathBuf,
    /// Save after every this many optimizer steps (at least 1).
    pub every_steps: usize,
}

/// The state saved at a step boundary.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    /// Optimizer steps completed.
    pub step: usize,
    pub parameters: Vec<Tensor>,
    pub first_moments: Vec<Tensor>,
    pub second_moments: Vec<Tensor>,
    /// AdamW's own step count (bias correction); lags `step` when a step had no targets.
    pub optimizer_steps: i32,
    pub loss_curve: Vec<(usize, f64)>,
    pub tokens: usize,
    /// What the job was; a checkpoint of another job is refused.
    pub fingerprint: String,
}

fn io_error(path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Io { path: path.to_owned(), source }
}

fn checkpoint_error(path: &Path, reason: impl std::fmt::Display) -> EngineError {
    EngineError::Training(format!("checkpoint {}: {reason}", path.display()))
}

fn tensor_bytes(tensor: &Tensor) -> Result<(Vec<usize>, Vec<u8>), EngineError> {
    let stored = tensor.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let mut bytes = vec![0u8; stored.numel() * 4];
    stored.f_copy_data_u8(&mut bytes, stored.numel())?;
    Ok((stored.size().iter().map(|&d| d as usize).collect(), bytes))
}

impl Checkpoint {
    /// Writes the checkpoint into `dir` atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        self.write_to(&dir.join(CHECKPOINT_FILE))
    }

    /// Writes the checkpoint to the file `path` atomically (its folder must exist): the recovery keeps its
    /// optimizers' state in this format under names of its own.
    pub fn write_to(&self, path: &Path) -> Result<(), EngineError> {
        let mut tensors = BTreeMap::new();
        let groups = [("param", &self.parameters), ("m", &self.first_moments), ("v", &self.second_moments)];
        for (prefix, group) in groups {
            for (index, tensor) in group.iter().enumerate() {
                tensors.insert(format!("{prefix}.{index:05}"), tensor_bytes(tensor)?);
            }
        }
        let curve = serde_json::to_string(&self.loss_curve).map_err(|e| checkpoint_error(path, e))?;
        let metadata = BTreeMap::from([
            ("step".to_owned(), self.step.to_string()),
            ("tokens".to_owned(), self.tokens.to_string()),
            ("optimizer_steps".to_owned(), self.optimizer_steps.to_string()),
            ("loss_curve".to_owned(), curve),
            ("fingerprint".to_owned(), self.fingerprint.clone()),
            ("count".to_owned(), self.parameters.len().to_string()),
        ]);
        let bytes = crate::lora::encode_safetensors(&tensors, Dtype::F32, &metadata);
        crate::files::write_atomic(path, &bytes)
    }

    /// The checkpoint in `dir`, `None` when there is none; a file that does not read back is an error naming
    /// it (never silently restarted from scratch).
    pub fn load(dir: &Path, device: Device) -> Result<Option<Checkpoint>, EngineError> {
        Checkpoint::read_from(&dir.join(CHECKPOINT_FILE), device)
    }

    /// The checkpoint in the file `path`, as [`Checkpoint::load`] reads it.
    pub fn read_from(path: &Path, device: Device) -> Result<Option<Checkpoint>, EngineError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(path, error)),
        };
        let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| checkpoint_error(path, e))?;
        let header = metadata.metadata().clone().unwrap_or_default();
        let field = |key: &str| header.get(key).ok_or_else(|| checkpoint_error(path, format!("no {key:?} field")));
        let number = |key: &str| -> Result<usize, EngineError> {
            field(key)?.parse().map_err(|_| checkpoint_error(path, format!("{key:?} is not a number")))
        };
        let count = number("count")?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| checkpoint_error(path, e))?;
        let read_group = |prefix: &str| -> Result<Vec<Tensor>, EngineError> {
            (0..count)
                .map(|index| {
                    let name = format!("{prefix}.{index:05}");
                    let view = file.tensor(&name).map_err(|_| checkpoint_error(path, format!("{name} is missing")))?;
                    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                    Ok(Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?.to_device(device))
                })
                .collect()
        };
        let loss_curve = serde_json::from_str(field("loss_curve")?).map_err(|e| checkpoint_error(path, e))?;
        Ok(Some(Checkpoint {
            step: number("step")?,
            parameters: read_group("param")?,
            first_moments: read_group("m")?,
            second_moments: read_group("v")?,
            optimizer_steps: i32::try_from(number("optimizer_steps")?)
                .map_err(|_| checkpoint_error(path, "optimizer_steps is out of range"))?,
            loss_curve,
            tokens: number("tokens")?,
            fingerprint: field("fingerprint")?.clone(),
        }))
    }
}
