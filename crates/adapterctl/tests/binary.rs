//! The adapterctl binary end to end against a scripted HTTP/1.1 server on 127.0.0.1: each test lists the answers
//! the server gives, in order, and checks what adapterctl sent, printed on stdout and stderr, and its exit code.
//! (adapterd itself runs adapterctl against a real server in its own end-to-end tests.)

#![allow(clippy::unwrap_used, reason = "the scripted server is test code: a failure there is a broken test")]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::thread::JoinHandle;

/// A request as the scripted server received it.
#[derive(Debug)]
struct Request {
    line: String,
    body: Vec<u8>,
}

/// Serves `answers` (status, JSON body) one connection each, then stops; returns the URL and the requests.
fn scripted_server(answers: Vec<(u16, String)>) -> (String, JoinHandle<Vec<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for (status, body) in answers {
            let (mut socket, _) = listener.accept().unwrap();
            requests.push(read_request(&mut socket));
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            socket.write_all(head.as_bytes()).unwrap();
            socket.write_all(body.as_bytes()).unwrap();
        }
        requests
    });
    (url, handle)
}

fn read_request(socket: &mut std::net::TcpStream) -> Request {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = socket.read(&mut chunk).unwrap();
        assert!(read > 0, "the client closed before sending a request");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0usize);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = socket.read(&mut chunk).unwrap();
        assert!(read > 0, "the client closed in the middle of the body");
        body.extend_from_slice(&chunk[..read]);
    }
    Request { line: head.lines().next().unwrap_or_default().to_string(), body }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../adapterci-api/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Runs adapterctl against `server` with a clean environment for the variables it reads.
