//! The processes of one trainer on Linux: its process group and every process descended from it, found in /proc,
//! so that a process that leaves the group (`setsid`, `setpgid`) is still counted against `resources.memory` and
//! still killed with the trainer.
//!
//! A scan reads `/proc/<pid>/stat` once per process on the host and takes as the trainer's processes:
//! - its process group (the group's id is the trainer's pid), while the trainer itself is in /proc, alive or a
//!   zombie not yet reaped: until adapterd reaps it, its pid, and so the group's id, cannot be reused;
//! - the processes of the previous scan that are still there, the same pid with the same start time (a pid reused
//!   by another process has another start time);
//! - every descendant of those, following parent pids.
//!
//! A process that leaves the group is so tracked once a scan sees it while its parents lead to the trainer, and
//! stays tracked when its parent ends and it is reparented. What cannot be tracked: a process that leaves the group
//! and loses its parent between two scans, as a daemon that double-forks (fork, `setsid`, fork again, the middle
//! process exits) within one sample interval. By the first scan that could see it, its parent is init (or a
//! subreaper) and nothing in /proc ties it to the trainer any more: it is neither counted nor killed. Only a cgroup
//! per trainer, or adapterd as a child subreaper (`PR_SET_CHILD_SUBREAPER`), would hold it.
//!
//! Killing ([`kill_all`]): every process is stopped first (SIGSTOP: the group at once, the others one by one) and
//! /proc scanned again, until a scan finds them all stopped; then all are killed (SIGKILL). A stopped process
//! cannot fork one that would escape between the last scan and the kill, and a stopped parent keeps its children's
//! chain to the trainer. A process outside the trainer's group is signalled by pid only when the latest scan took
//! it as the trainer's, through a pidfd opened after its start time was read again, so a pid reused since the
//! scan is never signalled.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid, Signal};

use super::{TrainerUsage, signal_group};

/// How many times /proc is scanned again while stopping the trainer's processes, before they are killed anyway
/// (a process in uninterruptible sleep only stops when it leaves it).
const STOP_ROUNDS: usize = 20;
/// The pause between two scans while stopping: a stop takes effect when the process next runs.
const STOP_PAUSE: Duration = Duration::from_millis(1);

/// The fields of one `/proc/<pid>/stat` line that tracking a trainer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    /// Field 3: `R`, `S`, `D`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    /// Field 4, `ppid`.
    pub parent: i32,
    /// Field 5, `pgrp`.
    pub process_group: i32,
    /// Field 22, `starttime`, in clock ticks since boot: with the pid, one process.
    pub start_time: u64,
    /// Field 24, `rss`.
    pub resident_pages: u64,
}

impl ProcStat {
    /// Ended, waiting to be reaped (or being reaped): nothing to count or signal.
    fn ended(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Stopped (by a signal or a tracer), or ended: it runs no more.
    fn halted(&self) -> bool {
        self.ended() || matches!(self.state, 'T' | 't')
    }
}

/// Parses a `/proc/<pid>/stat` line; `None` when it is not one.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    // the command name (field 2) is in parentheses and may itself hold spaces and parentheses: the pid is before
    // the first `(`, the numeric fields start after the last `)`, with the state (field 3) first
    let (head, rest) = line.rsplit_once(')')?;
    let (pid, _command) = head.split_once('(')?;
    let pid = pid.trim().parse().ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let mut state = fields.next()?.chars();
    let (Some(state), None) = (state.next(), state.next()) else { return None };
    let parent = fields.next()?.parse().ok()?;
    let process_group = fields.next()?.parse().ok()?;
    // from field 6 (session) to field 22 (starttime)
    let start_time = fields.nth(16)?.parse().ok()?;
    let resident_pages = fields.nth(1)?.parse().ok()?;
    Some(ProcStat { pid, state, parent, process_group, start_time, resident_pages })
}

/// Every process in `proc_dir` (`/proc`). Blocking: one read per process on the host. A process that ends
/// between the listing and the read, or whose stat cannot be read or parsed, is left out: it is gone, or nothing
/// can be known of it.
pub(crate) fn read_processes(proc_dir: &Path) -> std::io::Result<Vec<ProcStat>> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir(proc_dir)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some(stat) = parse_stat(&line) {
            processes.push(stat);
        }
    }
    Ok(processes)
}

/// The trainer's processes found by one scan.
#[derive(Debug, Default)]
pub(crate) struct Members {
    pub processes: Vec<ProcStat>,
    /// Whether the trainer itself was there (alive or a zombie): only then is its group still its own.
    pub leader_present: bool,
}

impl Members {
    /// The resident memory of the processes that have not ended.
    pub fn usage(&self, page_size: u64) -> TrainerUsage {
        let mut usage = TrainerUsage::default();
        for process in self.processes.iter().filter(|process| !process.ended()) {
            usage.resident_bytes =
                usage.resident_bytes.saturating_add(process.resident_pages.saturating_mul(page_size));
            usage.processes += 1;
        }
        usage
    }
}

/// One trainer's processes, remembered from scan to scan.
#[derive(Debug)]
pub(crate) struct TrainerTree {
    /// The trainer's pid, which is also its process group's id.
    leader: i32,
    /// The trainer's start time, from the first scan that saw it.
    leader_start: Option<u64>,
    /// The processes of the latest scan, by pid, with their start times.
    known: HashMap<i32, u64>,
}

