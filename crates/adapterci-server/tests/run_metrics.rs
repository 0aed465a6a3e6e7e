//! `GET /api/v1/runs/{id}/metrics` over real HTTP on a started adapterd (SQLite, local files): a run's per-step
//! rows from the metadata store, the report's loss curve for a run without rows, 404 for an unknown run, and
//! `adapterctl runs metrics --svg` writing the loss curve.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use adapterci_api::{ApiClient, ApiError, ErrorCode, StepMetricsSource};
use adapterci_core::PipelineName;
use adapterci_core::run::{NewRun, RunPatch, Trigger};
use adapterci_core::run_metrics::StepMetric;
use adapterci_server::{RunningServer, ServerConfig};
use clap::Parser;

async fn start(dir: &Path) -> RunningServer {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).expect("tiny model written");
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.tick_ms = 0;
    config.refresh_secs = 0;
    config.no_worker = true;
    adapterci_server::start(config).await.expect("adapterd starts")
}

async fn new_run(server: &RunningServer) -> String {
    let store = &server.state.controller.ports().store;
    let pipeline = PipelineName::new("demo").unwrap();
    let run = NewRun { pipeline, pipeline_revision: 1, trigger: Trigger::Manual, dataset_digest: None };
    store.create_run(run).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_metrics_are_served_and_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();

    // a run trained before per-step rows existed: its report's loss curve
    let old = new_run(&server).await;
    let report = serde_json::json!({"loss_curve": [[1, 2.0], [2, 1.5]]});
    let patch = RunPatch { report: Some(report), ..RunPatch::default() };
    server.state.controller.ports().store.update_run(&old, patch).await.unwrap();
    let metrics = client.run_metrics(&old).await.unwrap();
    assert_eq!(metrics.source, StepMetricsSource::Report);
    let losses: Vec<(u64, Option<f64>)> = metrics.steps.iter().map(|s| (s.step, s.loss)).collect();
    assert_eq!(losses, [(1, Some(2.0)), (2, Some(1.5))]);
    assert_eq!(metrics.steps[0].learning_rate, None);

    let run = new_run(&server).await;
    assert!(client.run_metrics(&run).await.unwrap().steps.is_empty(), "no steps before training");
    let steps: Vec<StepMetric> = (1..=5)
        .map(|step| StepMetric { step, loss: 3.0 / step as f64, learning_rate: 1e-3, tokens: 256, seconds: 0.5 })
        .collect();
    let recorder = server.state.run_metrics.clone().expect("adapterd records step metrics");
    recorder.record_step_metrics(&run, &steps).await.unwrap();
    let metrics = client.run_metrics(&run).await.unwrap();
    assert_eq!(metrics.source, StepMetricsSource::Steps);
    assert_eq!(metrics.steps.len(), 5);
    assert_eq!(metrics.steps[4].loss, Some(0.6));
    assert_eq!(metrics.steps[4].tokens_per_second(), Some(512.0));

    match client.run_metrics("no-such-run").await {
        Err(ApiError::Http { error, .. }) => assert_eq!(error.code, ErrorCode::NotFound),
        other => panic!("expected not found, got {other:?}"),
    }

    // the CLI writes the curve: one polyline point per step
    let svg = dir.path().join("loss.svg");
    let cli = adapterctl::cli::Cli::parse_from([
        "adapterctl",
        "--server",
        &server.url(),
        "runs",
        "metrics",
        &run,
        "--svg",
        svg.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let output = adapterctl::output::Output::new(adapterctl::output::OutputFormat::Json, true);
    let status = adapterctl::commands::run(cli, output).await.unwrap();
    assert_eq!(status, adapterctl::exit::ExitStatus::Success);
    let image = std::fs::read_to_string(&svg).unwrap();
    let points = image.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(points.split(' ').count(), 5, "{image}");
}
