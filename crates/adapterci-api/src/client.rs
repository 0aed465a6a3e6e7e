//! [`ApiClient`]: one async method per adapterd endpoint, over reqwest.

mod download;
mod registry;
mod run_metrics;

use std::error::Error as _;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use download::Download;

use crate::error::{ApiError, ErrorBody, ErrorCode, ErrorPayload};
use crate::{
    AdapterInfo, AdapterVersionInfo, ApplyPipelineRequest, ApplyPipelineResponse, ChatCompletionRequest,
    ChatCompletionResponse, CompletionRequest, CompletionResponse, DatasetPushResponse, HealthResponse, ModelList,
    PipelineDetail, PipelineInfo, ReadinessResponse, RunInfo, RunListQuery, RunLogsResponse,
};

/// How long to wait for a TCP connection before calling the server unreachable. There is no overall timeout:
/// a generation or a dataset upload may take long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one adapterd server.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: Url,
    http: reqwest::Client,
}

/// A request body: JSON, raw bytes, or nothing.
enum Body<'a, T: Serialize> {
    None,
    Json(&'a T),
    Bytes(Vec<u8>),
}

impl ApiClient {
    /// A client of the server at `server`, e.g. `http://127.0.0.1:8080`. A path prefix is kept, so
    /// `http://host/adapterd/` works behind a proxy.
    pub fn new(server: &str) -> Result<Self, ApiError> {
        let invalid = |reason: String| ApiError::InvalidUrl { url: server.to_string(), reason };
        let base = Url::parse(server).map_err(|err| invalid(err.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!("the scheme must be http or https, not {}", base.scheme())));
        }
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(invalid("expected http://host:port".to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("adapterci-api/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| invalid(err.to_string()))?;
        Ok(ApiClient { base, http })
    }

    /// The server URL this client talks to.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `segments` below the server URL; each segment is percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<HealthResponse, ApiError> {
        self.call(Method::GET, self.url(&["healthz"]), Body::<()>::None).await
    }

    /// `GET /readyz`: a 503 is an answer here (not ready, and why), not an error.
    pub async fn readiness(&self) -> Result<ReadinessResponse, ApiError> {
        let (method, url) = (Method::GET, self.url(&["readyz"]));
        let request = self.http.request(method.clone(), url.clone()).header("accept", "application/json");
        let response = request.send().await.map_err(|err| self.transport_error(&method, &url, &err))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|err| self.transport_error(&method, &url, &err))?;
        if status != 200 && status != 503 {
            let error = decode_error_body(status, &bytes);
            return Err(ApiError::Http { method: method.to_string(), url: url.to_string(), status, error });
        }
        serde_json::from_slice(&bytes).map_err(|err| ApiError::Decode {
            method: method.to_string(),
            url: url.to_string(),
            reason: err.to_string(),
        })
    }

    /// `POST /api/v1/pipelines`: create or update a pipeline.
    pub async fn apply_pipeline(&self, request: &ApplyPipelineRequest) -> Result<ApplyPipelineResponse, ApiError> {
        self.call(Method::POST, self.url(&["api", "v1", "pipelines"]), Body::Json(request)).await
    }

