//! LoRA training: seeded batches, masked next-token cross-entropy, AdamW with decoupled weight decay, linear
//! warmup then cosine decay, gradient clipping. The base weights stay frozen; only the adapter learns.

use std::time::Instant;

use adapterci_core::training::{ProgressSink, StepProgress, TrainSpec};
use tch::{Kind, Tensor};

use crate::EngineError;
use crate::dataset::{Example, SeededRng};
use crate::llama::Llama;
use crate::lora::LoraWeights;

pub mod checkpoint;
pub mod forward;
pub mod packing;

use checkpoint::Checkpoint;
pub use checkpoint::CheckpointSettings;
pub use forward::{BaseCompute, TrainingModel};

/// Gradients are rescaled so that their global L2 norm is at most this.
pub const MAX_GRAD_NORM: f64 = 1.0;
/// Share of the steps spent warming the learning rate up linearly.
pub const WARMUP_FRACTION: f64 = 0.1;

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPSILON: f64 = 1e-8;

/// What a training run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// `(step, loss)`, steps counted from 1.
    pub loss_curve: Vec<(usize, f64)>,
    /// Real (not padding) tokens per second of wall time over all steps.
    pub tokens_per_second: f64,
    /// Real tokens fed to the model over all steps.
    pub tokens: usize,
    pub seconds: f64,
    /// The step a checkpoint let this run start after, when it resumed.
    pub resumed_from: Option<usize>,
    /// `(step, validation loss)` at every early-stopping evaluation.
    pub validation_curve: Vec<(usize, f64)>,
    /// The step at which early stopping ended the run (the adapter is the best one seen by then).
    pub stopped_early_at: Option<usize>,
}

impl TrainReport {
    /// Mean loss of the last `n` steps (the `train_loss` metric).
    pub fn final_loss(&self, n: usize) -> f64 {
        let tail = &self.loss_curve[self.loss_curve.len().saturating_sub(n)..];
        if tail.is_empty() { f64::NAN } else { tail.iter().map(|(_, loss)| loss).sum::<f64>() / tail.len() as f64 }
    }
}

