//! A training executor for controller tests: no libtorch, deterministic results derived from the dataset.
//!
//! This is a fake by design: controller tests check scheduling, gating and publishing, not learning (the
//! engine's own tests and the end-to-end tests train for real).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use adapterci_core::ports::TrainingExecutor;
use adapterci_core::training::{AdapterConfig, ProgressSink, StepProgress, TrainJob, TrainOutput, TrainingFailure};
use async_trait::async_trait;

/// Scores a dataset: `exact_match` is the fraction of its lines that contain `"good"`, `eval_loss` is
/// `1 - exact_match`. A dataset whose first line is `fail` makes the job fail.
#[derive(Debug, Default)]
pub struct ScriptedExecutor {
    jobs: Mutex<Vec<TrainJob>>,
}

impl ScriptedExecutor {
    pub fn new() -> Arc<ScriptedExecutor> {
        Arc::new(ScriptedExecutor::default())
    }

    /// The jobs executed so far.
    pub fn jobs(&self) -> Vec<TrainJob> {
        self.jobs.lock().map(|jobs| jobs.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl TrainingExecutor for ScriptedExecutor {
    async fn execute(&self, job: TrainJob, progress: Arc<dyn ProgressSink>) -> Result<TrainOutput, TrainingFailure> {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push(job.clone());
        }
        let text = String::from_utf8_lossy(&job.dataset).to_string();
        let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
        if lines.first().is_some_and(|line| line.trim() == "fail") {
            return Err(TrainingFailure::InvalidInput("line 1: scripted failure".to_string()));
        }
        let good = lines.iter().filter(|line| line.contains("good")).count();
        let exact_match = if lines.is_empty() { 0.0 } else { good as f64 / lines.len() as f64 };
        for step in 1..=job.train.steps.min(3) {
            progress.on_step(&StepProgress {
                step,
                total_steps: job.train.steps,
                loss: 1.0 / step as f64,
                learning_rate: job.train.learning_rate,
                tokens_per_second: 100.0,
                tokens: 100,
                seconds: 1.0,
            });
        }
        let layers = job.lora.layers.resolve(2).map_err(TrainingFailure::InvalidInput)?;
        let metrics =
            BTreeMap::from([("exact_match".to_string(), exact_match), ("eval_loss".to_string(), 1.0 - exact_match)]);
        Ok(TrainOutput {
            // Different datasets give different weights, as real training would.
            adapter_safetensors: format!("weights for {}", job.dataset_digest).into_bytes(),
            adapter_config: AdapterConfig {
                rank: job.lora.rank,
                alpha: job.lora.alpha,
                targets: job.lora.targets.clone(),
                layers,
                dtype: "f16".to_string(),
            },
            metrics,
            samples: Vec::new(),
            loss_curve: vec![(1, 1.0)],
        })
    }
}
