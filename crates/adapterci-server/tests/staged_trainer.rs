//! The pod side of the Kubernetes executor, for real: `adapterd train-job --staged STAGING_URL --run RUN_ID` reads
//! a job staged in an object store (a local directory here, through object_store's LocalFileSystem), fetches the
//! base model by digest into its cache, trains the tiny model, prints progress lines on stdout and writes the
//! result back to the store. Its stdin is closed from the start: unlike the process executor's child, a pod has
//! no parent to watch, and the job must still run to its end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::{Output, Stdio};

use adapterci_core::training::TrainingFailure;
use adapterci_server::staging::Staging;

#[path = "support/tiny_job.rs"]
mod tiny_job;
use tiny_job::tiny_job;

/// Runs the staged trainer of `run` with its stdin closed and `cache` as its base-model cache.
async fn train_staged(staging_url: &str, run: &str, cache: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .args(["train-job", "--staged", staging_url, "--run", run])
        .env("ADAPTERCI_BASE_CACHE", cache)
        .env("ADAPTERCI_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap()
}

fn step_lines(stdout: &[u8]) -> usize {
    String::from_utf8_lossy(stdout).lines().filter(|line| line.starts_with("{\"step\":")).count()
}

#[tokio::test]
async fn a_staged_job_trains_without_a_parent_and_its_result_goes_back_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("staging").display().to_string();
    let staging = Staging::open(&url).unwrap();
    let job = tiny_job(dir.path(), 3);
    staging.stage_job("run-1", &job).await.unwrap();
    let base = dir.path().join("staging/bases").join(job.base_model_digest.hex());
    assert!(base.is_file(), "the base model is staged by its digest");

    let cache = dir.path().join("cache");
    let output = train_staged(&url, "run-1", &cache).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(step_lines(&output.stdout), 3, "a progress line per step on stdout");
    assert!(stderr.contains("adapter written"), "{stderr}");
    assert!(cache.join(job.base_model_digest.hex()).is_file(), "the base model is cached by digest");
    let trained = staging.read_output("run-1").await.unwrap();
    assert_eq!(trained.adapter_config.rank, 2);
    assert!(trained.metrics.contains_key("eval_loss"), "{:?}", trained.metrics);

    staging.remove_job("run-1").await.unwrap();
    assert!(!dir.path().join("staging/jobs/run-1/job.json").exists(), "the staged job is removed");
    assert!(base.is_file(), "the base model stays for other runs");
}

#[tokio::test]
async fn a_failing_staged_job_writes_its_failure_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("staging").display().to_string();
    let staging = Staging::open(&url).unwrap();
    let mut job = tiny_job(dir.path(), 3);
    job.dataset = b"this is not jsonl\n".to_vec();
    staging.stage_job("run-2", &job).await.unwrap();
    let output = train_staged(&url, "run-2", &dir.path().join("cache")).await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    match staging.read_failure("run-2").await {
        Some(TrainingFailure::InvalidInput(message)) => assert!(!message.is_empty()),
        other => panic!("expected the trainer's invalid-input failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_base_model_that_does_not_match_its_digest_is_not_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("staging").display().to_string();
    let staging = Staging::open(&url).unwrap();
    let job = tiny_job(dir.path(), 1);
    staging.stage_job("run-3", &job).await.unwrap();
    std::fs::write(dir.path().join("staging/bases").join(job.base_model_digest.hex()), b"tampered").unwrap();
    let cache = dir.path().join("cache");
    let output = train_staged(&url, "run-3", &cache).await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    match staging.read_failure("run-3").await {
        Some(TrainingFailure::Backend(message)) => {
            assert!(message.contains(&format!("not {}", job.base_model_digest)), "{message}")
        }
        other => panic!("expected a backend failure naming the digest, got {other:?}"),
    }
    assert!(!cache.join(job.base_model_digest.hex()).exists(), "a bad download is not cached");
}

#[tokio::test]
async fn a_run_without_a_staged_job_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("staging").display().to_string();
    let output = train_staged(&url, "never-staged", &dir.path().join("cache")).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("jobs/never-staged/job.json: not found"), "{stderr}");
}

#[test]
fn a_staged_job_needs_its_run_and_a_usage_error_exits_1() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .args(["train-job", "--staged", "/nowhere"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "2 would read as a failure written: {stderr}");
    assert!(stderr.contains("--run <RUN_ID>"), "{stderr}");
}
