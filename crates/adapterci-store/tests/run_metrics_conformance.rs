//! `SeaStore` passes the run metrics conformance suite on a SQLite file and a real PostgreSQL started by the
//! testkit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::run_metrics_conformance::run_metrics_conformance;

/// Set to 1 where PostgreSQL must be tested (CI); elsewhere its absence skips that test with a notice.
const REQUIRE_POSTGRES_ENV: &str = "ADAPTERCI_REQUIRE_POSTGRES";

#[tokio::test]
async fn sqlite_run_metrics_conform() {
    let dir = tempfile::tempdir().unwrap();
    let store = SeaStore::connect(&format!("sqlite://{}/meta.db?mode=rwc", dir.path().display())).await.unwrap();
    run_metrics_conformance(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_run_metrics_conform() {
    if !PostgresServer::available() {
        assert!(
            std::env::var(REQUIRE_POSTGRES_ENV).is_err(),
            "{REQUIRE_POSTGRES_ENV} is set but PostgreSQL is not installed"
        );
        eprintln!("skipped: PostgreSQL is not installed in {}", PostgresServer::bin_dir().display());
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().unwrap();
    let url = server.create_database().unwrap();
    let store = SeaStore::connect(&url).await.unwrap();
    run_metrics_conformance(&store).await;
}
