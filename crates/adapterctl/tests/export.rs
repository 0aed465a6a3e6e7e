//! `adapterctl adapters export --merged` (the binary) against a stand-in adapterd on 127.0.0.1 that can hold a
//! download midway: a partial file left by a killed download is replaced, saying so; a second adapterctl
//! downloading to the same file while the first is at it stops without touching it, and the first finishes
//! intact; ctrl-c removes the partial file. Each test waits for adapterctl's first progress line (printed once
//! the partial file is held and written to) before it acts: no timer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed unwrap is a failed test")]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The length every merged model here has.
const LENGTH: usize = 4096;

/// One merged-model answer: `LENGTH` bytes of `byte`; with a `hold`, only the first 1000 at once and the rest once
/// the hold is released (never, when its sender is dropped first: the download is then cut short).
struct Answer {
    byte: u8,
    hold: Option<mpsc::Receiver<()>>,
}

/// Serves `support`'s versions, and each merged-model request the next of `answers`, a thread per connection.
fn stand_in(answers: Vec<Answer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let answers = answers.clone();
            std::thread::spawn(move || answer(socket.unwrap(), &answers));
        }
    });
    url
}

fn answer(mut socket: TcpStream, answers: &Mutex<VecDeque<Answer>>) {
    let mut head = Vec::new();
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let mut piece = [0u8; 1024];
        let read = socket.read(&mut piece).unwrap();
        if read == 0 {
            return;
        }
        head.extend_from_slice(&piece[..read]);
    }
    // the client may stop reading at any point: a write that fails then is not the test's failure
    if !String::from_utf8_lossy(&head).contains("/merged/") {
        let versions = serde_json::json!([{
            "name": "support",
            "version": 1,
            "manifest_digest": format!("sha256:{}", "1".repeat(64)),
            "base_model_digest": format!("sha256:{}", "2".repeat(64)),
            "created_at": "2026-01-01T00:00:00Z",
        }])
        .to_string();
        let length = versions.len();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{versions}"
        );
        let _ = socket.write_all(response.as_bytes());
        return;
    }
    let Answer { byte, hold } = answers.lock().unwrap().pop_front().expect("an answer for every download");
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {LENGTH}\r\nconnection: close\r\n\r\n"
    );
    let body = [byte; LENGTH];
    let _ = socket.write_all(head.as_bytes());
    let at_once = if hold.is_some() { 1000 } else { LENGTH };
    let _ = socket.write_all(&body[..at_once]);
    let _ = socket.flush();
    if let Some(hold) = hold {
        if hold.recv().is_err() {
            return; // never released
        }
        let _ = socket.write_all(&body[at_once..]);
    }
}

/// `adapterctl adapters export support@1 --merged --out <out>` against `server`, started.
fn export(server: &str, out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_adapterctl"))
        .args(["--server", server, "adapters", "export", "support@1", "--merged", "--out"])
        .arg(out)
        .env_remove("ADAPTERCI_SERVER")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `child`'s stderr up to its first progress line (the partial file is held and written to by then);
/// returns the reader for the rest and what came before.
fn until_progress(child: &mut Child) -> (BufReader<std::process::ChildStderr>, String) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut before = String::new();
    loop {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "adapterctl ended before any progress: {before}");
        if line.starts_with("  model.safetensors: ") {
            return (stderr, before);
        }
        before.push_str(&line);
    }
}

/// Waits for `child`; its exit code and the rest of its stderr.
fn finish(mut child: Child, mut stderr: impl Read) -> (Option<i32>, String) {
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    (child.wait().unwrap().code(), rest)
}

fn model(out: &Path) -> PathBuf {
    out.join("model.safetensors")
}

fn partial(out: &Path) -> PathBuf {
    out.join("model.safetensors.partial")
}

#[test]
fn a_partial_file_left_by_a_killed_download_is_replaced_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(partial(&out), vec![0xEE; 3 * LENGTH]).unwrap(); // longer than the model: truncated, not overwritten
    let server = stand_in(vec![Answer { byte: 7, hold: None }]);
    let child = export(&server, &out);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let note = format!("replaced {}: a leftover of a download that did not finish", partial(&out).display());
    assert!(stderr.contains(&note), "{stderr}");
    assert_eq!(std::fs::read(model(&out)).unwrap(), [7u8; LENGTH]);
    assert!(!partial(&out).exists());
}

#[test]
fn a_second_download_to_the_same_file_stops_and_leaves_the_first_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let (release, hold) = mpsc::channel();
    let server = stand_in(vec![Answer { byte: 1, hold: Some(hold) }, Answer { byte: 2, hold: None }]);
    let mut first = export(&server, &out);
    let (first_stderr, before) = until_progress(&mut first);
    assert!(!before.contains("replaced"), "a fresh partial file is no leftover: {before}");

    let second = export(&server, &out).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let refused = format!(
        "another adapterctl is downloading {} now: {} is locked",
        model(&out).display(),
        partial(&out).display()
    );
    assert!(stderr.contains(&refused), "{stderr}");
    assert!(stderr.contains("hint: wait for that download to finish"), "{stderr}");
    assert!(partial(&out).exists(), "the first download's partial file is left to it");
    assert!(!model(&out).exists(), "the second wrote nothing");

    release.send(()).unwrap();
    let (code, rest) = finish(first, first_stderr);
    assert_eq!(code, Some(0), "{rest}");
    assert_eq!(std::fs::read(model(&out)).unwrap(), [1u8; LENGTH], "the first download's bytes, whole");
    assert!(!partial(&out).exists());
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_a_download_removes_its_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let (_never_released, hold) = mpsc::channel();
    let server = stand_in(vec![Answer { byte: 3, hold: Some(hold) }]);
    let mut child = export(&server, &out);
    let (stderr, _) = until_progress(&mut child);
    assert!(partial(&out).exists());
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let (code, rest) = finish(child, stderr);
    assert_eq!(code, Some(1), "exits through its error path, not killed by the signal: {rest}");
    assert!(rest.contains("error: interrupted by ctrl-c: the download was stopped"), "{rest}");
    assert!(rest.contains("was not written; run the export again"), "{rest}");
    assert!(!partial(&out).exists(), "the partial file is removed");
    assert!(!model(&out).exists());
}
