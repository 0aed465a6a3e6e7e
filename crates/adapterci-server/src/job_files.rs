//! A training job as files, the one layout both executors move between adapterd and its trainer: `job.json`,
//! `dataset.jsonl` and the initial adapter going in, `output.json` with `adapter.safetensors` (or `failure.json`)
//! coming back. The files live in a [`JobFolder`]: a local directory (the process executor) or a prefix of an
//! object store (the Kubernetes executor, `staging.rs`); everything here is written once against that trait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adapterci_core::Digest;
use adapterci_core::training::{
    AdapterConfig, EvalSample, InitialAdapter, InitialAdapterRef, LoraSpec, StepProgress, TrainJob, TrainOutput,
    TrainSpec, TrainingFailure,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub(crate) const JOB_FILE: &str = "job.json";
pub(crate) const DATASET_FILE: &str = "dataset.jsonl";
pub(crate) const INITIAL_ADAPTER_FILE: &str = "initial_adapter.safetensors";
pub(crate) const OUTPUT_FILE: &str = "output.json";
pub(crate) const ADAPTER_FILE: &str = "adapter.safetensors";
pub(crate) const FAILURE_FILE: &str = "failure.json";

/// A job's settings as the trainer reads them (the bulky parts are files beside it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JobSpec {
    /// Where the base model lies on the machine that stages the job; a staged trainer fetches `base_model_blob`
    /// instead.
    pub base_model_path: PathBuf,
    pub base_model_digest: Digest,
    /// The sha256 of the base model file's bytes, its key under `bases/` in a staging store (staged jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_blob: Option<Digest>,
    pub dataset_digest: Digest,
    pub lora: LoraSpec,
    pub train: TrainSpec,
    pub initial_adapter: Option<InitialAdapterRef>,
}

/// A finished job's result, without the adapter's weights (a file beside it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OutputSpec {
    pub adapter_config: AdapterConfig,
    pub metrics: BTreeMap<String, f64>,
    pub samples: Vec<EvalSample>,
    pub loss_curve: Vec<(usize, f64)>,
}

/// Why a job produced no adapter, as the trainer reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub(crate) enum FailureSpec {
    InvalidInput(String),
    Backend(String),
    Cancelled,
}

impl From<TrainingFailure> for FailureSpec {
    fn from(failure: TrainingFailure) -> FailureSpec {
        match failure {
            TrainingFailure::InvalidInput(message) => FailureSpec::InvalidInput(message),
            TrainingFailure::Backend(message) => FailureSpec::Backend(message),
            TrainingFailure::Cancelled => FailureSpec::Cancelled,
        }
    }
}

impl From<FailureSpec> for TrainingFailure {
    fn from(spec: FailureSpec) -> TrainingFailure {
        match spec {
            FailureSpec::InvalidInput(message) => TrainingFailure::InvalidInput(message),
            FailureSpec::Backend(message) => TrainingFailure::Backend(message),
            FailureSpec::Cancelled => TrainingFailure::Cancelled,
        }
    }
}

/// One line of the trainer's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProgressLine {
    Step(StepProgress),
    Message(String),
}

/// Where a job's files are kept: a local directory or an object store prefix. Errors are messages naming the file.
#[async_trait]
pub(crate) trait JobFolder: Send + Sync {
    /// The folder in words, for messages (`/data/jobs/run-1`, `s3://bucket/staging/jobs/run-1`).
    fn describe(&self) -> String;
    /// The bytes of `name`; `None` when it does not exist.
    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
    async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), String>;
    /// Removes the folder and everything in it (done when it does not exist).
    async fn remove_all(&self) -> Result<(), String>;
}

/// A job folder on the local file system.
#[derive(Clone, Debug)]
pub(crate) struct LocalJobDir(pub PathBuf);

