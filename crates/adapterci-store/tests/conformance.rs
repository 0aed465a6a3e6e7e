//! `SeaStore` passes the metadata store conformance suite on SQLite (files and memory) and on PostgreSQL, and
//! migrates safely when several replicas start at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::servers::postgres_or_skip;
use adapterci_testkit::store_conformance::{cases, run_conformance};

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

/// A fresh PostgreSQL server, or `None` (with a notice) where PostgreSQL is not installed and not required.
async fn postgres_server() -> Option<Arc<PostgresServer>> {
    if !postgres_or_skip(module_path!()) {
        return None;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.expect("starting PostgreSQL");
    Some(Arc::new(server.unwrap_or_else(|err| panic!("starting PostgreSQL: {err}"))))
}

async fn create_database(server: &Arc<PostgresServer>) -> String {
    let server = server.clone();
    let url = tokio::task::spawn_blocking(move || server.create_database()).await.expect("createdb");
    url.unwrap_or_else(|err| panic!("creating a database: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    let Some(server) = postgres_server().await else {
        return;
    };
    let mut urls = Vec::new();
    for _ in cases::<SeaStore>() {
        urls.push(create_database(&server).await);
    }
    conforms(|n| urls[n].clone()).await;
}

/// Replicas of `adapterd` start together: each migrates, and each migration is applied exactly once.
async fn check_concurrent_migrations_apply_once(url: &str) {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let store = SeaStore::connect_without_migrating(&url).await.expect("connect");
                store.migrate().await.expect("migrate").len()
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.expect("a migrating task panicked");
    }
    let status = SeaStore::connect(url).await.expect("connect").migration_status().await.expect("status");
    assert_eq!(applied, status.len(), "each migration must be applied once, not per replica");
    assert!(status.iter().all(|migration| migration.applied));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check_concurrent_migrations_apply_once(&format!("sqlite://{}/meta.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once_on_postgres() {
    let Some(server) = postgres_server().await else {
        return;
    };
    check_concurrent_migrations_apply_once(&create_database(&server).await).await;
}
