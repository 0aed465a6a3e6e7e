//! `EngineBackend`: the in-process training backend. Loads (and caches by digest) the base model, prepares the
//! dataset, trains the LoRA adapter and evaluates it, and the base model alone, on the held-out records.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use adapterci_core::training::{
    AdapterConfig, InitialAdapterRef, LoraSpec, ProgressSink, TrainJob, TrainOutput, TrainSpec, TrainingBackend,
    TrainingFailure,
};

use crate::EngineError;
use crate::dataset::{Dataset, Example, parse_jsonl, split_train_eval};
use crate::device::DeviceChoice;
use crate::eval::{eval_samples, evaluate, pad_token_id};
use crate::lora::LoraOptions;
use crate::lora::LoraWeights;
use crate::model::{BaseModel, LoadedAdapter};
use crate::train::{BaseCompute, EarlyStopping, TrainOptions, train_lora_with};

/// `train_loss` is the mean loss of this many final steps.
pub const TRAIN_LOSS_WINDOW: usize = 10;
/// Adapters are stored in this dtype unless the job starts from an adapter of another one.
pub const ADAPTER_STORAGE_DTYPE: &str = "f16";

/// Trains adapters in this process. One job runs at a time; the loaded base model stays cached between jobs.
#[derive(Debug)]
pub struct EngineBackend {
    device: DeviceChoice,
    cached_model: Mutex<Option<BaseModel>>,
}

impl EngineBackend {
    pub fn new(device: DeviceChoice) -> Self {
        EngineBackend { device, cached_model: Mutex::new(None) }
    }
}

impl TrainingBackend for EngineBackend {
    fn train(&self, job: &TrainJob, progress: &dyn ProgressSink) -> Result<TrainOutput, TrainingFailure> {
        validate_job(job)?;
        progress.on_message("parsing dataset");
        let dataset = parse_jsonl(&job.dataset).map_err(invalid_input)?;
        if dataset.records.len() < 2 {
            return Err(TrainingFailure::InvalidInput(
                "the dataset needs at least 2 distinct records: one to train on and one to evaluate".to_string(),
            ));
        }
        // a failed job must not poison the cache: the base weights are never written to
        let mut cached = self.cached_model.lock().unwrap_or_else(PoisonError::into_inner);
        let model = load_cached(&mut cached, job, self.device, progress)?;
        let prepared = prepare(model, job, &dataset)?;
        run_job(model, job, &prepared, progress)
    }
}

/// The tokenized, split dataset of one job.
#[derive(Debug)]
struct Prepared {
    train: Vec<Example>,
    eval: Vec<Example>,
    duplicates_removed: usize,
}

/// Tokenizes the records for `model` and splits them into training and held-out examples.
fn prepare(model: &BaseModel, job: &TrainJob, dataset: &Dataset) -> Result<Prepared, TrainingFailure> {
    let context = model.config().max_position_embeddings;
    if job.train.max_seq_len > context {
        return Err(TrainingFailure::InvalidInput(format!(
            "train.max_seq_len {} exceeds the base model's context length {context}",
            job.train.max_seq_len
        )));
    }
    let examples = crate::dataset::stats::tokenize_records_with_policy(
        &dataset.records,
        model.tokenizer(),
        job.train.max_seq_len,
        job.train.truncation,
    )
    .map_err(invalid_input)?;
    let (train_indices, eval_indices) = split_train_eval(examples.len(), job.train.eval_fraction, job.train.seed);
    let pick = |indices: &[usize]| indices.iter().map(|&i| examples[i].clone()).collect::<Vec<Example>>();
    Ok(Prepared {
        train: pick(&train_indices),
        eval: pick(&eval_indices),
        duplicates_removed: dataset.duplicates_removed,
    })
}

fn load_cached<'a>(
    cached: &'a mut Option<BaseModel>,
    job: &TrainJob,
    device: DeviceChoice,
    progress: &dyn ProgressSink,
) -> Result<&'a BaseModel, TrainingFailure> {
    let hit = cached.as_ref().is_some_and(|model| model.digest() == &job.base_model_digest);
    if !hit {
        progress.on_message(&format!("loading base model {}", job.base_model_path.display()));
        *cached = None;
        let model = BaseModel::load(&job.base_model_path, device)
            .map_err(|e| TrainingFailure::Backend(format!("cannot load the base model: {e}")))?;
        if model.digest() != &job.base_model_digest {
            return Err(TrainingFailure::InvalidInput(format!(
                "base model {} has digest {}, but the job expects {}",
                job.base_model_path.display(),
                model.digest(),
                job.base_model_digest
            )));
        }
        *cached = Some(model);
    }
    cached.as_ref().ok_or_else(|| TrainingFailure::Backend("base model cache is empty after loading".to_string()))
}

