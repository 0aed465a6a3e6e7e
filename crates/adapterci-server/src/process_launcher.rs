//! The local process executor: each run's training in a child process of its own (`adapterd train-job DIR`,
//! see `trainer.rs`), behind the core `TrainingLauncher` port.
//!
//! The job goes to the child as files in a directory of its own (`job.json`, `dataset.jsonl`, the initial
//! adapter), progress comes back as JSON lines on the child's stdout, the result as files again
//! (`output.json`, `adapter.safetensors`, or `failure.json`). The child's stderr (its log) is appended to
//! `<logs dir>/<run id>.log`, which `GET /api/v1/runs/{id}/logs` serves. Dropping a launch (cancel, timeout,
//! lost lease) kills the child. The child holds a pipe from this process on its stdin and exits when it closes,
//! so a trainer never outlives an adapterd killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use adapterci_core::Digest;
use adapterci_core::launcher::{LaunchResources, LogChunk, TrainingLauncher};
use adapterci_core::training::{
    AdapterConfig, EvalSample, InitialAdapter, InitialAdapterRef, LoraSpec, ProgressSink, StepProgress, TrainJob,
    TrainOutput, TrainSpec, TrainingFailure,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

/// The first argument that makes adapterd run one training job instead of serving.
pub const TRAIN_JOB_COMMAND: &str = "train-job";

pub(crate) const JOB_FILE: &str = "job.json";
pub(crate) const DATASET_FILE: &str = "dataset.jsonl";
pub(crate) const INITIAL_ADAPTER_FILE: &str = "initial_adapter.safetensors";
pub(crate) const OUTPUT_FILE: &str = "output.json";
pub(crate) const ADAPTER_FILE: &str = "adapter.safetensors";
pub(crate) const FAILURE_FILE: &str = "failure.json";

/// A job's settings as the child reads them (the bulky parts are files beside it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JobSpec {
    pub base_model_path: PathBuf,
    pub base_model_digest: Digest,
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

/// Why a job produced no adapter, as the child reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub(crate) enum FailureSpec {
    InvalidInput(String),
    Backend(String),
    Cancelled,
}

/// One line of the child's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProgressLine {
    Step(StepProgress),
    Message(String),
}

/// Launches each job as `program args... DIR`.
#[derive(Clone, Debug)]
pub struct ProcessLauncher {
    pub program: PathBuf,
    /// Arguments before the job directory (`train-job` for adapterd).
    pub args: Vec<String>,
    /// Environment variables set in the child.
    pub env: Vec<(String, String)>,
    /// Where job directories are made (one per run, removed after the job).
    pub work_dir: PathBuf,
    /// Where run logs are kept, `<run id>.log`.
    pub logs_dir: PathBuf,
}

impl ProcessLauncher {
    /// adapterd at `program` as the trainer, with work and log folders below `data_dir`.
    pub fn adapterd(program: PathBuf, data_dir: &Path, threads: usize) -> ProcessLauncher {
        let mut env = Vec::new();
        if threads > 0 {
            env.push((crate::env_vars::ADAPTERCI_THREADS.to_string(), threads.to_string()));
        }
        ProcessLauncher {
            program,
            args: vec![TRAIN_JOB_COMMAND.to_string()],
            env,
            work_dir: data_dir.join("jobs"),
            logs_dir: data_dir.join("logs"),
        }
    }

    /// The log file of `run_id`, refusing ids that are not plain file names.
    fn log_path(&self, run_id: &str) -> Result<PathBuf, String> {
        let plain = !run_id.is_empty()
            && run_id.len() <= 128
            && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(format!("run id {run_id:?} is not a plain name"));
        }
        Ok(self.logs_dir.join(format!("{run_id}.log")))
    }
}

fn backend(what: &str, error: impl std::fmt::Display) -> TrainingFailure {
    TrainingFailure::Backend(format!("{what}: {error}"))
}

/// How a process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("was killed by signal {signal}");
    }
    format!("ended ({status})")
}

