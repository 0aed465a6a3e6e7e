//! `SeaStore` passes the metadata store conformance suite on SQLite (files and memory) and on PostgreSQL.

use std::sync::atomic::{AtomicUsize, Ordering};

use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::store_conformance::run_conformance;

/// Set to 1 where PostgreSQL must be tested (CI); elsewhere its absence skips that test with a notice.
const REQUIRE_POSTGRES_ENV: &str = "ADAPTERCI_REQUIRE_POSTGRES";

/// Runs the suite against fresh stores opened from the URLs that `url` gives.
async fn conforms(url: impl Fn(usize) -> String) {
    let next = AtomicUsize::new(0);
    run_conformance(|| {
        let url = url(next.fetch_add(1, Ordering::SeqCst));
        async move { SeaStore::connect(&url).await.unwrap_or_else(|err| panic!("connecting to {url}: {err}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conforms(|n| format!("sqlite://{}/meta-{n}.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_memory_store_conforms() {
    conforms(|_| "sqlite::memory:".to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    if !PostgresServer::available() {
        assert!(
            std::env::var(REQUIRE_POSTGRES_ENV).is_err(),
            "{REQUIRE_POSTGRES_ENV} is set but PostgreSQL is not installed in {}",
            PostgresServer::bin_dir().display()
        );
        eprintln!("skipped: PostgreSQL is not installed in {}", PostgresServer::bin_dir().display());
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().unwrap();
    let server = std::sync::Arc::new(server);
    let mut urls = Vec::new();
    for _ in adapterci_testkit::store_conformance::cases::<SeaStore>() {
        let server = server.clone();
        urls.push(tokio::task::spawn_blocking(move || server.create_database()).await.unwrap().unwrap());
    }
    conforms(|n| urls[n].clone()).await;
}
