//! The local process executor: each run's training in a child process of its own (`adapterd train-job DIR`,
//! see `trainer.rs`), behind the core `TrainingLauncher` port.
//!
//! The job goes to the child as files in a directory of its own (`job.json`, `dataset.jsonl`, the initial
//! adapter), progress comes back as JSON lines on the child's stdout, the result as files again
//! (`output.json`, `adapter.safetensors`, or `failure.json`). The child's stderr (its log) is appended to
//! `<logs dir>/<run id>.log`, which `GET /api/v1/runs/{id}/logs` serves. On Unix the child runs in a process
//! group of its own, and dropping a launch (cancel, timeout, lost lease) kills the trainer's processes: on Linux
//! its group and every process descended from it, also one that left the group (`process_tree.rs`, which says
//! what cannot be tracked), elsewhere on Unix the group, elsewhere the child. The child holds a pipe from this
//! process on its stdin and exits when it closes, so a trainer never outlives an adapterd killed with SIGKILL.
//!
//! A trainer that ends by itself (succeeded or failed) leaves nothing behind either, on Linux: its exit is waited
//! for without reaping it (`waitid` with `WNOWAIT`, on a thread of its own), so its pid, its group's id, cannot be
//! reused while what is left of its processes (in its group or out of it) is killed as on a cancel; the run's log
//! says how many there were. Only then is it reaped. Elsewhere what it left runs on.
//!
//! `resources.memory` is enforced on Linux (`memory_limit.rs`): the resident memory (RSS, host memory, not GPU
//! memory) of the trainer's processes is sampled from /proc, and they are killed when it goes above the limit,
//! failing the job with a message that names the limit and what was measured. The peak is logged however the job
//! ends (finished, killed, cancelled). Elsewhere it is not enforced, and the run's log says so.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
#[cfg(target_os = "linux")]
use std::sync::Mutex;

use adapterci_core::launcher::{LaunchResources, LogChunk, TrainingLauncher};
use adapterci_core::training::{ProgressSink, TrainJob, TrainOutput, TrainingFailure};
use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::job_files::{
    JobFolder, LocalJobDir, append_log, forward_line, read_failure, read_log, read_output, write_job,
};

#[cfg(target_os = "linux")]
mod memory_limit;
#[cfg(target_os = "linux")]
mod process_tree;

/// What the processes of a trainer hold at one sample (measured on Linux only).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TrainerUsage {
    resident_bytes: u64,
    processes: usize,
}

/// The first argument that makes adapterd run one training job instead of serving.
pub const TRAIN_JOB_COMMAND: &str = "train-job";

/// Launches each job as `program args... DIR`.
#[derive(Clone, Debug)]
pub struct ProcessLauncher {
    pub program: PathBuf,
    /// Arguments before the job directory (`train-job` for adapterd).
    pub args: Vec<String>,
    /// Environment variables set in the child.
    pub env: Vec<(String, String)>,
    /// Where job directories are made (one per run, removed after the job).
    pub work_dir: PathBuf,
    /// Where run logs are kept, `<run id>.log`.
    pub logs_dir: PathBuf,
}

impl ProcessLauncher {
    /// adapterd at `program` as the trainer, with work and log folders below `data_dir`.
    pub fn adapterd(program: PathBuf, data_dir: &Path, threads: usize) -> ProcessLauncher {
        let mut env = Vec::new();
        if threads > 0 {
            env.push((crate::env_vars::ADAPTERCI_THREADS.to_string(), threads.to_string()));
        }
        ProcessLauncher {
            program,
            args: vec![TRAIN_JOB_COMMAND.to_string()],
            env,
            work_dir: data_dir.join("jobs"),
            logs_dir: data_dir.join("logs"),
        }
    }

    /// The log file of `run_id`, refusing ids that are not plain file names.
    fn log_path(&self, run_id: &str) -> Result<PathBuf, String> {
        crate::job_files::log_path(&self.logs_dir, run_id)
    }