impl TrainerTree {
    /// The processes of the trainer `leader`, which leads a process group of its own.
    pub fn new(leader: i32) -> TrainerTree {
        TrainerTree { leader, leader_start: None, known: HashMap::new() }
    }

    /// The trainer's processes among `processes` (every process on the host, one scan), remembered for the next
    /// scan.
    pub fn scan(&mut self, processes: &[ProcStat]) -> Members {
        let leader = processes.iter().find(|process| process.pid == self.leader);
        let leader_present =
            leader.is_some_and(|leader| self.leader_start.is_none_or(|start| start == leader.start_time));
        if let (Some(leader), None) = (leader, self.leader_start) {
            self.leader_start = Some(leader.start_time);
        }
        let mut members: HashSet<i32> = processes
            .iter()
            .filter(|process| {
                let in_group = leader_present && (process.pid == self.leader || process.process_group == self.leader);
                in_group || self.known.get(&process.pid) == Some(&process.start_time)
            })
            .map(|process| process.pid)
            .collect();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for process in processes {
            children.entry(process.parent).or_default().push(process.pid);
        }
        let mut to_visit: Vec<i32> = members.iter().copied().collect();
        while let Some(pid) = to_visit.pop() {
            for &child in children.get(&pid).into_iter().flatten() {
                if members.insert(child) {
                    to_visit.push(child);
                }
            }
        }
        let processes: Vec<ProcStat> =
            processes.iter().filter(|process| members.contains(&process.pid)).copied().collect();
        self.known = processes.iter().map(|process| (process.pid, process.start_time)).collect();
        Members { processes, leader_present }
    }

    /// Sends `signal` to the trainer's processes in `members` that have not ended: to its group at once while the
    /// trainer is there, and to each process outside the group by pid.
    fn signal(&self, proc_dir: &Path, members: &Members, signal: Signal, only_running: bool) {
        let targets =
            members.processes.iter().filter(|process| if only_running { !process.halted() } else { !process.ended() });
        let mut group_signalled = false;
        for process in targets {
            if members.leader_present && process.process_group == self.leader {
                if !group_signalled {
                    signal_group(self.leader, signal);
                    group_signalled = true;
                }
            } else {
                signal_process(proc_dir, process, signal);
            }
        }
    }
}

/// Stops every process of the trainer until a scan finds them all stopped (at most [`STOP_ROUNDS`] scans), then
/// kills them all. Returns what they held at the first scan. Blocking: it scans /proc a few times.
pub(crate) fn kill_all(tree: &mut TrainerTree, proc_dir: &Path, page_size: u64) -> std::io::Result<TrainerUsage> {
    let mut members = tree.scan(&read_processes(proc_dir)?);
    let usage = members.usage(page_size);
    for _ in 0..STOP_ROUNDS {
        if members.processes.iter().all(ProcStat::halted) {
            break;
        }
        tree.signal(proc_dir, &members, Signal::STOP, true);
        std::thread::sleep(STOP_PAUSE);
        members = tree.scan(&read_processes(proc_dir)?);
    }
    tree.signal(proc_dir, &members, Signal::KILL, false);
    Ok(usage)
}

/// Scans /proc until none of the trainer's processes is left alive, killing any found, at most `rounds` times with
/// `pause` between them; the number of processes still alive at the last scan.
pub(crate) fn kill_until_gone(tree: &mut TrainerTree, proc_dir: &Path, rounds: usize, pause: Duration) -> usize {
    let mut alive = 0;
    for round in 0..rounds {
        if round > 0 {
            std::thread::sleep(pause);
        }
        let Ok(processes) = read_processes(proc_dir) else { return alive };
        let members = tree.scan(&processes);
        alive = members.processes.iter().filter(|process| !process.ended()).count();
        if alive == 0 {
            break;
        }
        tree.signal(proc_dir, &members, Signal::KILL, false);
    }
    alive
}

/// `signal` to `process`, only if the process now at its pid is still the one scanned (the same start time).
fn signal_process(proc_dir: &Path, process: &ProcStat, signal: Signal) {
    if process.pid <= 1 || process.pid == rustix::process::getpid().as_raw_nonzero().get() {
        return;
    }
    let Some(pid) = Pid::from_raw(process.pid) else { return };
    let same_process = || {
        std::fs::read_to_string(proc_dir.join(process.pid.to_string()).join("stat"))
            .ok()
            .and_then(|line| parse_stat(&line))
            .is_some_and(|now| now.start_time == process.start_time)
    };
    // the pidfd is opened before the start time is read again: if it matches, the pidfd is that process's, and a
    // signal through it cannot reach a later process with the same pid
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => {
            if same_process() {
                let _ = rustix::process::pidfd_send_signal(&pidfd, signal);
            }
        }
        // gone
        Err(rustix::io::Errno::SRCH) => {}
        // no pidfds (a kernel before 5.3, or a seccomp filter): by pid, right after checking again
        Err(_) => {
            if same_process() {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }
}

#[cfg(test)]
#[path = "process_tree/tests.rs"]
mod tests;
