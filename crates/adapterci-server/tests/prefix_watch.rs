//! Watched dataset prefixes end to end on the embedded defaults (SQLite, the local-directory object store,
//! training in-process on the tiny model), everything through adapterd's HTTP API: one upload to a watched prefix
//! starts exactly one run; 20 uploads inside the debounce window start exactly one run, which trains on all 20
//! objects joined in key order.
//!
//! adapterd runs on real time here, so the test waits by polling the API for an explicit condition with a
//! generous deadline; it asserts states, never durations. "No further run can come" is itself a condition: the
//! watcher's stored digest equals the digest of the final data, so a later poll sees nothing new.
//!
//! The same on an S3 prefix: the adapterd binary (its default process executor training in child processes)
//! with its dataset store on a real SeaweedFS bucket, skipped with a notice where SeaweedFS is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use adapterci_api::{ApiClient, ApplyPipelineRequest, RunInfo, RunListQuery, RunState};
use adapterci_core::{Digest, PipelineName};
use adapterci_server::{RunningServer, ServerConfig};
use adapterci_testkit::eventually::eventually;
use adapterci_testkit::servers::seaweedfs_or_skip;

#[path = "support/processes.rs"]
mod processes;
use processes::{KillOnDrop, free_port};

fn pipeline(name: &str) -> String {
    format!(
        "version: v1
name: {name}
base:
  model: tiny
dataset:
  location: datasets/{name}/
triggers:
  - kind: dataset_watch
    interval: 1s
training:
  lora:
    rank: 2
    alpha: 4
  steps: 2
  batch_size: 2
  max_seq_len: 32
  seed: 1
  eval_fraction: 0.2
  max_eval_examples: 1
  max_new_tokens: 2
publish:
  adapter: {name}
"
    )
}

fn line(i: usize) -> String {
    format!("{{\"prompt\": \"question {i}\", \"completion\": \"yes\"}}\n")
}

async fn runs_of(client: &ApiClient, pipeline: &str) -> Vec<RunInfo> {
    let query = RunListQuery { pipeline: Some(pipeline.to_string()), limit: Some(100) };
    client.list_runs(&query).await.unwrap()
}