    /// Starts `program args... DIR` with its stderr appended to the run's log, leading a process group of its own.
    fn spawn(
        &self,
        dir: &Path,
        env: &[(String, String)],
        log_path: &Path,
    ) -> Result<tokio::process::Child, TrainingFailure> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| backend(&format!("opening {}", log_path.display()), e))?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .arg(dir)
            .envs(env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // the direct child, where its group cannot be killed; `StopNote` kills the group
            .kill_on_drop(true);
        // what the trainer starts is in its group: killed with it, and counted in its memory
        #[cfg(unix)]
        command.process_group(0);
        command.spawn().map_err(|e| backend(&format!("starting the trainer {}", self.program.display()), e))
    }
}

fn backend(what: &str, error: impl std::fmt::Display) -> TrainingFailure {
    TrainingFailure::Backend(format!("{what}: {error}"))
}

/// How a process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("was killed by signal {signal}");
    }
    format!("ended ({status})")
}

#[async_trait]
impl TrainingLauncher for ProcessLauncher {
    async fn launch(
        &self,
        run_id: &str,
        job: TrainJob,
        resources: &LaunchResources,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<TrainOutput, TrainingFailure> {
        let log_path = self.log_path(run_id).map_err(TrainingFailure::Backend)?;
        let dir = self.work_dir.join(run_id);
        tokio::fs::create_dir_all(&self.logs_dir)
            .await
            .map_err(|e| backend(&format!("creating {}", self.logs_dir.display()), e))?;
        let folder = LocalJobDir(dir.clone());
        write_job(&folder, &job, None).await?;
        append_log(&log_path, &format!("--- {} training started in a child process", chrono::Utc::now().to_rfc3339()))
            .await;
        let mut env = self.env.clone();
        if let Some(cpus) = resources.cpus {
            // libtorch threads: the pipeline's CPUs, rounded up (at least one)
            let threads = (cpus.ceil() as usize).max(1);
            env.retain(|(key, _)| key != crate::env_vars::ADAPTERCI_THREADS);
            env.push((crate::env_vars::ADAPTERCI_THREADS.to_string(), threads.to_string()));
            append_log(&log_path, &format!("--- resources.cpus {cpus}: {threads} training threads")).await;
        }
        if let Some(limit) = resources.memory_bytes {
            append_log(&log_path, &memory_limit_note(limit)).await;
        }
        let child = self.spawn(&dir, &env, &log_path)?;
        tracing::info!(run = run_id, pid = child.id(), program = %self.program.display(), "trainer process started");
        let trainer = Trainer { run_id, log_path: &log_path, job_dir: &dir, memory_limit: resources.memory_bytes };
        let result = match trainer.supervise(child, &*progress).await {
            Ok(status) if status.success() => read_output(&folder).await,
            Ok(status) => match read_failure(&folder).await {
                Some(failure) => Err(failure),
                None => Err(TrainingFailure::Backend(format!(
                    "the trainer process {} (log: {})",
                    describe_exit(status),
                    log_path.display()
                ))),
            },
            Err(failure) => Err(failure),
        };
        let _ = folder.remove_all().await;
        result
    }

    async fn logs(&self, run_id: &str, offset: u64) -> Result<Option<LogChunk>, String> {
        read_log(&self.log_path(run_id)?, offset).await
    }
}

/// A started trainer of one run, supervised to its end.
struct Trainer<'a> {
    run_id: &'a str,
    log_path: &'a Path,
    job_dir: &'a Path,
    /// The pipeline's `resources.memory`, in bytes.
    memory_limit: Option<u64>,
}

