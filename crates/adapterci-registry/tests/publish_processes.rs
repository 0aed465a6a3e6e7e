//! Publishing from many threads and many processes at once, and publishes killed with `kill -9` at each step,
//! on SQLite + local files (the embedded default). The child processes are this test binary run again with
//! [`CHILD_ENV`] set: it then runs only [`zz_child_process_entry_point`], which publishes as it is told. A
//! publish and promote is killed at every step, including inside the version's and the channel pointer's
//! database transactions (the store's failpoints), on SQLite + files and on PostgreSQL + SeaweedFS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use adapterci_core::Digest;
use adapterci_core::channels::{ChannelName, ChannelStore, PromoteRequest};
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::ports::AdapterRegistry;
use adapterci_registry::failpoint::{ENV_REGISTRY_FAILPOINT, STEPS, reached_line};
use adapterci_registry::object_store::{ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, open_object_store_with_env};
use adapterci_store::SeaStore;
use adapterci_store::failpoint::{ENV_STORE_FAILPOINT, STEPS as STORE_STEPS};
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::registry_conformance::{adapter_name, publish_request};
use adapterci_testkit::seaweedfs::{BUCKET, SeaweedServer};
use adapterci_testkit::servers::{postgres_or_skip, seaweedfs_or_skip};

/// Set in a child process: what it should do (`publish` or `publish-and-promote`).
const CHILD_ENV: &str = "ADAPTERCI_TEST_PUBLISH_CHILD";
const CHILD_DATABASE_ENV: &str = "ADAPTERCI_TEST_PUBLISH_DATABASE";
const CHILD_STORE_ENV: &str = "ADAPTERCI_TEST_PUBLISH_STORE";
const CHILD_SEED_ENV: &str = "ADAPTERCI_TEST_PUBLISH_SEED";
const CHILD_TEST: &str = "zz_child_process_entry_point";
const ADAPTER: &str = "raced";
const PUBLISHERS: u8 = 16;

fn weights(seed: u8) -> Vec<u8> {
    vec![seed; 4096 + usize::from(seed)]
}

/// S3 settings for the stores opened in this process (a child process gets them in its environment).
type Env = Arc<Vec<(&'static str, String)>>;

async fn open_with(database: &str, store: &str, env: &Env) -> (Arc<SeaStore>, ObjectStoreRegistry) {
    let index = Arc::new(SeaStore::connect(database).await.expect("connect to the database"));
    let lookup = |key: &str| {
        env.iter().find(|(name, _)| *name == key).map(|(_, value)| value.clone()).or_else(|| std::env::var(key).ok())
    };
    let objects = open_object_store_with_env(store, &lookup).expect("open the store");
    let registry = ObjectStoreRegistry::new(objects, index.clone());
    (index, registry)
}

/// Publishes the weights of `seed` (and promotes the new version to `stable`); returns the version.
async fn publish_one(database: &str, store: &str, env: &Env, seed: u8, promote: bool) -> u64 {
    let (index, registry) = open_with(database, store, env).await;
    let record = registry.publish(publish_request(ADAPTER, &weights(seed))).await.expect("publish");
    if promote {
        let request = PromoteRequest {
            adapter: adapter_name(ADAPTER),
            channel: ChannelName::new("stable").unwrap(),
            version: record.version,
            allow_base_change: false,
        };
        index.promote(request).await.expect("promote");
    }
    record.version
}

/// Not a test: the body of a child process (it returns at once unless [`CHILD_ENV`] is set).
#[test]
fn zz_child_process_entry_point() {
    let Ok(action) = std::env::var(CHILD_ENV) else { return };
    let database = std::env::var(CHILD_DATABASE_ENV).unwrap();
    let store = std::env::var(CHILD_STORE_ENV).unwrap();
    let seed: u8 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let version =
        runtime.block_on(publish_one(&database, &store, &Env::default(), seed, action == "publish-and-promote"));
    println!("published seed {seed} as version {version}");
}

fn child(database: &str, store: &str, seed: u8, action: &str, failpoint: Option<&str>) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, action)
        .env(CHILD_DATABASE_ENV, database)
        .env(CHILD_STORE_ENV, store)
        .env(CHILD_SEED_ENV, seed.to_string())
        .env_remove(ENV_REGISTRY_FAILPOINT)
        .env_remove(ENV_STORE_FAILPOINT)
        .stdout(Stdio::piped());
    if let Some(step) = failpoint {
        let variable = if STORE_STEPS.contains(&step) { ENV_STORE_FAILPOINT } else { ENV_REGISTRY_FAILPOINT };
        command.env(variable, step);
    }
    command
}

fn sqlite_and_files(dir: &tempfile::TempDir) -> (String, String) {
    (format!("sqlite://{}/meta.db?mode=rwc", dir.path().display()), dir.path().join("blobs").display().to_string())
}

