//! The thread that owns the base model and the adapter cache. Requests arrive over a channel and are served one
//! at a time; replies go back on oneshot channels so async callers never block.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;

use adapterci_core::Digest;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::generate::{FinishReason, GenerationParams};
use adapterci_engine::model::{BaseModel, LoadedAdapter};
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::WorkerError;
use crate::cache::{AdapterCache, Sized_};
use crate::worker::{CompletionOutput, Prompt};

/// A loaded adapter and the base model it runs on.
pub(crate) struct BoundAdapter {
    base: Digest,
    adapter: LoadedAdapter,
}

impl Sized_ for BoundAdapter {
    fn size_bytes(&self) -> usize {
        self.adapter.size_bytes()
    }
}

/// A base model other than the worker's own that an adapter runs on: a base release, by digest and file.
#[derive(Clone, Debug)]
pub(crate) struct OtherBase {
    pub digest: Digest,
    pub path: PathBuf,
}

/// Why a generation request could not be served.
#[derive(Debug)]
pub(crate) enum GenerateError {
    /// The adapter is not (or no longer) in the cache: load it and retry.
    AdapterNotLoaded,
    Engine(String),
}

pub(crate) struct GenerateRequest {
    pub adapter: Option<Digest>,
    pub prompt: Prompt,
    pub params: GenerationParams,
    pub stop: Vec<String>,
}

pub(crate) enum Command {
    Load { digest: Digest, weights: Bytes, base: Option<OtherBase>, reply: oneshot::Sender<Result<(), String>> },
    Generate { request: GenerateRequest, reply: oneshot::Sender<Result<CompletionOutput, GenerateError>> },
}

/// Facts about the loaded base model.
#[derive(Clone, Debug)]
pub(crate) struct BaseInfo {
    pub digest: Digest,
    pub name: String,
}

/// The async side's handle on the engine thread.
pub(crate) struct EngineHandle {
    sender: mpsc::Sender<Command>,
    pub base: BaseInfo,
}