impl Trainer<'_> {
    /// Runs `child` to its end, feeding its progress lines to `progress`; kills its processes and fails the job
    /// when their resident memory goes above the limit.
    async fn supervise(
        &self,
        mut child: tokio::process::Child,
        progress: &dyn ProgressSink,
    ) -> Result<ExitStatus, TrainingFailure> {
        let pid = child.id();
        let processes = TrainerProcesses::new(pid);
        // dropped before the child ended (cancel, timeout, lost lease): the trainer's processes are killed with the
        // future (dropped before `child`, so while the trainer is still there to lead its processes)
        let mut stopped = StopNote {
            log: self.log_path.to_path_buf(),
            job_dir: self.job_dir.to_path_buf(),
            processes: processes.clone(),
            memory_limit: self.memory_limit,
            armed: true,
        };
        // kept open while the child runs: the child exits when it closes (this process died)
        let stdin = child.stdin.take();
        let exited = exited_unreaped(pid);
        let over_memory = tokio::select! {
            ended = run_to_end(&mut child, progress, self.log_path, exited, &processes) => {
                let (status, leftovers) = ended.map_err(|e| backend("waiting for the trainer", e))?;
                stopped.armed = false;
                drop(stdin);
                self.note_exit(pid, status, processes.peak()).await;
                self.note_leftovers(pid, leftovers).await;
                return Ok(status);
            }
            usage = watch_processes(&processes, self.memory_limit, self.log_path) => usage,
        };
        // the trainer is reaped only after: until then its pid, the id of its group, cannot be reused
        let left = processes.kill_and_wait().await;
        if left > 0 {
            let line = format!("--- {left} of the trainer's processes still ran after the kill");
            append_log(self.log_path, &line).await;
        }
        let _ = child.wait().await;
        stopped.armed = false;
        drop(stdin);
        Err(self.killed_over_memory(pid, over_memory).await)
    }

    async fn note_exit(&self, pid: Option<u32>, status: ExitStatus, peak: Option<TrainerUsage>) {
        let how = describe_exit(status);
        tracing::info!(run = self.run_id, pid, "trainer process {how}");
        append_log(self.log_path, &format!("--- {} trainer process {how}", chrono::Utc::now().to_rfc3339())).await;
        if let Some(line) = peak_line(self.memory_limit, peak) {
            append_log(self.log_path, &line).await;
        }
    }

    /// Says in the run's log how many processes the trainer left running when it exited, and were killed, if any.
    async fn note_leftovers(&self, pid: Option<u32>, leftovers: Leftovers) {
        if leftovers.killed == 0 {
            return;
        }
        tracing::warn!(run = self.run_id, pid, leftovers = leftovers.killed, "killed what the trainer left running");
        let mut line = format!(
            "--- {} killed {} the trainer left running when it exited",
            chrono::Utc::now().to_rfc3339(),
            processes(leftovers.killed)
        );
        if leftovers.still_alive > 0 {
            line.push_str(&format!(" ({} still ran after the kill)", leftovers.still_alive));
        }
        append_log(self.log_path, &line).await;
    }

    /// The failure of a trainer killed above `resources.memory`: `InvalidInput`, not retried, since another
    /// attempt under the same limit would end the same way; the message says what to change.
    async fn killed_over_memory(&self, pid: Option<u32>, usage: TrainerUsage) -> TrainingFailure {
        let limit = self.memory_limit.unwrap_or(0);
        let line = format!(
            "--- {} trainer used {} resident, above resources.memory {} ({}); killed",
            chrono::Utc::now().to_rfc3339(),
            format_bytes(usage.resident_bytes),
            format_bytes(limit),
            processes(usage.processes)
        );
        tracing::warn!(
            run = self.run_id,
            pid,
            resident = usage.resident_bytes,
            limit,
            "trainer killed above resources.memory"
        );
        append_log(self.log_path, &line).await;
        TrainingFailure::InvalidInput(format!(
            "the trainer used {} of resident memory, above the pipeline's resources.memory of {}: raise \
             resources.memory (log: {})",
            format_bytes(usage.resident_bytes),
            format_bytes(limit),
            self.log_path.display()
        ))
    }
}

