//! Load benchmark of the controller loop: N pipelines (default 1,000) watched every 10 s, on the embedded
//! defaults (SQLite file, datasets on the local file system), in steady state (every dataset already seen, so
//! each poll is a stat and an ETag comparison). Prints the controller's CPU time as a percentage of one core
//! and its memory (RSS now and peak), read from /proc/self.
//!
//! Run: `cargo run --release -p adapterci-controller --example watch_load -- [pipelines] [seconds]`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap is a failed run

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapterci_controller::{Controller, ControllerConfig, Ports, ResolvedBase, StaticBaseModels};
use adapterci_core::ports::{DatasetSource, SystemClock, WatchState, WatchStore};
use adapterci_core::{Digest, PipelineName};
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_store::SeaStore;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use bytes::Bytes;

/// CPU seconds (user + system) this process used, from /proc/self/stat (clock ticks of 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime), counted from the state field (3).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// (VmRSS, VmHWM) in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let read = |key: &str| {
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (read("VmRSS:"), read("VmHWM:"))
}

fn pipeline_yaml(n: usize) -> String {
    format!(
        "version: v1\nname: load-{n:04}\nbase:\n  model: tiny\ndataset:\n  location: datasets/load-{n:04}/train.jsonl\n\
         triggers:\n  - kind: dataset_watch\n    interval: 10s\npublish:\n  adapter: load-{n:04}\n"
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pipelines: usize = args.next().map_or(1000, |value| value.parse().expect("pipelines: a number"));
    let seconds: u64 = args.next().map_or(60, |value| value.parse().expect("seconds: a number"));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SeaStore::connect(&format!("sqlite://{}/meta.db?mode=rwc", dir.path().display())).await.expect("sqlite"),
    );
    let datasets_dir = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets_dir).unwrap();
    let datasets =
        Arc::new(ObjectStoreDatasetSource::new(open_object_store(&datasets_dir.display().to_string()).unwrap()));
    let registry_dir = dir.path().join("registry");
    std::fs::create_dir_all(&registry_dir).unwrap();
    let registry = Arc::new(ObjectStoreRegistry::new(
        open_object_store(&registry_dir.display().to_string()).unwrap(),
        store.clone(),
    ));
    let base = ResolvedBase {
        name: "tiny".into(),
        path: PathBuf::from("tiny.gguf"),
        digest: Digest::of(b"tiny"),
        recovery_adapter: None,
    };
    let ports = Ports {
        store: store.clone(),
        registry,
        datasets: datasets.clone(),
        executor: ScriptedExecutor::new(),
        base_models: Arc::new(StaticBaseModels::new([base])),
        clock: Arc::new(SystemClock),
        scheduler: store.clone(),
        deliveries: store.clone(),
    };
    let controller = Arc::new(Controller::new(ports, ControllerConfig::default()));

    // Steady state: every pipeline applied, its dataset present and already seen by the watch.
    for n in 0..pipelines {
        controller.apply(&pipeline_yaml(n), None).await.unwrap();
        let location = format!("datasets/load-{n:04}/train.jsonl");
        let content = format!("good {n}\n");
        datasets.write(&location, Bytes::from(content.clone())).await.unwrap();
        let stat = datasets.stat(&location).await.unwrap().expect("just written");
        let state = WatchState { etag: stat.etag, digest: Digest::of(content.as_bytes()), seen_at: chrono::Utc::now() };
        store.put_watch(&PipelineName::new(format!("load-{n:04}")).unwrap(), &location, &state).await.unwrap();
    }

    let (shutdown, receiver) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(controller.clone().run_until(receiver));
    // One full interval first, so every watch has been polled once (a restart polls all at once).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu, wall) = (cpu_seconds() - cpu_start, wall_start.elapsed().as_secs_f64());
    let (rss, peak) = memory_mib();
    shutdown.send(true).unwrap();
    loop_task.await.unwrap();
    let runs = adapterci_core::ports::RunStore::list_runs(&*store, None, 10).await.unwrap().len();

    println!(
        "controller watch load: {pipelines} pipelines, dataset_watch every 10s, tick 1s, SQLite file + local files"
    );
    println!(
        "machine: {} cores; measured over {wall:.1}s of steady state",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("cpu: {cpu:.2}s = {:.2}% of one core", cpu / wall * 100.0);
    println!("memory: rss {rss:.1} MiB, peak {peak:.1} MiB");
    println!("runs queued (expected 0: nothing changed): {runs}");
}