/// Versions 1..=16 without gaps, each holding the weights its publisher sent, every blob readable, and the
/// `stable` channel's history one unbroken chain ending where the pointer is.
async fn check_consistent(database: &str, store: &str, env: &Env, published: &[(u8, u64)]) {
    let (index, registry) = open_with(database, store, env).await;
    let name = adapter_name(ADAPTER);
    let versions: Vec<u64> = registry.list_versions(&name).await.unwrap().iter().map(|r| r.version).collect();
    assert_eq!(versions, (1..=u64::from(PUBLISHERS)).collect::<Vec<_>>(), "unique versions without gaps");
    let mut reported: Vec<u64> = published.iter().map(|(_, version)| *version).collect();
    reported.sort_unstable();
    assert_eq!(reported, versions, "each publisher got its own version");
    for (seed, version) in published {
        let resolved = registry.get(&name, *version).await.unwrap().expect("the manifest is there");
        let file = resolved.manifest.file(ADAPTER_WEIGHTS_FILE).unwrap();
        assert_eq!(file.digest, Digest::of(&weights(*seed)), "v{version} holds seed {seed}'s weights");
        for file in &resolved.manifest.files {
            registry.fetch_blob(&file.digest).await.expect("every blob of every version is readable");
        }
    }
    let stable = ChannelName::new("stable").unwrap();
    let history = index.channel_history(&name, &stable).await.unwrap();
    assert_eq!(history.len(), usize::from(PUBLISHERS), "every promote is recorded once");
    for pair in history.windows(2) {
        assert_eq!(pair[1].from_version, Some(pair[0].to_version), "each promote starts where the last ended");
    }
    let pointer = index.get_channel(&name, &stable).await.unwrap().expect("the channel exists");
    assert_eq!(Some(pointer.version), history.last().map(|event| event.to_version));
    registry.get(&name, pointer.version).await.unwrap().expect("the channel points at a readable version");
}

/// 16 threads, each with its own runtime, database pool and store (as separate replicas would have), publish
/// one version each and promote it to `stable`.
async fn race_threads(database: &str, store: &str, env: &Env) {
    SeaStore::connect(database).await.unwrap();
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|seed| {
            let (database, store, env) = (database.to_string(), store.to_string(), env.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                (seed, runtime.block_on(publish_one(&database, &store, &env, seed, true)))
            })
        })
        .collect();
    let published: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    check_consistent(database, store, env, &published).await;
}

