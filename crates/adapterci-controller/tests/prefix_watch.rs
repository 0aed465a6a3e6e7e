//! Dataset locations that are prefixes (`datasets/demo/`), watched on a local-directory object store: one new
//! object starts one run, a burst of 20 objects inside the debounce window starts one run that trains on all of
//! them joined in key order, and re-writing an object with the same bytes starts nothing. Paused tokio clock
//! (virtual time drives the controller's clock too): nothing waits for real time. The same burst on an S3 prefix
//! of a real SeaweedFS (skipped with a notice where it is not installed) runs on a manual clock instead, because
//! a paused tokio clock would jump over the HTTP client's timeouts while SeaweedFS answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapterci_controller::{Controller, ControllerConfig, Ports, ResolvedBase, SchedulingConfig, StaticBaseModels};
use adapterci_core::Digest;
use adapterci_core::ports::{Clock, DatasetSource, RunStore};
use adapterci_core::run::{RunState, Trigger};
use adapterci_registry::object_store::ObjectStore;
use adapterci_registry::{
    ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store, open_object_store_with_env,
};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::seaweedfs::{BUCKET, SeaweedServer};
use adapterci_testkit::servers::seaweedfs_or_skip;
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use adapterci_testkit::tokio_clock::TokioClock;
use bytes::Bytes;

const PIPELINE: &str = "version: v1
name: demo
base:
  model: tiny
dataset:
  location: datasets/demo/
triggers:
  - kind: dataset_watch
    interval: 1s
publish:
  adapter: demo-adapter
";

const DEBOUNCE: Duration = Duration::from_secs(30);

struct Harness {
    store: Arc<InMemoryMetadataStore>,
    datasets: Arc<ObjectStoreDatasetSource>,
    executor: Arc<ScriptedExecutor>,
    controller: Controller,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    // a local directory, as the embedded defaults use
    let datasets_dir = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets_dir).unwrap();
    let objects = open_object_store(&datasets_dir.display().to_string()).unwrap();
    harness_on(objects, Arc::new(TokioClock::new()), dir)
}

fn harness_on(objects: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>, dir: tempfile::TempDir) -> Harness {
    let store = Arc::new(InMemoryMetadataStore::new());
    let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
    let registry = Arc::new(ObjectStoreRegistry::new(open_object_store("memory://").unwrap(), store.clone()));
    let datasets = Arc::new(ObjectStoreDatasetSource::new(objects));
    let executor = Arc::new(ScriptedExecutor::default());
    let base = ResolvedBase {
        name: "tiny".into(),
        path: PathBuf::from("tiny.gguf"),
        digest: Digest::of(b"t"),
        recovery_adapter: None,
    };
    let ports = Ports {
        store: store.clone(),
        registry,
        datasets: datasets.clone(),
        executor: executor.clone(),
        base_models: Arc::new(StaticBaseModels::new([base])),
        clock,
        scheduler: scheduler.clone(),
        deliveries: scheduler,
    };
    let scheduling = SchedulingConfig { debounce: DEBOUNCE, ..SchedulingConfig::default() };
    let controller = Controller::new(ports, ControllerConfig { scheduling, ..ControllerConfig::default() });
    Harness { store, datasets, executor, controller, _dir: dir }
}

impl Harness {
    async fn put(&self, key: &str, content: &str) {
        self.datasets.write(key, Bytes::from(content.to_string())).await.unwrap();
    }

    async fn run_count(&self) -> usize {
        self.store.list_runs(None, 100).await.unwrap().len()
    }
}

#[tokio::test(start_paused = true)]
async fn one_object_under_a_watched_prefix_starts_one_run() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    assert!(h.controller.poll_watches().await.unwrap().is_empty(), "an empty prefix is not there yet");
    h.put("datasets/other/x.jsonl", "elsewhere\n").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.controller.poll_watches().await.unwrap().is_empty(), "objects outside the prefix are not watched");

    h.put("datasets/demo/part-1.jsonl", "good 1\n").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = h.controller.poll_watches().await.unwrap();
    assert_eq!(queued.len(), 1);
    assert!(matches!(&queued[0].trigger, Trigger::DatasetChanged { location, .. } if location == "datasets/demo/"));
    tokio::time::sleep(DEBOUNCE).await;
    let run = h.controller.run_next().await.unwrap().expect("due after the window");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    assert_eq!(h.executor.jobs()[0].dataset, b"good 1\n");

    // the same bytes written again, and later polls, start nothing
    h.put("datasets/demo/part-1.jsonl", "good 1\n").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(h.controller.poll_watches().await.unwrap().is_empty());
    }
    assert_eq!(h.run_count().await, 1);
}

#[tokio::test(start_paused = true)]
async fn twenty_objects_inside_the_debounce_window_start_one_run_on_all_of_them() {
    let h = harness();
    h.controller.apply(PIPELINE, None).await.unwrap();
    for upload in 0..20 {
        h.put(&format!("datasets/demo/part-{upload:02}.jsonl"), &format!("good {upload}\n")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.controller.poll_watches().await.unwrap().len(), 1, "upload {upload} is seen");
        assert!(h.controller.run_next().await.unwrap().is_none(), "nothing starts inside the window");
    }
    assert_eq!(h.run_count().await, 1, "one run for the whole burst");
    tokio::time::sleep(DEBOUNCE).await;
    let run = h.controller.run_next().await.unwrap().expect("due after the window");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let expected: String = (0..20).map(|upload| format!("good {upload}\n")).collect();
    assert_eq!(h.executor.jobs()[0].dataset, expected.as_bytes(), "every object, in key order");
    assert_eq!(run.dataset_digest, Some(Digest::of(expected.as_bytes())));
    assert!(h.controller.run_next().await.unwrap().is_none());
    assert_eq!(h.run_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_under_an_s3_prefix_starts_one_run_on_all_of_it() {
    if !seaweedfs_or_skip(module_path!()) {
        return;
    }
    let seaweed = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap().expect("start SeaweedFS");
    let env: std::collections::HashMap<&str, String> = seaweed.env().into_iter().collect();
    let objects = open_object_store_with_env(&format!("s3://{BUCKET}/watched"), &|key| env.get(key).cloned()).unwrap();
    let clock = Arc::new(ManualClock::new());
    let h = harness_on(objects, clock.clone(), tempfile::tempdir().unwrap());
    h.controller.apply(PIPELINE, None).await.unwrap();
    h.put("datasets/demox/not-ours.jsonl", "no\n").await;
    for upload in 0..20 {
        h.put(&format!("datasets/demo/part-{upload:02}.jsonl"), &format!("good {upload}\n")).await;
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(h.controller.poll_watches().await.unwrap().len(), 1, "upload {upload} is seen");
        assert!(h.controller.run_next().await.unwrap().is_none(), "nothing starts inside the window");
    }
    // an unchanged prefix: its ETags match, nothing is read or queued
    clock.advance(chrono::Duration::seconds(1));
    assert!(h.controller.poll_watches().await.unwrap().is_empty());
    assert_eq!(h.run_count().await, 1, "one run for the whole burst");
    clock.advance(chrono::Duration::from_std(DEBOUNCE).unwrap());
    let run = h.controller.run_next().await.unwrap().expect("due after the window");
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let expected: String = (0..20).map(|upload| format!("good {upload}\n")).collect();
    assert_eq!(h.executor.jobs()[0].dataset, expected.as_bytes(), "every object, in key order");
    assert_eq!(h.run_count().await, 1);
}