/// The learning rate at `step` (0-based): linear warmup over the first 10% of steps, then cosine decay to 0.
pub fn learning_rate_at(step: usize, total_steps: usize, peak: f64) -> f64 {
    let warmup = ((total_steps as f64 * WARMUP_FRACTION).ceil() as usize).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total_steps.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// How the learning rate decays after the warmup (the job's `TrainSpec::lr_schedule`).
pub use adapterci_core::training::LrSchedule as Schedule;

/// The learning rate at `step` (0-based) under `schedule`: the same linear warmup over the first 10% of
/// steps, then cosine or linear decay to 0.
pub fn learning_rate_for(schedule: Schedule, step: usize, total_steps: usize, peak: f64) -> f64 {
    let warmup = ((total_steps as f64 * WARMUP_FRACTION).ceil() as usize).max(1);
    match schedule {
        Schedule::Cosine => learning_rate_at(step, total_steps, peak),
        Schedule::Linear if step < warmup => peak * (step + 1) as f64 / warmup as f64,
        Schedule::Linear => {
            let decay_steps = total_steps.saturating_sub(warmup).max(1);
            peak * (1.0 - ((step - warmup) as f64 / decay_steps as f64).min(1.0))
        }
    }
}

/// A padded batch with the flat positions whose next token is a target.
#[derive(Debug)]
pub struct Batch {
    /// `[batch, seq]` int64, right-padded.
    pub input_ids: Tensor,
    /// Indices into the flattened `[batch * seq]` logits: the positions that predict a target token.
    pub positions: Tensor,
    /// The target token of each position.
    pub targets: Tensor,
    /// Real tokens in the batch (padding excluded).
    pub tokens: usize,
    pub target_count: usize,
    /// `[batch, seq]` rotary positions when they are not `0..seq` in every row (packed rows restart them).
    pub position_ids: Option<Tensor>,
    /// `[batch, 1, seq, seq]` boolean, true where a query may attend to a key, when plain causal attention is
    /// not right (packed rows).
    pub attention_mask: Option<Tensor>,
}

impl Batch {
    /// Right-pads `examples` with `pad_id`; a target at index i is predicted by position i - 1.
    pub fn new(examples: &[&Example], pad_id: u32, device: tch::Device) -> Batch {
        let seq = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut ids = vec![i64::from(pad_id); examples.len() * seq];
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        let mut tokens = 0;
        for (row, example) in examples.iter().enumerate() {
            let base = row * seq;
            tokens += example.input_ids.len();
            for (index, (&id, &target)) in example.input_ids.iter().zip(&example.loss_mask).enumerate() {
                ids[base + index] = i64::from(id);
                if target && index > 0 {
                    positions.push((base + index - 1) as i64);
                    targets.push(i64::from(id));
                }
            }
        }
        let target_count = targets.len();
        Batch {
            input_ids: Tensor::from_slice(&ids).view([examples.len() as i64, seq as i64]).to_device(device),
            positions: Tensor::from_slice(&positions).to_device(device),
            targets: Tensor::from_slice(&targets).to_device(device),
            tokens,
            target_count,
            position_ids: None,
            attention_mask: None,
        }
    }

    /// Mean cross-entropy over the target positions (a scalar tensor), with or without the adapter.
    ///
    /// The LM head runs only on the target positions: with a 49K vocabulary it is a large share of the work,
    /// and the prompt positions carry no loss.
    pub fn loss(&self, llama: &Llama, lora: Option<&LoraWeights>) -> Tensor {
        let hidden = llama.forward_hidden(&self.input_ids, 0, None, lora);
        let width = hidden.size().last().copied().unwrap_or(0);
        let selected = hidden.reshape([-1, width]).index_select(0, &self.positions);
        llama.lm_head(&selected).to_kind(Kind::Float).cross_entropy_for_logits(&self.targets)
    }

    /// [`Batch::loss`] through a [`TrainingModel`] (the base matmuls in its precision).
    pub fn loss_with(&self, model: &TrainingModel, lora: Option<&LoraWeights>) -> Tensor {
        let hidden =
            model.forward_hidden_with(&self.input_ids, self.position_ids.as_ref(), self.attention_mask.as_ref(), lora);
        let width = hidden.size().last().copied().unwrap_or(0);
        let selected = hidden.reshape([-1, width]).index_select(0, &self.positions);
        model.lm_head(&selected).cross_entropy_for_logits(&self.targets)
    }
}

/// Engine-side training settings beyond the job's `TrainSpec`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Precision of the frozen base weights in the training matmuls (f32 by default).
    pub base_compute: BaseCompute,
    pub schedule: Schedule,
    /// Batches of `batch_size` whose gradients add up to one optimizer step (1: no accumulation). A step's
    /// loss is the mean over them.
    pub gradient_accumulation: usize,
    /// Save a checkpoint every so many steps, and resume from the one in that directory when it exists.
    pub checkpoint: Option<CheckpointSettings>,
    pub early_stopping: Option<EarlyStopping>,
    /// Pack examples into rows of up to this many tokens ([`packing`]); a batch is then `batch_size` rows.
    pub packing: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            base_compute: BaseCompute::F32,
            schedule: Schedule::Cosine,
            gradient_accumulation: 1,
            checkpoint: None,
            early_stopping: None,
            packing: None,
        }
    }
}

/// Stop when the validation loss has not improved by `min_delta` for `patience` evaluations in a row, and
/// keep the adapter of the best evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    pub validation: Vec<Example>,
    /// Evaluate after every this many steps.
    pub every_steps: usize,
    pub patience: usize,
    pub min_delta: f64,
}

/// Mean loss over `examples` in batches of `batch_size`, without gradients or dropout.
pub fn validation_loss(
    model: &TrainingModel,
    lora: &LoraWeights,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
    device: tch::Device,
) -> f64 {
    let (mut total, mut targets) = (0.0, 0usize);
    tch::no_grad(|| {
        for chunk in examples.chunks(batch_size.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = Batch::new(&refs, pad_id, device);
            if batch.target_count > 0 {
                total += batch.loss_with(model, Some(lora)).double_value(&[]) * batch.target_count as f64;
                targets += batch.target_count;
            }
        }
    });
    if targets == 0 { f64::NAN } else { total / targets as f64 }
}

/// Seeded epoch-style sampling: every example once per epoch, in a fresh order each epoch.
#[derive(Debug)]
struct BatchSampler {
    rng: SeededRng,
    order: Vec<usize>,
    cursor: usize,
    /// An index drawn but given back (packing: it did not fit the batch), served first next time.
    pending: Option<usize>,
}

impl BatchSampler {
    fn new(count: usize, seed: u64) -> Self {
        let mut sampler =
            BatchSampler { rng: SeededRng::new(seed), order: (0..count).collect(), cursor: 0, pending: None };
        sampler.rng.shuffle(&mut sampler.order);
        sampler
    }