#[async_trait]
impl JobFolder for LocalJobDir {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.0.join(name);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!("reading {}: {error}", path.display())),
        }
    }

    async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        let path = self.0.join(name);
        tokio::fs::create_dir_all(&self.0).await.map_err(|e| format!("creating {}: {e}", self.0.display()))?;
        tokio::fs::write(&path, bytes).await.map_err(|e| format!("writing {}: {e}", path.display()))
    }

    async fn remove_all(&self) -> Result<(), String> {
        match tokio::fs::remove_dir_all(&self.0).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(format!("removing {}: {error}", self.0.display())),
        }
    }
}

fn backend(message: String) -> TrainingFailure {
    TrainingFailure::Backend(message)
}

async fn read_required(folder: &dyn JobFolder, name: &str) -> Result<Vec<u8>, String> {
    folder.read(name).await?.ok_or_else(|| format!("reading {}/{name}: not found", folder.describe()))
}

/// Writes `job` into `folder`, replacing what an earlier attempt left there. `base_model_blob` is the base
/// model's key in a staging store (staged jobs only).
pub(crate) async fn write_job(
    folder: &dyn JobFolder,
    job: &TrainJob,
    base_model_blob: Option<Digest>,
) -> Result<(), TrainingFailure> {
    write_job_files(folder, &encode_job(job, base_model_blob)?).await
}

/// The files of `job` as the trainer reads them, by name, in the order they are written: the job file last.
pub(crate) fn encode_job(
    job: &TrainJob,
    base_model_blob: Option<Digest>,
) -> Result<Vec<(&'static str, Vec<u8>)>, TrainingFailure> {
    let spec = JobSpec {
        base_model_path: std::path::absolute(&job.base_model_path).unwrap_or_else(|_| job.base_model_path.clone()),
        base_model_digest: job.base_model_digest.clone(),
        base_model_blob,
        dataset_digest: job.dataset_digest.clone(),
        lora: job.lora.clone(),
        train: job.train.clone(),
        initial_adapter: job.initial_adapter.as_ref().map(|initial| initial.reference.clone()),
    };
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| backend(format!("encoding the job: {e}")))?;
    let mut files = vec![(DATASET_FILE, job.dataset.clone())];
    if let Some(initial) = &job.initial_adapter {
        files.push((INITIAL_ADAPTER_FILE, initial.safetensors.clone()));
    }
    // the job file last: a folder with a job file is complete
    files.push((JOB_FILE, json));
    Ok(files)
}