fn adapterctl(server: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_adapterctl"))
        .args(["--server", server])
        .args(args)
        .env_remove("ADAPTERCI_SERVER")
        .env("NO_COLOR", "1")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A URL on which nothing listens.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[test]
fn an_unreachable_server_is_an_error_with_a_hint() {
    let server = closed_port();
    let output = adapterctl(&server, &["get", "pipelines"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.starts_with(&format!("error: adapterd is not reachable at {server}")), "{err}");
    assert!(err.contains("\nhint: start adapterd, or point --server (or ADAPTERCI_SERVER)"), "{err}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn the_server_comes_from_the_environment_without_server_flag() {
    let server = closed_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_adapterctl"))
        .args(["models"])
        .env("ADAPTERCI_SERVER", &server)
        .output()
        .unwrap();
    assert!(stderr(&output).contains(&format!("not reachable at {server}")), "{}", stderr(&output));
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let output = adapterctl("http://127.0.0.1:1", &["get", "runs", "--limit", "x"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = adapterctl("http://127.0.0.1:1", &["--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("Usage: adapterctl"));
    let output = adapterctl("not a url", &["models"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn not_found_exits_4_with_a_hint() {
    let (server, requests) = scripted_server(vec![(404, fixture("error_not_found.json"))]);
    let output = adapterctl(&server, &["describe", "run", "42"]);
    assert_eq!(requests.join().unwrap()[0].line, "GET /api/v1/runs/42 HTTP/1.1");
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(stderr(&output), "error: run 42 not found\nhint: list the runs with `adapterctl get runs`\n");
}

#[test]
fn get_runs_as_json_is_the_api_data() {
    let runs = format!("[{}, {}]", fixture("run_succeeded.json"), fixture("run_failed.json"));
    let (server, requests) = scripted_server(vec![(200, runs.clone())]);
    let output = adapterctl(&server, &["get", "runs", "--pipeline", "sql", "--limit", "2", "-o", "json"]);
    assert_eq!(requests.join().unwrap()[0].line, "GET /api/v1/runs?pipeline=sql&limit=2 HTTP/1.1");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(printed, serde_json::from_str::<serde_json::Value>(&runs).unwrap());
}

#[test]
fn get_adapters_as_yaml() {
    let (server, _) = scripted_server(vec![(200, fixture("adapters.json"))]);
    let output = adapterctl(&server, &["get", "adapters", "-o", "yaml"]);
    let printed: serde_json::Value = serde_yaml::from_str(&stdout(&output)).unwrap();
    assert_eq!(printed[0]["served_version"], 2);
    assert_eq!(printed[1]["name"], "summarize");
}

#[test]
fn trigger_wait_follows_the_run_and_exits_3_when_a_gate_rejects() {
    let mut running = fixture_json("run_running.json");
    running["report"]["messages"] = serde_json::json!(["loaded base model", "training"]);
    let mut rejected = fixture_json("run_succeeded.json");
    rejected["state"] = "rejected".into();
    rejected["stage"] = "eval".into();
    rejected.as_object_mut().unwrap().remove("published");
    rejected["report"]["gates"]["passed"] = false.into();
    rejected["report"]["gates"]["results"][0]["passed"] = false.into();
    let (server, requests) = scripted_server(vec![
        (202, fixture("run_queued.json")),
        (200, running.to_string()),
        (200, rejected.to_string()),
    ]);
    let output = adapterctl(&server, &["trigger", "sql", "--wait"]);
    let lines: Vec<String> = requests.join().unwrap().into_iter().map(|request| request.line).collect();
    let id = "0192f3a4-5b6c-7d8e-9f00-112233445566";
    assert_eq!(
        lines,
        [
            "POST /api/v1/pipelines/sql/trigger HTTP/1.1".to_string(),
            format!("GET /api/v1/runs/{id} HTTP/1.1"),
            format!("GET /api/v1/runs/{id} HTTP/1.1"),
        ]
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    for expect in [
        format!("run {id}: queued\n"),
        format!("run {id}: running (train)\n  loaded base model\n  training\n  step 2/40 (5%)"),
        format!("run {id}: rejected\n"),
        "a gate rejected the adapter; nothing was published".to_string(),
    ] {
        assert!(err.contains(&expect), "expected {expect:?} in stderr:\n{err}");
    }
    let out = stdout(&output);
    assert!(out.contains("State:     rejected") && out.contains("Gates: FAILED"), "{out}");
    assert!(out.contains("FAIL     exact_match"), "{out}");
}

#[test]
fn runs_wait_on_a_failed_run_exits_1_after_describing_it() {
    let (server, _) = scripted_server(vec![(200, fixture("run_failed.json"))]);
    let output = adapterctl(&server, &["runs", "wait", "0192f3a4-0000-7000-8000-000000000001"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("Error:     invalid training input"), "{}", stdout(&output));
}

#[test]
fn trigger_without_wait_prints_the_run_and_how_to_follow_it() {
    let (server, _) = scripted_server(vec![(202, fixture("run_queued.json"))]);
    let output = adapterctl(&server, &["trigger", "sql"]);
    assert_eq!(output.status.code(), Some(0));
    let id = "0192f3a4-5b6c-7d8e-9f00-112233445566";
    assert_eq!(stdout(&output), format!("run {id} queued (pipeline sql revision 1)\n"));
    assert_eq!(stderr(&output), format!("follow it with `adapterctl runs wait {id}`\n"));
}

#[test]
fn apply_validates_locally_before_any_request() {
    let output = adapterctl(&closed_port(), &["apply", "-f", "pipelines/invalid/bad-rank.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.starts_with("error: pipelines/invalid/bad-rank.yaml is not a valid pipeline"), "{err}");
    assert!(err.contains("\n  pipelines/invalid/bad-rank.yaml:"), "every problem with its place: {err}");
    assert!(!err.contains("not reachable"), "{err}");
    let output = adapterctl(&closed_port(), &["apply", "-f", "pipelines/missing.yaml"]);
    assert!(stderr(&output).starts_with("error: cannot read the pipeline file pipelines/missing.yaml"));
}

#[test]
fn apply_creates_and_reports_the_outcome() {
    let mut applied = fixture_json("apply_pipeline_response.json");
    applied.as_object_mut().unwrap().remove("outcome");
    let (server, requests) = scripted_server(vec![(404, fixture("error_not_found.json")), (200, applied.to_string())]);
    let output = adapterctl(&server, &["apply", "-f", "pipelines/ticket-format.yaml"]);
    let requests = requests.join().unwrap();
    assert_eq!(requests[1].line, "POST /api/v1/pipelines HTTP/1.1");
    let sent: adapterci_api::ApplyPipelineRequest = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(sent.file.as_deref(), Some("pipelines/ticket-format.yaml"));
    assert_eq!(sent.yaml, std::fs::read_to_string("../../pipelines/ticket-format.yaml").unwrap());
    assert!(requests[0].line.starts_with("GET /api/v1/pipelines/"), "{}", requests[0].line);
    assert_eq!(stdout(&output), "pipeline/sql revision 2 created\n", "{}", stderr(&output));
}

#[test]
fn apply_shows_the_servers_problems_with_the_file_name() {
    let (server, _) =
        scripted_server(vec![(404, fixture("error_not_found.json")), (400, fixture("error_invalid_pipeline.json"))]);
    let output = adapterctl(&server, &["apply", "-f", "pipelines/ticket-format.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: pipelines/sql.yaml: 2 problems\n\
         \x20 pipelines/ticket-format.yaml:4:3: train.learning_rate: must be greater than 0\n\
         \x20 pipelines/ticket-format.yaml: dataset: missing field location\n"
    );
}

#[test]
fn generate_chats_by_default_and_completes_with_raw() {
    let (server, requests) = scripted_server(vec![(200, fixture("chat_completion_response.json"))]);
    let output = adapterctl(&server, &["generate", "--max-tokens", "5", "hi there"]);
    let request = &requests.join().unwrap()[0];
    assert_eq!(request.line, "POST /v1/chat/completions HTTP/1.1");
    let sent: adapterci_api::ChatCompletionRequest = serde_json::from_slice(&request.body).unwrap();
    assert_eq!((sent.model.as_str(), sent.max_tokens), ("base", 5));
    assert_eq!(sent.messages, [adapterci_api::ChatMessage::user("hi there")]);
    assert_eq!(stdout(&output), "Hello!\n");
    assert_eq!(stderr(&output), "base (sha256:2cf24dba5fb0) · ttft 30.0 ms · 95.5 tok/s · 64 tokens · length\n");

    let (server, requests) = scripted_server(vec![(200, fixture("completion_response.json"))]);
    let output = adapterctl(&server, &["generate", "--raw", "--adapter", "sql-adapter", "--seed", "9", "count users"]);
    let request = &requests.join().unwrap()[0];
    assert_eq!(request.line, "POST /v1/completions HTTP/1.1");
    let sent: adapterci_api::CompletionRequest = serde_json::from_slice(&request.body).unwrap();
    assert_eq!((sent.model.as_str(), sent.prompt.as_str(), sent.seed), ("sql-adapter", "count users", Some(9)));
    assert_eq!(stdout(&output), " SELECT COUNT(*) FROM users;\n");
    assert!(stderr(&output).starts_with("sql-adapter version 3 (sha256:e3b0c44298fc) · ttft 12.5 ms"));
}

#[test]
fn dataset_push_puts_the_file() {
    let (server, requests) = scripted_server(vec![(200, fixture("dataset_push_response.json"))]);
    let output = adapterctl(&server, &["dataset", "push", "Cargo.toml", "--location", "datasets/sql/train.jsonl"]);
    let request = &requests.join().unwrap()[0];
    assert_eq!(request.line, "PUT /api/v1/datasets/datasets/sql/train.jsonl HTTP/1.1");
    assert_eq!(request.body, std::fs::read("../../Cargo.toml").unwrap());
    assert!(stdout(&output).contains("size:      18231 bytes"), "{}", stdout(&output));
}

#[test]
fn dataset_push_of_a_missing_file_names_it_and_sends_nothing() {
    let output = adapterctl(&closed_port(), &["dataset", "push", "missing.jsonl", "--location", "datasets/x.jsonl"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.starts_with("error: cannot read the dataset file missing.jsonl"), "{err}");
}

#[test]
fn describe_adapter_resolves_the_latest_version_and_marks_the_served_one() {
    let manifest =
        r#"{"schema_version": 1, "name": "sql-adapter", "adapter": {"rank": 8}, "lineage": {"code_version": "0.1.0"}}"#;
    let (server, requests) = scripted_server(vec![
        (200, fixture("adapter_versions.json")),
        (200, manifest.to_string()),
        (200, fixture("adapters.json")),
    ]);
    let output = adapterctl(&server, &["describe", "adapter", "sql-adapter"]);
    let lines: Vec<String> = requests.join().unwrap().into_iter().map(|request| request.line).collect();
    assert_eq!(lines[1], "GET /api/v1/adapters/sql-adapter/versions/3 HTTP/1.1");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("Version:   3 (latest, version 2 is served)"), "{out}");
    assert!(out.contains("rank:  8"), "{out}");
}

#[test]
fn describe_adapter_at_a_missing_version_exits_4_and_lists_the_versions() {
    let (server, _) = scripted_server(vec![(200, fixture("adapter_versions.json"))]);
    let output = adapterctl(&server, &["describe", "adapter", "sql-adapter@7"]);
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(stderr(&output), "error: adapter sql-adapter has no version 7\nhint: its versions are: 3, 1\n");
}

#[test]
fn runs_logs_prints_the_log_and_follows_it_until_the_run_ends() {
    let chunk = |text: &str, next: u64, complete: bool| {
        serde_json::json!({"text": text, "next_offset": next, "complete": complete}).to_string()
    };
    let (server, requests) = scripted_server(vec![(200, chunk("step 1\n", 7, false))]);
    let output = adapterctl(&server, &["runs", "logs", "r1"]);
    assert_eq!(requests.join().unwrap()[0].line, "GET /api/v1/runs/r1/logs?offset=0 HTTP/1.1");
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), "step 1\n"), "{}", stderr(&output));

    let (server, requests) = scripted_server(vec![
        (200, chunk("step 1\n", 7, false)),
        (200, chunk("", 7, false)),
        (200, chunk("adapter written\n", 23, true)),
    ]);
    let output = adapterctl(&server, &["runs", "logs", "r1", "-f"]);
    let lines: Vec<String> = requests.join().unwrap().into_iter().map(|request| request.line).collect();
    assert_eq!(
        lines,
        [
            "GET /api/v1/runs/r1/logs?offset=0 HTTP/1.1",
            "GET /api/v1/runs/r1/logs?offset=7 HTTP/1.1",
            "GET /api/v1/runs/r1/logs?offset=7 HTTP/1.1"
        ]
    );
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), "step 1\nadapter written\n"));

    // `adapterctl logs` is the same command
    let (server, requests) = scripted_server(vec![(200, chunk("step 1\n", 7, true))]);
    let output = adapterctl(&server, &["logs", "-f", "r1"]);
    assert_eq!(requests.join().unwrap()[0].line, "GET /api/v1/runs/r1/logs?offset=0 HTTP/1.1");
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(0), "step 1\n"), "{}", stderr(&output));

    let (server, _) = scripted_server(vec![(404, fixture("error_not_found.json"))]);
    let output = adapterctl(&server, &["runs", "logs", "42"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("hint: list the runs"), "{}", stderr(&output));
}
