//! The base-model watcher end to end in adapterd with the engine's real base-release stage
//! (`EngineBaseReleaseBuilder`: palettize, recovery adapter, perplexity gate) on the tiny model with tiny
//! budgets: three pipelines on one base, a new model file installed under the catalog's path, and the watcher
//! builds exactly one base release and retrains the three adapters on it, from its recovery adapter, each
//! bound to the release in its lineage; with a gate no release passes, nothing is retrained or published.
//! SQLite, local files, libtorch on the CPU, the API over HTTP.
//!
//! adapterd runs on real time, so the test polls the API for explicit conditions with a generous deadline and
//! asserts states, never durations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use adapterci_api::{ApiClient, ApplyPipelineRequest, CompletionRequest, RunInfo, RunListQuery, RunState};
use adapterci_controller::{RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE};
use adapterci_core::Digest;
use adapterci_core::manifest::AdapterManifest;
use adapterci_core::training::InitialAdapterRef;
use adapterci_engine::allocate::Method;
use adapterci_engine::calibrate::TeacherTextSpec;
use adapterci_engine::recover::RecoverySpec;
use adapterci_engine::release_build::BuildOptions;
use adapterci_server::base_release::BUILD_STATE;
use adapterci_server::{RunningServer, ServerConfig};
use adapterci_testkit::eventually::eventually;

const PIPELINES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The build state folders of the layout before the models' folders.
const LEGACY_STATE: [&str; 2] = ["teacher-cache", "checkpoints"];

/// Whether the previous layout's build state is gone from `releases`.
fn legacy_state_is_gone(releases: &Path) -> bool {
    LEGACY_STATE.iter().all(|legacy| !releases.join(BUILD_STATE).join(legacy).exists())
}

