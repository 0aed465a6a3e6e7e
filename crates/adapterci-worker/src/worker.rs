//! The worker's async API: which adapters are served, pulling new versions, and completions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use adapterci_core::base_release::ReleaseSource;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::ports::{AdapterRegistry, AdapterVersionRecord, ResolvedVersion};
use adapterci_core::{AdapterName, Digest};
use adapterci_engine::chat::ChatMessage;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::generate::GenerationParams;
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, watch};

use crate::WorkerError;
use crate::engine_thread::{EngineHandle, GenerateError, GenerateRequest, OtherBase};

/// The `model` name that selects the base model without an adapter.
pub const BASE_MODEL_ALIAS: &str = "base";

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub model_path: PathBuf,
    pub model_name: String,
    pub device: DeviceChoice,
    /// Loaded adapters are evicted, least recently used first, beyond this many bytes.
    pub adapter_cache_bytes: usize,
    /// How often every adapter is checked for a newer version.
    pub refresh_interval: Duration,
    /// Where base releases live (`<dir>/<release digest hex>/base.safetensors`, as adapterd's base-model watcher
    /// writes them): an adapter bound to one of them is served on that release, loaded on first use. `None`:
    /// only adapters bound to `model_path` are served.
    pub releases_dir: Option<PathBuf>,
    /// Where a base release missing from `releases_dir` is fetched from (the registry's store, where the adapterd
    /// that builds releases uploads them), so that a replica on another machine serves adapters bound to it.
    /// `None`: a release not in `releases_dir` is not served.
    pub release_source: Option<Arc<dyn ReleaseSource>>,
}

/// What a prompt is.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Raw text, tokenized as is (special tokens recognised).
    Text(String),
    /// Chat messages, rendered with the base model's chat template plus the generation prompt.
    Chat(Vec<ChatMessage>),
}

/// Sampling settings of one request.
#[derive(Clone, Debug)]
pub struct SamplingRequest {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
}

/// A served adapter version.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedAdapter {
    pub name: AdapterName,
    pub version: u64,
    pub manifest_digest: Digest,
    pub weights_digest: Digest,
    pub base_model_digest: Digest,
    pub published_at: DateTime<Utc>,
    pub loaded_at: DateTime<Utc>,
}

/// A model the worker answers for (`GET /v1/models`).
#[derive(Clone, Debug, PartialEq)]
pub enum ServedModel {
    Base { name: String, digest: Digest },
    Adapter(ServedAdapter),
}

/// The answer to a completion request.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionOutput {
    pub text: String,
    pub finish_reason: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub time_to_first_token_ms: f64,
    pub decode_tokens_per_second: f64,
    /// The adapter version that answered; `None` for the base model.
    pub adapter: Option<ServedAdapter>,
}

/// Whether the worker serves what is published (`GET /readyz`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Why it is not ready; `None` when it is.
    pub reason: Option<String>,
}

/// What a worker that has not finished a refresh pass answers.
const FIRST_PASS_PENDING: &str = "the first pull of the published adapters has not finished";

/// The inference worker.
pub struct Worker {
    engine: EngineHandle,
    registry: Arc<dyn AdapterRegistry>,
    config: WorkerConfig,
    /// Swapped entry by entry once a new version is loaded: a request sees the old or the new version, whole.
    served: RwLock<BTreeMap<AdapterName, ServedAdapter>>,
    /// Serialises pulls so two refreshes never load the same version twice.
    pull_lock: Mutex<()>,
    /// Not ready until the first `refresh_all` pass has gone over every adapter (each loaded or its error logged);
    /// ready from then on, for good: a later failed pass leaves the versions already served.
    readiness: RwLock<Readiness>,
}

impl Worker {
    /// Loads the base model on the engine thread.
    pub async fn start(config: WorkerConfig, registry: Arc<dyn AdapterRegistry>) -> Result<Arc<Worker>, WorkerError> {
        let engine = EngineHandle::start(
            config.model_path.clone(),
            config.model_name.clone(),
            config.device,
            config.adapter_cache_bytes,
        )
        .await?;
        tracing::info!(model = %config.model_name, digest = %engine.base.digest, "worker ready");
        Ok(Arc::new(Worker {
            engine,
            registry,
            config,
            served: RwLock::new(BTreeMap::new()),
            pull_lock: Mutex::new(()),
            readiness: RwLock::new(Readiness { ready: false, reason: Some(FIRST_PASS_PENDING.to_string()) }),
        }))
    }