fn run_job(
    model: &BaseModel,
    job: &TrainJob,
    data: &Prepared,
    progress: &dyn ProgressSink,
) -> Result<TrainOutput, TrainingFailure> {
    let spec = &job.train;
    let mut lora = initial_lora(model, job)?;
    let base = if spec.eval_base {
        progress.on_message(&format!("evaluating base on {} held-out records", data.eval.len()));
        Some(evaluate(model, None, &data.eval, spec.max_eval_examples, spec.max_new_tokens).map_err(backend)?)
    } else {
        None
    };
    progress.on_message(&format!("training {} steps on {} records", spec.steps, data.train.len()));
    let options = train_options(spec, &data.eval);
    let report = train_lora_with(model.llama(), &mut lora, &data.train, spec, pad_token_id(model), progress, &options)
        .map_err(|e| match e {
            EngineError::Training(_) | EngineError::InvalidConfig(_) => invalid_input(e),
            other => backend(other),
        })?;
    let adapter_safetensors = lora.to_safetensors().map_err(backend)?;
    let adapter_config = lora.config().clone();
    let adapter = LoadedAdapter::from_lora(lora);
    progress.on_message(&format!("evaluating adapter on {} held-out records", data.eval.len()));
    let tuned =
        evaluate(model, Some(&adapter), &data.eval, spec.max_eval_examples, spec.max_new_tokens).map_err(backend)?;
    let mut metrics = BTreeMap::new();
    metrics.insert("eval_loss".to_string(), tuned.loss);
    metrics.insert("exact_match".to_string(), tuned.exact_match);
    if let Some(base) = &base {
        metrics.insert("base_eval_loss".to_string(), base.loss);
        metrics.insert("base_exact_match".to_string(), base.exact_match);
    }
    metrics.insert("train_loss".to_string(), report.final_loss(TRAIN_LOSS_WINDOW));
    metrics.insert("train_tokens_per_second".to_string(), report.tokens_per_second);
    metrics.insert("train_tokens".to_string(), report.tokens as f64);
    metrics.insert("train_steps".to_string(), report.loss_curve.len() as f64);
    if let Some(step) = report.stopped_early_at {
        metrics.insert("stopped_early_at".to_string(), step as f64);
    }
    metrics.insert("train_examples".to_string(), data.train.len() as f64);
    metrics.insert("eval_examples".to_string(), data.eval.len() as f64);
    metrics.insert("duplicates_removed".to_string(), data.duplicates_removed as f64);
    metrics.insert("perplexity".to_string(), crate::eval::metrics::perplexity(tuned.loss));
    let expected: Vec<String> = data.eval.iter().take(tuned.outputs.len()).map(|e| e.expected.clone()).collect();
    let options = crate::eval::metrics::TextMetricOptions::default();
    metrics.extend(crate::eval::metrics::text_metrics(&tuned.outputs, &expected, &options));
    let kl = crate::eval::metrics::kl_to_base(model.llama(), adapter.lora(), &data.eval, pad_token_id(model), 8);
    metrics.insert("kl_to_base".to_string(), kl);
    Ok(TrainOutput {
        adapter_safetensors,
        adapter_config,
        metrics,
        samples: eval_samples(&data.eval, &tuned, base.as_ref()),
        loss_curve: report.loss_curve,
    })
}

/// The adapter to start from: the job's initial adapter, or LoRA's standard initialisation from the spec.
fn initial_lora(model: &BaseModel, job: &TrainJob) -> Result<LoraWeights, TrainingFailure> {
    let device = model.llama().device();
    match &job.initial_adapter {
        Some(initial) => {
            if let InitialAdapterRef::RecoveryAdapter { .. } = &initial.reference {
                crate::release::check_recovery_adapter(&initial.safetensors, model.digest())
                    .map_err(|e| TrainingFailure::InvalidInput(format!("initial adapter: {e}")))?;
            }
            let mut lora = LoraWeights::from_safetensors(&initial.safetensors, model.config(), device)
                .map_err(|e| TrainingFailure::InvalidInput(format!("initial adapter: {e}")))?;
            lora.set_dropout(job.lora.dropout);
            Ok(lora)
        }
        None => {
            let layers = job.lora.layers.resolve(model.config().num_layers).map_err(TrainingFailure::InvalidInput)?;
            let config = AdapterConfig {
                rank: job.lora.rank,
                alpha: job.lora.alpha,
                targets: job.lora.targets.clone(),
                layers,
                dtype: ADAPTER_STORAGE_DTYPE.to_string(),
            };
            LoraWeights::init_with_options(
                &config,
                &lora_options(&job.lora),
                job.lora.dropout,
                model.config(),
                job.train.seed,
                device,
            )
            .map_err(invalid_input)
        }
    }
}

