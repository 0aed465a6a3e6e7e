//! A serving replica end to end: one adapterd runs the loop on the tiny model (the base-model watcher builds a base
//! release with tiny budgets and uploads it to the registry's store, the rebase retrains and publishes an adapter
//! bound to it), and a second adapterd, `--serve-only`, with its own empty data directory on the same database and
//! registry, serves that version as soon as it says it is ready (`/readyz`): it fetches the release from the store
//! (checked against its digest) into its own releases folder and answers completions with the adapter. A request
//! that would change state is refused by the replica with a 409 naming the flag, over the API and through
//! adapterctl, and the replica starts nothing.
//!
//! Two variants: a SQLite file and a local registry directory shared by both (always), and PostgreSQL with a
//! SeaweedFS bucket (where both are installed; skipped with a notice otherwise). adapterd reads the S3 settings
//! from its process's environment, which a test may not change (`unsafe`), so the PostgreSQL + SeaweedFS variant
//! runs the scenario in a child process of this test binary (`replica_on_postgres_and_seaweedfs_child`, which
//! does nothing unless the parent started it) with the bucket's settings in its environment.
//!
//! adapterd runs on real time, so the test polls the API for explicit conditions with a generous deadline and
//! asserts states, never durations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use adapterci_api::{ApiClient, ApiError, ApplyPipelineRequest, CompletionRequest, RunListQuery, RunState};
use adapterci_controller::RELEASE_WEIGHTS_FILE;
use adapterci_core::Digest;
use adapterci_core::manifest::AdapterManifest;
use adapterci_engine::allocate::Method;
use adapterci_engine::calibrate::TeacherTextSpec;
use adapterci_engine::recover::RecoverySpec;
use adapterci_engine::release_build::BuildOptions;
use adapterci_server::ServerConfig;
use adapterci_server::base_release::BUILD_STATE;
use adapterci_testkit::eventually::eventually;
use adapterctl::cli::Cli;
use adapterctl::exit::ExitStatus;
use adapterctl::output::{Output, OutputFormat};
use clap::Parser;

/// The refusal's words, as a serve-only adapterd answers them.
const REFUSAL: &str = "this adapterd serves only (--serve-only)";

/// Set by the PostgreSQL + SeaweedFS variant for its child: the database and registry URLs to run on.
const CHILD_DATABASE_URL: &str = "ADAPTERCI_TEST_SERVE_ONLY_DATABASE_URL";
const CHILD_REGISTRY_URL: &str = "ADAPTERCI_TEST_SERVE_ONLY_REGISTRY_URL";

fn pipeline() -> String {
    "version: v1
name: support
base:
  model: tiny
dataset:
  location: datasets/support/train.jsonl
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
  adapter: support
"
    .to_string()
}