/// The same with 16 processes.
async fn race_processes(database: &str, store: &str, env: &Env) {
    SeaStore::connect(database).await.unwrap();
    let children: Vec<_> = (0..PUBLISHERS)
        .map(|seed| {
            let mut command = child(database, store, seed, "publish-and-promote", None);
            command.envs(env.iter().map(|(key, value)| (*key, value.as_str())));
            (seed, command.spawn().unwrap())
        })
        .collect();
    let mut published = Vec::new();
    for (seed, child) in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "publisher {seed} failed: {stdout}");
        let prefix = format!("published seed {seed} as version ");
        // libtest may print the test's name on the same line first.
        let version = stdout.lines().find_map(|line| line.split(&prefix).nth(1)).expect("the child reports");
        published.push((seed, version.trim().parse().unwrap()));
    }
    check_consistent(database, store, env, &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_threads_publish_and_promote_on_sqlite_and_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let (database, store) = sqlite_and_files(&dir);
    race_threads(&database, &store, &Env::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_processes_publish_and_promote_on_sqlite_and_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let (database, store) = sqlite_and_files(&dir);
    race_processes(&database, &store, &Env::default()).await;
}

/// A PostgreSQL database and a SeaweedFS bucket prefix (kept alive by the returned guards), or `None` with a
/// notice where either is not installed.
async fn postgres_and_seaweedfs(prefix: &str) -> Option<(String, String, Env, impl Sized)> {
    if !postgres_or_skip(module_path!()) || !seaweedfs_or_skip(module_path!()) {
        return None;
    }
    let postgres = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    let database = postgres.create_database().expect("createdb");
    let seaweed = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap().expect("start SeaweedFS");
    let env: Env = Arc::new(seaweed.env());
    let store = format!("s3://{BUCKET}/{prefix}");
    wait_for_bucket(&store, &env).await;
    Some((database, store, env, (postgres, seaweed)))
}

/// `weed mini` reports ready slightly before its bucket takes writes: wait for that, bounded.
async fn wait_for_bucket(store: &str, env: &Env) {
    let lookup = |key: &str| env.iter().find(|(name, _)| *name == key).map(|(_, value)| value.clone());
    let objects = open_object_store_with_env(store, &lookup).unwrap();
    let mut last_error = String::new();
    for _ in 0..100 {
        match objects.put(&"probe".into(), PutPayload::from_static(b"ok")).await {
            Ok(_) => return,
            Err(err) => last_error = err.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the bucket never took a write: {last_error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_threads_and_sixteen_processes_publish_and_promote_on_postgres_and_seaweedfs() {
    let Some((database, store, env, _servers)) = postgres_and_seaweedfs("race-threads").await else { return };
    race_threads(&database, &store, &env).await;
    let Some((database, store, env, _servers)) = postgres_and_seaweedfs("race-processes").await else { return };
    race_processes(&database, &store, &env).await;
}

/// Every step a publish followed by a promote can be killed at: the registry's (blobs, manifest, index) and the
/// store's (inside the version's transaction, inside the channel pointer's transaction, after its commit).
fn crash_steps() -> impl Iterator<Item = &'static str> {
    STEPS.into_iter().chain(STORE_STEPS)
}

/// Runs a publish and promote in a child process until `step`, kills it with SIGKILL there, and returns once it
/// is dead.
fn publish_killed_at(database: &str, store: &str, env: &Env, step: &str) {
    let mut command = child(database, store, 1, "publish-and-promote", Some(step));
    command.envs(env.iter().map(|(key, value)| (*key, value.as_str())));
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let expected = reached_line(step);
    let reached = BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.ends_with(&expected));
    assert!(reached, "the child never reached {step}");
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, no rollback by the process itself
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed at {step}");
}

/// What a publish and promote killed at `step` must have left: the versions recorded and the `stable` channel.
fn expected_after_kill(step: &str) -> (&'static [u64], Option<u64>) {
    match step {
        "after-record" | "in-promote-transaction" => (&[1], None),
        "after-promote" => (&[1], Some(1)),
        _ => (&[], None),
    }
}

/// Kills a publish and promote at `step`, checks what it left, retries it twice and checks it completed once.
async fn kill_check_and_retry(database: &str, store: &str, env: &Env, step: &str) {
    publish_killed_at(database, store, env, step);

    let (index, registry) = open_with(database, store, env).await;
    let (name, stable) = (adapter_name(ADAPTER), ChannelName::new("stable").unwrap());
    let before: Vec<u64> = registry.list_versions(&name).await.unwrap().iter().map(|r| r.version).collect();
    let (expected_versions, expected_channel) = expected_after_kill(step);
    assert_eq!(before, expected_versions, "killed at {step}: a version is recorded only once complete");
    for version in &before {
        let resolved = registry.get(&name, *version).await.unwrap().expect("a recorded version is readable");
        for file in &resolved.manifest.files {
            registry.fetch_blob(&file.digest).await.expect("a recorded version has all its blobs");
        }
    }
    let channel = index.get_channel(&name, &stable).await.unwrap().map(|record| record.version);
    assert_eq!(channel, expected_channel, "killed at {step}: the pointer moved wholly or not at all");
    let history = index.channel_history(&name, &stable).await.unwrap();
    assert_eq!(history.len(), usize::from(channel.is_some()), "killed at {step}: an event exactly when it moved");

    // The retry (a new process, here the test itself) completes exactly once; a further retry changes nothing.
    for attempt in ["retry", "second retry"] {
        let version = publish_one(database, store, env, 1, true).await;
        assert_eq!(version, 1, "killed at {step}: the {attempt} is version 1");
        let versions = registry.list_versions(&name).await.unwrap();
        assert_eq!(versions.len(), 1, "killed at {step}: no duplicate version after the {attempt}");
        let history = index.channel_history(&name, &stable).await.unwrap();
        let moves: Vec<_> = history.iter().map(|event| (event.from_version, event.to_version)).collect();
        assert_eq!(moves, [(None, 1)], "killed at {step}: one promote after the {attempt}");
        assert_eq!(index.get_channel(&name, &stable).await.unwrap().map(|record| record.version), Some(1));
    }
    let resolved = registry.get(&name, 1).await.unwrap().unwrap();
    let weights_file = resolved.manifest.file(ADAPTER_WEIGHTS_FILE).unwrap();
    assert_eq!(registry.fetch_blob(&weights_file.digest).await.unwrap(), weights(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_and_promote_killed_at_any_step_on_sqlite_and_local_files_is_retried_exactly_once() {
    for step in crash_steps() {
        let dir = tempfile::tempdir().unwrap();
        let (database, store) = sqlite_and_files(&dir);
        SeaStore::connect(&database).await.unwrap();
        kill_check_and_retry(&database, &store, &Env::default(), step).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_and_promote_killed_at_any_step_on_postgres_and_seaweedfs_is_retried_exactly_once() {
    if !postgres_or_skip(module_path!()) || !seaweedfs_or_skip(module_path!()) {
        return;
    }
    let postgres = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    let seaweed = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap().expect("start SeaweedFS");
    let env: Env = Arc::new(seaweed.env());
    for step in crash_steps() {
        let database = postgres.create_database().expect("createdb");
        SeaStore::connect(&database).await.unwrap();
        let store = format!("s3://{BUCKET}/crash-{step}");
        wait_for_bucket(&store, &env).await;
        kill_check_and_retry(&database, &store, &env, step).await;
    }
}
