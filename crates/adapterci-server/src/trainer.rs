//! The child side of the local process executor: `adapterd train-job DIR` reads the job in DIR, trains it with
//! the engine, prints progress as JSON lines on stdout, writes the result (or the failure) back into DIR and
//! exits 0 (adapter written), 2 (failure written) or 1 (the job could not even be read). It logs to stderr,
//! which the parent appends to the run's log. When its stdin closes (the parent died), it exits at once.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use adapterci_core::training::{ProgressSink, StepProgress, TrainingBackend, TrainingFailure};
use adapterci_engine::backend::EngineBackend;
use adapterci_engine::device::DeviceChoice;

use crate::process_launcher::{
    ADAPTER_FILE, FAILURE_FILE, FailureSpec, OUTPUT_FILE, OutputSpec, ProgressLine, read_job,
};

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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(dir.join(name), bytes).map_err(|e| format!("writing {}: {e}", dir.join(name).display()))
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
    let job = match read_job(dir) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("trainer pid {}", std::process::id());
    eprintln!(
        "training on {} ({} dataset bytes, {} steps)",
        job.base_model_path.display(),
        job.dataset.len(),
        job.train.steps
    );
    let backend = EngineBackend::new(DeviceChoice::Auto);
    let written = match backend.train(&job, &StdoutProgress) {
        Ok(output) => {
            let spec = OutputSpec {
                adapter_config: output.adapter_config,
                metrics: output.metrics,
                samples: output.samples,
                loss_curve: output.loss_curve,
            };
            serde_json::to_vec(&spec)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    write(dir, ADAPTER_FILE, &output.adapter_safetensors).and_then(|()| write(dir, OUTPUT_FILE, &json))
                })
                .map(|()| 0u8)
        }
        Err(failure) => {
            eprintln!("{failure}");
            let spec = match failure {
                TrainingFailure::InvalidInput(message) => FailureSpec::InvalidInput(message),
                TrainingFailure::Backend(message) => FailureSpec::Backend(message),
                TrainingFailure::Cancelled => FailureSpec::Cancelled,
            };
            serde_json::to_vec(&spec)
                .map_err(|e| e.to_string())
                .and_then(|json| write(dir, FAILURE_FILE, &json))
                .map(|()| 2u8)
        }
    };
    match written {
        Ok(0) => {
            eprintln!("adapter written");
            ExitCode::SUCCESS
        }
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
