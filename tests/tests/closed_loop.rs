//! The closed loop end to end on a tiny random-weight model: a dataset change in the object store triggers a
//! retrain and a new published version that the worker then serves; a dataset that fails the gate publishes
//! nothing and the served version stays as it was. Real SQLite, real local object store, real libtorch
//! training and real HTTP; only the model is tiny.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use adapterci_api::{
    ApiClient, ApiError, ApplyPipelineRequest, ChatCompletionRequest, ChatMessage, ErrorCode, RunListQuery, RunState,
};
use adapterci_core::PipelineName;
use adapterci_server::{RunningServer, ServerConfig};

const PIPELINE: &str = r#"version: v1
name: e2e
base:
  model: tiny
dataset:
  location: datasets/e2e/train.jsonl
triggers:
  - kind: dataset_watch
    interval: 1s
  - kind: manual
training:
  lora:
    rank: 4
    alpha: 8
    targets: [q, v, o, gate, up, down]
  steps: 40
  batch_size: 4
  learning_rate: 0.01
  max_seq_len: 64
  seed: 3
  eval_fraction: 0.2
  max_eval_examples: 4
  max_new_tokens: 8
eval:
  gates:
    - metric: eval_loss
      max: 2.5
publish:
  adapter: e2e
"#;

/// Records whose completion is always the same short word: a tiny model learns them in a few dozen steps.
fn learnable_dataset(word: &str) -> String {
    (0..40).map(|i| format!("{{\"prompt\": \"question {i}\", \"completion\": \"{word}\"}}\n")).collect()
}

/// Records whose completions are unrelated random strings: no model can predict them.
fn unlearnable_dataset() -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..40)
        .map(|i| {
            let completion: String = (0..24)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect();
            format!("{{\"prompt\": \"question {i}\", \"completion\": \"{completion}\"}}\n")
        })
        .collect()
}

fn runs_of(pipeline: &str) -> RunListQuery {
    RunListQuery { pipeline: Some(pipeline.to_string()), limit: None }
}

async fn start_server(dir: &Path) -> RunningServer {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 7).expect("tiny model written");
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    // No background loops: the test moves the controller and the worker step by step.
    config.tick_ms = 0;
    config.refresh_secs = 0;
    adapterci_server::start(config).await.expect("adapterd starts")
}

async fn chat(client: &ApiClient, model: &str) -> Result<adapterci_api::ChatCompletionResponse, ApiError> {
    let mut request = ChatCompletionRequest::new(model, vec![ChatMessage::user("question 1")]);
    request.max_tokens = 4;
    client.chat_completion(&request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_changes_retrain_publish_and_serve_and_a_failed_gate_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    let controller = server.state.controller.clone();
    let worker = server.state.worker.clone().expect("embedded worker");

    let applied = client
        .apply_pipeline(&ApplyPipelineRequest { file: Some("e2e.yaml".to_string()), yaml: PIPELINE.to_string() })
        .await
        .unwrap();
    assert_eq!(applied.pipeline.revision, 1);

    let pipeline = PipelineName::new("e2e").unwrap();
    // The watch, checked now rather than when its interval comes round, then every queued run executed.
    let poll_and_run = || async {
        controller.poll_now(&pipeline).await.unwrap();
        while controller.run_next().await.unwrap().is_some() {}
    };

    // Nothing in the bucket yet: the watch starts nothing.
    poll_and_run().await;
    assert!(client.list_runs(&RunListQuery::default()).await.unwrap().is_empty());

    // First dataset: one run, published as version 1, served.
    client.push_dataset("datasets/e2e/train.jsonl", learnable_dataset("yes").into_bytes()).await.unwrap();
    poll_and_run().await;
    let runs = client.list_runs(&runs_of("e2e")).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].state, RunState::Succeeded, "{:#?}", runs[0]);
    assert_eq!(runs[0].published.as_ref().map(|published| published.version), Some(1));
    worker.refresh_all().await.unwrap();
    let answer = chat(&client, "e2e").await.unwrap();
    assert_eq!(answer.adapterci.adapter_version, Some(1));
    let first_digest = answer.adapterci.manifest_digest.clone();

    // The same content uploaded again starts nothing.
    client.push_dataset("datasets/e2e/train.jsonl", learnable_dataset("yes").into_bytes()).await.unwrap();
    poll_and_run().await;
    assert_eq!(client.list_runs(&runs_of("e2e")).await.unwrap().len(), 1);

    // A changed dataset: a retrain, version 2, and the worker swaps to it.
    client.push_dataset("datasets/e2e/train.jsonl", learnable_dataset("no").into_bytes()).await.unwrap();
    poll_and_run().await;
    let runs = client.list_runs(&runs_of("e2e")).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].state, RunState::Succeeded, "{:#?}", runs[0]);
    assert_eq!(runs[0].published.as_ref().map(|published| published.version), Some(2));
    worker.refresh_all().await.unwrap();
    let answer = chat(&client, "e2e").await.unwrap();
    assert_eq!(answer.adapterci.adapter_version, Some(2));
    assert_ne!(answer.adapterci.manifest_digest, first_digest);

    // A dataset the gate rejects: the run is rejected with its report, nothing is published, v2 stays served.
    client.push_dataset("datasets/e2e/train.jsonl", unlearnable_dataset().into_bytes()).await.unwrap();
    poll_and_run().await;
    let runs = client.list_runs(&runs_of("e2e")).await.unwrap();
    assert_eq!(runs.len(), 3);
    let rejected = &runs[0];
    assert_eq!(rejected.state, RunState::Rejected, "{rejected:#?}");
    assert!(rejected.published.is_none());
    let report = rejected.typed_report().unwrap().expect("a rejected run keeps its report");
    let gates = report.gates.expect("gate report");
    assert!(!gates.passed);
    assert_eq!(gates.results[0].metric, "eval_loss");
    let versions = client.list_adapter_versions("e2e").await.unwrap();
    assert_eq!(versions.iter().map(|version| version.version).collect::<Vec<_>>(), vec![1, 2]);
    worker.refresh_all().await.unwrap();
    let answer = chat(&client, "e2e").await.unwrap();
    assert_eq!(answer.adapterci.adapter_version, Some(2));

    // The base model alone still answers, and an unknown model is a clear 404.
    let base = chat(&client, "base").await.unwrap();
    assert_eq!(base.adapterci.adapter_version, None);
    match chat(&client, "nope").await {
        Err(ApiError::Http { status, error, .. }) => {
            assert_eq!(status, 404);
            assert_eq!(error.code, ErrorCode::NotFound);
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pipeline_is_refused_with_its_line_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    let bad = PIPELINE.replace("    rank: 4", "    rnk: 4");
    let error = client
        .apply_pipeline(&ApplyPipelineRequest { file: Some("bad.yaml".to_string()), yaml: bad })
        .await
        .unwrap_err();
    match error {
        ApiError::Http { status, error, .. } => {
            assert_eq!(status, 400);
            assert_eq!(error.code, ErrorCode::InvalidPipeline);
            assert!(error.message.contains("bad.yaml:13:5: training.lora: unknown field `rnk`"), "{}", error.message);
            assert!(error.message.contains("rnk"), "{}", error.message);
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert!(client.list_pipelines().await.unwrap().is_empty());
    server.shutdown().await;
}