    pub fn base_digest(&self) -> &Digest {
        &self.engine.base.digest
    }

    /// The base model and every served adapter.
    pub fn models(&self) -> Vec<ServedModel> {
        let mut models =
            vec![ServedModel::Base { name: self.engine.base.name.clone(), digest: self.engine.base.digest.clone() }];
        if let Ok(served) = self.served.read() {
            models.extend(served.values().cloned().map(ServedModel::Adapter));
        }
        models
    }

    /// Ready once the first refresh pass has gone over every adapter in the registry: each one loaded, or its
    /// error (a base mismatch, a missing release, a corrupt blob) logged by the pass, so one broken adapter does not
    /// keep the worker unready for ever. A pass that cannot list the adapters has not gone over them.
    pub fn readiness(&self) -> Readiness {
        match self.readiness.read() {
            Ok(readiness) => readiness.clone(),
            Err(_) => Readiness { ready: false, reason: Some("the readiness state is poisoned".to_string()) },
        }
    }

    fn set_readiness(&self, ready: bool, reason: Option<String>) {
        if let Ok(mut readiness) = self.readiness.write() {
            // ready is for good: a later pass that fails keeps serving what it served
            if !readiness.ready {
                *readiness = Readiness { ready, reason };
            }
        }
    }

    pub fn served(&self, name: &AdapterName) -> Option<ServedAdapter> {
        self.served.read().ok().and_then(|served| served.get(name).cloned())
    }

    /// Pulls the newest version of every adapter in the registry. Failures of one adapter (a base mismatch, a
    /// corrupt blob) are logged loudly and leave its served version as it was. The first pass that goes over every
    /// adapter makes the worker ready ([`Worker::readiness`]).
    pub async fn refresh_all(&self) -> Result<Vec<ServedAdapter>, WorkerError> {
        let names = match self.registry.list_adapters().await {
            Ok(names) => names,
            Err(error) => {
                self.set_readiness(false, Some(format!("{FIRST_PASS_PENDING}: cannot list the adapters: {error}")));
                return Err(error.into());
            }
        };
        let mut changed = Vec::new();
        let mut failed = 0;
        for name in names {
            match self.refresh(&name).await {
                Ok(Some(served)) => changed.push(served),
                Ok(None) => {}
                Err(error) => {
                    failed += 1;
                    tracing::error!(adapter = %name, %error, "cannot serve the newest version");
                }
            }
        }
        if !self.readiness().ready {
            tracing::info!(loaded = changed.len(), failed, "first adapter pull done: ready");
        }
        self.set_readiness(true, None);
        Ok(changed)
    }

    /// Pulls the newest version of `name` if it is not served yet; returns it when it changed.
    pub async fn refresh(&self, name: &AdapterName) -> Result<Option<ServedAdapter>, WorkerError> {
        let _guard = self.pull_lock.lock().await;
        let Some(latest) = self.registry.latest(name).await? else {
            return Ok(None);
        };
        if self.served(name).is_some_and(|served| served.manifest_digest == latest.record.manifest_digest) {
            return Ok(None);
        }
        let served = self.pull(latest).await?;
        tracing::info!(adapter = %served.name, version = served.version, digest = %served.manifest_digest, "now serving");
        if let Ok(mut map) = self.served.write() {
            map.insert(served.name.clone(), served.clone());
        }
        Ok(Some(served))
    }

    /// Where an adapter bound to `digest` runs: `Some(None)` on the worker's own base, `Some(Some(release))` on a
    /// base release found in `releases_dir`, `None` when the worker has no such base.
    fn base_of(&self, digest: &Digest) -> Option<Option<OtherBase>> {
        if digest == &self.engine.base.digest {
            return Some(None);
        }
        let path = adapterci_core::base_release::release_weights_path(self.config.releases_dir.as_ref()?, digest);
        path.is_file().then(|| Some(OtherBase { digest: digest.clone(), path }))
    }

    /// The base an adapter bound to `digest` runs on, fetching the release from the release source when the
    /// releases folder does not have it; an error when there is no such base here or there.
    async fn base_or_fetch(
        &self,
        record: &AdapterVersionRecord,
        digest: &Digest,
    ) -> Result<Option<OtherBase>, WorkerError> {
        if let Some(base) = self.base_of(digest) {
            return Ok(base);
        }
        let mismatch = || WorkerError::BaseMismatch {
            adapter: record.name.to_string(),
            version: record.version,
            expected: digest.clone(),
            actual: self.engine.base.digest.clone(),
        };
        let (Some(dir), Some(source)) = (&self.config.releases_dir, &self.config.release_source) else {
            return Err(mismatch());
        };
        tracing::info!(adapter = %record.name, version = record.version, release = %digest, "fetching the base release the adapter is bound to");
        let path = source.fetch_release(digest, dir).await.map_err(|error| WorkerError::ReleaseFetch {
            adapter: record.name.to_string(),
            version: record.version,
            release: digest.clone(),
            error: Box::new(error),
        })?;
        Ok(Some(OtherBase { digest: digest.clone(), path }))
    }

