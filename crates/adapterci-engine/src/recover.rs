//! The accuracy-recovery adapter: LoRA on every linear operation of every layer, trained with the compressed
//! base frozen so that its next-token distributions match the uncompressed model's (KL(teacher ‖ student) on
//! the logits of every position), on text the teacher wrote (plus an optional user corpus). Budget in steps
//! and/or seconds, periodic checkpoints (`recover/checkpoint.rs`: the adapter, the palettes, both optimizers'
//! state, the step, the schedule's length, the training time so far and the digest of the text trained on) that a
//! later call with the same spec and text resumes from, taking the steps an uninterrupted run would have taken,
//! its budget going on from where the checkpoint left it.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::time::Instant;

use adapterci_core::Digest;
use adapterci_core::training::{AdapterConfig, BasePrecision, LoraTarget};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::EngineError;
use crate::allocate::linear_ops;
use crate::calibrate::{Hessians, batch_tensor, kl_per_position};
use crate::dataset::SeededRng;
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::palettize::{PalettizedTensor, TrainablePalettes};
use crate::train::{AdamW, BaseCompute, TrainingModel, learning_rate_at};

mod checkpoint;
mod init;
mod validation;
pub use checkpoint::remove_checkpoint;
pub use checkpoint::training_text_digest;
use checkpoint::{CheckpointState, Optimizers, Resumed, SavedOptimizers, resume, write_checkpoint};
pub(crate) use checkpoint::{foreign_entries, has_checkpoint, holds_checkpoint};
pub use init::calibrated_init;
pub use init::{best_low_rank, damped_square_root};
pub use validation::{ValidationPoint, ValidationSet, hold_out};

/// How the recovery adapter is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoverySpec {
    pub rank: usize,
    pub alpha: f64,
    /// At most this many optimizer steps (the schedule is laid out over them).
    pub steps: usize,
    /// Stop early, after the step that crosses this much wall time (of training, summed over the runs that a
    /// checkpoint carried it through: a resumed run has only what the interrupted ones left).
    pub max_seconds: Option<f64>,
    /// Sequences per step.
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: never) into `checkpoint_dir`.
    pub checkpoint_every: usize,
    pub checkpoint_dir: Option<PathBuf>,
    /// Train the palettized operations' table entries and row scales together with the adapter, at this peak
    /// learning rate (the indices stay fixed; see [`recover_palettized`]); `None`: the compressed base stays
    /// frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub palette_learning_rate: Option<f64>,
    /// Start each LoRA pair at its operation's best rank-r correction of the palettization error under the
    /// calibration statistics ([`calibrated_init`]) instead of at zero; needs the statistics.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calibrated_init: bool,
    /// Precision of the frozen matmuls of both models (the student's palettized base and the teacher) in the
    /// training forward passes; the adapter, norms, attention, the KL and the optimizer stay f32 either way.
    /// [`preferred_precision`] says which pays on a device.
    #[serde(default, skip_serializing_if = "is_f32")]
    pub base_precision: BasePrecision,
    /// Sequences of each source of the training text (the teacher's, the user corpus's) held out of training
    /// and scored against the teacher ([`hold_out`]: at most a tenth of a source); 0 holds out none (and is
    /// what a record written before the field means).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub validation_sequences: usize,
    /// Score the held-out sets every this many steps (and before the first step and after the last); 0: only
    /// before and after.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub validate_every: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_f32(precision: &BasePrecision) -> bool {
    *precision == BasePrecision::F32
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
            palette_learning_rate: None,
            calibrated_init: false,
            base_precision: BasePrecision::F32,
            validation_sequences: 16,
            validate_every: 50,
        }
    }
}

/// What recovery training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    pub steps: usize,
    /// `(step, mean KL per position)` of each step's batch.
    pub kl_curve: Vec<(usize, f64)>,
    /// Wall time of the training, with the time a resumed checkpoint recorded for the runs before it.
    pub seconds: f64,
    /// Tokens trained on by this run (not those of the runs a checkpoint resumed).
    pub tokens: usize,
    /// True when the time budget ended training before `steps`.
    pub stopped_by_time: bool,
    /// The step a checkpoint resumed from.
    pub resumed_from: Option<usize>,
    pub device: String,
    /// The precision of the frozen matmuls it trained with (reports written before the field: f32).
    #[serde(default)]
    pub base_precision: BasePrecision,
    /// The held-out sets' scores, in step order (none when nothing was held out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<ValidationPoint>,
}