async fn write_job(dir: &Path, job: &TrainJob) -> Result<(), TrainingFailure> {
    if tokio::fs::try_exists(dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(dir).await.map_err(|e| backend(&format!("clearing {}", dir.display()), e))?;
    }
    tokio::fs::create_dir_all(dir).await.map_err(|e| backend(&format!("creating {}", dir.display()), e))?;
    let spec = JobSpec {
        base_model_path: std::path::absolute(&job.base_model_path).unwrap_or_else(|_| job.base_model_path.clone()),
        base_model_digest: job.base_model_digest.clone(),
        dataset_digest: job.dataset_digest.clone(),
        lora: job.lora.clone(),
        train: job.train.clone(),
        initial_adapter: job.initial_adapter.as_ref().map(|initial| initial.reference.clone()),
    };
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| backend("encoding the job", e))?;
    let mut files = vec![(JOB_FILE, json), (DATASET_FILE, job.dataset.clone())];
    if let Some(initial) = &job.initial_adapter {
        files.push((INITIAL_ADAPTER_FILE, initial.safetensors.clone()));
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        tokio::fs::write(&path, bytes).await.map_err(|e| backend(&format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

async fn read_output(dir: &Path) -> Result<TrainOutput, TrainingFailure> {
    let path = dir.join(OUTPUT_FILE);
    let json = tokio::fs::read(&path).await.map_err(|e| backend(&format!("reading {}", path.display()), e))?;
    let output: OutputSpec =
        serde_json::from_slice(&json).map_err(|e| backend(&format!("decoding {}", path.display()), e))?;
    let path = dir.join(ADAPTER_FILE);
    let adapter_safetensors =
        tokio::fs::read(&path).await.map_err(|e| backend(&format!("reading {}", path.display()), e))?;
    Ok(TrainOutput {
        adapter_safetensors,
        adapter_config: output.adapter_config,
        metrics: output.metrics,
        samples: output.samples,
        loss_curve: output.loss_curve,
    })
}

/// What the child said about its failure, if it wrote anything.
async fn read_failure(dir: &Path) -> Option<TrainingFailure> {
    let json = tokio::fs::read(dir.join(FAILURE_FILE)).await.ok()?;
    Some(match serde_json::from_slice::<FailureSpec>(&json).ok()? {
        FailureSpec::InvalidInput(message) => TrainingFailure::InvalidInput(message),
        FailureSpec::Backend(message) => TrainingFailure::Backend(message),
        FailureSpec::Cancelled => TrainingFailure::Cancelled,
    })
}

async fn append_log(path: &Path, line: &str) {
    let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await;
    if let Ok(mut file) = file {
        let _ = file.write_all(format!("{line}\n").as_bytes()).await;
    }
}

#[async_trait]
impl TrainingLauncher for ProcessLauncher {
    async fn launch(
        &self,
        run_id: &str,
        job: TrainJob,
        resources: &LaunchResources,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<TrainOutput, TrainingFailure> {
        let log_path = self.log_path(run_id).map_err(TrainingFailure::Backend)?;
        let dir = self.work_dir.join(run_id);
        tokio::fs::create_dir_all(&self.logs_dir)
            .await
            .map_err(|e| backend(&format!("creating {}", self.logs_dir.display()), e))?;
        write_job(&dir, &job).await?;
        append_log(&log_path, &format!("--- {} training started in a child process", chrono::Utc::now().to_rfc3339()))
            .await;
        let mut env = self.env.clone();
        if let Some(cpus) = resources.cpus {
            // libtorch threads: the pipeline's CPUs, rounded up (at least one)
            let threads = (cpus.ceil() as usize).max(1);
            env.retain(|(key, _)| key != crate::env_vars::ADAPTERCI_THREADS);
            env.push((crate::env_vars::ADAPTERCI_THREADS.to_string(), threads.to_string()));
            append_log(&log_path, &format!("--- resources.cpus {cpus}: {threads} training threads")).await;
        }
        if resources.memory_bytes.is_some() {
            append_log(&log_path, "--- resources.memory is not enforced by the local process executor").await;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| backend(&format!("opening {}", log_path.display()), e))?;
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .arg(&dir)
            .envs(env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| backend(&format!("starting the trainer {}", self.program.display()), e))?;
        let pid = child.id();
        tracing::info!(run = run_id, pid, program = %self.program.display(), "trainer process started");
        // dropped before the child ended (cancel, timeout, lost lease): the child is killed with the future
        let mut stopped = StopNote { log: log_path.clone(), job_dir: dir.clone(), pid, armed: true };
        // kept open while the child runs: the child exits when it closes (this process died)
        let stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ProgressLine>(&line) {
                    Ok(ProgressLine::Step(step)) => progress.on_step(&step),
                    Ok(ProgressLine::Message(message)) => progress.on_message(&message),
                    Err(_) => append_log(&log_path, &line).await,
                }
            }
        }
        let status = child.wait().await.map_err(|e| backend("waiting for the trainer", e))?;
        stopped.armed = false;
        drop(stdin);
        let how = describe_exit(status);
        tracing::info!(run = run_id, pid, "trainer process {how}");
        append_log(&log_path, &format!("--- {} trainer process {how}", chrono::Utc::now().to_rfc3339())).await;
        let result = if status.success() {
            read_output(&dir).await
        } else {
            match read_failure(&dir).await {
                Some(failure) => Err(failure),
                None => {
                    Err(TrainingFailure::Backend(format!("the trainer process {how} (log: {})", log_path.display())))
                }
            }
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    async fn logs(&self, run_id: &str, offset: u64) -> Result<Option<LogChunk>, String> {
        let path = self.log_path(run_id)?;
        let mut file = match tokio::fs::File::open(&path).await {
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
        Ok(Some(LogChunk { bytes, next_offset }))
    }
}

/// Notes in the run's log that its trainer was stopped, and removes the job directory, when dropped while armed.
struct StopNote {
    log: PathBuf,
    job_dir: PathBuf,
    pid: Option<u32>,
    armed: bool,
}

impl Drop for StopNote {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let line = format!(
            "--- {} trainer process {} stopped (run cancelled, timed out or taken over)\n",
            chrono::Utc::now().to_rfc3339(),
            self.pid.map_or_else(|| "?".to_string(), |pid| pid.to_string())
        );
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = std::io::Write::write_all(&mut file, line.as_bytes());
        }
        // the job's copy of the dataset goes too (the child, killed right after, no longer needs it)
        let _ = std::fs::remove_dir_all(&self.job_dir);
    }
}

/// Rebuilds a `TrainJob` from a job directory (the child's side).
pub(crate) fn read_job(dir: &Path) -> Result<TrainJob, String> {
    let read =
        |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("reading {}: {e}", dir.join(name).display()));
    let spec: JobSpec = serde_json::from_slice(&read(JOB_FILE)?)
        .map_err(|e| format!("decoding {}: {e}", dir.join(JOB_FILE).display()))?;
    let initial_adapter = match spec.initial_adapter {
        Some(reference) => Some(InitialAdapter { reference, safetensors: read(INITIAL_ADAPTER_FILE)? }),
        None => None,
    };
    Ok(TrainJob {
        base_model_path: spec.base_model_path,
        base_model_digest: spec.base_model_digest,
        dataset: read(DATASET_FILE)?,
        dataset_digest: spec.dataset_digest,
        lora: spec.lora,
        train: spec.train,
        initial_adapter,
    })
}
