//! `resources.memory` for the local process executor (Linux): the resident memory of the trainer's processes,
//! summed from /proc, sampled until it goes above the limit.
//!
//! The trainer's processes are its process group and every process descended from it, also one that left the
//! group (`setsid`, `setpgid`): see `process_tree.rs`, which also says what cannot be tracked (a daemon that
//! double-forks between two samples). What is counted is host memory: resident set sizes (RSS), which do not
//! include GPU memory. Pages shared between the trainer's processes (libraries, memory a fork has not written yet)
//! are counted once per process, so the sum can be above what they really hold: the limit errs on the side of
//! stopping a trainer early. Every sample reads `/proc/<pid>/stat` once per process on the host.
//!
//! The samples are taken with or without a limit: they keep the list of the trainer's processes that a kill
//! (cancel, timeout, lost lease) signals, so a process that left the group and lost its parent since is killed
//! too.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::TrainerUsage;
use super::process_tree::{TrainerTree, read_processes};

/// How often the trainer's processes are sampled: the enforcement's sampling rate, so a trainer can go above its
/// limit for at most about this long (plus the time to read /proc) before it is killed.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// What the samples of one trainer have found, shared between its sampler and whatever kills it.
#[derive(Debug)]
pub(crate) struct Tracking {
    pub tree: TrainerTree,
    /// The highest sample (of resident memory) so far.
    pub peak: Option<TrainerUsage>,
}

impl Tracking {
    pub fn new(leader: i32) -> Arc<Mutex<Tracking>> {
        Arc::new(Mutex::new(Tracking { tree: TrainerTree::new(leader), peak: None }))
    }

    /// Keeps `usage` as the peak when it is the highest sample so far.
    pub fn record(&mut self, usage: TrainerUsage) {
        if self.peak.is_none_or(|peak| usage.resident_bytes > peak.resident_bytes) {
            self.peak = Some(usage);
        }
    }
}

/// Locks `tracking`, also after a panic while it was locked: it only holds what scans found.
pub(crate) fn lock(tracking: &Mutex<Tracking>) -> std::sync::MutexGuard<'_, Tracking> {
    tracking.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One sample of the trainer's processes, kept in `tracking`. Blocking: it reads /proc.
fn sample(tracking: &Mutex<Tracking>, page_size: u64) -> std::io::Result<TrainerUsage> {
    let processes = read_processes(Path::new("/proc"))?;
    let mut tracking = lock(tracking);
    let usage = tracking.tree.scan(&processes).usage(page_size);
    tracking.record(usage);
    Ok(usage)
}

/// Samples the trainer's processes every `SAMPLE_INTERVAL` into `tracking`, and returns the first sample above
/// `limit_bytes`; never without a limit. When /proc cannot be read it notes in the run's log that the limit is no
/// longer enforced (when there is one) and never returns.
pub(crate) async fn watch(tracking: Arc<Mutex<Tracking>>, limit_bytes: Option<u64>, log_path: &Path) -> TrainerUsage {
    let page_size = rustix::param::page_size() as u64;
    let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let tracking = tracking.clone();
        let usage = match tokio::task::spawn_blocking(move || sample(&tracking, page_size)).await {
            Ok(Ok(usage)) => usage,
            Ok(Err(error)) => return stop_watching(log_path, limit_bytes, &format!("reading /proc: {error}")).await,
            Err(error) => return stop_watching(log_path, limit_bytes, &format!("sampling /proc: {error}")).await,
        };
        if limit_bytes.is_some_and(|limit| usage.resident_bytes > limit) {
            return usage;
        }
    }
}

async fn stop_watching(log_path: &Path, limit_bytes: Option<u64>, why: &str) -> TrainerUsage {
    if limit_bytes.is_some() {
        tracing::warn!(log = %log_path.display(), "resources.memory no longer enforced: {why}");
        super::append_log(log_path, &format!("--- resources.memory is no longer enforced: {why}")).await;
    } else {
        tracing::warn!(log = %log_path.display(), "the trainer's processes are no longer tracked: {why}");
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_from_the_real_proc() {
        // this process as the trainer: it and what it started
        let tracking = Tracking::new(rustix::process::getpid().as_raw_nonzero().get());
        let usage = sample(&tracking, rustix::param::page_size() as u64).unwrap();
        assert!(usage.processes >= 1 && usage.resident_bytes > 0, "{usage:?}");
        assert_eq!(lock(&tracking).peak, Some(usage));
    }

    #[test]
    fn keeps_the_highest_sample() {
        let mut tracking = Tracking { tree: TrainerTree::new(10), peak: None };
        let usage = |resident_bytes, processes| TrainerUsage { resident_bytes, processes };
        tracking.record(usage(100, 1));
        tracking.record(usage(300, 3));
        tracking.record(usage(200, 5));
        tracking.record(usage(300, 4));
        assert_eq!(tracking.peak, Some(usage(300, 3)));
    }
}
