//! LoRA training: seeded batches, masked next-token cross-entropy, AdamW with decoupled weight decay, linear
//! warmup then cosine decay, gradient clipping. The base weights stay frozen; only the adapter learns.

use std::time::Instant;

use adapterci_core::training::{ProgressSink, StepProgress, TrainSpec};
use tch::{Kind, Tensor};

use crate::EngineError;
use crate::dataset::{Example, SeededRng};
use crate::llama::Llama;
use crate::lora::LoraWeights;

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
}

/// Seeded epoch-style sampling: every example once per epoch, in a fresh order each epoch.
#[derive(Debug)]
struct BatchSampler {
    rng: SeededRng,
    order: Vec<usize>,
    cursor: usize,
}

impl BatchSampler {
    fn new(count: usize, seed: u64) -> Self {
        let mut sampler = BatchSampler { rng: SeededRng::new(seed), order: (0..count).collect(), cursor: 0 };
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

/// Trains `lora` on `examples` for `spec.steps` steps, reporting every step to `progress`.
pub fn train_lora(
    llama: &Llama,
    lora: &mut LoraWeights,
    examples: &[Example],
    spec: &TrainSpec,
    pad_id: u32,
    progress: &dyn ProgressSink,
) -> Result<TrainReport, EngineError> {
    if examples.is_empty() {
        return Err(EngineError::InvalidConfig("no training examples".to_string()));
    }
    if spec.steps == 0 || spec.batch_size == 0 {
        return Err(EngineError::InvalidConfig("steps and batch_size must be at least 1".to_string()));
    }
    lora.set_training(true);
    let mut optimizer = AdamW::new(lora.trainable_parameters(), spec.weight_decay);
    let mut sampler = BatchSampler::new(examples.len(), spec.seed);
    let mut report =
        TrainReport { loss_curve: Vec::with_capacity(spec.steps), tokens_per_second: 0.0, tokens: 0, seconds: 0.0 };
    let started = Instant::now();
    for step in 0..spec.steps {
        let step_started = Instant::now();
        let picked: Vec<&Example> = sampler.next_batch(spec.batch_size).into_iter().map(|i| &examples[i]).collect();
        let batch = Batch::new(&picked, pad_id, llama.device());
        let learning_rate = learning_rate_at(step, spec.steps, spec.learning_rate);
        let loss_value = if batch.target_count == 0 {
            0.0
        } else {
            let loss = batch.loss(llama, Some(lora));
            loss.f_backward()?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                lora.set_training(false);
                return Err(EngineError::Training(format!("loss became {value} at step {}", step + 1)));
            }
            optimizer.step(learning_rate);
            value
        };
        report.tokens += batch.tokens;
        report.loss_curve.push((step + 1, loss_value));
        let seconds = step_started.elapsed().as_secs_f64();
        progress.on_step(&StepProgress {
            step: step + 1,
            total_steps: spec.steps,
            loss: loss_value,
            learning_rate,
            tokens_per_second: batch.tokens as f64 / seconds.max(1e-9),
        });
    }
    lora.set_training(false);
    report.seconds = started.elapsed().as_secs_f64();
    report.tokens_per_second = report.tokens as f64 / report.seconds.max(1e-9);
    Ok(report)
}
