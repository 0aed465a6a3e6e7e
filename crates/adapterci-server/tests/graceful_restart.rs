//! adapterd stopped gracefully (SIGTERM) in the middle of a run's training, twice, then started again on the same
//! data directory: each stop hands the run back to the queue (queued, its attempt not counted, a note saying so,
//! its trainer child gone) and exits with status 0; the next adapterd claims the run at once, and the last one
//! completes it with one published version and one counted attempt. The lease is 600 s, so lease expiry cannot
//! explain the takeovers: the run completes before the first adapterd's recorded lease would have expired.
//! Real processes, SQLite, local files, libtorch training of a tiny model and HTTP; the crash path (SIGKILL,
//! lease expiry) is tests/crash_restart.rs.
//!
//! Waiting on another process cannot be made deterministic: the test polls adapterd's API and its SQLite database
//! with a deadline, and asserts only on states, never on how long they took.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use adapterci_api::{ApiClient, ApplyPipelineRequest, RunReport, RunState};
use adapterci_core::ports::RunStore;
use adapterci_core::scheduling::{RunSchedule, RunScheduler};
use adapterci_store::SeaStore;
use adapterci_testkit::eventually::eventually;

#[path = "support/processes.rs"]
mod processes;
use processes::{KillOnDrop, ended, free_port};

const PIPELINE: &str = r#"version: v1
name: graceful
base:
  model: tiny
dataset:
  location: datasets/graceful/train.jsonl
triggers:
  - kind: manual
training:
  lora:
    rank: 4
    alpha: 8
  steps: 4000
  batch_size: 4
  learning_rate: 0.01
  max_seq_len: 64
  seed: 3
  eval_fraction: 0.2
  max_eval_examples: 2
  max_new_tokens: 4
eval:
  gates:
    - metric: eval_loss
      max: 100
publish:
  adapter: graceful
"#;

/// The lease each adapterd takes on a run: far longer than the test, so only a hand-back lets the next adapterd
/// claim the run while the test runs.
const LEASE_SECS: u64 = 600;

/// The note `Controller::stop_and_hand_back` leaves on a handed-back run (its start: the wording may grow).
const HANDED_BACK_NOTE: &str = "adapterd stopped before the run finished: handed back to the queue, not counted";

/// A started adapterd, killed when dropped unless it was stopped (a failing test leaves no process behind).
struct Adapterd {
    child: KillOnDrop,
    client: ApiClient,
}

impl Adapterd {
    async fn start(dir: &Path, model: &Path) -> Adapterd {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_adapterd"))
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--model=tiny={}", model.display()))
            .args(["--no-worker", "--tick-ms=200", "--threads=1"])
            .arg(format!("--lease-secs={LEASE_SECS}"))
            .env_remove("ADAPTERCI_DATABASE_URL")
            .env_remove("ADAPTERCI_REGISTRY_URL")
            .env_remove("ADAPTERCI_DATASETS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("adapterd starts");
        let client = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let adapterd = Adapterd { child: KillOnDrop(child), client };
        eventually("adapterd to answer", || async { adapterd.client.health().await.ok() }).await;
        adapterd
    }

    /// Sends SIGTERM (a graceful stop: an upgrade, a drain) and waits for the process to exit.
    async fn terminate(mut self) -> ExitStatus {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), rustix::process::Signal::TERM)
            .expect("SIGTERM is sent to adapterd");
        let child = &mut self.child;
        eventually("adapterd to exit after SIGTERM", || {
            let status = child.try_wait().expect("adapterd's status can be read");
            async move { status }
        })
        .await
    }
}

/// adapterd's SQLite database, read beside it.
async fn open_store(dir: &Path) -> SeaStore {
    let url = format!("sqlite://{}?mode=rw", dir.join("data/adapterci.db").display());
    SeaStore::connect_without_migrating(&url).await.unwrap()
}

/// Waits until execution number `execution` of `run` is training: its trainer child started (the log names one
/// trainer per execution) and still alive, the run running under a lease with progress reported by this execution
/// (a report still showing `stale_step`, the last progress of the execution before, may not be this one's yet).
/// Returns the run's scheduling facts then. A run that ends first fails the test: it must be caught mid-training.
async fn wait_for_training(
    client: &ApiClient,
    store: &SeaStore,
    dir: &Path,
    run: &str,
    execution: usize,
    stale_step: Option<u64>,
) -> RunSchedule {
    eventually("the run to be training", || async {
        let info = client.get_run(run).await.ok()?;
        assert!(!info.state.is_terminal(), "the run ended before adapterd was stopped: {info:#?}");
        let trainers = trainers(dir, run);
        if trainers.len() != execution || ended(*trainers.last()?) {
            return None;
        }
        let progress = info.typed_report().ok().flatten()?.progress?;
        if info.state != RunState::Running || Some(progress.step) == stale_step {
            return None;
        }
        let schedule = store.run_schedule(run).await.ok()??;
        schedule.lease_holder.is_some().then_some(schedule)
    })
    .await
}

/// The pids of the trainer children that the executions of `run` started, in order (from its log, which each
/// execution appends to; none before the log exists).
fn trainers(dir: &Path, run: &str) -> Vec<u32> {
    let log = std::fs::read_to_string(log_path(dir, run)).unwrap_or_default();
    log.lines()
        .filter_map(|line| line.strip_prefix("trainer pid "))
        .map(|pid| pid.trim().parse().expect("a trainer pid in the run's log"))
        .collect()
}