/// Waits until `pipeline`'s watcher has seen `expected` and its runs have all ended; returns the runs.
async fn settled(server: &RunningServer, client: &ApiClient, pipeline: &str, expected: &Digest) -> Vec<RunInfo> {
    let name = PipelineName::new(pipeline).unwrap();
    let location = format!("datasets/{pipeline}/");
    let store = server.state.controller.ports().store.clone();
    eventually(&format!("{pipeline}: the watcher to see the final data and its runs to end"), || async {
        let seen = store.get_watch(&name, &location).await.unwrap()?;
        let runs = runs_of(client, pipeline).await;
        (seen.digest == *expected && !runs.is_empty() && runs.iter().all(|run| run.state.is_terminal())).then_some(runs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_watched_prefix_start_one_run_per_burst() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).unwrap();
    let mut config = ServerConfig::embedded(dir.path().join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.no_worker = true;
    config.refresh_secs = 0;
    config.tick_ms = 100;
    // wide enough that 20 uploads over HTTP on a loaded 2-core machine fall inside it
    config.debounce_ms = 8000;
    config.threads = 1;
    let server = adapterci_server::start(config).await.expect("adapterd starts");
    let client = ApiClient::new(&server.url()).unwrap();
    for name in ["single", "burst"] {
        client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: pipeline(name) }).await.unwrap();
    }

    // one upload to one prefix, a burst of 20 to the other, at the same time
    let single: String = (0..10).map(line).collect();
    client.push_dataset("datasets/single/train.jsonl", single.clone().into_bytes()).await.unwrap();
    let mut burst = String::new();
    for upload in 0..20 {
        let part: String = (upload * 2..upload * 2 + 2).map(line).collect();
        client
            .push_dataset(&format!("datasets/burst/part-{upload:02}.jsonl"), part.clone().into_bytes())
            .await
            .unwrap();
        burst.push_str(&part);
    }
    // an object beside the prefixes is no one's data
    client.push_dataset("datasets/burst-other/x.jsonl", line(99).into_bytes()).await.unwrap();

    let single_digest = Digest::of(single.as_bytes());
    let runs = settled(&server, &client, "single", &single_digest).await;
    assert_eq!(runs.len(), 1, "one upload starts exactly one run: {runs:#?}");
    assert_eq!(runs[0].state, RunState::Succeeded, "{:#?}", runs[0]);
    assert_eq!(runs[0].dataset_digest.as_deref(), Some(single_digest.to_string().as_str()));

    let burst_digest = Digest::of(burst.as_bytes());
    let runs = settled(&server, &client, "burst", &burst_digest).await;
    assert_eq!(runs.len(), 1, "20 uploads inside the debounce window start exactly one run: {runs:#?}");
    assert_eq!(runs[0].state, RunState::Succeeded, "{:#?}", runs[0]);
    assert_eq!(
        runs[0].dataset_digest.as_deref(),
        Some(burst_digest.to_string().as_str()),
        "the run trains on all 20 objects, joined in key order"
    );
    assert_eq!(runs[0].trigger["kind"], "dataset_changed", "{:#?}", runs[0].trigger);
    let versions = client.list_adapter_versions("burst").await.unwrap();
    assert_eq!(versions.len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_watched_s3_prefix_start_one_run_per_burst() {
    use adapterci_testkit::seaweedfs::{BUCKET, SeaweedServer};
    if !seaweedfs_or_skip(module_path!()) {
        return;
    }
    let seaweed = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap().expect("start SeaweedFS");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let adapterd = std::process::Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--model=tiny={}", model.display()))
        .arg(format!("--datasets-url=s3://{BUCKET}/watched"))
        .args(["--no-worker", "--tick-ms=100", "--debounce-ms=8000", "--threads=1", "--base-watch-ms=0"])
        .envs(seaweed.env())
        .env_remove("ADAPTERCI_DATABASE_URL")
        .env_remove("ADAPTERCI_REGISTRY_URL")
        .env_remove("ADAPTERCI_DATASETS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("adapterd starts");
    let adapterd = KillOnDrop(adapterd);
    let client = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    eventually("adapterd to answer", || async { client.health().await.ok() }).await;
    client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: pipeline("burst") }).await.unwrap();
    let mut burst = String::new();
    for upload in 0..20 {
        let part: String = (upload * 2..upload * 2 + 2).map(line).collect();
        client
            .push_dataset(&format!("datasets/burst/part-{upload:02}.jsonl"), part.clone().into_bytes())
            .await
            .unwrap();
        burst.push_str(&part);
    }
    let digest = Digest::of(burst.as_bytes());
    // the watcher's state, read from adapterd's SQLite database beside it
    let store = adapterci_store::SeaStore::connect_without_migrating(&format!(
        "sqlite://{}?mode=rw",
        data.join("adapterci.db").display()
    ))
    .await
    .unwrap();
    let name = PipelineName::new("burst").unwrap();
    let runs = eventually("the watcher to see all 20 objects and the run to end", || async {
        let seen = adapterci_core::ports::WatchStore::get_watch(&store, &name, "datasets/burst/").await.ok()??;
        let runs = runs_of(&client, "burst").await;
        (seen.digest == digest && !runs.is_empty() && runs.iter().all(|run| run.state.is_terminal())).then_some(runs)
    })
    .await;
    drop(adapterd);
    assert_eq!(runs.len(), 1, "20 uploads inside the debounce window start exactly one run: {runs:#?}");
    assert_eq!(runs[0].state, RunState::Succeeded, "{:#?}", runs[0]);
    assert_eq!(runs[0].dataset_digest.as_deref(), Some(digest.to_string().as_str()));
    // the run trained in a child process, whose log adapterd kept
    let log = std::fs::read_to_string(data.join("logs").join(format!("{}.log", runs[0].id))).unwrap();
    assert!(log.contains("trainer process exited with status 0"), "{log}");
}
