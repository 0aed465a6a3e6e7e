//! `SeaStore` passes the run metrics conformance suite on a SQLite file and a real PostgreSQL started by the
//! testkit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::run_metrics_conformance::run_metrics_conformance;
use adapterci_testkit::servers::postgres_or_skip;

#[tokio::test]
async fn sqlite_run_metrics_conform() {
    let dir = tempfile::tempdir().unwrap();
    let store = SeaStore::connect(&format!("sqlite://{}/meta.db?mode=rwc", dir.path().display())).await.unwrap();
    run_metrics_conformance(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_run_metrics_conform() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().unwrap();
    let url = server.create_database().unwrap();
    let store = SeaStore::connect(&url).await.unwrap();
    run_metrics_conformance(&store).await;
}
