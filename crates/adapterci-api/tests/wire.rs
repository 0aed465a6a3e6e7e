//! The wire contract: every JSON example under `tests/fixtures/` decodes into its type and encodes back to the
//! same JSON, so a renamed or retyped field fails here before a deployed client or server notices.

use std::path::Path;

use adapterci_api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Decodes the fixture as `T`, checks that encoding gives the fixture back, and hands `T` to `expect`.
fn check<T: DeserializeOwned + Serialize>(name: &str, expect: impl FnOnce(T)) {
    let json = fixture(name);
    let value: T = serde_json::from_value(json.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
    let encoded = serde_json::to_value(&value).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(encoded, json, "{name}: encoding differs from the fixture");
    expect(value);
}

#[test]
fn health() {
    check("health.json", |health: HealthResponse| assert_eq!(health.status, "ok"));
}

#[test]
fn readiness() {
    check("readiness_ready.json", |readiness: ReadinessResponse| {
        assert_eq!(readiness, ReadinessResponse { ready: true, reason: None });
    });
    check("readiness_not_ready.json", |readiness: ReadinessResponse| {
        assert!(!readiness.ready);
        assert!(readiness.reason.unwrap().contains("has not finished"));
    });
}

#[test]
fn apply_pipeline() {
    check("apply_pipeline_request.json", |request: ApplyPipelineRequest| {
        assert_eq!(request.file.as_deref(), Some("pipelines/sql.yaml"));
        assert!(request.yaml.starts_with("version: 1\n"));
    });
    check("apply_pipeline_response.json", |response: ApplyPipelineResponse| {
        assert_eq!(response.pipeline.name, "sql");
        assert_eq!(response.pipeline.revision, 2);
        assert_eq!(response.pipeline.triggers, ["dataset_changed", "manual"]);
        assert_eq!(response.outcome, Some(ApplyOutcome::Configured));
    });
}

#[test]
fn apply_response_without_outcome_is_a_pipeline_info() {
    let mut json = fixture("apply_pipeline_response.json");
    json.as_object_mut().map(|object| object.remove("outcome"));
    let response: ApplyPipelineResponse = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(response.outcome, None);
    let info: PipelineInfo = serde_json::from_value(json).unwrap();
    assert_eq!(info, response.pipeline);
}

#[test]
fn pipelines() {
    check("pipelines.json", |pipelines: Vec<PipelineInfo>| {
        assert_eq!(pipelines.len(), 1);
        assert_eq!(pipelines[0].created_at.to_rfc3339(), "2026-11-26T10:00:00+00:00");
    });
    check("pipeline_detail.json", |detail: PipelineDetail| {
        assert_eq!(detail.info.dataset_location, "datasets/sql/train.jsonl");
        assert!(detail.info.triggers.is_empty());
    });
}

#[test]
fn runs_in_every_phase() {
    check("run_queued.json", |run: RunInfo| {
        assert_eq!(run.state, RunState::Queued);
        assert!(!run.state.is_terminal());
        assert_eq!(run.trigger_kind(), "manual");
        assert_eq!(run.typed_report().unwrap(), None);
    });
    check("run_running.json", |run: RunInfo| {
        assert_eq!(run.stage.as_deref(), Some("train"));
        assert_eq!(run.trigger_kind(), "dataset_changed");
        let report = run.typed_report().unwrap().unwrap();
        let progress = report.progress.unwrap();
        assert_eq!((progress.step, progress.total_steps), (2, 40));
        assert_eq!(report.loss_curve, [(1, 2.5), (2, 2.25)]);
        assert!(report.gates.is_none() && report.metrics.is_empty());
    });
    check("run_succeeded.json", |run: RunInfo| {
        assert!(run.state.is_terminal());
        assert_eq!(run.published.as_ref().map(|published| published.version), Some(3));
        let report = run.typed_report().unwrap().unwrap();
        assert_eq!(report.metrics["exact_match"], Some(0.9));
        assert_eq!(report.metrics["perplexity"], None, "null stands for a value that is not finite");
        let gates = report.gates.unwrap();
        assert!(gates.passed);
        assert_eq!(gates.results[0].min, Some(0.8));
        assert_eq!(gates.results[0].max, None);
        assert_eq!(report.samples[0].base_output.as_deref(), Some("I think"));
    });
    check("run_failed.json", |run: RunInfo| {
        assert_eq!(run.state, RunState::Failed);
        assert!(run.error.unwrap().contains("dataset line 3"));
    });
}

#[test]
fn every_run_state_has_its_wire_name() {
    for state in RunState::ALL {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
    }
    assert!(serde_json::from_value::<RunState>(json!("exploded")).is_err());
}

#[test]
fn a_report_this_client_cannot_read_leaves_the_run_readable() {
    let mut json = fixture("run_succeeded.json");
    json["report"] = json!({"gates": "passed"});
    let run: RunInfo = serde_json::from_value(json).unwrap();
    assert!(run.typed_report().is_err());
}

#[test]
fn run_list_query_leaves_out_what_is_unset() {
    let query = RunListQuery { pipeline: Some("sql".into()), limit: None };
    assert_eq!(serde_json::to_value(&query).unwrap(), json!({"pipeline": "sql"}));
    assert_eq!(serde_json::from_value::<RunListQuery>(json!({})).unwrap(), RunListQuery::default());
}

#[test]
fn adapters() {
    check("adapters.json", |adapters: Vec<AdapterInfo>| {
        assert_eq!(adapters[0].served_version, Some(2));
        assert_eq!(adapters[1].served_version, None);
    });
    check("adapter_versions.json", |versions: Vec<AdapterVersionInfo>| {
        assert_eq!(versions[0].version, 3);
        assert!(versions[0].run_id.is_some() && versions[1].run_id.is_none());
    });
}

#[test]
fn dataset_push() {
    check("dataset_push_response.json", |pushed: DatasetPushResponse| assert_eq!(pushed.size, 18231));
}

#[test]
fn completions() {
    check("completion_request.json", |request: CompletionRequest| {
        assert_eq!(request.stop.unwrap().to_vec(), ["\n", ";"]);
        assert_eq!(request.seed, Some(7));
    });
    check("completion_response.json", |response: CompletionResponse| {
        assert_eq!(response.object, inference::TEXT_COMPLETION_OBJECT);
        assert_eq!(response.choices[0].finish_reason, FinishReason::Stop);
        assert_eq!(response.adapterci.adapter_version, Some(3));
        assert_eq!(response.usage.total_tokens, 12);
    });
}

#[test]
fn completion_request_defaults() {
    let request: CompletionRequest = serde_json::from_value(fixture("completion_request_minimal.json")).unwrap();
    let mut expect = CompletionRequest::new("base", "hello");
    expect.stop = Some(Stop::One("\n".into()));
    assert_eq!(request, expect);
    assert_eq!((request.max_tokens, request.temperature, request.top_p), (64, 0.0, 1.0));
    assert_eq!(request.stop.unwrap().to_vec(), ["\n"]);
}

#[test]
fn completion_request_rejects_wrong_types() {
    for bad in [
        json!({"prompt": "no model"}),
        json!({"model": "base", "prompt": "x", "max_tokens": -1}),
        json!({"model": "base", "prompt": "x", "stop": 3}),
        json!({"model": "base", "prompt": ["a", "b"]}),
    ] {
        assert!(serde_json::from_value::<CompletionRequest>(bad.clone()).is_err(), "{bad}");
    }
}

#[test]
fn chat_completions() {
    check("chat_completion_request.json", |request: ChatCompletionRequest| {
        assert_eq!(request.messages[0].role, ChatRole::System);
        assert_eq!(request.messages[1], ChatMessage::user("hi"));
        let mut expect = ChatCompletionRequest::new("base", request.messages.clone());
        expect.max_tokens = 64;
        assert_eq!(request, expect);
    });
    check("chat_completion_response.json", |response: ChatCompletionResponse| {
        assert_eq!(response.object, inference::CHAT_COMPLETION_OBJECT);
        assert_eq!(response.choices[0].message.role, ChatRole::Assistant);
        assert_eq!(response.choices[0].finish_reason, FinishReason::Length);
        assert_eq!(response.adapterci.adapter_version, None);
    });
    let unknown_role = json!({"model": "base", "messages": [{"role": "robot", "content": "x"}]});
    assert!(serde_json::from_value::<ChatCompletionRequest>(unknown_role).is_err());
}

#[test]
fn models() {
    check("models.json", |models: ModelList| {
        assert_eq!(models.object, inference::LIST_OBJECT);
        assert_eq!(models.data[0].id, inference::BASE_MODEL);
        assert_eq!(models.data[0].adapterci.kind, ModelKind::Base);
        assert_eq!(models.data[1].adapterci.version, Some(3));
    });
}

#[test]
fn errors() {
    check("error_invalid_pipeline.json", |body: ErrorBody| {
        assert_eq!(body.error.code, ErrorCode::InvalidPipeline);
        assert_eq!(body.error.code.http_status(), 400);
        let rendered: Vec<String> =
            body.error.details.iter().map(|detail| detail.render(Some("pipelines/sql.yaml"))).collect();
        assert_eq!(
            rendered,
            [
                "pipelines/sql.yaml:4:3: train.learning_rate: must be greater than 0",
                "pipelines/sql.yaml: dataset: missing field location"
            ]
        );
    });
    check("error_not_found.json", |body: ErrorBody| {
        assert_eq!(body.error.code, ErrorCode::NotFound);
        assert_eq!(body.error.code.http_status(), 404);
    });
    check("error_unknown_code.json", |body: ErrorBody| {
        assert_eq!(body.error.code, ErrorCode::Other("quota_exceeded".into()));
    });
}

#[test]
fn run_metrics() {
    check("run_metrics.json", |metrics: RunMetricsResponse| {
        assert_eq!((metrics.run_id.as_str(), metrics.source), ("r-0192", StepMetricsSource::Steps));
        assert_eq!(metrics.steps[0].tokens_per_second(), Some(256.0));
        assert_eq!((metrics.steps[1].loss, metrics.steps[1].tokens_per_second()), (None, None));
    });
    check("run_metrics_report.json", |metrics: RunMetricsResponse| {
        assert_eq!(metrics.source, StepMetricsSource::Report);
        assert_eq!(metrics.steps[0].learning_rate, None);
    });
}