/// The spec's rsLoRA and per-module rank/alpha as the engine's options.
pub fn lora_options(lora: &LoraSpec) -> LoraOptions {
    LoraOptions {
        use_rslora: lora.use_rslora,
        rank_pattern: lora.rank_pattern.clone(),
        alpha_pattern: lora.alpha_pattern.clone(),
    }
}

/// The engine's training options for a job's spec; early stopping watches the loss on the held-out records.
pub fn train_options(spec: &TrainSpec, held_out: &[Example]) -> TrainOptions {
    TrainOptions {
        schedule: spec.lr_schedule,
        gradient_accumulation: spec.gradient_accumulation.max(1),
        early_stopping: spec.early_stopping.as_ref().map(|stopping| EarlyStopping {
            validation: held_out.to_vec(),
            every_steps: stopping.every_steps,
            patience: stopping.patience,
            min_delta: stopping.min_delta,
        }),
        packing: spec.packing.then_some(spec.max_seq_len),
        base_compute: BaseCompute::from(spec.base_precision),
        ..TrainOptions::default()
    }
}

/// Every problem with the job's numbers, at once.
fn validate_job(job: &TrainJob) -> Result<(), TrainingFailure> {
    let TrainSpec { steps, batch_size, learning_rate, weight_decay, max_seq_len, eval_fraction, .. } = job.train;
    let accumulation = job.train.gradient_accumulation;
    let stopping = job.train.early_stopping.as_ref();
    let lora = &job.lora;
    let checks = [
        (steps >= 1, format!("train.steps must be at least 1 (got {steps})")),
        (batch_size >= 1, format!("train.batch_size must be at least 1 (got {batch_size})")),
        (
            learning_rate.is_finite() && learning_rate > 0.0,
            format!("train.learning_rate must be > 0 (got {learning_rate})"),
        ),
        (
            weight_decay.is_finite() && weight_decay >= 0.0,
            format!("train.weight_decay must be >= 0 (got {weight_decay})"),
        ),
        (max_seq_len >= 2, format!("train.max_seq_len must be at least 2 (got {max_seq_len})")),
        ((0.0..1.0).contains(&eval_fraction), format!("train.eval_fraction must be in [0, 1) (got {eval_fraction})")),
        (lora.rank >= 1, format!("lora.rank must be at least 1 (got {})", lora.rank)),
        (lora.alpha.is_finite() && lora.alpha > 0.0, format!("lora.alpha must be > 0 (got {})", lora.alpha)),
        ((0.0..1.0).contains(&lora.dropout), format!("lora.dropout must be in [0, 1) (got {})", lora.dropout)),
        (!lora.targets.is_empty(), "lora.targets must name at least one module".to_string()),
        (accumulation >= 1, format!("train.gradient_accumulation must be at least 1 (got {accumulation})")),
        (
            stopping.is_none_or(|s| s.every_steps >= 1 && s.patience >= 1),
            "train.early_stopping.every_steps and patience must be at least 1".to_string(),
        ),
        (
            stopping.is_none_or(|s| s.min_delta.is_finite() && s.min_delta >= 0.0),
            "train.early_stopping.min_delta must be >= 0".to_string(),
        ),
    ];
    let problems: Vec<String> = checks.into_iter().filter(|(ok, _)| !ok).map(|(_, problem)| problem).collect();
    if problems.is_empty() { Ok(()) } else { Err(TrainingFailure::InvalidInput(problems.join("; "))) }
}

fn invalid_input(error: EngineError) -> TrainingFailure {
    TrainingFailure::InvalidInput(error.to_string())
}

fn backend(error: EngineError) -> TrainingFailure {
    TrainingFailure::Backend(error.to_string())
}
