//! HTTP wire types of adapterd and a typed client.
//!
//! The types here are the contract between `adapterd` (the server) and its clients (`adapterctl`, tests, other
//! programs). Every type is checked against a JSON example under `tests/fixtures/`: change a fixture only on
//! purpose, because a deployed client or server still speaks the old shape.
//!
//! Conventions of the wire format:
//! - JSON everywhere; timestamps are RFC 3339 in UTC; digests are `sha256:<64 hex>` strings.
//! - Optional fields are omitted when absent and default when missing, so old clients read new responses.
//! - Errors are `{"error": {"code", "message", "details"}}` with the HTTP status of [`ErrorCode::http_status`].

pub mod adapters;
pub mod channels;
pub mod client;
pub mod datasets;
pub mod error;
pub mod inference;
pub mod peft;
pub mod pipelines;
pub mod routes;
pub mod run_metrics;
pub mod runs;
pub mod system;
pub mod webhooks;

pub use adapters::{AdapterInfo, AdapterVersionInfo};
pub use channels::{
    ChannelInfo, DeprecateBody, DeprecateResponse, EventAttemptInfo, GcBody, GcResponse, PinBody, PromoteBody,
    RollbackBody,
};
pub use client::{ApiClient, Download};
pub use datasets::DatasetPushResponse;
pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail, ErrorPayload};
pub use inference::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChatRole, CompletionChoice,
    CompletionRequest, CompletionResponse, FinishReason, InferenceInfo, ModelDetails, ModelInfo, ModelKind, ModelList,
    Stop, Usage,
};
pub use peft::PeftImportRequest;
pub use pipelines::{ApplyOutcome, ApplyPipelineRequest, ApplyPipelineResponse, PipelineDetail, PipelineInfo};
pub use run_metrics::{RunMetricsResponse, StepMetricInfo, StepMetricsSource};
pub use runs::{
    EvalSample, GateReport, GateResult, PublishedInfo, RunInfo, RunListQuery, RunLogsQuery, RunLogsResponse,
    RunProgress, RunReport, RunState,
};
pub use system::{HealthResponse, ReadinessResponse};
pub use webhooks::WebhookResponse;