    fn next_batch(&mut self, size: usize) -> Vec<usize> {
        let mut batch = Vec::with_capacity(size);
        while batch.len() < size.min(self.order.len()) {
            if self.cursor == self.order.len() {
                self.rng.shuffle(&mut self.order);
                self.cursor = 0;
            }
            batch.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        batch
    }

    /// The next example index, reshuffling at each epoch's end; `None` only for an empty dataset.
    fn next_index(&mut self) -> Option<usize> {
        if let Some(index) = self.pending.take() {
            return Some(index);
        }
        if self.order.is_empty() {
            return None;
        }
        if self.cursor == self.order.len() {
            self.rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        self.cursor += 1;
        Some(self.order[self.cursor - 1])
    }

    fn put_back(&mut self, index: usize) {
        self.pending = Some(index);
    }

    /// The examples of the next batch: `size` of them, or with packing `size` rows of packed examples.
    fn next_rows(&mut self, size: usize, packing: Option<usize>, lengths: &[usize]) -> Vec<Vec<usize>> {
        match packing {
            None => vec![self.next_batch(size)],
            Some(max_row_len) => packing::draw_packed_rows(self, lengths, size, max_row_len),
        }
    }
}

/// AdamW over the adapter's tensors, with decoupled weight decay (Loshchilov & Hutter).
#[derive(Debug)]
pub(crate) struct AdamW {
    parameters: Vec<Tensor>,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
    weight_decay: f64,
    steps_taken: i32,
}

impl AdamW {
    pub(crate) fn new(parameters: Vec<Tensor>, weight_decay: f64) -> Self {
        let zeros = |p: &Tensor| p.zeros_like().set_requires_grad(false);
        let first_moments = parameters.iter().map(zeros).collect();
        let second_moments = parameters.iter().map(zeros).collect();
        AdamW { parameters, first_moments, second_moments, weight_decay, steps_taken: 0 }
    }

    fn checkpoint(&self, step: usize, report: &TrainReport, fingerprint: &str) -> Checkpoint {
        self.snapshot(step, report.loss_curve.clone(), report.tokens, fingerprint)
    }

    /// Its state after `step` steps (parameters, moments, step count), with the run's curve and tokens, as a
    /// [`Checkpoint`] to save.
    pub(crate) fn snapshot(
        &self,
        step: usize,
        loss_curve: Vec<(usize, f64)>,
        tokens: usize,
        fingerprint: &str,
    ) -> Checkpoint {
        let copies = |tensors: &[Tensor]| tensors.iter().map(|t| t.detach().copy()).collect();
        Checkpoint {
            step,
            parameters: copies(&self.parameters),
            first_moments: copies(&self.first_moments),
            second_moments: copies(&self.second_moments),
            optimizer_steps: self.steps_taken,
            loss_curve,
            tokens,
            fingerprint: fingerprint.to_owned(),
        }
    }

    /// Copies `values` into the parameters in place (they share storage with the adapter).
    fn load_parameters(&mut self, values: &[Tensor]) {
        tch::no_grad(|| {
            for (parameter, value) in self.parameters.iter_mut().zip(values) {
                parameter.copy_(value);
            }
        });
    }

    /// Takes the parameters, moments and step count of `saved` (refused unless its tensors fit).
    pub(crate) fn restore(&mut self, saved: &Checkpoint) -> Result<(), EngineError> {
        let fits = |tensors: &[Tensor]| {
            tensors.len() == self.parameters.len()
                && tensors.iter().zip(&self.parameters).all(|(saved, own)| saved.size() == own.size())
        };
        if !(fits(&saved.parameters) && fits(&saved.first_moments) && fits(&saved.second_moments)) {
            return Err(EngineError::Training("the checkpoint's tensors do not fit this adapter".into()));
        }
        self.load_parameters(&saved.parameters);
        tch::no_grad(|| {
            for (own, value) in self.first_moments.iter_mut().zip(&saved.first_moments) {
                own.copy_(value);
            }
            for (own, value) in self.second_moments.iter_mut().zip(&saved.second_moments) {
                own.copy_(value);
            }
        });
        self.steps_taken = saved.optimizer_steps;
        Ok(())
    }

    /// Clips the gradients to [`MAX_GRAD_NORM`], applies one update and clears the gradients. Returns the
    /// gradient norm before clipping.
    pub(crate) fn step(&mut self, learning_rate: f64) -> f64 {
        self.steps_taken += 1;
        let bias1 = 1.0 - ADAM_BETA1.powi(self.steps_taken);
        let bias2 = 1.0 - ADAM_BETA2.powi(self.steps_taken);
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.parameters.iter().map(Tensor::grad).collect();
            let squares: Vec<Tensor> =
                grads.iter().filter(|g| g.defined()).map(|g| g.square().sum(Kind::Float)).collect();
            let norm = if squares.is_empty() {
                0.0
            } else {
                Tensor::stack(&squares, 0).sum(Kind::Float).sqrt().double_value(&[])
            };
            let clip = if norm > MAX_GRAD_NORM { MAX_GRAD_NORM / (norm + 1e-6) } else { 1.0 };
            for (((parameter, grad), m), v) in
                self.parameters.iter_mut().zip(&grads).zip(&mut self.first_moments).zip(&mut self.second_moments)
            {
                if !grad.defined() {
                    continue;
                }
                let grad = if clip < 1.0 { grad * clip } else { grad.shallow_clone() };
                let _ = m.lerp_(&grad, 1.0 - ADAM_BETA1);
                let _ = v.g_mul_scalar_(ADAM_BETA2);
                let _ = v.addcmul_(&(&grad * (1.0 - ADAM_BETA2)), &grad);
                let denominator = (&*v / bias2).sqrt() + ADAM_EPSILON;
                if self.weight_decay > 0.0 {
                    let _ = parameter.g_mul_scalar_(1.0 - learning_rate * self.weight_decay);
                }
                let _ = parameter.g_sub_(&(&*m * (learning_rate / bias1) / denominator));
                let _ = parameter.grad().zero_();
            }
            norm
        })
    }
}

