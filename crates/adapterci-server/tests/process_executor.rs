//! The local process executor with real child processes: adapterd's own `train-job` mode trains the tiny model
//! and hands back the adapter with its progress; a trainer that crashes fails the job naming its exit status,
//! with its stderr in the run's log; dropping a launch (what a cancel does) kills the child and every process it
//! started, also one that left its process group (`setsid`), and logs the peak of their memory; what a trainer
//! that exited by itself left running is killed, also when it holds the trainer's stdout open. Through adapterd
//! over HTTP: a run trains in a child process and its log is served; a cancel stops the child; a trainer that
//! cannot run puts its exit status on the run. `resources.memory`: a trainer whose processes hold more is killed
//! with all of them and the job fails naming the limit, also when the memory is held by a process that left the
//! trainer's group; under a generous limit the job succeeds.
//!
//! Waiting on other processes cannot be made deterministic: the tests poll for explicit conditions with a
//! generous deadline and assert states, never durations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adapterci_api::{ApiClient, ApplyPipelineRequest, RunState};
use adapterci_core::launcher::{LaunchResources, TrainingLauncher};
use adapterci_core::training::{ProgressSink, StepProgress, TrainingFailure};
use adapterci_server::config::ExecutorKind;
use adapterci_server::{ProcessLauncher, ServerConfig};
use adapterci_testkit::eventually::eventually;

#[path = "support/tiny_job.rs"]
mod tiny_job;
use tiny_job::{dataset, tiny_job};

#[path = "support/processes.rs"]
mod processes;
use processes::ended;

fn launcher(dir: &Path, program: &str, args: &[&str]) -> ProcessLauncher {
    ProcessLauncher {
        program: PathBuf::from(program),
        args: args.iter().map(|arg| arg.to_string()).collect(),
        env: vec![("ADAPTERCI_THREADS".to_string(), "1".to_string())],
        work_dir: dir.join("jobs"),
        logs_dir: dir.join("logs"),
    }
}

#[derive(Default)]
struct CountingProgress(AtomicUsize);

impl ProgressSink for CountingProgress {
    fn on_step(&self, _: &StepProgress) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&self, _: &str) {}
}

async fn log_text(launcher: &ProcessLauncher, run: &str) -> String {
    let chunk = launcher.logs(run, 0).await.unwrap().expect("a log");
    String::from_utf8(chunk.bytes).unwrap()
}

