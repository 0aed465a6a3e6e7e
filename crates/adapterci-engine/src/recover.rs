//! The accuracy-recovery adapter: LoRA on every linear operation of every layer, trained with the compressed
//! base frozen so that its next-token distributions match the uncompressed model's (KL(teacher ‖ student) on
//! the logits of every position), on text the teacher wrote (plus an optional user corpus). Budget in steps
//! and/or seconds, periodic checkpoints (adapter + step) that a later call resumes from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use adapterci_core::training::{AdapterConfig, LoraTarget};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::EngineError;
use crate::calibrate::{batch_tensor, kl_per_position};
use crate::dataset::SeededRng;
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::train::{AdamW, learning_rate_at};

/// How the recovery adapter is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoverySpec {
    pub rank: usize,
    pub alpha: f64,
    /// At most this many optimizer steps (the schedule is laid out over them).
    pub steps: usize,
    /// Stop early, after the step that crosses this much wall time.
    pub max_seconds: Option<f64>,
    /// Sequences per step.
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: never) into `checkpoint_dir`.
    pub checkpoint_every: usize,
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for RecoverySpec {
    fn default() -> Self {
        RecoverySpec {
            rank: 16,
            alpha: 32.0,
            steps: 300,
            max_seconds: None,
            batch: 4,
            learning_rate: 1e-3,
            seed: 7,
            checkpoint_every: 0,
            checkpoint_dir: None,
        }
    }
}

/// What recovery training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    pub steps: usize,
    /// `(step, mean KL per position)` of each step's batch.
    pub kl_curve: Vec<(usize, f64)>,
    pub seconds: f64,
    pub tokens: usize,
    /// True when the time budget ended training before `steps`.
    pub stopped_by_time: bool,
    /// The step a checkpoint resumed from.
    pub resumed_from: Option<usize>,
    pub device: String,
}

/// One step's progress.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryProgress {
    pub step: usize,
    pub total_steps: usize,
    pub kl: f64,
    pub learning_rate: f64,
    pub elapsed_seconds: f64,
}

/// Steps timed before a time budget sets the schedule's length.
const PACE_STEPS: usize = 10;
/// Steps left out of the timing (warm-up).
const WARMUP_STEPS: usize = 3;
const CHECKPOINT_ADAPTER: &str = "recovery-checkpoint.safetensors";
const CHECKPOINT_STATE: &str = "recovery-checkpoint.json";

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    kl_curve: Vec<(usize, f64)>,
    spec: RecoverySpec,
}

/// The adapter shape of a recovery adapter for `student`: every target, every layer.
pub fn recovery_config(student: &Llama, spec: &RecoverySpec) -> AdapterConfig {
    AdapterConfig {
        rank: spec.rank,
        alpha: spec.alpha,
        targets: LoraTarget::ALL.to_vec(),
        layers: (0..student.config().num_layers).collect(),
        dtype: "f16".to_string(),
    }
}

