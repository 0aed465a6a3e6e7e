//! What is particular to the database store: connecting, migrations, WAL on SQLite files, several stores on one
//! file, and data in the database that this code cannot read.

use adapterci_core::ports::{AdapterIndex, PipelineStore, RunStore, StoreError, WatchStore};
use adapterci_core::run::{NewRun, RunState, Trigger};
use adapterci_core::{AdapterName, Digest, PipelineName};
use adapterci_store::SeaStore;

fn sqlite_url(dir: &tempfile::TempDir, file: &str) -> String {
    format!("sqlite://{}/{file}?mode=rwc", dir.path().display())
}

fn new_run(pipeline: &str) -> NewRun {
    NewRun {
        pipeline: PipelineName::new(pipeline).expect("a valid pipeline name"),
        pipeline_revision: 1,
        trigger: Trigger::Manual,
        dataset_digest: None,
    }
}

#[tokio::test]
async fn connecting_applies_every_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir, "meta.db");
    let bare = SeaStore::connect_without_migrating(&url).await.unwrap();
    let status = bare.migration_status().await.unwrap();
    assert!(!status.is_empty() && status.iter().all(|m| !m.applied), "{status:?}");

    let store = SeaStore::connect(&url).await.unwrap();
    let status = store.migration_status().await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    assert!(status.windows(2).all(|pair| pair[0].name < pair[1].name), "oldest first: {status:?}");
    assert_eq!(store.migrate().await.unwrap(), Vec::<String>::new(), "nothing left to apply");

    // Data survives reopening the file.
    store.upsert_pipeline(&PipelineName::new("demo").unwrap(), "a").await.unwrap();
    drop(store);
    let reopened = SeaStore::connect(&url).await.unwrap();
    assert_eq!(reopened.list_pipelines().await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_files_use_write_ahead_logging() {
    let dir = tempfile::tempdir().unwrap();
    let store = SeaStore::connect(&sqlite_url(&dir, "meta.db")).await.unwrap();
    store.upsert_pipeline(&PipelineName::new("demo").unwrap(), "a").await.unwrap();
    assert!(dir.path().join("meta.db-wal").exists(), "expected a WAL file next to the database");
}

async fn check_unsupported(url: &str, expect: &str) {
    let err = SeaStore::connect(url).await.expect_err("connecting must fail");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{url}: {err:?}");
    assert!(message.contains(expect), "{url}: {message}");
    assert!(!message.contains("hunter2"), "{url}: the password leaked: {message}");
}

#[tokio::test]
async fn unsupported_or_unreachable_databases_are_clear_errors() {
    check_unsupported("mysql://root:hunter2@db/meta", "unsupported database url \"mysql://root:***@db/meta\"").await;
    check_unsupported("meta.db", "expected sqlite://").await;
    check_unsupported("sqlite:///nonexistent-dir/for/sure/meta.db", "connecting to sqlite:///nonexistent-dir").await;
}

/// Two stores on one file stand for two processes (`adapterd` and `adapterctl`) sharing the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_allocate_versions_without_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir, "shared.db");
    let stores = [SeaStore::connect(&url).await.unwrap(), SeaStore::connect(&url).await.unwrap()];
    let mut tasks = Vec::new();
    for index in 0..16 {
        let store = stores[index % 2].clone();
        tasks.push(tokio::spawn(async move {
            let version = adapterci_core::ports::NewAdapterVersion {
                name: AdapterName::new("shared").unwrap(),
                manifest_digest: Digest::of(format!("manifest-{index}").as_bytes()),
                base_model_digest: Digest::of(b"base"),
                run_id: None,
            };
            store.record_version(version).await.unwrap().version
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>());
}

/// Plants `sql` in a fresh store and checks that `read` fails with a backend error containing `expect`.
async fn check_bad_data<T: std::fmt::Debug>(
    setup: &[&str],
    read: impl AsyncFnOnce(&SeaStore) -> Result<T, StoreError>,
    expect: &str,
) {
    let store = SeaStore::connect("sqlite::memory:").await.expect("an in-memory store");
    for sql in setup {
        store.execute_unprepared(sql).await.expect("planting a row");
    }
    match read(&store).await {
        Err(StoreError::Backend(message)) => assert!(message.contains(expect), "{message}\nexpected: {expect}"),
        other => panic!("expected a backend error containing {expect:?}, got {other:?}"),
    }
}

const T: &str = "'2026-01-01 00:00:00+00:00'";

fn run_row(id: &str, state: &str, dataset_digest: &str, trigger: &str) -> String {
    format!(
        "INSERT INTO runs (id, pipeline, pipeline_revision, state, trigger_json, dataset_digest, created_at, \
         updated_at) VALUES ('{id}', 'demo', 1, '{state}', '{trigger}', {dataset_digest}, {T}, {T})"
    )
}

#[tokio::test]
async fn unreadable_rows_are_backend_errors_naming_table_row_and_column() {
    let manual = r#"{"kind":"manual"}"#;
    let unknown_state = run_row("r1", "exploded", "NULL", manual);
    check_bad_data(&[&unknown_state], async |s| s.get_run("r1").await, "table runs, row r1, column state").await;
    check_bad_data(&[&unknown_state], async |s| s.list_runs(None, 10).await, "unknown run state \"exploded\"").await;
    check_bad_data(&[&unknown_state], async |s| s.update_run("r1", Default::default()).await, "column state").await;

    let bad_digest = run_row("r2", "queued", "'sha256:nothex'", manual);
    check_bad_data(&[&bad_digest], async |s| s.get_run("r2").await, "row r2, column dataset_digest").await;
    check_bad_data(&[&bad_digest], async |s| s.claim_next_run().await, "row r2, column dataset_digest").await;

    let bad_trigger = run_row("r3", "queued", "NULL", r#"{"kind":"telepathy"}"#);
    check_bad_data(&[&bad_trigger], async |s| s.get_run("r3").await, "row r3, column trigger_json: invalid JSON").await;

    let half_published = format!(
        "{}; UPDATE runs SET published_adapter = 'demo' WHERE id = 'r4'",
        run_row("r4", "succeeded", "NULL", manual)
    );
    check_bad_data(&[&half_published], async |s| s.get_run("r4").await, "all set or all null").await;

    let pipeline = format!(
        "INSERT INTO pipelines (name, revision, spec_yaml, spec_digest, created_at, updated_at) \
         VALUES ('demo', -2, 'a', '{}', {T}, {T})",
        Digest::of(b"a")
    );
    let demo = PipelineName::new("demo").unwrap();
    check_bad_data(
        &[&pipeline],
        async |s| s.list_pipelines().await,
        "table pipelines, row demo, column revision: negative number -2",
    )
    .await;
    check_bad_data(&[&pipeline], async |s| s.upsert_pipeline(&demo, "b").await, "column revision").await;

    let watch = format!(
        "INSERT INTO watches (pipeline, location, etag, digest, seen_at) VALUES ('demo', 'd/x', NULL, 'md5:00', {T})"
    );
    check_bad_data(
        &[&watch],
        async |s| s.get_watch(&demo, "d/x").await,
        "table watches, row (demo, d/x), column digest",
    )
    .await;

    let version = format!(
        "INSERT INTO adapter_versions (name, version, manifest_digest, base_model_digest, run_id, created_at) \
         VALUES ('Bad Name', 1, '{}', '{}', NULL, {T})",
        Digest::of(b"m"),
        Digest::of(b"b")
    );
    check_bad_data(
        &[&version],
        async |s| s.list_adapter_names().await,
        "table adapter_versions, row Bad Name, column name",
    )
    .await;
}

#[tokio::test]
async fn the_state_column_keeps_the_names_of_the_state_machine() {
    let store = SeaStore::connect("sqlite::memory:").await.unwrap();
    let run = store.create_run(new_run("demo")).await.unwrap();
    store
        .update_run(&run.id, adapterci_core::run::RunPatch { state: Some(RunState::Cancelled), ..Default::default() })
        .await
        .unwrap();
    // Other tools (dashboards, SQL) read these strings: they are part of the schema.
    let changed = store
        .execute_unprepared(&format!("UPDATE runs SET stage = NULL WHERE id = '{}' AND state = 'cancelled'", run.id))
        .await
        .unwrap();
    assert_eq!(changed, 1);
}