impl RecoveryReport {
    /// The last score of each held-out set.
    pub fn final_validation(&self) -> Vec<&ValidationPoint> {
        let last = self.validation.last().map_or(0, |p| p.step);
        self.validation.iter().filter(|p| p.step == last).collect()
    }
}

/// One step's progress.
#[derive(Clone, Debug)]
pub struct RecoveryProgress {
    pub step: usize,
    pub total_steps: usize,
    pub kl: f64,
    pub learning_rate: f64,
    /// Training time so far, the runs before a resumed checkpoint included (what the time budget counts).
    pub elapsed_seconds: f64,
    /// The held-out sets' scores when this step validated (else empty). The scores before the first step and
    /// after the last come in progress of their own, with the step count of that point (`kl` NaN before the
    /// first step).
    pub validation: Vec<ValidationPoint>,
}

/// What a recovery trains on, and the held-out text it is validated on.
#[derive(Clone, Debug, Default)]
pub struct RecoveryText {
    pub sequences: Vec<Vec<u32>>,
    /// Sequences of the user corpus (each repeated `repeats` times in `sequences`).
    pub user: usize,
    pub repeats: usize,
    /// How many times the teacher's sequences are in `sequences` (more than once when a large corpus would
    /// otherwise take more than its share).
    pub teacher_repeats: usize,
    /// Held out of `sequences`, scored every [`RecoverySpec::validate_every`] steps.
    pub validation: Vec<ValidationSet>,
}

impl RecoveryText {
    /// `sequences` to train on, nothing held out.
    pub fn plain(sequences: Vec<Vec<u32>>) -> RecoveryText {
        RecoveryText { sequences, teacher_repeats: 1, ..RecoveryText::default() }
    }

    /// What it trains and validates on, as one digest ([`training_text_digest`]): what a checkpoint must have
    /// been made on to be resumed.
    pub fn digest(&self) -> Digest {
        training_text_digest(&self.sequences, &self.validation)
    }

    /// One line on what it holds, for progress output.
    pub fn describe(&self, seq_len: usize) -> String {
        let mut line = format!("recovery text: {} sequences of {seq_len} tokens", self.sequences.len());
        if self.user > 0 {
            line += &format!(
                " ({} of the user corpus x {}, the teacher's x {})",
                self.user, self.repeats, self.teacher_repeats
            );
        }
        for set in &self.validation {
            line += &format!("; {} held out of the {} for validation", set.sequences.len(), set.name);
        }
        line
    }
}

/// What a recovery trains and validates on, with its digest ([`training_text_digest`]), taken once when it is
/// made: a base-release build names its checkpoints' folder by it and then hands it to the recovery, which
/// records it in its checkpoints and resumes only one that recorded it. Made only from the text it describes, so
/// the two cannot disagree.
pub(crate) struct DigestedText<'a> {
    sequences: &'a [Vec<u32>],
    validation: &'a [ValidationSet],
    digest: Digest,
}

