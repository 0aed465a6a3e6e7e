//! `GET /readyz`: adapterd with its embedded worker answers 503, saying why, until the worker has gone over the
//! published adapters once, and 200 from then on; without a worker it is ready at once. The loops are off
//! (`tick_ms` and `refresh_secs` 0), so the test runs the worker's first pass itself. SQLite, local registry,
//! libtorch on the CPU, the tiny model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use adapterci_api::{ApiClient, ReadinessResponse};
use adapterci_server::{RunningServer, ServerConfig};

async fn start(dir: &Path, no_worker: bool) -> RunningServer {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 7).unwrap();
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.threads = 1;
    // No background loops: the test runs the worker's refresh pass itself.
    config.tick_ms = 0;
    config.refresh_secs = 0;
    config.base_watch_ms = 0;
    config.no_worker = no_worker;
    adapterci_server::start(config).await.expect("adapterd starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_worker_has_pulled_what_is_published_then_ready() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), false).await;
    let client = ApiClient::new(&server.url()).unwrap();
    let url = format!("{}/readyz", server.url());

    assert_eq!(reqwest::get(&url).await.unwrap().status(), 503);
    let before = client.readiness().await.unwrap();
    assert!(!before.ready, "{before:?}");
    let reason = before.reason.expect("a 503 says why");
    assert!(reason.contains("first pull of the published adapters has not finished"), "{reason}");
    client.health().await.expect("alive all along: /healthz does not wait for the worker");

    server.state.worker.clone().expect("embedded worker").refresh_all().await.unwrap();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    assert_eq!(client.readiness().await.unwrap(), ReadinessResponse { ready: true, reason: None });
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_worker_adapterd_is_ready_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), true).await;
    assert!(server.state.worker.is_none());
    let readiness = ApiClient::new(&server.url()).unwrap().readiness().await.unwrap();
    assert_eq!(readiness, ReadinessResponse { ready: true, reason: None });
    server.shutdown().await;
}
