//! The /proc stat parser on real and awkward lines, the trainer's processes found from fake /proc trees (group,
//! escaped descendants, reparented members, reused pids, entries that vanish or cannot be read), and killing a
//! real process tree with a member that left the group.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

/// `(pid, state, parent, group, start time, resident pages)` of a stat line.
type Fields = (i32, char, i32, i32, u64, u64);

fn check(line: &str, expect: Option<Fields>) {
    let parsed = parse_stat(line)
        .map(|stat| (stat.pid, stat.state, stat.parent, stat.process_group, stat.start_time, stat.resident_pages));
    assert_eq!(parsed, expect, "{line:?}");
}

const BASH: &str = "4242 (bash) S 4200 4242 4200 34816 4242 4194304 1303 4570 0 0 2 1 5 3 20 0 1 0 \
                    1146537 9035776 1280 18446744073709551615 1 1 0 0 0 0 65536 3686404 1266761467 0 0 0 17 \
                    1 0 0 0 0 0 0 0 0 0 0 0 0 0";

#[test]
fn parses_the_fields_that_tracking_needs() {
    check(BASH, Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    // command names with spaces and parentheses: the fields start after the last `)`
    check(&BASH.replace("(bash)", "(tricky) name (x))"), Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    check(&BASH.replace("(bash)", "(a) S 1 2 3 4)"), Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    check(&BASH.replace("(bash)", "(x (y)"), Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    check(&BASH.replace("(bash)", "()"), Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    check(&BASH.replace("(bash)", "(two  spaces )"), Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    // the trailing newline the kernel writes
    check(&format!("{BASH}\n"), Some((4242, 'S', 4200, 4242, 1146537, 1280)));
    // a zombie: no memory any more
    let zombie = "77 (sh) Z 1 70 70 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 18446744073709551615 0 0 0 0 0 0 \
                  0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
    check(zombie, Some((77, 'Z', 1, 70, 5, 0)));
    // a kernel thread: parent 0 (kthreadd's)
    check(
        "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0 18446744073709551615",
        Some((2, 'S', 0, 0, 3, 0)),
    );
}

#[test]
fn refuses_what_is_not_a_stat_line() {
    check("", None);
    check(")", None);
    check("()", None);
    check("4242 bash S 4200 4242", None);
    check("4242 (bash) S 4200", None);
    check("4242 (bash) S 4200 4242 4200 34816", None);
    check(&BASH.replace("4242 (bash)", "(bash)"), None);
    check(&BASH.replace("4242 (bash)", "pid (bash)"), None);
    check(&BASH.replace("(bash) S", "(bash) SS"), None);
    check(&BASH.replace(" 4200 4242 ", " 4200 group "), None);
    check(&BASH.replace(" 1146537 ", " -5 "), None);
    check(&BASH.replace(" 1280 ", " -1280 "), None);
    check(&BASH.replace(" 1280 ", " 99999999999999999999999 "), None);
    // cut off before the resident pages, as a read racing the process's end could be
    check(&BASH[..BASH.find(" 1280").unwrap()], None);
    check("(bash) \u{fffd} é", None);
}

/// A fake stat line: `pid (name) state parent group ...` with `start` and `pages`.
fn stat(pid: i32, state: char, parent: i32, group: i32, start: u64, pages: u64) -> String {
    format!("{pid} (p {pid}) {state} {parent} {group} {group} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 {pages} 0")
}

fn process(pid: i32, state: char, parent: i32, group: i32, start: u64, pages: u64) -> ProcStat {
    parse_stat(&stat(pid, state, parent, group, start, pages)).unwrap()
}

fn pids(members: &Members) -> Vec<i32> {
    let mut pids: Vec<i32> = members.processes.iter().map(|process| process.pid).collect();
    pids.sort_unstable();
    pids
}

#[test]
fn finds_the_group_and_every_descendant_outside_it() {
    let host = [
        process(1, 'S', 0, 1, 1, 10),
        process(10, 'S', 1, 10, 100, 100),   // the trainer
        process(11, 'R', 10, 10, 101, 250),  // in its group
        process(12, 'S', 11, 12, 102, 1000), // left the group (setsid)
        process(13, 'S', 12, 12, 103, 2000), // its child, in its new session
        process(14, 'S', 13, 14, 104, 3000), // and a grandchild that left that group too
        process(15, 'Z', 10, 10, 105, 0),    // a zombie of the group: not counted
        process(20, 'S', 1, 20, 200, 9999),  // another process
        process(21, 'S', 20, 10, 201, 9999), // not the trainer's child, but it joined its group
    ];
    let mut tree = TrainerTree::new(10);
    let members = tree.scan(&host);
    assert!(members.leader_present);
    assert_eq!(pids(&members), [10, 11, 12, 13, 14, 15, 21]);
    assert_eq!(
        members.usage(4096),
        TrainerUsage { resident_bytes: (100 + 250 + 1000 + 2000 + 3000 + 9999) * 4096, processes: 6 }
    );
    // another tree: 20 and its child (which joined 10's group, so is in both)
    assert_eq!(pids(&TrainerTree::new(20).scan(&host)), [20, 21]);
    assert!(TrainerTree::new(99).scan(&host).processes.is_empty());
}

#[test]
fn a_member_stays_one_when_its_parent_ends_but_not_a_reused_pid() {
    let mut tree = TrainerTree::new(10);
    let first = [
        process(10, 'S', 1, 10, 100, 100),
        process(11, 'S', 10, 10, 101, 100),
        process(12, 'S', 11, 12, 102, 1000), // left the group
    ];
    assert_eq!(pids(&tree.scan(&first)), [10, 11, 12]);
    // 11 ended: 12 is init's now, and its new child too
    let second =
        [process(10, 'S', 1, 10, 100, 100), process(12, 'S', 1, 12, 102, 1000), process(16, 'S', 12, 12, 106, 500)];
    assert_eq!(pids(&tree.scan(&second)), [10, 12, 16]);
    // 12 ended and its pid went to another process; 16 is still tracked
    let third =
        [process(10, 'S', 1, 10, 100, 100), process(12, 'S', 1, 12, 300, 7777), process(16, 'S', 1, 12, 106, 500)];
    assert_eq!(pids(&tree.scan(&third)), [10, 16]);
    // a process that left the group and was reparented before any scan saw it: not the trainer's (the documented
    // limit: a double-forked daemon)
    let fourth = [process(10, 'S', 1, 10, 100, 100), process(30, 'S', 1, 30, 301, 5000)];
    assert_eq!(pids(&tree.scan(&fourth)), [10]);
}

#[test]
fn the_group_is_the_trainers_only_while_the_trainer_is_there() {
    let mut tree = TrainerTree::new(10);
    let first = [process(10, 'S', 1, 10, 100, 100), process(11, 'S', 10, 10, 101, 100)];
    assert_eq!(pids(&tree.scan(&first)), [10, 11]);
    // the trainer was reaped and its pid reused by a process leading a group of its own: not the trainer's, nor
    // is its group (11 still is, by its start time)
    let reused =
        [process(10, 'S', 1, 10, 500, 100), process(11, 'S', 1, 10, 101, 100), process(40, 'S', 10, 10, 501, 100)];
    let members = tree.scan(&reused);
    assert!(!members.leader_present);
    assert_eq!(pids(&members), [11]);
    // a zombie trainer still holds its pid: its group is its own
    let mut tree = TrainerTree::new(10);
    let zombie = [process(10, 'Z', 1, 10, 100, 0), process(11, 'S', 1, 10, 101, 100)];
    let members = tree.scan(&zombie);
    assert!(members.leader_present);
    assert_eq!(members.usage(1), TrainerUsage { resident_bytes: 100, processes: 1 });
}

#[test]
fn reads_a_proc_folder_skipping_what_vanished_or_is_unreadable() {
    let proc_dir = tempfile::tempdir().unwrap();
    let entry = |name: &str, stat: Option<&str>| {
        let dir = proc_dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        if let Some(stat) = stat {
            std::fs::write(dir.join("stat"), stat).unwrap();
        }
    };
    entry("10", Some(&stat(10, 'S', 1, 10, 100, 100)));
    entry("11", Some(&stat(11, 'R', 10, 10, 101, 250)));
    entry("13", None); // ended between the listing and the read
    entry("14", Some("garbage"));
    entry("15", Some(""));
    std::fs::create_dir_all(proc_dir.path().join("16/stat")).unwrap(); // not readable as a file
    entry("self", Some(&stat(10, 'S', 1, 10, 100, 9999)));
    let mut processes = read_processes(proc_dir.path()).unwrap();
    processes.sort_by_key(|process| process.pid);
    assert_eq!(processes, [process(10, 'S', 1, 10, 100, 100), process(11, 'R', 10, 10, 101, 250)]);
    assert!(read_processes(&proc_dir.path().join("missing")).is_err());
}

#[test]
fn reads_this_process_from_the_real_proc() {
    let processes = read_processes(Path::new("/proc")).unwrap();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let this = processes.iter().find(|process| process.pid == me).unwrap();
    assert_eq!(this.process_group, rustix::process::getpgrp().as_raw_nonzero().get());
    assert!(this.resident_pages > 0 && this.start_time > 0, "{this:?}");
}

/// The pid in file `path` once it is written whole (a line ending in a newline).
fn wait_for_pid(path: &Path, child: &mut std::process::Child) -> i32 {
    let started = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(line) = text.strip_suffix('\n')
        {
            return line.trim().parse().unwrap();
        }
        assert!(child.try_wait().unwrap().is_none(), "the test's shell ended early");
        assert!(started.elapsed() < Duration::from_secs(120), "gave up waiting for {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kills_a_real_tree_with_a_process_that_left_the_group() {
    let dir = tempfile::tempdir().unwrap();
    // a shell leading a group of its own starts a child that leaves the group (util-linux `setsid`, which calls
    // setsid() itself when its caller, in a background job, leads no group), and that child a child of its own
    let escaped = dir.path().join("escaped.pid");
    let grandchild = dir.path().join("grandchild.pid");
    let script = "setsid /bin/sh -c 'sleep 600 & echo $! > \"$1\"; echo $$ > \"$2\"; wait' sh \"$1\" \"$2\" & wait";
    let mut shell = std::process::Command::new("/bin/sh");
    shell.args(["-c", script, "sh"]).arg(&grandchild).arg(&escaped);
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    let mut shell = shell.spawn().unwrap();
    let leader = i32::try_from(shell.id()).unwrap();
    let escaped = wait_for_pid(&escaped, &mut shell);
    let grandchild = wait_for_pid(&grandchild, &mut shell);
    let mut tree = TrainerTree::new(leader);
    let members = tree.scan(&read_processes(Path::new("/proc")).unwrap());
    let found = pids(&members);
    assert!(found.contains(&leader) && found.contains(&escaped) && found.contains(&grandchild), "{found:?}");
    let started: Vec<ProcStat> =
        members.processes.iter().filter(|process| [escaped, grandchild].contains(&process.pid)).copied().collect();
    assert!(started.iter().all(|process| process.process_group == escaped), "they left the group: {started:?}");

    let usage = kill_all(&mut tree, Path::new("/proc"), 4096).unwrap();
    assert!(usage.processes >= 3, "{usage:?}");
    // bounded: a failing test ends after 6000 rounds of 20 ms
    let left = kill_until_gone(&mut tree, Path::new("/proc"), 6000, Duration::from_millis(20));
    assert_eq!(left, 0, "every process of the tree ended");
    // the shell is this test's child, reaped here
    assert!(shell.wait().unwrap().code().is_none(), "the shell was killed");
    for process in started {
        let now =
            std::fs::read_to_string(format!("/proc/{}/stat", process.pid)).ok().and_then(|line| parse_stat(&line));
        let same_and_alive = now.is_some_and(|now| now.start_time == process.start_time && !now.ended());
        assert!(!same_and_alive, "{process:?} survives as {now:?}");
    }
}