fn log_path(dir: &Path, run: &str) -> PathBuf {
    dir.join("data/logs").join(format!("{run}.log"))
}

/// Stops `adapterd` with SIGTERM while it trains `run` and checks the hand-back: exit status 0, the trainer child
/// gone, the run queued with its attempt not counted (as many as before `held`'s claim), due at once, no lease,
/// the note. Returns the step of the last progress the stopped execution stored.
async fn stop_mid_training(adapterd: Adapterd, dir: &Path, run: &str, held: &RunSchedule) -> u64 {
    let trainer = *trainers(dir, run).last().unwrap();
    let status = adapterd.terminate().await;
    assert!(status.success(), "a graceful stop exits with status 0: {status:?}");
    // the stopped execution's trainer child does not train on
    eventually("the trainer of the stopped execution to exit", || async { ended(trainer).then_some(()) }).await;

    let store = open_store(dir).await;
    let schedule = store.run_schedule(run).await.unwrap().unwrap();
    assert_eq!(schedule.attempts, held.attempts - 1, "the stopped execution is not counted: {schedule:#?}");
    assert_eq!(schedule.lease_holder, None, "the lease is given up: {schedule:#?}");
    assert_eq!(schedule.lease_expires_at, None, "{schedule:#?}");
    let lease_until = held.lease_expires_at.unwrap();
    assert!(schedule.not_before < lease_until, "due at once, not when the lease would expire: {schedule:#?}");
    let stored = RunStore::get_run(&store, run).await.unwrap().unwrap();
    assert_eq!(stored.state, adapterci_core::run::RunState::Queued, "{stored:#?}");
    assert!(
        stored.error.as_deref().is_some_and(|note| note.starts_with(HANDED_BACK_NOTE)),
        "the run says why it is queued again: {stored:#?}"
    );
    let report: RunReport = serde_json::from_value(stored.report.clone().unwrap()).unwrap();
    report.progress.unwrap().step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_training_hands_the_run_back_and_the_next_adapterd_completes_it_without_counting_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 5).unwrap();

    let first = Adapterd::start(dir.path(), &model).await;
    first.client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: PIPELINE.to_string() }).await.unwrap();
    let dataset: String =
        (0..40).map(|i| format!("{{\"prompt\": \"question {i}\", \"completion\": \"yes\"}}\n")).collect();
    first.client.push_dataset("datasets/graceful/train.jsonl", dataset.into_bytes()).await.unwrap();
    let run = first.client.trigger_pipeline("graceful").await.unwrap().id;
    let store = open_store(dir.path()).await;

    // First stop: the first adapterd holds the run's first attempt under a 600 s lease.
    let held_by_first = wait_for_training(&first.client, &store, dir.path(), &run, 1, None).await;
    assert_eq!(held_by_first.attempts, 1, "{held_by_first:#?}");
    let first_lease_until = held_by_first.lease_expires_at.unwrap();
    let stale_step = stop_mid_training(first, dir.path(), &run, &held_by_first).await;

    // Second stop: the next adapterd claims it at once (the first lease is far from expiring) as the same
    // attempt, under its own lease.
    let second = Adapterd::start(dir.path(), &model).await;
    let held_by_second = wait_for_training(&second.client, &store, dir.path(), &run, 2, Some(stale_step)).await;
    assert_eq!(held_by_second.attempts, 1, "the hand-back did not use up an attempt: {held_by_second:#?}");
    assert_ne!(held_by_second.lease_holder, held_by_first.lease_holder, "{held_by_second:#?}");
    stop_mid_training(second, dir.path(), &run, &held_by_second).await;

    // A third adapterd completes it, training again from the start in a third trainer.
    let third = Adapterd::start(dir.path(), &model).await;
    let finished = eventually("the run to finish after the restarts", || async {
        third.client.get_run(&run).await.ok().filter(|info| info.state.is_terminal())
    })
    .await;
    assert_eq!(finished.state, RunState::Succeeded, "{finished:#?}");
    assert_eq!(trainers(dir.path(), &run).len(), 3, "one trainer per execution");
    assert_eq!(finished.error, None, "the note went with the claim: {finished:#?}");
    assert_eq!(finished.published.as_ref().map(|published| published.version), Some(1), "{finished:#?}");
    let versions: Vec<u64> =
        third.client.list_adapter_versions("graceful").await.unwrap().iter().map(|version| version.version).collect();
    assert_eq!(versions, vec![1], "exactly one version published for the run");
    let status = third.terminate().await;
    assert!(status.success(), "{status:?}");

    let schedule = store.run_schedule(&run).await.unwrap().unwrap();
    assert_eq!(schedule.attempts, 1, "two graceful stops counted no attempt: {schedule:#?}");
    // Taken over by hand-back, not by lease expiry: the run ended while the first adapterd's lease, as it was
    // recorded when that adapterd was stopped, had not expired.
    assert!(
        finished.updated_at < first_lease_until,
        "the run completed at {} while the first lease ran until {first_lease_until}",
        finished.updated_at
    );
    // every execution's trainer ran as a child process and the last one exited normally
    let log = std::fs::read_to_string(log_path(dir.path(), &run)).unwrap();
    assert!(log.contains("trainer process exited with status 0"), "{log}");
}