/// Writes the encoded `files` of a job ([`encode_job`]) into `folder`, replacing what an earlier attempt left there.
pub(crate) async fn write_job_files(
    folder: &dyn JobFolder,
    files: &[(&'static str, Vec<u8>)],
) -> Result<(), TrainingFailure> {
    folder.remove_all().await.map_err(backend)?;
    for (name, bytes) in files {
        folder.write(name, bytes.clone()).await.map_err(backend)?;
    }
    Ok(())
}

/// Rebuilds a job from `folder` (the trainer's side), with the base model's blob key when it was staged.
pub(crate) async fn read_job(folder: &dyn JobFolder) -> Result<(TrainJob, Option<Digest>), String> {
    let json = read_required(folder, JOB_FILE).await?;
    let spec: JobSpec =
        serde_json::from_slice(&json).map_err(|e| format!("decoding {}/{JOB_FILE}: {e}", folder.describe()))?;
    let initial_adapter = match spec.initial_adapter {
        Some(reference) => {
            Some(InitialAdapter { reference, safetensors: read_required(folder, INITIAL_ADAPTER_FILE).await? })
        }
        None => None,
    };
    let job = TrainJob {
        base_model_path: spec.base_model_path,
        base_model_digest: spec.base_model_digest,
        dataset: read_required(folder, DATASET_FILE).await?,
        dataset_digest: spec.dataset_digest,
        lora: spec.lora,
        train: spec.train,
        initial_adapter,
    };
    Ok((job, spec.base_model_blob))
}

/// Writes the trainer's result into `folder`: the adapter then `output.json`, or `failure.json`.
pub(crate) async fn write_result(
    folder: &dyn JobFolder,
    result: Result<TrainOutput, TrainingFailure>,
) -> Result<(), String> {
    match result {
        Ok(output) => {
            let spec = OutputSpec {
                adapter_config: output.adapter_config,
                metrics: output.metrics,
                samples: output.samples,
                loss_curve: output.loss_curve,
            };
            let json = serde_json::to_vec(&spec).map_err(|e| format!("encoding the output: {e}"))?;
            // the output file last: a folder with an output file has its adapter
            folder.write(ADAPTER_FILE, output.adapter_safetensors).await?;
            folder.write(OUTPUT_FILE, json).await
        }
        Err(failure) => {
            let json =
                serde_json::to_vec(&FailureSpec::from(failure)).map_err(|e| format!("encoding the failure: {e}"))?;
            folder.write(FAILURE_FILE, json).await
        }
    }
}

/// The adapter and results the trainer left in `folder`.
pub(crate) async fn read_output(folder: &dyn JobFolder) -> Result<TrainOutput, TrainingFailure> {
    let json = read_required(folder, OUTPUT_FILE).await.map_err(backend)?;
    let output: OutputSpec = serde_json::from_slice(&json)
        .map_err(|e| backend(format!("decoding {}/{OUTPUT_FILE}: {e}", folder.describe())))?;
    let adapter_safetensors = read_required(folder, ADAPTER_FILE).await.map_err(backend)?;
    Ok(TrainOutput {
        adapter_safetensors,
        adapter_config: output.adapter_config,
        metrics: output.metrics,
        samples: output.samples,
        loss_curve: output.loss_curve,
    })
}

/// What the trainer said about its failure, if it wrote anything readable.
pub(crate) async fn read_failure(folder: &dyn JobFolder) -> Option<TrainingFailure> {
    let json = folder.read(FAILURE_FILE).await.ok()??;
    Some(serde_json::from_slice::<FailureSpec>(&json).ok()?.into())
}

/// Where a run's log is kept, `<logs dir>/<run id>.log`, refusing ids that are not plain file names.
pub(crate) fn log_path(logs_dir: &Path, run_id: &str) -> Result<PathBuf, String> {
    let plain = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return Err(format!("run id {run_id:?} is not a plain name"));
    }
    Ok(logs_dir.join(format!("{run_id}.log")))
}

/// Appends `line` to the log at `path` (best effort: a log that cannot be written does not fail the run).
pub(crate) async fn append_log(path: &Path, line: &str) {
    use tokio::io::AsyncWriteExt;
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await;
    if let Ok(mut file) = file {
        // flushed: tokio writes a file on a blocking thread, and an unflushed line could land after the next one
        if file.write_all(format!("{line}\n").as_bytes()).await.is_ok() {
            let _ = file.flush().await;
        }
    }
}

/// Appends `line` to the log at `path` at once, blocking (for a drop guard, which cannot wait); best effort.
pub(crate) fn append_log_now(path: &Path, line: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes());
    }
}

/// One line of the trainer's stdout: progress goes to `progress`, anything else to the run's log.
pub(crate) async fn forward_line(line: &str, progress: &dyn adapterci_core::training::ProgressSink, log_path: &Path) {
    match serde_json::from_str::<ProgressLine>(line) {
        Ok(ProgressLine::Step(step)) => progress.on_step(&step),
        Ok(ProgressLine::Message(message)) => progress.on_message(&message),
        Err(_) => append_log(log_path, line).await,
    }
}

/// The log at `path` from byte `offset` on; `None` when there is no log.
pub(crate) async fn read_log(path: &Path, offset: u64) -> Result<Option<adapterci_core::launcher::LogChunk>, String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("opening {}: {error}", path.display())),
    };
    let len = file.metadata().await.map_err(|e| format!("reading {}: {e}", path.display()))?.len();
    let start = offset.min(len);
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
    let next_offset = start + bytes.len() as u64;
    Ok(Some(adapterci_core::launcher::LogChunk { bytes, next_offset }))
}
