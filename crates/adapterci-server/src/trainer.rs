//! The trainer side of both executors, one training job per process:
//!
//! - `adapterd train-job DIR` (the local process executor's child) reads the job in DIR and writes its result
//!   back into DIR. Its stdin is a pipe from adapterd: when it closes (adapterd died), the child exits at once.
//! - `adapterd train-job --staged STAGING_URL --run RUN_ID` (the Kubernetes executor's pod) reads the job from
//!   `jobs/RUN_ID/` of the staging store, fetches the base model `bases/<sha256>` into its cache (verified), and
//!   writes its result back to the store. A pod has no parent on its stdin: this mode does not watch it.
//!
//! Both train with the engine in [`train_in`], print progress as JSON lines on stdout (`ProgressLine`), log to
//! stderr and exit 0 (adapter written), 2 (failure written) or 1 (the job could not even be read, or the result
//! not written).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adapterci_core::training::{ProgressSink, StepProgress, TrainingBackend, TrainingFailure};
use adapterci_engine::backend::EngineBackend;
use adapterci_engine::device::DeviceChoice;

use crate::job_files::{JobFolder, LocalJobDir, ProgressLine, read_job, write_result};
use crate::staging::Staging;

/// Exit status when the parent went away.
const ORPHANED: i32 = 3;

struct StdoutProgress;

impl StdoutProgress {
    fn emit(line: &ProgressLine) {
        if let Ok(json) = serde_json::to_string(line) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{json}");
            let _ = out.flush();
        }
    }
}

impl ProgressSink for StdoutProgress {
    fn on_step(&self, progress: &StepProgress) {
        if progress.step.is_multiple_of(10) || progress.step == progress.total_steps {
            eprintln!(
                "step {}/{} loss {:.4} lr {:.2e}",
                progress.step, progress.total_steps, progress.loss, progress.learning_rate
            );
        }
        Self::emit(&ProgressLine::Step(progress.clone()));
    }

    fn on_message(&self, message: &str) {
        eprintln!("{message}");
        Self::emit(&ProgressLine::Message(message.to_string()));
    }
}

/// Where the trainer gets the base model.
enum BaseSource<'a> {
    /// The path in the job, on this machine (the process executor shares adapterd's disk).
    Local,
    /// `bases/<digest>` of the staging store, cached in a directory.
    Staged { staging: &'a Staging, cache_dir: &'a Path },
}

/// The arguments after `adapterd train-job`.
#[derive(Debug, clap::Parser)]
#[command(name = "adapterd train-job", about = "Runs one training job (started by adapterd's executors)")]
pub struct TrainJobArgs {
    /// The job directory (the local process executor).
    #[arg(required_unless_present = "staged", conflicts_with = "staged")]
    pub dir: Option<PathBuf>,
    /// The staging store URL (a directory, file://, s3://bucket/prefix): the job is read from `jobs/RUN_ID/` and
    /// the result written there (the Kubernetes executor).
    #[arg(long, value_name = "STAGING_URL", requires = "run")]
    pub staged: Option<String>,
    /// The run whose staged job this is.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Where staged base models are cached, by digest.
    #[arg(long, env = crate::env_vars::ADAPTERCI_BASE_CACHE, default_value = "/tmp/adapterci-bases")]
    pub base_cache: PathBuf,
}

/// Runs `adapterd train-job …`; the process's exit code.
pub fn main(args: TrainJobArgs) -> ExitCode {
    match (&args.staged, &args.run, &args.dir) {
        (Some(url), Some(run_id), _) => run_staged(url, run_id, &args.base_cache),
        (_, _, Some(dir)) => run_job(dir),
        _ => {
            eprintln!("error: usage: adapterd train-job DIR | adapterd train-job --staged STAGING_URL --run RUN_ID");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            None
        }
    }
}

/// Runs the job in `dir`; the process's exit code.
pub fn run_job(dir: &Path) -> ExitCode {
    // the parent holds our stdin: end of file means it died, and nobody will read what we produce
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        eprintln!("the controller went away: stopping");
        std::process::exit(ORPHANED);
    });
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    train_in(&runtime, &LocalJobDir(dir.to_path_buf()), BaseSource::Local)
}

/// Runs the job of `run_id` staged at `staging_url`, caching its base model in `cache_dir`; the exit code. Unlike
/// [`run_job`] it does not watch stdin: a pod has no parent process whose death it could signal.
pub fn run_staged(staging_url: &str, run_id: &str, cache_dir: &Path) -> ExitCode {
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    let staging = match Staging::open(staging_url) {
        Ok(staging) => staging,
        Err(error) => {
            eprintln!("error: opening the staging store: {error}");
            return ExitCode::FAILURE;
        }
    };
    let folder = match staging.job_folder(run_id) {
        Ok(folder) => folder,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    train_in(&runtime, &folder, BaseSource::Staged { staging: &staging, cache_dir })
}

/// Reads the job from `folder`, trains it (on this thread, outside the runtime) and writes the result back.
fn train_in(runtime: &tokio::runtime::Runtime, folder: &dyn JobFolder, base: BaseSource<'_>) -> ExitCode {
    let (mut job, base_blob) = match runtime.block_on(read_job(folder)) {
        Ok(read) => read,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let prepared = match base {
        BaseSource::Local => Ok(()),
        BaseSource::Staged { staging, cache_dir } => {
            let Some(blob) = base_blob else {
                eprintln!("error: the staged job names no base model blob (base_model_blob in job.json)");
                return ExitCode::FAILURE;
            };
            eprintln!("fetching the base model {blob} into {}", cache_dir.display());
            runtime.block_on(staging.fetch_base(&blob, cache_dir)).map(|path| job.base_model_path = path)
        }
    };
    eprintln!("trainer pid {}", std::process::id());
    let result = match prepared {
        Ok(()) => {
            eprintln!(
                "training on {} ({} dataset bytes, {} steps)",
                job.base_model_path.display(),
                job.dataset.len(),
                job.train.steps
            );
            EngineBackend::new(DeviceChoice::Auto).train(&job, &StdoutProgress)
        }
        Err(error) => Err(TrainingFailure::Backend(error)),
    };
    let code = match &result {
        Ok(_) => 0u8,
        Err(failure) => {
            eprintln!("{failure}");
            2
        }
    };
    match runtime.block_on(write_result(folder, result)) {
        Ok(()) if code == 0 => {
            eprintln!("adapter written");
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
