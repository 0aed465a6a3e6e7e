//! adapterd killed with SIGKILL in the middle of a run, then started again on the same data directory: the new
//! process takes the run over once the dead one's lease expires, completes it, and exactly one version is
//! published; the killed adapterd's trainer child exits by itself. Real processes, SQLite, local files, libtorch
//! training of a tiny model and HTTP.
//!
//! Waiting on another process cannot be made deterministic: the test polls adapterd's API with a deadline, and
//! asserts only on states, never on how long they took.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::{Child, Command, Stdio};

use adapterci_api::{ApiClient, ApplyPipelineRequest, RunInfo, RunState};
use adapterci_testkit::eventually::eventually;

#[path = "support/processes.rs"]
mod processes;
use processes::{ended, free_port};

const PIPELINE: &str = r#"version: v1
name: crash
base:
  model: tiny
dataset:
  location: datasets/crash/train.jsonl
triggers:
  - kind: manual
training:
  lora:
    rank: 4
    alpha: 8
  steps: 400
  batch_size: 4
  learning_rate: 0.01
  max_seq_len: 64
  seed: 3
  eval_fraction: 0.2
  max_eval_examples: 2
  max_new_tokens: 4
eval:
  gates:
    - metric: eval_loss
      max: 100
publish:
  adapter: crash
"#;

fn start_adapterd(dir: &Path, model: &Path) -> (Child, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--model=tiny={}", model.display()))
        .args(["--no-worker", "--tick-ms=200", "--lease-secs=3", "--threads=1"])
        .env_remove("ADAPTERCI_DATABASE_URL")
        .env_remove("ADAPTERCI_REGISTRY_URL")
        .env_remove("ADAPTERCI_DATASETS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("adapterd starts");
    (child, format!("http://127.0.0.1:{port}"))
}

async fn run_state(client: &ApiClient, id: &str) -> Option<RunInfo> {
    client.get_run(id).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_kill_9_completes_after_a_restart_with_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 5).unwrap();

    let (mut first, url) = start_adapterd(dir.path(), &model);
    let client = ApiClient::new(&url).unwrap();
    eventually("adapterd to answer", || async { client.health().await.ok() }).await;
    client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: PIPELINE.to_string() }).await.unwrap();
    let dataset: String =
        (0..40).map(|i| format!("{{\"prompt\": \"question {i}\", \"completion\": \"yes\"}}\n")).collect();
    client.push_dataset("datasets/crash/train.jsonl", dataset.into_bytes()).await.unwrap();
    let run = client.trigger_pipeline("crash").await.unwrap();

    // Kill it once training has started and reported progress.
    eventually("the run to be training", || async {
        let info = run_state(&client, &run.id).await?;
        assert!(!info.state.is_terminal(), "the run ended before the kill: {info:#?}");
        let report = info.typed_report().ok().flatten()?;
        (info.state == RunState::Running && report.progress.is_some()).then_some(())
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no shutdown, no cleanup, the lease is left behind
    first.wait().unwrap();
    // its training ran in a child process (the default executor), which notices and exits: no orphan trains on
    let log = std::fs::read_to_string(dir.path().join("data/logs").join(format!("{}.log", run.id))).unwrap();
    let trainer: u32 = log.lines().find_map(|line| line.strip_prefix("trainer pid ")).unwrap().trim().parse().unwrap();
    eventually("the orphaned trainer to exit", || async { ended(trainer).then_some(()) }).await;

    let (mut second, url) = start_adapterd(dir.path(), &model);
    let client = ApiClient::new(&url).unwrap();
    let finished = eventually("the run to finish after the restart", || async {
        run_state(&client, &run.id).await.filter(|info| info.state.is_terminal())
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    assert_eq!(finished.state, RunState::Succeeded, "{finished:#?}");
    let versions = client_versions(dir.path(), &model).await;
    assert_eq!(versions, vec![1], "exactly one version published for the run");
    assert_eq!(finished.published.map(|published| published.version), Some(1));
}

/// The published versions, read from a third adapterd on the same data (the second was stopped).
async fn client_versions(dir: &Path, model: &Path) -> Vec<u64> {
    let (mut third, url) = start_adapterd(dir, model);
    let client = ApiClient::new(&url).unwrap();
    eventually("adapterd to answer", || async { client.health().await.ok() }).await;
    let versions = client.list_adapter_versions("crash").await.unwrap().iter().map(|version| version.version).collect();
    third.kill().unwrap();
    third.wait().unwrap();
    versions
}