impl EngineHandle {
    /// Starts the thread and waits until the base model is loaded.
    pub async fn start(
        model_path: PathBuf,
        model_name: String,
        device: DeviceChoice,
        cache_budget_bytes: usize,
    ) -> Result<EngineHandle, WorkerError> {
        let (sender, receiver) = mpsc::channel::<Command>();
        let (ready_sender, ready) = oneshot::channel();
        std::thread::Builder::new()
            .name("adapterci-engine".to_string())
            .spawn(move || {
                let model = match BaseModel::load(&model_path, device) {
                    Ok(model) => model,
                    Err(error) => {
                        let _ = ready_sender.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = ready_sender.send(Ok(model.digest().clone()));
                serve(model, device, AdapterCache::new(cache_budget_bytes), receiver);
            })
            .map_err(|error| WorkerError::Engine(format!("cannot start the engine thread: {error}")))?;
        let digest = ready.await.map_err(|_| WorkerError::EngineStopped)?.map_err(WorkerError::Engine)?;
        Ok(EngineHandle { sender, base: BaseInfo { digest, name: model_name } })
    }

    /// Loads the adapter `digest` on the worker's base, or on `base` (loaded on first use) when given.
    pub async fn load(&self, digest: Digest, weights: Bytes, base: Option<OtherBase>) -> Result<(), WorkerError> {
        let (reply, response) = oneshot::channel();
        self.sender.send(Command::Load { digest, weights, base, reply }).map_err(|_| WorkerError::EngineStopped)?;
        response.await.map_err(|_| WorkerError::EngineStopped)?.map_err(WorkerError::Engine)
    }

    pub async fn generate(
        &self,
        request: GenerateRequest,
    ) -> Result<Result<CompletionOutput, GenerateError>, WorkerError> {
        let (reply, response) = oneshot::channel();
        self.sender.send(Command::Generate { request, reply }).map_err(|_| WorkerError::EngineStopped)?;
        response.await.map_err(|_| WorkerError::EngineStopped)
    }
}

fn serve(
    model: BaseModel,
    device: DeviceChoice,
    mut cache: AdapterCache<BoundAdapter>,
    receiver: mpsc::Receiver<Command>,
) {
    let primary = model.digest().clone();
    let mut bases: HashMap<Digest, BaseModel> = HashMap::from([(primary.clone(), model)]);
    for command in receiver {
        match command {
            Command::Load { digest, weights, base, reply } => {
                let result = if cache.contains(&digest) {
                    Ok(())
                } else {
                    load_bound(&mut bases, &primary, device, base, &weights).map(|adapter| {
                        for evicted in cache.insert(digest.clone(), adapter) {
                            tracing::info!(adapter = %evicted, "adapter evicted from the cache");
                        }
                        tracing::info!(adapter = %digest, cached = cache.len(), bytes = cache.used_bytes(), "adapter loaded");
                    })
                };
                let _ = reply.send(result);
            }
            Command::Generate { request, reply } => {
                let _ = reply.send(generate(&bases, &primary, &mut cache, request));
            }
        }
    }
    tracing::info!("engine thread stopped");
}

/// Loads `weights` on the worker's base, or on `other` (its file loaded once and checked against its digest).
fn load_bound(
    bases: &mut HashMap<Digest, BaseModel>,
    primary: &Digest,
    device: DeviceChoice,
    other: Option<OtherBase>,
    weights: &[u8],
) -> Result<BoundAdapter, String> {
    let base = match other {
        None => primary.clone(),
        Some(OtherBase { digest, path }) => {
            if !bases.contains_key(&digest) {
                let model = BaseModel::load(&path, device).map_err(|error| error.to_string())?;
                if model.digest() != &digest {
                    return Err(format!(
                        "{} has digest {}, not the {digest} the adapter is bound to",
                        path.display(),
                        model.digest()
                    ));
                }
                tracing::info!(base = %digest, path = %path.display(), "base release loaded");
                bases.insert(digest.clone(), model);
            }
            digest
        }
    };
    let model = bases.get(&base).ok_or_else(|| format!("base {base} is not loaded"))?;
    let adapter = model.load_adapter(weights).map_err(|error| error.to_string())?;
    Ok(BoundAdapter { base, adapter })
}

fn generate(
    bases: &HashMap<Digest, BaseModel>,
    primary: &Digest,
    cache: &mut AdapterCache<BoundAdapter>,
    request: GenerateRequest,
) -> Result<CompletionOutput, GenerateError> {
    let bound = match &request.adapter {
        None => None,
        Some(digest) => Some(cache.get(digest).ok_or(GenerateError::AdapterNotLoaded)?),
    };
    let base = bound.map_or(primary, |b| &b.base);
    let model = bases.get(base).ok_or_else(|| GenerateError::Engine(format!("base {base} is not loaded")))?;
    let adapter = bound.map(|b| &b.adapter);
    let tokenizer = model.tokenizer();
    let text = match &request.prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Chat(messages) => {
            tokenizer.render_chat(messages, true).map_err(|error| GenerateError::Engine(error.to_string()))?
        }
    };
    let prompt_ids = tokenizer.encode(&text, true);
    if prompt_ids.is_empty() {
        return Err(GenerateError::Engine("the prompt is empty".to_string()));
    }
    let mut params = request.params;
    if params.stop_token_ids.is_empty() {
        params.stop_token_ids = tokenizer.stop_token_ids();
    }
    let generation =
        model.generate(&prompt_ids, adapter, &params).map_err(|error| GenerateError::Engine(error.to_string()))?;
    let mut text = tokenizer.decode(&generation.tokens);
    let mut finish_reason = match generation.finish_reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    };
    if let Some(cut) = request.stop.iter().filter_map(|stop| text.find(stop.as_str())).min() {
        text.truncate(cut);
        finish_reason = "stop";
    }
    Ok(CompletionOutput {
        text,
        finish_reason: finish_reason.to_string(),
        prompt_tokens: generation.prompt_tokens,
        completion_tokens: generation.tokens.len(),
        time_to_first_token_ms: generation.time_to_first_token.as_secs_f64() * 1000.0,
        decode_tokens_per_second: generation.decode_tokens_per_second,
        adapter: None,
    })
}