fn pipeline(name: &str) -> String {
    format!(
        "version: v1
name: {name}
base:
  model: tiny
dataset:
  location: datasets/{name}/train.jsonl
triggers:
  - kind: manual
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

/// A new model file renamed over the catalog's path, as an installer would.
fn install_model(path: &Path, seed: u64) {
    let staging = path.with_extension("staging.gguf");
    adapterci_engine::tiny::write_tiny_model(&staging, seed).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// adapterd on the tiny model with three pipelines on it, a dataset each, and the base-release gate at
/// `max_ratio`, with the embedded worker when `worker`; returns the server, its client, the model's path and the releases folder.
async fn start(dir: &Path, max_ratio: f64, worker: bool) -> (RunningServer, ApiClient, PathBuf, PathBuf) {
    let model = dir.join("tiny.gguf");
    install_model(&model, 3);
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model.clone())];
    config.no_worker = !worker;
    config.refresh_secs = 0;
    config.tick_ms = 100;
    config.base_watch_ms = 200;
    config.threads = 1;
    // the smallest budgets that exercise every step (calibration, allocation, palettization, recovery)
    config.base_release_max_perplexity_ratio = max_ratio;
    config.base_release_options = Some(BuildOptions {
        method: Method { group_rows: 8, group_rows_2bit: 4, ..Method::default() },
        teacher: TeacherTextSpec { sequences: 20, seq_len: 24, batch: 10, temperature: 1.0, seed: 1 },
        recovery: RecoverySpec { steps: 4, batch: 2, ..BuildOptions::default().recovery },
        ..BuildOptions::default()
    });
    let releases = config.releases_dir();
    // what an adapterd of the layout before the models' state folders left, which the watcher removes as it starts
    for legacy in LEGACY_STATE {
        std::fs::create_dir_all(releases.join(BUILD_STATE).join(legacy).join("0123456789abcdef")).unwrap();
    }
    let server = adapterci_server::start(config).await.expect("adapterd starts");
    let client = ApiClient::new(&server.url()).unwrap();
    let dataset: String =
        (0..10).map(|i| format!("{{\"prompt\": \"question {i}\", \"completion\": \"yes\"}}\n")).collect();
    for name in PIPELINES {
        client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: pipeline(name) }).await.unwrap();
        client.push_dataset(&format!("datasets/{name}/train.jsonl"), dataset.clone().into_bytes()).await.unwrap();
    }
    (server, client, model, releases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_base_model_change_gives_one_release_and_three_adapters_retrained_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, model, releases) = start(dir.path(), 100.0, true).await;

    install_model(&model, 7);
    let new_digest = Digest::of(&std::fs::read(&model).unwrap());
    let runs: Vec<RunInfo> = eventually("three rebase runs to end", || async {
        let runs = client.list_runs(&RunListQuery { pipeline: None, limit: Some(100) }).await.unwrap();
        (runs.len() >= 3 && runs.iter().all(|run| run.state.is_terminal())).then_some(runs)
    })
    .await;

    // beside the bundles: the builds' state (BUILD_STATE), which a finished build removed
    let bundles: Vec<_> = std::fs::read_dir(&releases)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() && !path.ends_with(BUILD_STATE))
        .collect();
    assert_eq!(bundles.len(), 1, "exactly one base release: {bundles:?}");
    let models = releases.join(BUILD_STATE).join("models");
    let left: Vec<_> =
        std::fs::read_dir(&models).map(|dir| dir.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "a finished build leaves no state: {left:?}");
    assert!(legacy_state_is_gone(&releases), "the watcher removed the previous layout's state as it started");
    let bundle = &bundles[0];
    let release = Digest::of(&std::fs::read(bundle.join(RELEASE_WEIGHTS_FILE)).unwrap());
    assert_eq!(bundle.file_name().unwrap().to_str().unwrap(), release.hex(), "the bundle is named by its digest");
    let recovery = Digest::of(&std::fs::read(bundle.join(RELEASE_RECOVERY_FILE)).unwrap());

    assert_eq!(runs.len(), 3, "one retrain per pipeline and nothing else: {runs:#?}");
    let mut pipelines: Vec<&str> = runs.iter().map(|run| run.pipeline.as_str()).collect();
    pipelines.sort();
    assert_eq!(pipelines, PIPELINES);
    for run in &runs {
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        assert_eq!(run.trigger["kind"], "base_model_changed", "{:#?}", run.trigger);
        assert_eq!(run.trigger["base_model_digest"], new_digest.to_string());
        assert_eq!(run.trigger["base_release_digest"], release.to_string());
        let published = run.published.as_ref().expect("published");
        let manifest = client.get_adapter_manifest(&run.pipeline, published.version).await.unwrap();
        let manifest: AdapterManifest = serde_json::from_value(manifest).unwrap();
        let lineage = &manifest.lineage;
        assert_eq!(lineage.base_release_digest.as_ref(), Some(&release), "{}", run.pipeline);
        assert_eq!(lineage.base_model_digest, release, "{} runs on the release", run.pipeline);
        assert_eq!(
            lineage.initial_adapter,
            InitialAdapterRef::RecoveryAdapter { base_release: release.clone(), adapter: recovery.clone() },
            "{} starts from the release's recovery adapter",
            run.pipeline
        );
    }
    // the worker (still on the model it started with) serves the retrained adapters on the release
    let served = eventually("the worker to serve the three retrained adapters", || async {
        let models = client.list_models().await.unwrap().data;
        let on_release: Vec<String> = models
            .iter()
            .filter(|m| m.adapterci.base_model_digest == release.to_string() && m.adapterci.version.is_some())
            .map(|m| m.id.clone())
            .collect();
        (on_release.len() == 3).then_some(on_release)
    })
    .await;
    let answer = client.completion(&CompletionRequest::new(served[0].clone(), "question 3")).await.unwrap();
    assert_eq!(answer.adapterci.base_model_digest, release.to_string(), "answered on the release");
    assert!(answer.usage.completion_tokens >= 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_gate_retrains_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // a gate no release passes: the recovered perplexity at most half the source model's
    let (server, client, model, releases) = start(dir.path(), 0.5, false).await;
    install_model(&model, 7);
    let new_digest = Digest::of(&std::fs::read(&model).unwrap());
    // the watcher records a finished rebase (released or refused by its gate) in rebased.json
    eventually("the rebase to finish", || async {
        let recorded = std::fs::read_to_string(releases.join(adapterci_controller::REBASED_FILE)).ok()?;
        recorded.contains(&new_digest.to_string()).then_some(())
    })
    .await;
    let runs = client.list_runs(&RunListQuery { pipeline: None, limit: Some(100) }).await.unwrap();
    assert!(runs.is_empty(), "no pipeline is retrained on a release that failed its gate: {runs:#?}");
    assert!(client.list_adapters().await.unwrap().is_empty(), "nothing published");
    assert!(legacy_state_is_gone(&releases), "the watcher removed the previous layout's state as it started");
    server.shutdown().await;
}
