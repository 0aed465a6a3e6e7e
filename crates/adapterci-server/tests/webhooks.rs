//! Webhook deliveries over real HTTP to a started adapterd on the embedded defaults (SQLite, local files):
//! GitHub, Hugging Face Hub, S3 and generic HMAC deliveries queue runs; a redelivery queues nothing; a burst of
//! deliveries joins one run; bad credentials get 401, oversized bodies 413, unknown webhooks 404; and a queued
//! run is cancelled through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use adapterci_api::{ApiClient, ApplyPipelineRequest, RunListQuery, RunState, WebhookResponse};
use adapterci_controller::webhooks::sign_sha256;
use adapterci_server::{RunningServer, ServerConfig};

const PIPELINE: &str = "version: v1
name: hooked
base:
  model: tiny
dataset:
  location: datasets/hooked/train.jsonl
triggers:
  - kind: webhook
    secret: gh
    format: github
  - kind: webhook
    secret: hub
    format: huggingface
  - kind: webhook
    secret: bucket
    format: s3
  - kind: webhook
    secret: generic
  - kind: manual
publish:
  adapter: hooked
";

async fn start(dir: &Path) -> RunningServer {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).expect("tiny model written");
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.tick_ms = 0; // no loop: queued runs stay queued, so the test sees exactly what deliveries queued
    config.refresh_secs = 0;
    config.no_worker = true;
    let server = adapterci_server::start(config).await.expect("adapterd starts");
    for (name, secret) in [("gh", "gh-secret"), ("hub", "hub-secret"), ("bucket", "bucket-token"), ("generic", "g")] {
        server.state.controller.set_webhook_secret(name, secret.as_bytes());
    }
    let client = ApiClient::new(&server.url()).unwrap();
    let request = ApplyPipelineRequest { file: None, yaml: PIPELINE.to_string() };
    client.apply_pipeline(&request).await.expect("pipeline applied");
    server
}

struct Answer {
    status: u16,
    body: serde_json::Value,
}

impl Answer {
    fn response(&self) -> WebhookResponse {
        serde_json::from_value(self.body.clone()).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }
}

async fn deliver(server: &RunningServer, name: &str, headers: &[(&str, String)], body: impl Into<Vec<u8>>) -> Answer {
    let mut request = reqwest::Client::new().post(format!("{}/api/v1/webhooks/{name}", server.url())).body(body.into());
    for (header, value) in headers {
        request = request.header(*header, value);
    }
    let response = request.send().await.expect("adapterd answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Answer { status, body }
}

fn github_headers(secret: &str, delivery: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Hub-Signature-256", sign_sha256(secret.as_bytes(), &[body.as_bytes()])),
        ("X-GitHub-Delivery", delivery.to_string()),
        ("X-GitHub-Event", "push".to_string()),
    ]
}

async fn run_count(server: &RunningServer) -> usize {
    let client = ApiClient::new(&server.url()).unwrap();
    client.list_runs(&RunListQuery::default()).await.unwrap().len()
}

const PUSH: &str = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/data"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_delivery_twice_queues_one_run_and_a_bad_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    let first = deliver(&server, "gh", &github_headers("gh-secret", "d-1", PUSH), PUSH).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let first = first.response();
    assert_eq!((first.delivery_id.as_str(), first.duplicate, first.runs.len()), ("d-1", false, 1));
    assert_eq!(first.runs[0].trigger_kind(), "webhook");

    let again = deliver(&server, "gh", &github_headers("gh-secret", "d-1", PUSH), PUSH).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.response().duplicate);
    assert!(again.response().runs.is_empty());

    let forged = deliver(&server, "gh", &github_headers("wrong-secret", "d-2", PUSH), PUSH).await;
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert_eq!(forged.body["error"]["code"], "unauthorized");
    assert_eq!(forged.body["error"]["message"], "unauthorized: signature mismatch");
    let tampered = deliver(&server, "gh", &github_headers("gh-secret", "d-3", PUSH), PUSH.replace("main", "x")).await;
    assert_eq!(tampered.status, 401, "the signature covers the raw body");
    assert_eq!(run_count(&server).await, 1, "one run for the delivery sent twice, none for the refused ones");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_s3_and_generic_deliveries_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    let hub = r#"{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"dataset","name":"acme/t",
        "headSha":"abc"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":"000","newSha":"abc"}]}"#;
    let answer = deliver(&server, "hub", &[("X-Webhook-Secret", "hub-secret".to_string())], hub).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let hub_run = answer.response().runs[0].id.clone();
    let answer = deliver(&server, "hub", &[("X-Webhook-Secret", "hub-secrex".to_string())], hub).await;
    assert_eq!(answer.status, 401, "{}", answer.body);

    let now = chrono::Utc::now().to_rfc3339();
    let s3 = |key: &str| {
        format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","eventTime":"{now}","s3":{{"bucket":{{"name":"data"}},
            "object":{{"key":"{key}","sequencer":"{key}"}}}}}}]}}"#
        )
    };
    let bearer = [("Authorization", "Bearer bucket-token".to_string())];
    let answer = deliver(&server, "bucket", &bearer, s3("datasets/hooked/train%2Ejsonl")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.response().runs[0].id, hub_run, "inside the debounce window: joins the queued run");
    let answer = deliver(&server, "bucket", &bearer, s3("datasets/other/train.jsonl")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.response().ignored.is_some(), "a key no pipeline watches queues nothing");

    let body = r#"{"keys":["datasets/hooked/train.jsonl"]}"#;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = sign_sha256(b"g", &[timestamp.as_bytes(), b".", body.as_bytes()]);
    let headers = [
        ("X-Adapterci-Timestamp", timestamp.clone()),
        ("X-Adapterci-Signature", signature),
        ("X-Adapterci-Delivery", "g-1".to_string()),
    ];
    assert_eq!(deliver(&server, "generic", &headers, body).await.status, 202);
    let stale = (chrono::Utc::now().timestamp() - 3600).to_string();
    let stale_headers = [
        ("X-Adapterci-Timestamp", stale.clone()),
        ("X-Adapterci-Signature", sign_sha256(b"g", &[stale.as_bytes(), b".", body.as_bytes()])),
        ("X-Adapterci-Delivery", "g-2".to_string()),
    ];
    let answer = deliver(&server, "generic", &stale_headers, body).await;
    assert_eq!(answer.status, 401, "a replayed delivery outside the window: {}", answer.body);

    let oversized = vec![b' '; (1 << 20) + 1];
    let answer = deliver(&server, "gh", &github_headers("gh-secret", "big", ""), oversized).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "payload_too_large");
    assert_eq!(deliver(&server, "nobody", &[], "{}").await.status, 404);

    assert_eq!(run_count(&server).await, 1, "every accepted delivery joined the one queued run");
    let client = ApiClient::new(&server.url()).unwrap();
    let cancelled = client.cancel_run(&hub_run).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert_eq!(client.get_run(&hub_run).await.unwrap().state, RunState::Cancelled);
    let missing = client.cancel_run("no-such-run").await.unwrap_err();
    assert!(missing.to_string().contains("no-such-run"), "{missing}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_deliveries_inside_the_debounce_window_queue_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut run_ids = Vec::new();
    for n in 0..20 {
        let answer = deliver(&server, "gh", &github_headers("gh-secret", &format!("burst-{n}"), PUSH), PUSH).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        run_ids.push(answer.response().runs[0].id.clone());
    }
    run_ids.dedup();
    assert_eq!(run_ids.len(), 1, "20 uploads announced inside the window: one run");
    assert_eq!(run_count(&server).await, 1);
    server.shutdown().await;
}