/// What a checkpoint must agree with to be resumed: the settings that decide the run's path and the adapter's
/// tensor shapes (and the base's activation bits, named only when set so older checkpoints still resume).
fn fingerprint(
    spec: &TrainSpec,
    options: &TrainOptions,
    examples: usize,
    parameters: &[Tensor],
    activation_bits: Option<u8>,
) -> String {
    let shapes: Vec<Vec<i64>> = parameters.iter().map(Tensor::size).collect();
    let shapes_digest = shapes.iter().flatten().fold(0u64, |h, &d| h.wrapping_mul(31).wrapping_add(d as u64));
    format!(
        "steps={} batch={} lr={} wd={} seed={} accumulation={} schedule={:?} base={:?} examples={examples} \
         tensors={} shapes={shapes_digest:x}{}{}",
        spec.steps,
        spec.batch_size,
        spec.learning_rate,
        spec.weight_decay,
        spec.seed,
        options.gradient_accumulation.max(1),
        options.schedule,
        options.base_compute,
        parameters.len(),
        options.packing.map(|row| format!(" packing={row}")).unwrap_or_default(),
        activation_bits.map(|bits| format!(" activation_bits={bits}")).unwrap_or_default()
    )
}

/// Trains `lora` on `examples` for `spec.steps` steps, reporting every step to `progress`. When `llama` has
/// activation bits (a base release that records them), training sees the same per-token quantized linear
/// inputs as serving ([`TrainingModel`]).
pub fn train_lora(
    llama: &Llama,
    lora: &mut LoraWeights,
    examples: &[Example],
    spec: &TrainSpec,
    pad_id: u32,
    progress: &dyn ProgressSink,
) -> Result<TrainReport, EngineError> {
    train_lora_with(llama, lora, examples, spec, pad_id, progress, &TrainOptions::default())
}