    /// Verifies the base binding (fetching a missing base release), fetches the weights (digest-verified by the
    /// registry) and loads them.
    async fn pull(&self, resolved: ResolvedVersion) -> Result<ServedAdapter, WorkerError> {
        let ResolvedVersion { record, manifest } = resolved;
        let base = self.base_or_fetch(&record, &manifest.lineage.base_model_digest).await?;
        let weights = manifest.file(ADAPTER_WEIGHTS_FILE).ok_or_else(|| {
            WorkerError::Engine(format!("manifest {} lists no {ADAPTER_WEIGHTS_FILE}", record.manifest_digest))
        })?;
        let bytes = self.registry.fetch_blob(&weights.digest).await?;
        self.engine.load(record.manifest_digest.clone(), bytes, base).await?;
        Ok(ServedAdapter {
            name: record.name.clone(),
            version: record.version,
            manifest_digest: record.manifest_digest.clone(),
            weights_digest: weights.digest.clone(),
            base_model_digest: manifest.lineage.base_model_digest.clone(),
            published_at: record.created_at,
            loaded_at: Utc::now(),
        })
    }

    /// Answers `prompt` with the base model (`model` = "base" or the base model's name) or a served adapter.
    pub async fn complete(
        &self,
        model: &str,
        prompt: Prompt,
        sampling: SamplingRequest,
    ) -> Result<CompletionOutput, WorkerError> {
        if sampling.max_tokens == 0 {
            return Err(WorkerError::InvalidRequest("max_tokens must be at least 1".to_string()));
        }
        if !(sampling.temperature.is_finite() && sampling.temperature >= 0.0) {
            return Err(WorkerError::InvalidRequest("temperature must be a number >= 0".to_string()));
        }
        if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
            return Err(WorkerError::InvalidRequest("top_p must be in (0, 1]".to_string()));
        }
        let adapter = if model == BASE_MODEL_ALIAS || model == self.engine.base.name {
            None
        } else {
            let name = AdapterName::new(model).map_err(|_| WorkerError::UnknownModel(model.to_string()))?;
            Some(self.served(&name).ok_or_else(|| WorkerError::UnknownModel(model.to_string()))?)
        };
        let params = GenerationParams {
            max_new_tokens: sampling.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: sampling.seed,
            stop_token_ids: Vec::new(),
        };
        let request = || GenerateRequest {
            adapter: adapter.as_ref().map(|served| served.manifest_digest.clone()),
            prompt: prompt.clone(),
            params: params.clone(),
            stop: sampling.stop.clone(),
        };
        let output = match self.engine.generate(request()).await? {
            Err(GenerateError::AdapterNotLoaded) => {
                // Evicted from the cache since it was pulled: load it again, by digest, and retry once.
                if let Some(served) = &adapter {
                    let bytes = self.registry.fetch_blob(&served.weights_digest).await?;
                    let base = self.base_of(&served.base_model_digest).flatten();
                    self.engine.load(served.manifest_digest.clone(), bytes, base).await?;
                }
                self.engine.generate(request()).await?
            }
            other => other,
        };
        let mut output = output.map_err(|error| match error {
            GenerateError::AdapterNotLoaded => WorkerError::Engine("adapter could not be loaded".to_string()),
            GenerateError::Engine(message) => WorkerError::Engine(message),
        })?;
        output.adapter = adapter;
        Ok(output)
    }

    /// Calls `refresh_all` every `refresh_interval` until `shutdown` turns true.
    pub async fn run_refresh_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.refresh_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(error) = self.refresh_all().await {
                        tracing::warn!(%error, "adapter refresh failed");
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// Pulls a just-published version now rather than at the next poll.
    pub fn on_published(self: &Arc<Self>, version: &AdapterVersionRecord) {
        let worker = Arc::clone(self);
        let name = version.name.clone();
        tokio::spawn(async move {
            if let Err(error) = worker.refresh(&name).await {
                tracing::error!(adapter = %name, %error, "cannot serve the published version");
            }
        });
    }
}