    /// `GET /api/v1/pipelines`.
    pub async fn list_pipelines(&self) -> Result<Vec<PipelineInfo>, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "pipelines"]), Body::<()>::None).await
    }

    /// `GET /api/v1/pipelines/{name}`.
    pub async fn get_pipeline(&self, name: &str) -> Result<PipelineDetail, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "pipelines", name]), Body::<()>::None).await
    }

    /// `POST /api/v1/pipelines/{name}/trigger`: queue a run now. The request has no body.
    pub async fn trigger_pipeline(&self, name: &str) -> Result<RunInfo, ApiError> {
        self.call(Method::POST, self.url(&["api", "v1", "pipelines", name, "trigger"]), Body::<()>::None).await
    }

    /// `GET /api/v1/runs?pipeline=&limit=`: newest first.
    pub async fn list_runs(&self, query: &RunListQuery) -> Result<Vec<RunInfo>, ApiError> {
        let mut url = self.url(&["api", "v1", "runs"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(pipeline) = &query.pipeline {
                pairs.append_pair("pipeline", pipeline);
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call(Method::GET, url, Body::<()>::None).await
    }

    /// `GET /api/v1/runs/{id}`.
    pub async fn get_run(&self, id: &str) -> Result<RunInfo, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "runs", id]), Body::<()>::None).await
    }

    /// `POST /api/v1/runs/{id}/cancel`: cancel a queued or running run; a run that already ended is returned as
    /// it is. The request has no body.
    pub async fn cancel_run(&self, id: &str) -> Result<RunInfo, ApiError> {
        self.call(Method::POST, self.url(&["api", "v1", "runs", id, "cancel"]), Body::<()>::None).await
    }

    /// `GET /api/v1/runs/{id}/logs?offset=`: the run's captured training log from `offset` on.
    pub async fn run_logs(&self, id: &str, offset: u64) -> Result<RunLogsResponse, ApiError> {
        let mut url = self.url(&["api", "v1", "runs", id, "logs"]);
        url.query_pairs_mut().append_pair("offset", &offset.to_string());
        self.call(Method::GET, url, Body::<()>::None).await
    }

    /// `GET /api/v1/adapters`.
    pub async fn list_adapters(&self) -> Result<Vec<AdapterInfo>, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "adapters"]), Body::<()>::None).await
    }

    /// `GET /api/v1/adapters/{name}/versions`.
    pub async fn list_adapter_versions(&self, name: &str) -> Result<Vec<AdapterVersionInfo>, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "adapters", name, "versions"]), Body::<()>::None).await
    }

    /// `GET /api/v1/adapters/{name}/versions/{version}`: the version's manifest.
    pub async fn get_adapter_manifest(&self, name: &str, version: u64) -> Result<serde_json::Value, ApiError> {
        let version = version.to_string();
        let url = self.url(&["api", "v1", "adapters", name, "versions", &version]);
        self.call(Method::GET, url, Body::<()>::None).await
    }

    /// `GET /api/v1/adapters/{name}/versions/{version}/peft/{file}`: one file of the version as Hugging Face PEFT
    /// saves adapters (`adapter_config.json` or `adapter_model.safetensors`).
    pub async fn adapter_peft_file(&self, name: &str, version: u64, file: &str) -> Result<Vec<u8>, ApiError> {
        let version = version.to_string();
        let url = self.url(&["api", "v1", "adapters", name, "versions", &version, "peft", file]);
        self.call_bytes(Method::GET, url, Body::<()>::None, "application/octet-stream").await
    }

    /// `GET /api/v1/adapters/{name}/versions/{version}/merged/model.safetensors`: the base model the version was
    /// trained on with the version merged into its weights (`W + scale * B A`), as one f32 safetensors state dict
    /// with Hugging Face Llama names. The whole model, so as large as the base in f32: the body is returned unread,
    /// to be read piece by piece ([`Download::chunk`]) into a file.
    pub async fn adapter_merged_model(&self, name: &str, version: u64) -> Result<Download, ApiError> {
        let version = version.to_string();
        let url = self.url(&["api", "v1", "adapters", name, "versions", &version, "merged", "model.safetensors"]);
        let response = self.send(Method::GET, url.clone(), Body::<()>::None, "application/octet-stream").await?;
        Ok(Download::new(Method::GET, url, response))
    }

    /// `POST /api/v1/adapters/{name}/peft`: publishes a PEFT adapter folder as a new version of `name`.
    pub async fn import_peft(
        &self,
        name: &str,
        request: &crate::PeftImportRequest,
    ) -> Result<AdapterVersionInfo, ApiError> {
        let url = self.url(&["api", "v1", "adapters", name, "peft"]);
        self.call(Method::POST, url, Body::Json(request)).await
    }

    /// `PUT /api/v1/datasets/{location}` with the file's bytes. `location` may contain `/`.
    pub async fn push_dataset(&self, location: &str, bytes: Vec<u8>) -> Result<DatasetPushResponse, ApiError> {
        let mut segments = vec!["api", "v1", "datasets"];
        segments.extend(location.split('/').filter(|segment| !segment.is_empty()));
        self.call(Method::PUT, self.url(&segments), Body::<()>::Bytes(bytes)).await
    }

    /// `POST /v1/completions`.
    pub async fn completion(&self, request: &CompletionRequest) -> Result<CompletionResponse, ApiError> {
        self.call(Method::POST, self.url(&["v1", "completions"]), Body::Json(request)).await
    }

    /// `POST /v1/chat/completions`.
    pub async fn chat_completion(&self, request: &ChatCompletionRequest) -> Result<ChatCompletionResponse, ApiError> {
        self.call(Method::POST, self.url(&["v1", "chat", "completions"]), Body::Json(request)).await
    }

    /// `GET /v1/models`.
    pub async fn list_models(&self) -> Result<ModelList, ApiError> {
        self.call(Method::GET, self.url(&["v1", "models"]), Body::<()>::None).await
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Body<'_, B>,
    ) -> Result<T, ApiError> {
        let bytes = self.call_bytes(method.clone(), url.clone(), body, "application/json").await?;
        serde_json::from_slice(&bytes).map_err(|err| ApiError::Decode {
            method: method.to_string(),
            url: url.to_string(),
            reason: err.to_string(),
        })
    }

    /// The response body of a successful request, undecoded.
    async fn call_bytes<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Body<'_, B>,
        accept: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let response = self.send(method.clone(), url.clone(), body, accept).await?;
        let bytes = response.bytes().await.map_err(|err| self.transport_error(&method, &url, &err))?;
        Ok(bytes.to_vec())
    }

    /// Sends the request; a success is returned with its body unread, an error status as [`ApiError::Http`] with
    /// its body decoded.
    async fn send<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Body<'_, B>,
        accept: &str,
    ) -> Result<reqwest::Response, ApiError> {
        let mut request = self.http.request(method.clone(), url.clone()).header("accept", accept);
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Bytes(bytes) => request.header("content-type", "application/octet-stream").body(bytes),
        };
        let response = request.send().await.map_err(|err| self.transport_error(&method, &url, &err))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(|err| self.transport_error(&method, &url, &err))?;
        Err(ApiError::Http {
            method: method.to_string(),
            url: url.to_string(),
            status,
            error: decode_error_body(status, &bytes),
        })
    }

    fn transport_error(&self, method: &Method, url: &Url, err: &reqwest::Error) -> ApiError {
        let reason = innermost_reason(err);
        if err.is_connect() {
            ApiError::Unreachable { server: self.server().to_string(), reason }
        } else {
            ApiError::Transport { method: method.to_string(), url: url.to_string(), reason }
        }
    }
}

/// The error payload of an error answer; a body that is not an [`ErrorBody`] (a proxy's HTML page, plain text)
/// still gives a code from the status and its first line as the message.
pub fn decode_error_body(status: u16, bytes: &[u8]) -> ErrorPayload {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return body.error;
    }
    let text = String::from_utf8_lossy(bytes);
    let first_line = text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
    let message = if first_line.is_empty() {
        format!("the server answered http {status} without a message")
    } else {
        first_line.chars().take(200).collect()
    };
    ErrorPayload { code: ErrorCode::from_http_status(status), message, details: Vec::new() }
}

/// reqwest's own message ("error sending request for url ...") hides the cause; the innermost one says it
/// ("Connection refused (os error 111)").
fn innermost_reason(err: &reqwest::Error) -> String {
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}