/// [`train_lora`] with engine-side options.
pub fn train_lora_with(
    llama: &Llama,
    lora: &mut LoraWeights,
    examples: &[Example],
    spec: &TrainSpec,
    pad_id: u32,
    progress: &dyn ProgressSink,
    options: &TrainOptions,
) -> Result<TrainReport, EngineError> {
    if examples.is_empty() {
        return Err(EngineError::InvalidConfig("no training examples".to_string()));
    }
    if spec.steps == 0 || spec.batch_size == 0 {
        return Err(EngineError::InvalidConfig("steps and batch_size must be at least 1".to_string()));
    }
    let model = TrainingModel::new(llama, options.base_compute)?;
    let accumulation = options.gradient_accumulation.max(1);
    let mut optimizer = AdamW::new(lora.trainable_parameters(), spec.weight_decay);
    let mut sampler = BatchSampler::new(examples.len(), spec.seed);
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    let mut report = TrainReport {
        loss_curve: Vec::with_capacity(spec.steps),
        tokens_per_second: 0.0,
        tokens: 0,
        seconds: 0.0,
        resumed_from: None,
        validation_curve: Vec::new(),
        stopped_early_at: None,
    };
    let fingerprint = fingerprint(spec, options, examples.len(), &optimizer.parameters, model.activation_bits());
    let mut start_step = 0;
    if let Some(settings) = &options.checkpoint
        && let Some(saved) = Checkpoint::load(&settings.dir, llama.device())?
    {
        if saved.fingerprint != fingerprint {
            return Err(EngineError::Training(format!(
                "the checkpoint in {} is of another job ({}; this one is {fingerprint})",
                settings.dir.display(),
                saved.fingerprint
            )));
        }
        optimizer.restore(&saved)?;
        // Batch order is a function of the seed: replay the sampler to where the checkpoint was.
        for _ in 0..saved.step * accumulation {
            sampler.next_rows(spec.batch_size, options.packing, &lengths);
        }
        start_step = saved.step;
        report.loss_curve = saved.loss_curve;
        report.tokens = saved.tokens;
        report.resumed_from = Some(start_step);
        progress.on_message(&format!("resumed from the checkpoint at step {start_step}"));
    }
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut evaluations_without_gain = 0;
    lora.set_training(true);
    let started = Instant::now();
    for step in start_step..spec.steps {
        let step_started = Instant::now();
        // Dropout masks depend on the seed and the step only, so a resumed run draws the same ones, and another
        // training in the process cannot shift them.
        lora.set_dropout_seed(spec.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let learning_rate = learning_rate_for(options.schedule, step, spec.steps, spec.learning_rate);
        let (mut loss_sum, mut counted, mut tokens) = (0.0, 0usize, 0usize);
        for _ in 0..accumulation {
            let rows = sampler.next_rows(spec.batch_size, options.packing, &lengths);
            let rows: Vec<Vec<&Example>> =
                rows.into_iter().map(|row| row.into_iter().map(|i| &examples[i]).collect()).collect();
            let batch = match (options.packing, rows.as_slice()) {
                (None, [picked]) => Batch::new(picked, pad_id, llama.device()),
                _ => Batch::packed(&rows, pad_id, llama.device()),
            };
            tokens += batch.tokens;
            if batch.target_count == 0 {
                continue;
            }
            let loss = batch.loss_with(&model, Some(lora));
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                lora.set_training(false);
                return Err(EngineError::Training(format!("loss became {value} at step {}", step + 1)));
            }
            let scaled = if accumulation > 1 { loss / accumulation as f64 } else { loss };
            scaled.f_backward()?;
            loss_sum += value;
            counted += 1;
        }
        let loss_value = if counted == 0 {
            0.0
        } else {
            optimizer.step(learning_rate);
            loss_sum / counted as f64
        };
        report.tokens += tokens;
        report.loss_curve.push((step + 1, loss_value));
        let seconds = step_started.elapsed().as_secs_f64();
        progress.on_step(&StepProgress {
            step: step + 1,
            total_steps: spec.steps,
            loss: loss_value,
            learning_rate,
            tokens_per_second: tokens as f64 / seconds.max(1e-9),
            tokens,
            seconds,
        });
        if let Some(settings) = &options.checkpoint
            && (step + 1) % settings.every_steps.max(1) == 0
            && step + 1 < spec.steps
        {
            optimizer.checkpoint(step + 1, &report, &fingerprint).save(&settings.dir)?;
            progress.on_message(&format!("checkpoint at step {}", step + 1));
        }
        if let Some(stopping) = &options.early_stopping
            && (step + 1) % stopping.every_steps.max(1) == 0
        {
            lora.set_training(false);
            let loss = validation_loss(&model, lora, &stopping.validation, spec.batch_size, pad_id, llama.device());
            lora.set_training(true);
            report.validation_curve.push((step + 1, loss));
            if best.as_ref().is_none_or(|(best_loss, _)| loss < best_loss - stopping.min_delta) {
                best = Some((loss, optimizer.parameters.iter().map(Tensor::copy).collect()));
                evaluations_without_gain = 0;
            } else {
                evaluations_without_gain += 1;
                if evaluations_without_gain >= stopping.patience {
                    report.stopped_early_at = Some(step + 1);
                    progress.on_message(&format!("early stopping at step {}: validation loss {loss:.4}", step + 1));
                    break;
                }
            }
        }
    }
    if let (Some(_), Some((_, weights))) = (report.stopped_early_at, &best) {
        optimizer.load_parameters(weights);
    }
    lora.set_training(false);
    report.seconds = started.elapsed().as_secs_f64();
    report.tokens_per_second = report.tokens as f64 / report.seconds.max(1e-9);
    Ok(report)
}
