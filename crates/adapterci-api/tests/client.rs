//! The client over a real socket: a one-shot HTTP/1.1 server on 127.0.0.1 answers a canned response and
//! records the request, so each test checks the method, path, query and body sent and how the answer decodes.

#![allow(clippy::unwrap_used, reason = "the one-shot server is test code: a failure there is a broken test")]

use adapterci_api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the client sent.
#[derive(Debug)]
struct Recorded {
    request_line: String,
    headers: String,
    body: Vec<u8>,
}

/// Serves one request with `status` and `body`, and returns the server URL and the recorded request.
async fn serve_once(status: u16, body: &str) -> (String, JoinHandle<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let read = socket.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the client closed before sending a request");
            buffer.extend_from_slice(&chunk[..read]);
            if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at;
            }
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
        let content_length = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().to_string()))
            .map_or(0, |n| n.parse::<usize>().unwrap());
        let mut body = buffer[head_end + 4..].to_vec();
        while body.len() < content_length {
            let read = socket.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the client closed in the middle of the body");
            body.extend_from_slice(&chunk[..read]);
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        let (request_line, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        Recorded { request_line: request_line.to_string(), headers: headers.to_ascii_lowercase(), body }
    });
    (url, handle)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn list_runs_sends_the_query_and_decodes_the_runs() {
    let runs = format!("[{}]", fixture("run_succeeded.json"));
    let (url, server) = serve_once(200, &runs).await;
    let client = ApiClient::new(&url).unwrap();
    let query = RunListQuery { pipeline: Some("sql x".into()), limit: Some(5) };
    let got = client.list_runs(&query).await.unwrap();
    assert_eq!(server.await.unwrap().request_line, "GET /api/v1/runs?pipeline=sql+x&limit=5 HTTP/1.1");
    assert_eq!(got[0].state, RunState::Succeeded);

    let (url, server) = serve_once(200, "[]").await;
    ApiClient::new(&url).unwrap().list_runs(&RunListQuery::default()).await.unwrap();
    assert_eq!(server.await.unwrap().request_line, "GET /api/v1/runs HTTP/1.1");
}

#[tokio::test]
async fn apply_posts_json() {
    let (url, server) = serve_once(200, &fixture("apply_pipeline_response.json")).await;
    let request = ApplyPipelineRequest { file: Some("p.yaml".into()), yaml: "name: sql\n".into() };
    let got = ApiClient::new(&url).unwrap().apply_pipeline(&request).await.unwrap();
    let recorded = server.await.unwrap();
    assert_eq!(recorded.request_line, "POST /api/v1/pipelines HTTP/1.1");
    assert!(recorded.headers.contains("content-type: application/json"), "{}", recorded.headers);
    let sent: ApplyPipelineRequest = serde_json::from_slice(&recorded.body).unwrap();
    assert_eq!(sent, request);
    assert_eq!(got.outcome, Some(ApplyOutcome::Configured));
}

#[tokio::test]
async fn trigger_accepts_202() {
    let (url, server) = serve_once(202, &fixture("run_queued.json")).await;
    let run = ApiClient::new(&url).unwrap().trigger_pipeline("sql").await.unwrap();
    assert_eq!(server.await.unwrap().request_line, "POST /api/v1/pipelines/sql/trigger HTTP/1.1");
    assert_eq!(run.state, RunState::Queued);
}

#[tokio::test]
async fn dataset_push_puts_raw_bytes_under_a_nested_location() {
    let (url, server) = serve_once(200, &fixture("dataset_push_response.json")).await;
    let bytes = b"{\"prompt\":\"a\",\"completion\":\"b\"}\n".to_vec();
    let pushed = ApiClient::new(&url).unwrap().push_dataset("datasets/sql/train.jsonl", bytes.clone()).await.unwrap();
    let recorded = server.await.unwrap();
    assert_eq!(recorded.request_line, "PUT /api/v1/datasets/datasets/sql/train.jsonl HTTP/1.1");
    assert_eq!(recorded.body, bytes);
    assert_eq!(pushed.location, "datasets/sql/train.jsonl");
}

#[tokio::test]
async fn error_answers_decode_into_http_errors() {
    let (url, server) = serve_once(400, &fixture("error_invalid_pipeline.json")).await;
    let request = ApplyPipelineRequest { file: None, yaml: String::new() };
    let err = ApiClient::new(&url).unwrap().apply_pipeline(&request).await.unwrap_err();
    server.await.unwrap();
    let ApiError::Http { status, error, .. } = &err else { panic!("expected an http error, got {err:?}") };
    assert_eq!((*status, &error.code, error.details.len()), (400, &ErrorCode::InvalidPipeline, 2));

    let (url, server) = serve_once(404, &fixture("error_not_found.json")).await;
    let err = ApiClient::new(&url).unwrap().get_run("42").await.unwrap_err();
    server.await.unwrap();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn a_success_with_the_wrong_body_is_a_decode_error() {
    let (url, server) = serve_once(200, "{\"status\": 1}").await;
    let err = ApiClient::new(&url).unwrap().health().await.unwrap_err();
    server.await.unwrap();
    assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn readiness_decodes_a_503_as_not_ready_and_other_errors_as_errors() {
    let (url, handle) = serve_once(503, &fixture("readiness_not_ready.json")).await;
    let readiness = ApiClient::new(&url).unwrap().readiness().await.unwrap();
    assert!(handle.await.unwrap().request_line.starts_with("GET /readyz "));
    assert!(!readiness.ready && readiness.reason.is_some(), "{readiness:?}");

    let (url, _handle) = serve_once(200, &fixture("readiness_ready.json")).await;
    assert!(ApiClient::new(&url).unwrap().readiness().await.unwrap().ready);

    let (url, _handle) = serve_once(500, &fixture("error_not_found.json")).await;
    let err = ApiClient::new(&url).unwrap().readiness().await.unwrap_err();
    assert!(matches!(err, ApiError::Http { status: 500, .. }), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    // Bind and drop to get a port on which nothing listens.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = ApiClient::new(&url).unwrap().health().await.unwrap_err();
    let ApiError::Unreachable { server, .. } = &err else { panic!("expected unreachable, got {err:?}") };
    assert_eq!(server, &url);
    assert!(err.to_string().starts_with(&format!("adapterd is not reachable at {url}")), "{err}");
}