/// What a trainer that exited left running, killed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Leftovers {
    /// The processes found (not ended) once the trainer had exited.
    killed: usize,
    /// Those still alive when the kill gave up waiting.
    still_alive: usize,
}

/// Reads the child's progress lines (other lines go to the log) until its stdout closes and, once the child exited
/// (`exited`: it is not reaped yet), kills what it left running (a process of its that keeps its stdout open is
/// among them, so the reading ends); then reaps it.
async fn run_to_end(
    child: &mut tokio::process::Child,
    progress: &dyn ProgressSink,
    log_path: &Path,
    exited: tokio::sync::oneshot::Receiver<bool>,
    processes: &TrainerProcesses,
) -> std::io::Result<(ExitStatus, Leftovers)> {
    let stdout = child.stdout.take();
    let read = async {
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                forward_line(&line, progress, log_path).await;
            }
        }
    };
    let leftovers = async {
        // not known (no waiter, or it failed): nothing killed, the trainer is reaped as it was before
        match exited.await {
            Ok(true) => processes.kill_leftovers().await,
            _ => Leftovers::default(),
        }
    };
    let ((), leftovers) = tokio::join!(read, leftovers);
    Ok((child.wait().await?, leftovers))
}

/// `true` once the child `pid` has exited, still unreaped (Linux: a thread waits in `waitid` with `WNOWAIT` on a
/// pidfd, or on the pid where pidfds are missing); `false` where that is not known. A thread of its own, not the
/// runtime's blocking pool: a wait as long as the training must not hold up a runtime's shutdown.
fn exited_unreaped(pid: Option<u32>) -> tokio::sync::oneshot::Receiver<bool> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    #[cfg(target_os = "linux")]
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()).and_then(rustix::process::Pid::from_raw) {
        // opened now, while the child cannot have been reaped: the pidfd is that process's for good
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
        let wait = move || {
            use rustix::process::{WaitId, WaitIdOptions, waitid};
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
            loop {
                let waited = match &pidfd {
                    Some(pidfd) => waitid(WaitId::PidFd(std::os::fd::AsFd::as_fd(pidfd)), options),
                    None => waitid(WaitId::Pid(pid), options),
                };
                match waited {
                    Err(rustix::io::Errno::INTR) => continue,
                    waited => return waited.is_ok(),
                }
            }
        };
        // the receiver may be gone (the launch dropped): then the answer is not needed
        let spawned = std::thread::Builder::new().name("trainer-exit".to_string()).spawn(move || {
            let _ = sender.send(wait());
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread to wait for the trainer's exit: what it leaves running is not killed");
        }
        return receiver;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pid;
    let _ = sender.send(false);
    receiver
}

/// Samples the trainer's processes (on Linux, with or without a limit: a kill signals what the samples found) and
/// returns the first sample above `limit`; never, without a limit or on a system without /proc.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
async fn watch_processes(processes: &TrainerProcesses, limit: Option<u64>, log_path: &Path) -> TrainerUsage {
    #[cfg(target_os = "linux")]
    if let Some(tracking) = &processes.tracking {
        return memory_limit::watch(tracking.clone(), limit, log_path).await;
    }
    std::future::pending().await
}

/// The log's line with the peak resident memory of the trainer's processes, for a job with a limit.
fn peak_line(limit: Option<u64>, peak: Option<TrainerUsage>) -> Option<String> {
    let (limit, peak) = (limit?, peak?);
    Some(format!(
        "--- peak resident memory of the trainer's processes: {} ({}; resources.memory {})",
        format_bytes(peak.resident_bytes),
        processes(peak.processes),
        format_bytes(limit)
    ))
}

/// What the run's log says about `resources.memory` before the trainer starts.
fn memory_limit_note(limit: u64) -> String {
    if cfg!(target_os = "linux") {
        format!(
            "--- resources.memory {}: the trainer's processes are killed when their resident memory (host memory, \
             not GPU memory) goes above it",
            format_bytes(limit)
        )
    } else {
        format!(
            "--- resources.memory {} is not enforced by the local process executor on {} (it reads resident \
             memory from /proc, which only Linux has)",
            format_bytes(limit),
            std::env::consts::OS
        )
    }
}

fn processes(count: usize) -> String {
    if count == 1 { "1 process".to_string() } else { format!("{count} processes") }
}

/// Bytes in binary units as the pipeline writes them, exactly when they are whole (`8 GiB`), else to a tenth
/// (`1.2 GiB`).
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1 << (10 * (unit + 1)) {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

/// How many times, at most, /proc is scanned for the trainer's processes after they were killed, until none is
/// left, and the pause between two scans: a bound of 5 s for processes to end after SIGKILL.
#[cfg(target_os = "linux")]
const KILL_ROUNDS: usize = 250;
#[cfg(target_os = "linux")]
const KILL_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The processes of a started trainer, killed together: on Linux its group and every process descended from it
/// (sampled into `tracking`), elsewhere on Unix its group, elsewhere the child alone (by `kill_on_drop`).
#[derive(Clone, Debug)]
struct TrainerProcesses {
    pid: Option<u32>,
    /// The child leads a process group of its own (Unix): its pid is the group's id.
    #[cfg_attr(not(unix), allow(dead_code))]
    process_group: Option<i32>,
    #[cfg(target_os = "linux")]
    tracking: Option<Arc<Mutex<memory_limit::Tracking>>>,
}

impl TrainerProcesses {
    fn new(pid: Option<u32>) -> TrainerProcesses {
        let process_group = pid.and_then(|pid| i32::try_from(pid).ok()).filter(|_| cfg!(unix));
        TrainerProcesses {
            pid,
            process_group,
            #[cfg(target_os = "linux")]
            tracking: process_group.map(memory_limit::Tracking::new),
        }
    }

    /// The highest sample of their resident memory so far (Linux).
    fn peak(&self) -> Option<TrainerUsage> {
        #[cfg(target_os = "linux")]
        if let Some(tracking) = &self.tracking {
            return memory_limit::lock(tracking).peak;
        }
        None
    }

    /// Kills them all now, keeping what they held as a sample (Linux). Blocking: on Linux it scans /proc a few
    /// times (stopping every process before the kill); when /proc cannot be read, the group alone is killed.
    fn kill_now(&self) {
        #[cfg(target_os = "linux")]
        if let Some(tracking) = &self.tracking {
            let mut tracking = memory_limit::lock(tracking);
            let page_size = rustix::param::page_size() as u64;
            if let Ok(usage) = process_tree::kill_all(&mut tracking.tree, Path::new("/proc"), page_size) {
                tracking.record(usage);
                return;
            }
        }
        #[cfg(unix)]
        if let Some(process_group) = self.process_group {
            signal_group(process_group, rustix::process::Signal::KILL);
        }
    }

    /// Scans /proc until none of them is left alive (at most `KILL_ROUNDS` times), killing any found; how many
    /// were still alive at the last scan (0 where they cannot be listed). Blocking.
    fn kill_until_gone(&self) -> usize {
        #[cfg(target_os = "linux")]
        if let Some(tracking) = &self.tracking {
            let tree = &mut memory_limit::lock(tracking).tree;
            return process_tree::kill_until_gone(tree, Path::new("/proc"), KILL_ROUNDS, KILL_PAUSE);
        }
        0
    }

    /// Kills what is left of them once the trainer exited (unreaped: its group is still its own) and waits until
    /// none is left, off the async runtime (Linux; elsewhere nothing is known of them).
    async fn kill_leftovers(&self) -> Leftovers {
        #[cfg(target_os = "linux")]
        if let Some(tracking) = self.tracking.clone() {
            let processes = self.clone();
            let kill = move || {
                let page_size = rustix::param::page_size() as u64;
                let found = {
                    let mut tracking = memory_limit::lock(&tracking);
                    let found = process_tree::kill_all(&mut tracking.tree, Path::new("/proc"), page_size);
                    if let Ok(usage) = found {
                        tracking.record(usage);
                    }
                    found
                };
                match found {
                    // the trainer itself, a zombie, is not counted
                    Ok(usage) if usage.processes > 0 => {
                        Leftovers { killed: usage.processes, still_alive: processes.kill_until_gone() }
                    }
                    Ok(_) => Leftovers::default(),
                    Err(error) => {
                        tracing::warn!(%error, "reading /proc: what the trainer left running is not killed");
                        Leftovers::default()
                    }
                }
            };
            return tokio::task::spawn_blocking(kill).await.unwrap_or_default();
        }
        Leftovers::default()
    }

    /// Kills them all and waits until none is left, off the async runtime; how many were still alive at the end.
    async fn kill_and_wait(&self) -> usize {
        let processes = self.clone();
        tokio::task::spawn_blocking(move || {
            processes.kill_now();
            processes.kill_until_gone()
        })
        .await
        .unwrap_or(0)
    }
}

/// `signal` to every process of group `process_group` (a trainer's group: its pid). Never group 0 or 1, nor
/// adapterd's own: `kill(0)` is adapterd's group and `kill(-1)` every process it may signal.
#[cfg(unix)]
fn signal_group(process_group: i32, signal: rustix::process::Signal) {
    if process_group <= 1 || process_group == rustix::process::getpgrp().as_raw_nonzero().get() {
        return;
    }
    if let Some(group) = rustix::process::Pid::from_raw(process_group) {
        // fails only when the group is already gone
        let _ = rustix::process::kill_process_group(group, signal);
    }
}

/// Notes in the run's log that its trainer was stopped (with the peak of its memory), kills its processes, and
/// removes the job directory, when dropped while armed.
struct StopNote {
    log: PathBuf,
    job_dir: PathBuf,
    /// Killed on drop (the child alone is also killed by `kill_on_drop`, right after).
    processes: TrainerProcesses,
    memory_limit: Option<u64>,
    armed: bool,
}

impl Drop for StopNote {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // blocking, in a drop on the runtime: a few scans of /proc, and no waiting for the killed to end, which
        // is left to a blocking task where a runtime runs
        self.processes.kill_now();
        let line = format!(
            "--- {} trainer process {} stopped (run cancelled, timed out or taken over)",
            chrono::Utc::now().to_rfc3339(),
            self.processes.pid.map_or_else(|| "?".to_string(), |pid| pid.to_string())
        );
        crate::job_files::append_log_now(&self.log, &line);
        if let Some(line) = peak_line(self.memory_limit, self.processes.peak()) {
            crate::job_files::append_log_now(&self.log, &line);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let processes = self.processes.clone();
            runtime.spawn_blocking(move || {
                let left = processes.kill_until_gone();
                if left > 0 {
                    tracing::warn!(pid = processes.pid, left, "trainer processes still run after the kill");
                }
            });
        }
        // the job's copy of the dataset goes too (the child, killed already, no longer needs it)
        let _ = std::fs::remove_dir_all(&self.job_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::format_bytes;

    fn check(bytes: u64, expect: &str) {
        assert_eq!(format_bytes(bytes), expect, "{bytes}");
    }

    #[test]
    fn bytes_are_written_in_binary_units() {
        check(0, "0 B");
        check(1023, "1023 B");
        check(1024, "1 KiB");
        check(1536, "1.5 KiB");
        check(64 << 20, "64 MiB");
        check(8 << 30, "8 GiB");
        check(1_288_490_189, "1.2 GiB");
        check(300_000_000, "286.1 MiB");
        check(3 << 40, "3 TiB");
        check(5 << 50, "5120 TiB");
        check(u64::MAX, "16777216.0 TiB");
    }
}
