//! The OpenAI-compatible subset served by the embedded worker.

use std::sync::Arc;

use adapterci_api::inference::{CHAT_COMPLETION_OBJECT, LIST_OBJECT, MODEL_OBJECT, OWNED_BY, TEXT_COMPLETION_OBJECT};
use adapterci_api::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChatRole, CompletionChoice,
    CompletionRequest, CompletionResponse, ErrorCode, FinishReason, InferenceInfo, ModelDetails, ModelInfo, ModelKind,
    ModelList, Stop, Usage,
};
use adapterci_worker::{CompletionOutput, Prompt, SamplingRequest, ServedModel, Worker};
use axum::Json;
use axum::extract::State;

use crate::{AppError, AppState};

fn worker(state: &AppState) -> Result<&Arc<Worker>, AppError> {
    state
        .worker
        .as_ref()
        .ok_or_else(|| AppError::new(ErrorCode::Unavailable, "this adapterd runs without its inference worker"))
}

fn sampling(max_tokens: u32, temperature: f64, top_p: f64, seed: Option<u64>, stop: Option<&Stop>) -> SamplingRequest {
    SamplingRequest {
        max_tokens: max_tokens as usize,
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed: seed.unwrap_or(0),
        stop: stop.map(Stop::to_vec).unwrap_or_default(),
    }
}

fn info(worker: &Worker, output: &CompletionOutput) -> (Usage, InferenceInfo, FinishReason) {
    let usage = Usage {
        prompt_tokens: output.prompt_tokens as u64,
        completion_tokens: output.completion_tokens as u64,
        total_tokens: (output.prompt_tokens + output.completion_tokens) as u64,
    };
    let info = InferenceInfo {
        adapter_version: output.adapter.as_ref().map(|adapter| adapter.version),
        manifest_digest: output.adapter.as_ref().map(|adapter| adapter.manifest_digest.to_string()),
        // the base that answered: an adapter's own (a base release for one retrained on it), else the worker's
        base_model_digest: output
            .adapter
            .as_ref()
            .map_or_else(|| worker.base_digest().to_string(), |adapter| adapter.base_model_digest.to_string()),
        time_to_first_token_ms: output.time_to_first_token_ms,
        decode_tokens_per_second: output.decode_tokens_per_second,
    };
    let finish = if output.finish_reason == "length" { FinishReason::Length } else { FinishReason::Stop };
    (usage, info, finish)
}

fn completion_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

pub(super) async fn completions(
    State(state): State<AppState>,
    Json(request): Json<CompletionRequest>,
) -> Result<Json<CompletionResponse>, AppError> {
    let worker = worker(&state)?;
    let sampling =
        sampling(request.max_tokens, request.temperature, request.top_p, request.seed, request.stop.as_ref());
    let output = worker.complete(&request.model, Prompt::Text(request.prompt), sampling).await?;
    let (usage, adapterci, finish_reason) = info(worker, &output);
    Ok(Json(CompletionResponse {
        id: completion_id("cmpl"),
        object: TEXT_COMPLETION_OBJECT.to_string(),
        created: chrono::Utc::now().timestamp(),
        model: request.model,
        choices: vec![CompletionChoice { index: 0, text: output.text, finish_reason }],
        usage,
        adapterci,
    }))
}

pub(super) async fn chat_completions(
    State(state): State<AppState>,
    Json(request): Json<ChatCompletionRequest>,
) -> Result<Json<ChatCompletionResponse>, AppError> {
    let worker = worker(&state)?;
    if request.messages.is_empty() {
        return Err(AppError::invalid_request("messages must not be empty"));
    }
    let messages = request
        .messages
        .iter()
        .map(|message| adapterci_engine::chat::ChatMessage {
            role: match message.role {
                ChatRole::System => "system",
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            }
            .to_string(),
            content: message.content.clone(),
        })
        .collect();
    let sampling =
        sampling(request.max_tokens, request.temperature, request.top_p, request.seed, request.stop.as_ref());
    let output = worker.complete(&request.model, Prompt::Chat(messages), sampling).await?;
    let (usage, adapterci, finish_reason) = info(worker, &output);
    Ok(Json(ChatCompletionResponse {
        id: completion_id("chatcmpl"),
        object: CHAT_COMPLETION_OBJECT.to_string(),
        created: chrono::Utc::now().timestamp(),
        model: request.model,
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessage { role: ChatRole::Assistant, content: output.text },
            finish_reason,
        }],
        usage,
        adapterci,
    }))
}

pub(super) async fn models(State(state): State<AppState>) -> Result<Json<ModelList>, AppError> {
    let worker = worker(&state)?;
    let data = worker
        .models()
        .into_iter()
        .map(|model| match model {
            ServedModel::Base { name: _, digest } => ModelInfo {
                id: adapterci_api::inference::BASE_MODEL.to_string(),
                object: MODEL_OBJECT.to_string(),
                created: 0,
                owned_by: OWNED_BY.to_string(),
                adapterci: ModelDetails {
                    kind: ModelKind::Base,
                    version: None,
                    manifest_digest: None,
                    base_model_digest: digest.to_string(),
                },
            },
            ServedModel::Adapter(adapter) => ModelInfo {
                id: adapter.name.to_string(),
                object: MODEL_OBJECT.to_string(),
                created: adapter.published_at.timestamp(),
                owned_by: OWNED_BY.to_string(),
                adapterci: ModelDetails {
                    kind: ModelKind::Adapter,
                    version: Some(adapter.version),
                    manifest_digest: Some(adapter.manifest_digest.to_string()),
                    base_model_digest: adapter.base_model_digest.to_string(),
                },
            },
        })
        .collect();
    Ok(Json(ModelList { object: LIST_OBJECT.to_string(), data }))
}