impl<'a> DigestedText<'a> {
    /// `sequences` to train on and the held-out `validation` sets, digested.
    pub(crate) fn new(sequences: &'a [Vec<u32>], validation: &'a [ValidationSet]) -> DigestedText<'a> {
        DigestedText { sequences, validation, digest: training_text_digest(sequences, validation) }
    }

    /// `text`'s sequences and validation sets, digested ([`RecoveryText::digest`]).
    pub(crate) fn of(text: &'a RecoveryText) -> DigestedText<'a> {
        DigestedText::new(&text.sequences, &text.validation)
    }

    pub(crate) fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// Steps timed before a time budget sets the schedule's length.
const PACE_STEPS: usize = 10;
/// Steps left out of the timing (warm-up).
const WARMUP_STEPS: usize = 3;

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

/// Trains a recovery adapter for `student` towards `teacher` on `sequences` (equal lengths), the base frozen.
pub fn recover(
    teacher: &Llama,
    student: &Llama,
    sequences: &[Vec<u32>],
    spec: &RecoverySpec,
    progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<(LoraWeights, RecoveryReport), EngineError> {
    if spec.palette_learning_rate.is_some() {
        return Err(EngineError::InvalidConfig(
            "training the palettes needs the palettized operations: use recover_palettized".into(),
        ));
    }
    train(teacher, student, None, None::<&Hessians>, &DigestedText::new(sequences, &[]), spec, progress)
}

/// A recovery of a palettized base.
pub struct Recovered {
    pub lora: LoraWeights,
    /// The palettized operations as they are now (trained when the spec trains the palettes), in
    /// [`linear_ops`] order: the release is written from these.
    pub palettes: Vec<PalettizedTensor>,
    /// `student` with the operations' weights from `palettes` (as served).
    pub student: Llama,
    pub report: RecoveryReport,
}

/// Like [`recover`], for a `student` whose linear operations are `palettes` (in [`linear_ops`] order): with
/// `spec.palette_learning_rate`, their table entries and row scales train together with the adapter (the
/// indices stay fixed, so the bits are the same), and the trained ones come back, rounded to fp16 as stored.
/// `hessians` (the calibration statistics) are needed for `spec.calibrated_init`. `text.validation` is scored
/// as training goes ([`RecoveryReport::validation`]).
pub fn recover_palettized(
    teacher: &Llama,
    student: &Llama,
    palettes: &[PalettizedTensor],
    hessians: Option<&Hessians>,
    text: &RecoveryText,
    spec: &RecoverySpec,
    progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<Recovered, EngineError> {
    recover_palettized_taking(teacher, student, palettes, hessians, &DigestedText::of(text), spec, progress)
}

/// [`recover_palettized`] with statistics that may be given to it (`Hessians`, or `&Hessians` to keep them):
/// given, they are dropped as soon as the recovery's start is made (its calibrated start is their last reader; a
/// checkpoint's start needs none), before the training takes its memory, instead of staying through every step
/// (403 MB on SmolLM2-135M). `text` comes with its digest, which a caller that also names something by it (a
/// build, its checkpoints' folder) has taken once for both.
pub(crate) fn recover_palettized_taking<H: Borrow<Hessians>>(
    teacher: &Llama,
    student: &Llama,
    palettes: &[PalettizedTensor],
    hessians: Option<H>,
    text: &DigestedText<'_>,
    spec: &RecoverySpec,
    progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<Recovered, EngineError> {
    let mut trainable = match spec.palette_learning_rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => {
            return Err(EngineError::InvalidConfig(format!("palette learning rate {rate}: use a positive number")));
        }
        Some(_) => Some(TrainablePalettes::new(&linear_ops(student.config()), palettes, student.device())?),
        None => None,
    };
    let (lora, report) = train(teacher, student, trainable.as_mut(), hessians, text, spec, progress)?;
    let palettes = match trainable {
        Some(t) => t.to_parts()?,
        None => palettes.to_vec(),
    };
    let mut served = student.shallow_copy();
    if spec.palette_learning_rate.is_some() {
        for (op, part) in linear_ops(student.config()).iter().zip(&palettes) {
            served.set_linear_weight(op.layer, op.target, part.dequantize(student.device()))?;
        }
    }
    Ok(Recovered { lora, palettes, student: served, report })
}

/// The schedule's length under a time budget: the `done` steps plus as many as the time left (`limit - elapsed`
/// seconds) allows at `seconds_per_step`, at most `max_steps` and never fewer than `done`.
fn steps_within(done: usize, elapsed: f64, limit: f64, seconds_per_step: f64, max_steps: usize) -> usize {
    let more = (limit - elapsed).max(0.0) / seconds_per_step.max(1e-9);
    // `as` saturates: an unmeasurably fast pace fits max_steps
    max_steps.min(done.saturating_add(more as usize))
}

/// The training loop on `text`'s sequences; `palettes`, when given, train too (in place); `text`'s validation sets
/// are scored before the first step, every `spec.validate_every` steps and after the last. `hessians` are read by
/// the calibrated start only, and go (when given by value) before the first step.
fn train<H: Borrow<Hessians>>(
    teacher: &Llama,
    student: &Llama,
    mut palettes: Option<&mut TrainablePalettes>,
    hessians: Option<H>,
    text: &DigestedText<'_>,
    spec: &RecoverySpec,
    progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<(LoraWeights, RecoveryReport), EngineError> {
    let (sequences, validation, text_digest) = (text.sequences, text.validation, text.digest());
    if sequences.is_empty() || spec.steps == 0 || spec.batch == 0 {
        return Err(EngineError::InvalidConfig("recovery needs sequences, steps >= 1 and batch >= 1".into()));
    }
    // the time budget counts from here: a calibrated start's decompositions are part of it
    let clock = TrainingClock::start();
    let device = student.device();
    let config = recovery_config(student, spec);
    let (mut lora, state, saved_optimizers) = match resume(spec, text_digest, student, palettes.as_deref_mut())? {
        Some(Resumed { lora, state, optimizers }) => (lora, state, optimizers),
        // a resumed run needs no statistics: its start is the checkpoint's
        None if spec.calibrated_init && hessians.is_none() => {
            return Err(EngineError::InvalidConfig(
                "a calibrated recovery init needs the calibration statistics (recover_palettized with hessians)".into(),
            ));
        }
        None => {
            let lora = match hessians.as_ref().filter(|_| spec.calibrated_init) {
                Some(h) => calibrated_init(&config, teacher, student, h.borrow())?,
                None => LoraWeights::init_standard(&config, 0.0, student.config(), spec.seed, device)?,
            };
            (lora, CheckpointState::start(spec), SavedOptimizers::default())
        }
    };
    // the start was the statistics' last reader: given to the recovery, they go before the training's models,
    // optimizers and activations take their memory
    drop(hessians);
    let clock = clock.after(state.elapsed_seconds);
    let CheckpointState {
        step: mut start,
        mut kl_curve,
        validation: resumed_validation,
        total_steps: resumed_schedule,
        ..
    } = state;
    let resumed_from = (start > 0).then_some(start);
    lora.set_training(true);
    let mut optimizer = AdamW::new(lora.trainable_parameters(), 0.0);
    // the palettes get their own optimizer: their own learning rate and gradient clipping
    let mut palette_optimizer = palettes.as_ref().map(|p| AdamW::new(p.parameters(), 0.0));
    // the checkpoint's moments and step counts, and its f32 values of the adapter and palettes
    saved_optimizers.restore(&mut optimizer, palette_optimizer.as_mut())?;
    // The fused training forward (one matmul for q/k/v and one for gate/up, the frozen matmuls in the spec's
    // precision) for the teacher, and for the student while its weights are frozen; palettes that train change
    // the student's weights every step, so that student runs the model's own forward.
    let compute = BaseCompute::from(spec.base_precision);
    let teacher_model = TrainingModel::new(teacher, compute)?;
    let frozen_student = if palettes.is_none() { Some(TrainingModel::new(student, compute)?) } else { None };
    let mut trained = student.shallow_copy();
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    let mut rng = SeededRng::new(spec.seed ^ 0xC0FF_EE00);
    rng.shuffle(&mut order);
    let mut cursor = start * spec.batch % sequences.len().max(1);
    let vocab = student.config().vocab_size as i64;
    let mut tokens = 0;
    // a run resumed with its time already spent (killed between the last checkpoint and the end) trains no more
    // (a fresh run takes at least one step, however small its budget)
    let mut stopped_by_time =
        start > 0 && start < spec.steps && spec.max_seconds.is_some_and(|limit| clock.seconds() >= limit);
    // With a time budget, the schedule is laid out over the steps that fit it (measured over the first steps),
    // so that the learning rate still decays to zero when time runs out.
    // Until the pace is known, a provisional schedule of 10x the timed steps keeps the warmup short (a
    // 100,000-step provisional schedule would spend the timed steps at a learning rate near zero); a resumed run
    // goes on with the schedule its checkpoint was on until it has timed its own pace.
    let mut total_steps = match spec.max_seconds {
        Some(_) if stopped_by_time => start,
        Some(_) => resumed_schedule.unwrap_or(start + (WARMUP_STEPS + PACE_STEPS) * 10).min(spec.steps),
        None => spec.steps,
    };
    let first_step = start;
    let mut pace_from = 0.0;
    // scores the held-out sets as the student is now (the palettes, when they train, applied first)
    let validate_now = |lora: &mut LoraWeights,
                        trained: &mut Llama,
                        palettes: Option<&TrainablePalettes>,
                        step: usize|
     -> Result<Vec<ValidationPoint>, EngineError> {
        if validation.iter().all(|set| set.sequences.is_empty()) {
            return Ok(Vec::new());
        }
        if let Some(p) = palettes {
            p.apply(trained)?;
        }
        lora.set_training(false);
        let points = validation::validate(teacher, trained, lora, validation, step);
        lora.set_training(true);
        points
    };
    // a resumed run goes on with the curve it had; the start is scored unless the checkpoint's step was
    let mut validation_curve = resumed_validation;
    if validation_curve.last().is_none_or(|p| p.step < start) {
        let validation = validate_now(&mut lora, &mut trained, palettes.as_deref(), start)?;
        validation_curve.extend(validation.iter().cloned());
        if !validation.is_empty() {
            // the start's scores, before any step of this run (no batch KL yet)
            let elapsed_seconds = clock.seconds();
            let learning_rate = 0.0;
            let kl = f64::NAN;
            progress(&RecoveryProgress { step: start, total_steps, kl, learning_rate, elapsed_seconds, validation });
        }
    }
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
            let hidden = teacher_model.forward_hidden(&ids.to_device(teacher.device()), None);
            teacher_model.lm_head(&hidden).reshape([-1, vocab]).to_device(device)
        });
        let student_logits = match &frozen_student {
            Some(model) => model.lm_head(&model.forward_hidden(&ids, Some(&lora))),
            None => {
                if let Some(p) = &palettes {
                    p.apply(&mut trained)?;
                }
                trained.forward(&ids, 0, None, Some(&lora))
            }
        }
        .reshape([-1, vocab]);
        let loss = kl_per_position(&teacher_logits, &student_logits).mean(Kind::Float);
        loss.f_backward()?;
        let kl = loss.double_value(&[]);
        if !kl.is_finite() {
            return Err(EngineError::Training(format!("recovery KL became {kl} at step {}", start + 1)));
        }
        let learning_rate = learning_rate_at(start, total_steps, spec.learning_rate);
        optimizer.step(learning_rate);
        if let (Some(o), Some(rate)) = (&mut palette_optimizer, spec.palette_learning_rate) {
            o.step(learning_rate_at(start, total_steps, rate));
        }
        start += 1;
        kl_curve.push((start, kl));
        let points = if spec.validate_every > 0 && start % spec.validate_every == 0 && start < total_steps {
            validate_now(&mut lora, &mut trained, palettes.as_deref(), start)?
        } else {
            Vec::new()
        };
        validation_curve.extend(points.iter().cloned());
        let elapsed = clock.seconds();
        progress(&RecoveryProgress {
            step: start,
            total_steps,
            kl,
            learning_rate,
            elapsed_seconds: elapsed,
            validation: points,
        });
        if start - first_step == WARMUP_STEPS {
            pace_from = elapsed;
        }
        let timed = (start - first_step).saturating_sub(WARMUP_STEPS);
        if let Some(limit) = spec.max_seconds
            && timed >= PACE_STEPS
            && timed % PACE_STEPS == 0
        {
            // the first steps pay for kernel selection and allocation: time the ones after them, and refit the
            // schedule every PACE_STEPS steps (a device shared with other work changes pace as it goes)
            total_steps = steps_within(start, elapsed, limit, (elapsed - pace_from) / timed as f64, spec.steps);
        }
        if spec.checkpoint_every > 0 && start % spec.checkpoint_every == 0 && start < total_steps {
            let state = CheckpointState {
                step: start,
                kl_curve: kl_curve.clone(),
                spec: spec.clone(),
                validation: validation_curve.clone(),
                elapsed_seconds: clock.seconds(),
                total_steps: Some(total_steps),
                optimizer_state: true,
                text_digest: Some(text_digest.clone()),
            };
            let optimizers = Optimizers { adapter: &optimizer, palettes: palette_optimizer.as_ref() };
            write_checkpoint(spec, &lora, palettes.as_deref(), optimizers, state, tokens)?;
        }
        if spec.max_seconds.is_some_and(|limit| elapsed >= limit) && start < total_steps {
            stopped_by_time = true;
            break;
        }
    }
    if validation_curve.last().is_some_and(|p| p.step < start) {
        let points = validate_now(&mut lora, &mut trained, palettes.as_deref(), start)?;
        validation_curve.extend(points.iter().cloned());
        let (kl, learning_rate) = kl_curve.last().map_or((f64::NAN, 0.0), |&(_, kl)| (kl, 0.0));
        let elapsed_seconds = clock.seconds();
        progress(&RecoveryProgress {
            step: start,
            total_steps: start,
            kl,
            learning_rate,
            elapsed_seconds,
            validation: points,
        });
    }
    lora.set_training(false);
    let report = RecoveryReport {
        steps: start,
        kl_curve,
        seconds: clock.seconds(),
        tokens,
        stopped_by_time,
        resumed_from,
        device: format!("{device:?}"),
        base_precision: spec.base_precision,
        validation: validation_curve,
    };
    Ok((lora, report))
}

/// Training time: this run's wall time plus what the checkpoint it resumed recorded for the runs before it.
#[derive(Clone, Copy)]
struct TrainingClock {
    started: Instant,
    before: f64,
}

impl TrainingClock {
    fn start() -> TrainingClock {
        TrainingClock { started: Instant::now(), before: 0.0 }
    }

    /// The clock of a run that goes on after `seconds` of earlier training (negative or NaN: none, a
    /// checkpoint edited by hand cannot take budget away).
    fn after(self, seconds: f64) -> TrainingClock {
        TrainingClock { before: if seconds > 0.0 { seconds } else { 0.0 }, ..self }
    }

    fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

impl RecoverySpec {
    /// The spec less what a run may change and still resume a checkpoint of another: the budget (steps, wall
    /// time) and how often it validates, which do not change what a step trains. What it trains on is not in the
    /// spec: a checkpoint also records the text's digest ([`training_text_digest`]) and resumes only on the same
    /// text.
    pub fn resume_identity(&self) -> RecoverySpec {
        RecoverySpec { steps: 0, max_seconds: None, validate_every: 0, ..self.clone() }
    }
}

/// The device a recovery should use: CUDA when present.
pub fn preferred_device() -> Device {
    Device::cuda_if_available()
}

/// The recovery's precision when none is asked for, on `device`: bf16 on a CPU with AVX-512 BF16 (where the
/// frozen matmuls run ~2.3x faster, a recovery step ~1.6x, at the same recovered perplexity:
/// docs/benchmarks.md), f32 elsewhere (CPUs without it emulate bf16; on a GPU the step was measured not to
/// be bound by its matmuls).
pub fn preferred_precision(device: Device) -> BasePrecision {
    #[cfg(target_arch = "x86_64")]
    if device == Device::Cpu && std::arch::is_x86_feature_detected!("avx512bf16") {
        return BasePrecision::Bf16;
    }
    let _ = device;
    BasePrecision::F32
}

#[cfg(test)]
mod tests {
    use super::{RecoverySpec, steps_within};
    use adapterci_core::training::BasePrecision;

    #[test]
    fn a_spec_without_a_precision_is_the_f32_one_it_was_written_as() {
        // checkpoints and stored build options written before the field keep resuming and meaning f32
        let mut json = serde_json::to_value(RecoverySpec::default()).unwrap();
        assert!(json.get("base_precision").is_none(), "f32 is not written: {json}");
        let read: RecoverySpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read.base_precision, BasePrecision::F32);
        json["base_precision"] = "bf16".into();
        let read: RecoverySpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read.base_precision, BasePrecision::Bf16);
        json["base_precision"] = "fp8".into();
        let err = serde_json::from_value::<RecoverySpec>(json).unwrap_err().to_string();
        assert!(err.contains("fp8"), "{err}");
    }

    #[test]
    fn bf16_is_the_default_only_where_it_was_measured_to_pay() {
        // GPUs: not measured, f32
        assert_eq!(super::preferred_precision(tch::Device::Cuda(0)), BasePrecision::F32);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            super::preferred_precision(tch::Device::Cpu) == BasePrecision::Bf16,
            std::arch::is_x86_feature_detected!("avx512bf16")
        );
    }

    #[test]
    fn the_schedule_follows_the_pace_within_the_budget() {
        // 100 s left at 0.5 s/step: 200 more
        assert_eq!(steps_within(20, 20.0, 120.0, 0.5, 100_000), 220);
        // the pace halves (a neighbour on the device): the schedule shrinks to what still fits
        assert_eq!(steps_within(120, 70.0, 120.0, 1.0, 100_000), 170);
        // capped by the step budget, and never below the steps done when time is up or over
        assert_eq!(steps_within(20, 20.0, 120.0, 0.01, 500), 500);
        assert_eq!(steps_within(300, 130.0, 120.0, 0.5, 100_000), 300);
        assert_eq!(steps_within(5, 1.0, 120.0, 0.0, 1000), 1000);
    }
}
