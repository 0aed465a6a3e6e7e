//! `adapterctl adapters export` (the binary) against a stand-in adapterd on 127.0.0.1. The merged model's
//! download, which the stand-in can hold midway: a partial file left by a killed download is replaced, saying so;
//! a second adapterctl downloading to the same file while the first is at it stops without touching it, and the
//! first finishes intact; ctrl-c removes the partial file and exits 130. Each of these waits for adapterctl's first
//! progress line (printed once the partial file is held and written to) before it acts: no timer. The PEFT
//! export's folder: written as served, beside the target first; a partial folder left by a killed export is
//! replaced, saying so; one another process holds (the test locks it itself) stops the export untouched.

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

/// The PEFT files of `support@1` as the stand-in serves them.
const PEFT_FILES: [(&str, &[u8]); 2] =
    [("adapter_config.json", br#"{"peft_type": "LORA", "r": 4}"#), ("adapter_model.safetensors", &[5; 3000])];

/// One merged-model answer: `LENGTH` bytes of `byte`; with a `hold`, only the first 1000 at once and the rest once
/// the hold is released (never, when its sender is dropped first: the download is then cut short).
struct Answer {
    byte: u8,
    hold: Option<mpsc::Receiver<()>>,
}

/// Serves `support`'s versions and PEFT files, and each merged-model request the next of `answers`, a thread per
/// connection.
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
    let head = String::from_utf8_lossy(&head).into_owned();
    if let Some((_, bytes)) = PEFT_FILES.iter().find(|(name, _)| head.contains(&format!("/peft/{name} "))) {
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            bytes.len()
        );
        let _ = socket.write_all(&[response.as_bytes(), bytes].concat());
        return;
    }
    if !head.contains("/merged/") {
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
    adapterctl_export(server, out, &["--merged"])
}

/// `adapterctl adapters export support@1 --out <out>` (PEFT) against `server`, run to its end.
fn export_peft(server: &str, out: &Path) -> (Option<i32>, String) {
    let output = adapterctl_export(server, out, &[]).wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn adapterctl_export(server: &str, out: &Path, flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_adapterctl"))
        .args(["--server", server, "adapters", "export", "support@1"])
        .args(flags)
        .arg("--out")
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
    assert_eq!(code, Some(130), "exits through its error path (not killed by the signal) as shells expect: {rest}");
    assert!(rest.contains("error: interrupted by ctrl-c: the download was stopped"), "{rest}");
    assert!(rest.contains("was not written; run the export again"), "{rest}");
    assert!(!partial(&out).exists(), "the partial file is removed");
    assert!(!model(&out).exists());
}

/// Every file under `dir`, by path relative to it.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.extend(files_under(&path).into_iter().map(|(inner, bytes)| (format!("{name}/{inner}"), bytes)));
        } else {
            files.push((name, std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

/// The PEFT files as served, with `others` (already sorted among them).
fn served_with(others: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> =
        PEFT_FILES.iter().chain(others).map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect();
    files.sort();
    files
}

fn partial_folder(out: &Path) -> PathBuf {
    out.with_file_name(format!("{}.partial", out.file_name().unwrap().to_string_lossy()))
}

#[test]
fn a_peft_export_writes_the_files_as_served_and_keeps_the_others_of_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = stand_in(Vec::new());
    let out = dir.path().join("exports").join("support-v1");
    let (code, stderr) = export_peft(&server, &out);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(files_under(&out), served_with(&[]));
    assert_eq!(files_under(&dir.path().join("exports")).len(), 2, "no partial folder beside it");

    std::fs::write(out.join("README.md"), b"notes").unwrap();
    std::fs::write(out.join("adapter_model.safetensors"), b"weights of before").unwrap();
    let (code, stderr) = export_peft(&server, &out);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(files_under(&out), served_with(&[("README.md", b"notes")]));
    assert!(!partial_folder(&out).exists());
}

#[test]
fn a_partial_folder_left_by_a_killed_export_is_replaced_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("support-v1");
    let partial = partial_folder(&out);
    std::fs::create_dir_all(partial.join("nested")).unwrap();
    std::fs::write(partial.join("adapter_config.json"), b"{\"r\": 2}").unwrap();
    std::fs::write(partial.join("nested/stray"), b"stray").unwrap();
    let (code, stderr) = export_peft(&stand_in(Vec::new()), &out);
    assert_eq!(code, Some(0), "{stderr}");
    let note = format!("replaced {}: a leftover of an export that did not finish", partial.display());
    assert!(stderr.contains(&note), "{stderr}");
    assert_eq!(files_under(&out), served_with(&[]), "only what this export wrote");
    assert!(!partial.exists());
}

#[test]
fn a_peft_export_stops_untouched_while_another_process_holds_its_partial_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("support-v1");
    let partial = partial_folder(&out);
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("adapter_config.json"), b"being written").unwrap();
    // the lock another adapterctl exporting to `out` holds on its partial folder
    let held = std::fs::File::open(&partial).unwrap();
    held.try_lock().unwrap();

    let (code, stderr) = export_peft(&stand_in(Vec::new()), &out);
    assert_eq!(code, Some(1), "{stderr}");
    let refused = format!("another adapterctl is exporting {} now: {} is locked", out.display(), partial.display());
    assert!(stderr.contains(&refused), "{stderr}");
    assert!(stderr.contains("hint: wait for that export to finish, or stop it"), "{stderr}");
    assert!(!out.exists(), "nothing was exported");
    assert_eq!(files_under(&partial), [("adapter_config.json".to_string(), b"being written".to_vec())]);
}
