//! `resources.memory` for the local process executor (Linux): the resident memory of the trainer's process
//! group, summed from /proc, sampled until it goes above the limit.
//!
//! The trainer runs in a process group of its own (its pid is the group's id), so whatever it starts is counted
//! too, unless it leaves the group (`setsid`, `setpgid`). What is counted is host memory: resident set sizes
//! (RSS), which do not include GPU memory. Pages shared between the group's processes (libraries, memory a fork
//! has not written yet) are counted once per process, so the sum can be above what the group really holds: the
//! limit errs on the side of stopping a trainer early. Both the group and the resident pages come from
//! `/proc/<pid>/stat`, one read per process and sample.

use std::path::Path;
use std::time::Duration;

use super::GroupUsage;

/// How often the group's memory is sampled: the enforcement's sampling rate, so a trainer can go above its limit
/// for at most about this long (plus the time to read /proc) before it is killed.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The fields of one `/proc/<pid>/stat` line that the limit needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub process_group: i32,
    /// Resident pages (field 24, `rss`).
    pub resident_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line; `None` when it is not one.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    // the command name (field 2) is in parentheses and may itself hold spaces and parentheses: the numeric
    // fields start after the last `)`, with the state (field 3) first
    let (head, rest) = line.rsplit_once(')')?;
    if !head.contains('(') {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let process_group = fields.nth(2)?.parse().ok()?;
    let resident_pages = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { process_group, resident_pages })
}

/// The resident memory of every process in group `process_group`, from `proc_dir` (`/proc`). Blocking: it reads
/// one file per process on the host. A process that ends between the listing and the read is skipped.
pub(crate) fn group_usage(proc_dir: &Path, process_group: i32, page_size: u64) -> std::io::Result<GroupUsage> {
    let mut usage = GroupUsage::default();
    for entry in std::fs::read_dir(proc_dir)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(stat) = parse_stat(&line) else { continue };
        if stat.process_group == process_group {
            usage.resident_bytes = usage.resident_bytes.saturating_add(stat.resident_pages.saturating_mul(page_size));
            usage.processes += 1;
        }
    }
    Ok(usage)
}

/// Samples group `process_group` every `SAMPLE_INTERVAL`, keeping the highest sample in `peak`, and returns the
/// first sample above `limit_bytes`. When /proc cannot be read it notes that the limit is no longer enforced in
/// the run's log and never returns.
pub(crate) async fn watch(
    process_group: i32,
    limit_bytes: u64,
    log_path: &Path,
    peak: &mut Option<GroupUsage>,
) -> GroupUsage {
    let page_size = rustix::param::page_size() as u64;
    let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let sample =
            tokio::task::spawn_blocking(move || group_usage(Path::new("/proc"), process_group, page_size)).await;
        let usage = match sample {
            Ok(Ok(usage)) => usage,
            Ok(Err(error)) => return stop_watching(log_path, &format!("reading /proc: {error}")).await,
            Err(error) => return stop_watching(log_path, &format!("sampling /proc: {error}")).await,
        };
        if peak.is_none_or(|peak| usage.resident_bytes > peak.resident_bytes) {
            *peak = Some(usage);
        }
        if usage.resident_bytes > limit_bytes {
            return usage;
        }
    }
}

async fn stop_watching(log_path: &Path, why: &str) -> GroupUsage {
    tracing::warn!(log = %log_path.display(), "resources.memory no longer enforced: {why}");
    super::append_log(log_path, &format!("--- resources.memory is no longer enforced: {why}")).await;
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expect: Option<(i32, u64)>) {
        let parsed = parse_stat(line).map(|stat| (stat.process_group, stat.resident_pages));
        assert_eq!(parsed, expect, "{line:?}");
    }

    const BASH: &str = "4242 (bash) S 4200 4242 4200 34816 4242 4194304 1303 4570 0 0 2 1 5 3 20 0 1 0 \
                        1146537 9035776 1280 18446744073709551615 1 1 0 0 0 0 65536 3686404 1266761467 0 0 0 17 \
                        1 0 0 0 0 0 0 0 0 0 0 0 0 0";

    #[test]
    fn parses_the_process_group_and_the_resident_pages() {
        check(BASH, Some((4242, 1280)));
        // a command name with spaces and parentheses
        check(&BASH.replace("(bash)", "(tricky) name (x))"), Some((4242, 1280)));
        check(&BASH.replace("(bash)", "()"), Some((4242, 1280)));
        // a zombie: no memory any more
        let zombie = "77 (sh) Z 1 70 70 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        check(zombie, Some((70, 0)));
    }

    #[test]
    fn refuses_what_is_not_a_stat_line() {
        check("", None);
        check(")", None);
        check("4242 bash S 4200 4242", None);
        check("4242 (bash) S 4200", None);
        check("4242 (bash) S 4200 4242 4200 34816", None);
        check(&BASH.replace(" 4200 4242 ", " 4200 group "), None);
        check(&BASH.replace(" 1280 ", " -1280 "), None);
        check(&BASH.replace(" 1280 ", " 99999999999999999999999 "), None);
        check(&BASH[..BASH.find("1280").unwrap_or(0)], None);
        check("(bash) \u{fffd} é", None);
    }

    #[test]
    fn sums_the_group_and_skips_others_and_unreadable_entries() {
        let proc_dir = tempfile::tempdir().unwrap();
        let process = |name: &str, stat: Option<&str>| {
            let dir = proc_dir.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            if let Some(stat) = stat {
                std::fs::write(dir.join("stat"), stat).unwrap();
            }
        };
        process("10", Some("10 (leader) S 1 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 100 0"));
        process("11", Some("11 (child) R 10 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 250 0"));
        process("12", Some("12 (other) S 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 9999 0"));
        process("13", None); // ended between the listing and the read
        process("14", Some("garbage"));
        process("self", Some("10 (not a pid) S 1 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 9999 0"));
        let usage = group_usage(proc_dir.path(), 10, 4096).unwrap();
        assert_eq!(usage, GroupUsage { resident_bytes: 350 * 4096, processes: 2 });
        assert_eq!(group_usage(proc_dir.path(), 99, 4096).unwrap(), GroupUsage::default());
        assert!(group_usage(&proc_dir.path().join("missing"), 10, 4096).is_err());
    }

    #[test]
    fn reads_this_process_group_from_the_real_proc() {
        let group = rustix::process::getpgrp().as_raw_nonzero().get();
        let usage = group_usage(Path::new("/proc"), group, rustix::param::page_size() as u64).unwrap();
        assert!(usage.processes >= 1 && usage.resident_bytes > 0, "{usage:?}");
    }
}
