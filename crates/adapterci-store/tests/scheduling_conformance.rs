//! `SeaStore` passes the scheduling conformance suite (debounce, supersede, limits, leases, retries, delivery
//! dedupe) on SQLite files, SQLite in memory and a real PostgreSQL started by the testkit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::scheduling_conformance::{Scheduling, cases, run_scheduling_conformance};
use adapterci_testkit::servers::postgres_or_skip;

async fn conforms(url: impl Fn(usize) -> String) {
    let next = AtomicUsize::new(0);
    run_scheduling_conformance(|| {
        let url = url(next.fetch_add(1, Ordering::SeqCst));
        async move {
            let store =
                Arc::new(SeaStore::connect(&url).await.unwrap_or_else(|err| panic!("connecting to {url}: {err}")));
            Scheduling { runs: store.clone(), scheduler: store.clone(), deliveries: store }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_scheduler_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conforms(|n| format!("sqlite://{}/meta-{n}.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_memory_scheduler_conforms() {
    conforms(|_| "sqlite::memory:".to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_scheduler_conforms() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = Arc::new(tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().unwrap());
    let mut urls = Vec::new();
    for _ in cases() {
        let server = server.clone();
        urls.push(tokio::task::spawn_blocking(move || server.create_database()).await.unwrap().unwrap());
    }
    conforms(|n| urls[n].clone()).await;
}