/// The pid in `path`, once written.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The process group of `pid`, from its stat line (after the command name: state, parent, group).
fn process_group_of(stat_line: &str) -> Option<u32> {
    stat_line.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

/// The processes of group `process_group` that have not ended.
fn live_in_group(process_group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        if fields.get(2) == Some(&process_group.to_string().as_str()) && fields.first() != Some(&"Z") {
            members.push(pid);
        }
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapterd_trains_a_job_in_a_child_process() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = launcher(dir.path(), env!("CARGO_BIN_EXE_adapterd"), &["train-job"]);
    let progress = Arc::new(CountingProgress::default());
    // far above what training the tiny model takes
    let resources = LaunchResources { memory_bytes: Some(64 << 30), ..LaunchResources::default() };
    let output = launcher.launch("run-1", tiny_job(dir.path(), 3), &resources, progress.clone()).await.unwrap();
    assert!(!output.adapter_safetensors.is_empty());
    assert_eq!(output.adapter_config.rank, 2);
    assert!(output.metrics.contains_key("eval_loss"), "{:?}", output.metrics);
    assert_eq!(progress.0.load(Ordering::SeqCst), 3, "every step's progress came back");
    let log = log_text(&launcher, "run-1").await;
    assert!(log.contains("training on") && log.contains("adapter written"), "{log}");
    assert!(log.contains("trainer process exited with status 0"), "{log}");
    assert!(!log.contains("left running"), "adapterd's trainer leaves nothing behind: {log}");
    if cfg!(target_os = "linux") {
        assert!(log.contains("--- peak resident memory of the trainer's processes: "), "{log}");
        assert!(log.contains("; resources.memory 64 GiB)"), "{log}");
    }
    assert!(!dir.path().join("jobs/run-1").exists(), "the job directory is removed");
    let tail = launcher.logs("run-1", log.len() as u64 - 10).await.unwrap().unwrap();
    assert_eq!(tail.bytes.len(), 10);
    assert_eq!(tail.next_offset, log.len() as u64);
    assert!(launcher.logs("never-ran", 0).await.unwrap().is_none());
    assert!(launcher.logs("../escape", 0).await.is_err(), "a run id is a plain name");
}

#[tokio::test]
async fn a_crashed_trainer_fails_the_job_with_its_exit_status_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let crash = launcher(dir.path(), "/bin/sh", &["-c", "echo 'loading the model' >&2; exit 3", "sh"]);
    let failure = crash
        .launch("run-2", tiny_job(dir.path(), 1), &LaunchResources::default(), Arc::new(CountingProgress::default()))
        .await;
    match failure {
        Err(TrainingFailure::Backend(message)) => {
            assert!(message.contains("the trainer process exited with status 3"), "{message}")
        }
        other => panic!("expected a backend failure, got {other:?}"),
    }
    let log = log_text(&crash, "run-2").await;
    assert!(log.contains("loading the model") && log.contains("exited with status 3"), "{log}");

    // the pipeline's resources.cpus become the trainer's thread count, rounded up
    let threads = launcher(dir.path(), "/bin/sh", &["-c", "echo threads=$ADAPTERCI_THREADS >&2; exit 1", "sh"]);
    let resources = LaunchResources { cpus: Some(2.5), ..LaunchResources::default() };
    let progress = Arc::new(CountingProgress::default());
    assert!(threads.launch("run-5", tiny_job(dir.path(), 1), &resources, progress).await.is_err());
    let log = log_text(&threads, "run-5").await;
    assert!(log.contains("threads=3"), "{log}");

    let killed = launcher(dir.path(), "/bin/sh", &["-c", "kill -9 $$", "sh"]);
    let failure = killed
        .launch("run-3", tiny_job(dir.path(), 1), &LaunchResources::default(), Arc::new(CountingProgress::default()))
        .await;
    assert!(
        matches!(&failure, Err(TrainingFailure::Backend(message)) if message.contains("was killed by signal 9")),
        "{failure:?}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_trainer_leaves_running_when_it_exits_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    for code in [0, 3] {
        // a background `sleep` the trainer does not wait for, holding its stdout open: the launch would wait for
        // it were it left running
        let script = format!("sleep 600 & echo $! > \"$1/../leftover-{code}.pid\"; echo leaving >&2; exit {code}");
        let trainer = launcher(dir.path(), "/bin/sh", &["-c", &script, "sh"]);
        let run = format!("run-leftover-{code}");
        let (progress, resources) = (Arc::new(CountingProgress::default()), LaunchResources::default());
        let launch = trainer.launch(&run, tiny_job(dir.path(), 1), &resources, progress);
        let ended_launch = tokio::time::timeout(adapterci_testkit::eventually::DEADLINE, launch).await;
        assert!(ended_launch.is_ok(), "the launch ends although what the trainer left holds its stdout");
        let leftover = read_pid(&dir.path().join(format!("jobs/leftover-{code}.pid"))).unwrap();
        eventually("the trainer's leftover to be killed", || async { ended(leftover).then_some(()) }).await;
        let log = log_text(&trainer, &run).await;
        assert!(log.contains(&format!("trainer process exited with status {code}")), "{log}");
        assert_eq!(log.matches("killed 1 process the trainer left running when it exited").count(), 1, "{log}");
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_above_resources_memory_is_killed_with_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    // GNU tail keeps a line without a newline whole: 300 MB held by a grandchild, until the group is killed
    // (`sleep` keeps the pipe open, so tail never sees its end); the data flows once both pids are written
    let script = "echo $$ > \"$1/../leader.pid\"
        mkfifo \"$1/go\"
        { cat \"$1/go\"; head -c 300000000 /dev/zero; exec sleep 600; } | tail > /dev/null &
        echo $! > \"$1/../tail.pid\"
        echo go > \"$1/go\"
        wait";
    let hog = launcher(dir.path(), "/bin/sh", &["-c", script, "sh"]);
    let resources = LaunchResources { memory_bytes: Some(64 << 20), ..LaunchResources::default() };
    let progress = Arc::new(CountingProgress::default());
    let failure = hog.launch("run-6", tiny_job(dir.path(), 1), &resources, progress).await;
    match &failure {
        Err(TrainingFailure::InvalidInput(message)) => {
            assert!(message.contains("above the pipeline's resources.memory of 64 MiB"), "{message}");
            assert!(message.contains("raise resources.memory"), "{message}");
        }
        other => panic!("expected the memory limit to fail the job, got {other:?}"),
    }
    let log = log_text(&hog, "run-6").await;
    assert!(log.contains("--- resources.memory 64 MiB: the trainer's processes are killed"), "{log}");
    assert!(log.contains("resident, above resources.memory 64 MiB (") && log.contains("processes); killed"), "{log}");
    let leader: u32 = std::fs::read_to_string(dir.path().join("jobs/leader.pid")).unwrap().trim().parse().unwrap();
    let tail: u32 = std::fs::read_to_string(dir.path().join("jobs/tail.pid")).unwrap().trim().parse().unwrap();
    assert!(ended(leader), "the trainer was killed and reaped");
    eventually("the trainer's whole group to be killed", || async {
        (ended(tail) && live_in_group(leader).is_empty()).then_some(())
    })
    .await;
    assert!(!dir.path().join("jobs/run-6").exists(), "the job directory is removed");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_held_by_a_process_that_left_the_group_counts_and_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // the trainer starts a shell in a session of its own (util-linux `setsid`: in a background job its caller
    // leads no group, so it calls setsid() itself, no fork), which writes its stat line (proof it left the
    // trainer's group) and holds 300 MB in a grandchild, as in the test above
    let script = "echo $$ > \"$1/../leader.pid\"
        setsid /bin/sh -c '
            cat /proc/$$/stat > \"$1/../escaped.stat\"
            echo $$ > \"$1/../escaped.pid\"
            mkfifo \"$1/go\"
            { cat \"$1/go\"; head -c 300000000 /dev/zero; exec sleep 600; } | tail > /dev/null &
            echo $! > \"$1/../tail.pid\"
            echo go > \"$1/go\"
            wait' sh \"$1\" &
        wait";
    let hog = launcher(dir.path(), "/bin/sh", &["-c", script, "sh"]);
    let resources = LaunchResources { memory_bytes: Some(64 << 20), ..LaunchResources::default() };
    let progress = Arc::new(CountingProgress::default());
    // bounded: a trainer whose escaped memory went uncounted would never end
    let launch = hog.launch("run-7", tiny_job(dir.path(), 1), &resources, progress);
    let failure = tokio::time::timeout(adapterci_testkit::eventually::DEADLINE, launch)
        .await
        .expect("the memory held outside the trainer's group is counted and the trainer killed");
    match &failure {
        Err(TrainingFailure::InvalidInput(message)) => {
            assert!(message.contains("above the pipeline's resources.memory of 64 MiB"), "{message}")
        }
        other => panic!("expected the memory limit to fail the job, got {other:?}"),
    }
    let jobs = dir.path().join("jobs");
    let leader = read_pid(&jobs.join("leader.pid")).unwrap();
    let escaped = read_pid(&jobs.join("escaped.pid")).unwrap();
    let tail = read_pid(&jobs.join("tail.pid")).unwrap();
    let escaped_stat = std::fs::read_to_string(jobs.join("escaped.stat")).unwrap();
    assert_eq!(process_group_of(&escaped_stat), Some(escaped), "it left the trainer's group: {escaped_stat}");
    assert_ne!(escaped, leader);
    let log = log_text(&hog, "run-7").await;
    assert!(log.contains("resident, above resources.memory 64 MiB (") && log.contains("processes); killed"), "{log}");
    assert!(ended(leader), "the trainer was killed and reaped");
    eventually("the trainer's processes, in its group and out of it, to be killed", || async {
        let gone = ended(escaped) && ended(tail) && live_in_group(leader).is_empty();
        (gone && live_in_group(escaped).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_launch_kills_the_child_and_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    // a grandchild first, then the child's own pid: both are known once the second file is read; on Linux also
    // a shell that leaves the group (`setsid`) with a child of its own, written before the child's pid
    let escape = "setsid /bin/sh -c 'sleep 600 & echo $! > \"$1/../escaped_child.pid\"; \
                  echo $$ > \"$1/../escaped.pid\"; wait' sh \"$1\" &
                  until [ -s \"$1/../escaped.pid\" ]; do sleep 0.01; done";
    let script = format!(
        "sleep 600 & echo $! > \"$1/../grandchild.pid\"; {}; echo $$ > \"$1/../sleeper.pid\"; exec sleep 600",
        if cfg!(target_os = "linux") { escape } else { "true" }
    );
    let sleeper = Arc::new(launcher(dir.path(), "/bin/sh", &["-c", &script, "sh"]));
    let job = tiny_job(dir.path(), 1);
    let task = {
        let sleeper = sleeper.clone();
        // far above what the shells hold: the peak is logged
        let resources = LaunchResources { memory_bytes: Some(64 << 30), ..LaunchResources::default() };
        tokio::spawn(
            async move { sleeper.launch("run-4", job, &resources, Arc::new(CountingProgress::default())).await },
        )
    };
    let pid_file = dir.path().join("jobs/sleeper.pid");
    let pid: u32 = eventually("the child to start", || async {
        std::fs::read_to_string(&pid_file).ok().and_then(|pid| pid.trim().parse().ok())
    })
    .await;
    let grandchild: u32 =
        std::fs::read_to_string(dir.path().join("jobs/grandchild.pid")).unwrap().trim().parse().unwrap();
    assert!(!ended(pid) && !ended(grandchild), "the child and its child run");
    let escaped = if cfg!(target_os = "linux") {
        let escaped = read_pid(&dir.path().join("jobs/escaped.pid")).unwrap();
        let escaped_child = read_pid(&dir.path().join("jobs/escaped_child.pid")).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap();
        assert_eq!(process_group_of(&stat), Some(escaped), "it left the trainer's group: {stat}");
        assert!(!ended(escaped) && !ended(escaped_child), "the escaped shell and its child run");
        vec![escaped, escaped_child]
    } else {
        Vec::new()
    };
    task.abort();
    let _ = task.await;
    eventually("the child to be killed", || async { ended(pid).then_some(()) }).await;
    eventually("the child's child to be killed", || async { ended(grandchild).then_some(()) }).await;
    eventually("every process that left the group to be killed", || async {
        let gone = escaped.iter().all(|&pid| ended(pid)) && escaped.iter().all(|&pid| live_in_group(pid).is_empty());
        (gone && live_in_group(pid).is_empty()).then_some(())
    })
    .await;
    let log = log_text(&sleeper, "run-4").await;
    assert!(log.contains(&format!("trainer process {pid} stopped")), "{log}");
    if cfg!(target_os = "linux") {
        // the peak of a cancelled trainer, as a finished one's
        let peak = log.lines().find(|line| line.starts_with("--- peak resident memory of the trainer's processes: "));
        assert!(peak.is_some_and(|line| line.ends_with("; resources.memory 64 GiB)")), "{log}");
    }
    assert!(!dir.path().join("jobs/run-4").exists(), "the stopped job's directory is removed");
}

fn pipeline(steps: usize) -> String {
    format!(
        "version: v1
name: child
base:
  model: tiny
dataset:
  location: datasets/child/train.jsonl
triggers:
  - kind: manual
training:
  lora:
    rank: 2
    alpha: 4
  steps: {steps}
  batch_size: 2
  max_seq_len: 32
  eval_fraction: 0.2
  max_eval_examples: 1
  max_new_tokens: 2
publish:
  adapter: child
"
    )
}

async fn start(dir: &Path, trainer: &str, steps: usize) -> (adapterci_server::RunningServer, ApiClient) {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).unwrap();
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.no_worker = true;
    config.refresh_secs = 0;
    config.tick_ms = 100;
    config.threads = 1;
    config.executor = ExecutorKind::Process;
    config.trainer = Some(PathBuf::from(trainer));
    let server = adapterci_server::start(config).await.expect("adapterd starts");
    let client = ApiClient::new(&server.url()).unwrap();
    client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: pipeline(steps) }).await.unwrap();
    client.push_dataset("datasets/child/train.jsonl", dataset()).await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapterd_runs_train_in_child_processes_with_logs_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start(dir.path(), env!("CARGO_BIN_EXE_adapterd"), 3).await;

    let run = client.trigger_pipeline("child").await.unwrap();
    let done = eventually("the run to end", || async {
        client.get_run(&run.id).await.ok().filter(|info| info.state.is_terminal())
    })
    .await;
    assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
    let logs = client.run_logs(&run.id, 0).await.unwrap();
    assert!(logs.complete);
    assert!(logs.text.contains("training on") && logs.text.contains("exited with status 0"), "{}", logs.text);
    let again = client.run_logs(&run.id, logs.next_offset).await.unwrap();
    assert_eq!((again.text.as_str(), again.next_offset), ("", logs.next_offset), "nothing after the end");

    // a long run, cancelled while its child trains: the child is killed
    let long = pipeline(100_000);
    client.apply_pipeline(&ApplyPipelineRequest { file: None, yaml: long }).await.unwrap();
    let run = client.trigger_pipeline("child").await.unwrap();
    let pid: u32 = eventually("the child to train", || async {
        let logs = client.run_logs(&run.id, 0).await.ok()?;
        let pid = logs.text.lines().find_map(|line| line.strip_prefix("trainer pid "))?.trim().parse().ok()?;
        logs.text.contains("step ").then_some(pid)
    })
    .await;
    assert!(!ended(pid));
    let cancelled = client.cancel_run(&run.id).await.unwrap();
    assert!(matches!(cancelled.state, RunState::Cancelled | RunState::Running), "{cancelled:#?}");
    eventually("the child to be killed", || async { ended(pid).then_some(()) }).await;
    let info = eventually("the run to be cancelled", || async {
        client.get_run(&run.id).await.ok().filter(|info| info.state.is_terminal())
    })
    .await;
    assert_eq!(info.state, RunState::Cancelled, "{info:#?}");
    let logs = client.run_logs(&run.id, 0).await.unwrap();
    assert!(logs.text.contains(&format!("trainer process {pid} stopped")), "{}", logs.text);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_that_fails_to_run_puts_its_exit_status_on_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // `/bin/false train-job DIR` exits with status 1 at once, as a trainer that crashes on start
    let (server, client) = start(dir.path(), "/bin/false", 1).await;
    let run = client.trigger_pipeline("child").await.unwrap();
    let info = eventually("the first attempt to fail", || async {
        client.get_run(&run.id).await.ok().filter(|info| info.error.as_deref().is_some_and(|e| e.contains("trainer")))
    })
    .await;
    let error = info.error.unwrap();
    assert!(error.contains("the trainer process exited with status 1"), "{error}");
    let logs = client.run_logs(&run.id, 0).await.unwrap();
    assert!(logs.text.contains("trainer process exited with status 1"), "{}", logs.text);
    server.shutdown().await;
}
