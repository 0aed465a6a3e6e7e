//! The OpenAI-compatible subset adapterd serves: `POST /v1/completions`, `POST /v1/chat/completions`,
//! `GET /v1/models`, each with an `adapterci` extension object. `model` names an adapter, or [`BASE_MODEL`].

use serde::{Deserialize, Serialize};

/// The model name that means the base model without an adapter.
pub const BASE_MODEL: &str = "base";
/// `object` of a [`CompletionResponse`].
pub const TEXT_COMPLETION_OBJECT: &str = "text_completion";
/// `object` of a [`ChatCompletionResponse`].
pub const CHAT_COMPLETION_OBJECT: &str = "chat.completion";
/// `object` of a [`ModelList`].
pub const LIST_OBJECT: &str = "list";
/// `object` of a [`ModelInfo`].
pub const MODEL_OBJECT: &str = "model";
/// `owned_by` of every [`ModelInfo`].
pub const OWNED_BY: &str = "adapterci";

pub const DEFAULT_MAX_TOKENS: u32 = 64;
pub const DEFAULT_TEMPERATURE: f64 = 0.0;
pub const DEFAULT_TOP_P: f64 = 1.0;

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}

fn default_top_p() -> f64 {
    DEFAULT_TOP_P
}

/// Stop sequences: OpenAI accepts one string or a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list, whichever form was sent.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(one) => vec![one.clone()],
            Stop::Many(many) => many.clone(),
        }
    }
}

/// `POST /v1/completions`. Fields OpenAI has and this subset lacks are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: String,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// 0 means greedy decoding.
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

impl CompletionRequest {
    /// A request with the default sampling settings (greedy, 64 tokens).
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        CompletionRequest {
            model: model.into(),
            prompt: prompt.into(),
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
            top_p: DEFAULT_TOP_P,
            seed: None,
            stop: None,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// adapterci's extension of an inference response: what answered, and how fast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferenceInfo {
    /// The adapter version that answered; absent for the base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    pub base_model_digest: String,
    pub time_to_first_token_ms: f64,
    pub decode_tokens_per_second: f64,
}

/// One choice of a completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: FinishReason,
}

/// The answer to `POST /v1/completions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    /// Always [`TEXT_COMPLETION_OBJECT`].
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
    pub adapterci: InferenceInfo,
}

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::User, content: content.into() }
    }
}

/// `POST /v1/chat/completions`; the server applies the base model's chat template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

impl ChatCompletionRequest {
    /// A request with the default sampling settings (greedy, 64 tokens).
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        ChatCompletionRequest {
            model: model.into(),
            messages,
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
            top_p: DEFAULT_TOP_P,
            seed: None,
            stop: None,
        }
    }
}

/// One choice of a chat completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    /// Always from the assistant.
    pub message: ChatMessage,
    pub finish_reason: FinishReason,
}

/// The answer to `POST /v1/chat/completions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    /// Always [`CHAT_COMPLETION_OBJECT`].
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub adapterci: InferenceInfo,
}

/// What a served model is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Base,
    Adapter,
}

/// adapterci's extension of a model entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDetails {
    pub kind: ModelKind,
    /// The served version of an adapter; absent for the base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    pub base_model_digest: String,
}

/// One servable model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// What to pass as `model`: an adapter name, or [`BASE_MODEL`].
    pub id: String,
    /// Always [`MODEL_OBJECT`].
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// Always [`OWNED_BY`].
    pub owned_by: String,
    pub adapterci: ModelDetails,
}

/// The answer to `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always [`LIST_OBJECT`].
    pub object: String,
    pub data: Vec<ModelInfo>,
}