/// A new model file renamed over the catalog's path, as an installer would.
fn install_model(path: &Path, seed: u64) {
    let staging = path.with_extension("staging.gguf");
    adapterci_engine::tiny::write_tiny_model(&staging, seed).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// adapterd on the tiny model at `data_dir`, on `database_url` and `registry_url`.
fn config(data_dir: &Path, model: &Path, database_url: &str, registry_url: &str) -> ServerConfig {
    let mut config = ServerConfig::embedded(data_dir.to_path_buf(), model.to_path_buf());
    config.models = vec![("tiny".to_string(), model.to_path_buf())];
    config.database_url = Some(database_url.to_string());
    config.registry_url = Some(registry_url.to_string());
    config.threads = 1;
    config.tick_ms = 100;
    config.base_watch_ms = 200;
    config
}

/// The whole scenario on one database and one registry; see the module documentation.
async fn a_replica_serves_what_the_controller_published(dir: &Path, database_url: &str, registry_url: &str) {
    let model = dir.join("tiny.gguf");
    install_model(&model, 3);
    let mut controller_config = config(&dir.join("controller"), &model, database_url, registry_url);
    controller_config.no_worker = true;
    controller_config.refresh_secs = 0;
    // the smallest budgets that exercise every step (calibration, allocation, palettization, recovery)
    controller_config.base_release_max_perplexity_ratio = 100.0;
    controller_config.base_release_options = Some(BuildOptions {
        method: Method { group_rows: 8, group_rows_2bit: 4, ..Method::default() },
        teacher: TeacherTextSpec { sequences: 20, seq_len: 24, batch: 10, temperature: 1.0, seed: 1 },
        recovery: RecoverySpec { steps: 4, batch: 2, ..BuildOptions::default().recovery },
        ..BuildOptions::default()
    });
    let releases = controller_config.releases_dir();
    let controller = adapterci_server::start(controller_config).await.expect("the controller's adapterd starts");
    let client = ApiClient::new(&controller.url()).unwrap();
    client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: pipeline() }).await.unwrap();
    let dataset: String =
        (0..10).map(|i| format!("{{\"prompt\": \"question {i}\", \"completion\": \"yes\"}}\n")).collect();
    client.push_dataset("datasets/support/train.jsonl", dataset.into_bytes()).await.unwrap();

    // a new base model: one release, and the pipeline retrained and published on it
    install_model(&model, 7);
    let run = eventually("the rebase run to end", || async {
        let runs = client.list_runs(&RunListQuery { pipeline: None, limit: Some(10) }).await.unwrap();
        runs.into_iter().find(|run| run.state.is_terminal())
    })
    .await;
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let version = run.published.as_ref().expect("published").version;
    let manifest: AdapterManifest =
        serde_json::from_value(client.get_adapter_manifest("support", version).await.unwrap()).unwrap();
    let release = manifest.lineage.base_release_digest.clone().expect("bound to a base release");
    assert_eq!(manifest.lineage.base_model_digest, release, "the adapter runs on the release");
    let built = std::fs::read(releases.join(release.hex()).join(RELEASE_WEIGHTS_FILE)).unwrap();
    assert_eq!(Digest::of(&built), release);

    // the replica: its own, empty data directory; the same database and registry
    let replica_dir = dir.join("replica");
    let mut replica_config = config(&replica_dir, &model, database_url, registry_url);
    replica_config.serve_only = true;
    replica_config.refresh_secs = 1;
    let replica_releases = replica_config.releases_dir();
    let replica = adapterci_server::start(replica_config).await.expect("the serving replica starts");
    let replica_client = ApiClient::new(&replica.url()).unwrap();
    replica_client.health().await.expect("a replica answers its health check");
    // ready (its Service sends it traffic) only once it has pulled what was published before it started
    eventually("the replica to be ready", || async { replica_client.readiness().await.unwrap().ready.then_some(()) })
        .await;
    let models = replica_client.list_models().await.unwrap().data;
    assert!(models.iter().any(|m| m.id == "support" && m.adapterci.version == Some(version)), "{models:#?}");
    let fetched = std::fs::read(replica_releases.join(release.hex()).join(RELEASE_WEIGHTS_FILE)).unwrap();
    assert_eq!(fetched, built, "the replica fetched the release the controller's adapterd built");
    let answer = replica_client.completion(&CompletionRequest::new("support".to_string(), "question 3")).await.unwrap();
    assert_eq!(answer.adapterci.base_model_digest, release.to_string(), "answered on the release");
    assert!(answer.usage.completion_tokens >= 1);
    // reads are answered from the shared database
    assert_eq!(replica_client.list_pipelines().await.unwrap().len(), 1);

    // state changes are refused, naming the flag
    let refused = replica_client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: pipeline() }).await;
    assert_refused(refused.map(|_| ()), "POST /api/v1/pipelines");
    assert_refused(replica_client.trigger_pipeline("support").await.map(|_| ()), "/trigger");
    assert_refused(replica_client.push_dataset("datasets/x.jsonl", b"{}".to_vec()).await.map(|_| ()), "PUT");
    let argv = ["adapterctl", "--server", &replica.url(), "-o", "json", "adapters", "gc", "--grace-secs", "0"];
    let cli = Cli::try_parse_from(argv).unwrap();
    let err = adapterctl::commands::run(cli, Output::new(OutputFormat::Json, true)).await.unwrap_err();
    assert_eq!(err.status, ExitStatus::Failure, "{}", err.message);
    assert!(err.message.contains(REFUSAL), "adapterctl shows the refusal: {}", err.message);
    assert!(err.message.contains("send it to the adapterd that runs the controller"), "{}", err.message);

    // the replica started nothing: no run besides the rebase's, no release built in its folder
    let runs = client.list_runs(&RunListQuery { pipeline: None, limit: Some(10) }).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert!(!replica_releases.join(BUILD_STATE).exists(), "the replica runs no base-model watcher");
    replica.shutdown().await;
    controller.shutdown().await;
}

/// `result` is the replica's 409 naming the flag and `request`.
fn assert_refused(result: Result<(), ApiError>, request: &str) {
    match result {
        Err(ApiError::Http { status, error, .. }) => {
            assert_eq!(status, 409, "{}", error.message);
            assert!(error.message.contains(REFUSAL) && error.message.contains(request), "{}", error.message);
        }
        other => panic!("{request}: expected the serve-only refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_replica_without_a_refresh_period_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::embedded(dir.path().join("data"), dir.path().join("tiny.gguf"));
    config.serve_only = true;
    config.refresh_secs = 0;
    let Err(error) = adapterci_server::start(config).await else { panic!("a replica that never refreshes started") };
    assert!(error.to_string().contains("--serve-only: --refresh-secs 0 would never pull"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_a_shared_sqlite_file_and_registry_directory_serves_the_release_bound_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("shared.db").display());
    let registry_url = dir.path().join("shared-registry").display().to_string();
    a_replica_serves_what_the_controller_published(dir.path(), &database_url, &registry_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_postgres_and_seaweedfs_serves_the_release_bound_adapter() {
    use adapterci_testkit::postgres::PostgresServer;
    use adapterci_testkit::seaweedfs::{BUCKET, SeaweedServer};
    use adapterci_testkit::servers::{postgres_or_skip, seaweedfs_or_skip};
    if !postgres_or_skip(module_path!()) || !seaweedfs_or_skip(module_path!()) {
        return;
    }
    let postgres = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    let seaweed = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap().expect("start SeaweedFS");
    let database_url = postgres.create_database().unwrap();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "replica_on_postgres_and_seaweedfs_child", "--nocapture"])
        .env(CHILD_DATABASE_URL, &database_url)
        .env(CHILD_REGISTRY_URL, format!("s3://{BUCKET}/serve-only"))
        .envs(seaweed.env())
        .output()
        .await
        .unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&child.stdout), String::from_utf8_lossy(&child.stderr));
    assert!(child.status.success(), "the scenario on PostgreSQL and SeaweedFS failed:\n{output}");
    assert!(output.contains("1 passed"), "the child ran the scenario:\n{output}");
}

/// The scenario on PostgreSQL and SeaweedFS, in the child process the test above starts with the bucket's
/// settings in its environment; run on its own, without them, it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_on_postgres_and_seaweedfs_child() {
    let (Ok(database_url), Ok(registry_url)) = (std::env::var(CHILD_DATABASE_URL), std::env::var(CHILD_REGISTRY_URL))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    a_replica_serves_what_the_controller_published(dir.path(), &database_url, &registry_url).await;
}