/// Trains a recovery adapter for `student` towards `teacher` on `sequences` (equal lengths).
pub fn recover(
    teacher: &Llama,
    student: &Llama,
    sequences: &[Vec<u32>],
    spec: &RecoverySpec,
    progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<(LoraWeights, RecoveryReport), EngineError> {
    if sequences.is_empty() || spec.steps == 0 || spec.batch == 0 {
        return Err(EngineError::InvalidConfig("recovery needs sequences, steps >= 1 and batch >= 1".into()));
    }
    let device = student.device();
    let config = recovery_config(student, spec);
    let (mut lora, mut start, mut kl_curve) = match resume(spec, student)? {
        Some((lora, state)) => (lora, state.step, state.kl_curve),
        None => (LoraWeights::init_standard(&config, 0.0, student.config(), spec.seed, device)?, 0, Vec::new()),
    };
    let resumed_from = (start > 0).then_some(start);
    lora.set_training(true);
    let mut optimizer = AdamW::new(lora.trainable_parameters(), 0.0);
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    let mut rng = SeededRng::new(spec.seed ^ 0xC0FF_EE00);
    rng.shuffle(&mut order);
    let mut cursor = start * spec.batch % sequences.len().max(1);
    let started = Instant::now();
    let vocab = student.config().vocab_size as i64;
    let mut tokens = 0;
    let mut stopped_by_time = false;
    // With a time budget, the schedule is laid out over the steps that fit it (measured over the first steps),
    // so that the learning rate still decays to zero when time runs out.
    // Until the pace is known, a provisional schedule of 10x the timed steps keeps the warmup short (a
    // 100,000-step provisional schedule would spend the timed steps at a learning rate near zero).
    let mut total_steps = match spec.max_seconds {
        Some(_) => spec.steps.min(start + (WARMUP_STEPS + PACE_STEPS) * 10),
        None => spec.steps,
    };
    let first_step = start;
    let mut pace_from = 0.0;
    while start < total_steps {
        let rows: Vec<Vec<u32>> = (0..spec.batch)
            .map(|_| {
                let row = sequences[order[cursor % order.len()]].clone();
                cursor += 1;
                row
            })
            .collect();
        let ids = batch_tensor(&rows, device)?;
        tokens += ids.numel();
        let teacher_logits = tch::no_grad(|| {
            teacher.forward(&ids.to_device(teacher.device()), 0, None, None).reshape([-1, vocab]).to_device(device)
        });
        let student_logits = student.forward(&ids, 0, None, Some(&lora)).reshape([-1, vocab]);
        let loss = kl_per_position(&teacher_logits, &student_logits).mean(Kind::Float);
        loss.f_backward()?;
        let kl = loss.double_value(&[]);
        if !kl.is_finite() {
            return Err(EngineError::Training(format!("recovery KL became {kl} at step {}", start + 1)));
        }
        let learning_rate = learning_rate_at(start, total_steps, spec.learning_rate);
        optimizer.step(learning_rate);
        start += 1;
        kl_curve.push((start, kl));
        let elapsed = started.elapsed().as_secs_f64();
        progress(&RecoveryProgress { step: start, total_steps, kl, learning_rate, elapsed_seconds: elapsed });
        if start - first_step == WARMUP_STEPS {
            pace_from = elapsed;
        }
        if let Some(limit) = spec.max_seconds
            && start - first_step == WARMUP_STEPS + PACE_STEPS
        {
            // the first steps pay for kernel selection and allocation: time the ones after them
            let per_step = (elapsed - pace_from) / PACE_STEPS as f64;
            let fit = start + ((limit - elapsed).max(0.0) / per_step.max(1e-9)) as usize;
            total_steps = spec.steps.min(fit.max(start));
        }
        if spec.checkpoint_every > 0 && start % spec.checkpoint_every == 0 && start < total_steps {
            write_checkpoint(spec, &lora, start, &kl_curve)?;
        }
        if spec.max_seconds.is_some_and(|limit| elapsed >= limit) && start < total_steps {
            stopped_by_time = true;
            break;
        }
    }
    lora.set_training(false);
    let report = RecoveryReport {
        steps: start,
        kl_curve,
        seconds: started.elapsed().as_secs_f64(),
        tokens,
        stopped_by_time,
        resumed_from,
        device: format!("{device:?}"),
    };
    Ok((lora, report))
}

fn write_checkpoint(
    spec: &RecoverySpec,
    lora: &LoraWeights,
    step: usize,
    curve: &[(usize, f64)],
) -> Result<(), EngineError> {
    let Some(dir) = &spec.checkpoint_dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.clone(), source })?;
    let bytes = lora.to_safetensors()?;
    write_atomic(&dir.join(CHECKPOINT_ADAPTER), &bytes)?;
    let state = CheckpointState { step, kl_curve: curve.to_vec(), spec: spec.clone() };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| EngineError::Training(e.to_string()))?;
    write_atomic(&dir.join(CHECKPOINT_STATE), &json)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|source| EngineError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })
}

/// The checkpoint in `spec.checkpoint_dir`, when there is one for the same spec (steps aside).
fn resume(spec: &RecoverySpec, student: &Llama) -> Result<Option<(LoraWeights, CheckpointState)>, EngineError> {
    let Some(dir) = &spec.checkpoint_dir else { return Ok(None) };
    let state_path = dir.join(CHECKPOINT_STATE);
    let Ok(json) = std::fs::read(&state_path) else { return Ok(None) };
    let state: CheckpointState = serde_json::from_slice(&json)
        .map_err(|e| EngineError::Training(format!("{}: unreadable recovery checkpoint: {e}", state_path.display())))?;
    let same = RecoverySpec { steps: spec.steps, max_seconds: spec.max_seconds, ..state.spec.clone() } == *spec;
    if !same {
        return Err(EngineError::Training(format!(
            "{}: the checkpoint was written for a different recovery spec; remove it or use another directory",
            state_path.display()
        )));
    }
    let adapter_path = dir.join(CHECKPOINT_ADAPTER);
    let bytes =
        std::fs::read(&adapter_path).map_err(|source| EngineError::Io { path: adapter_path.clone(), source })?;
    let lora = LoraWeights::from_safetensors(&bytes, student.config(), student.device())?;
    Ok(Some((lora, state)))
}

/// The device a recovery should use: CUDA when present.
pub fn preferred_device() -> Device {
    Device::cuda_if_available()
}
