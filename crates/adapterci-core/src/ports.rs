//! Port traits: what the controller, worker and server need from the outside world. Implementations live in
//! their own crates (store: sea-orm; registry and dataset sources: object_store; training: the engine) and
//! the server wires them together. Tests of the controller use in-memory fakes from the testkit.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::{AdapterManifest, EvalReport, Lineage};
use crate::run::{NewRun, RunPatch, RunRecord};
use crate::training::{AdapterConfig, ProgressSink, TrainJob, TrainOutput, TrainingFailure};
use crate::{AdapterName, Digest, PipelineName};

// ----------------------------------------------------------------------------------------------------------
// metadata store

/// Errors of the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    /// A uniqueness rule or an optimistic check failed; the caller may retry.
    #[error("conflict: {what}")]
    Conflict { what: String },
    /// A state change that the run state machine forbids.
    #[error("{0}")]
    InvalidTransition(String),
    /// The database failed or returned data this code cannot read.
    #[error("metadata store: {0}")]
    Backend(String),
}

/// A stored pipeline definition; the revision grows by one whenever its spec changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub name: PipelineName,
    pub revision: u64,
    /// The YAML as applied, kept verbatim.
    pub spec_yaml: String,
    pub spec_digest: Digest,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait PipelineStore: Send + Sync {
    /// Stores `spec_yaml` under `name`. Unchanged content keeps the revision; a change adds one.
    async fn upsert_pipeline(&self, name: &PipelineName, spec_yaml: &str) -> Result<PipelineRecord, StoreError>;
    async fn get_pipeline(&self, name: &PipelineName) -> Result<Option<PipelineRecord>, StoreError>;
    async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError>;
}

#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError>;
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Newest first; `pipeline` filters, `limit` caps.
    async fn list_runs(&self, pipeline: Option<&PipelineName>, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    /// Applies `patch`; a state change is checked against the run state machine.
    async fn update_run(&self, id: &str, patch: RunPatch) -> Result<RunRecord, StoreError>;
    /// Atomically moves the oldest queued run to `running` and returns it; `None` when nothing is queued.
    async fn claim_next_run(&self) -> Result<Option<RunRecord>, StoreError>;
}

/// What a watcher last saw at a location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    pub etag: Option<String>,
    pub digest: Digest,
    pub seen_at: DateTime<Utc>,
}

#[async_trait]
pub trait WatchStore: Send + Sync {
    async fn get_watch(&self, pipeline: &PipelineName, location: &str) -> Result<Option<WatchState>, StoreError>;
    async fn put_watch(&self, pipeline: &PipelineName, location: &str, state: &WatchState) -> Result<(), StoreError>;
}

/// One published version in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterVersionRecord {
    pub name: AdapterName,
    pub version: u64,
    pub manifest_digest: Digest,
    pub base_model_digest: Digest,
    pub run_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A version to add to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAdapterVersion {
    pub name: AdapterName,
    pub manifest_digest: Digest,
    pub base_model_digest: Digest,
    pub run_id: Option<String>,
}

/// The index of published versions. Version numbers are allocated here, in one transaction, so they are
/// unique and without gaps even when the blob store has no compare-and-swap.
#[async_trait]
pub trait AdapterIndex: Send + Sync {
    /// Allocates the next version number of `version.name` (1 for the first) and records it. Recording the same
    /// manifest digest twice for one adapter returns the existing record instead of a new version.
    async fn record_version(&self, version: NewAdapterVersion) -> Result<AdapterVersionRecord, StoreError>;
    async fn get_version(&self, name: &AdapterName, version: u64) -> Result<Option<AdapterVersionRecord>, StoreError>;
    async fn latest_version(&self, name: &AdapterName) -> Result<Option<AdapterVersionRecord>, StoreError>;
    /// Oldest first.
    async fn list_versions(&self, name: &AdapterName) -> Result<Vec<AdapterVersionRecord>, StoreError>;
    async fn list_adapter_names(&self) -> Result<Vec<AdapterName>, StoreError>;
}

/// Everything the metadata store offers.
pub trait MetadataStore: PipelineStore + RunStore + WatchStore + AdapterIndex + crate::channels::ChannelStore {}
impl<T: PipelineStore + RunStore + WatchStore + AdapterIndex + crate::channels::ChannelStore> MetadataStore for T {}

// ----------------------------------------------------------------------------------------------------------
// registry

/// Errors of the adapter registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} not found")]
    NotFound { what: String },
    /// Stored bytes do not match their digest: corruption or tampering.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    #[error("invalid manifest {digest}: {reason}")]
    InvalidManifest { digest: Digest, reason: String },
    /// A request that cannot be carried out as given (a publish without weights, a bad file name, an object-store
    /// URL with an unknown scheme); `what` names the offending input.
    #[error("invalid {what}: {reason}")]
    InvalidRequest { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object store: {0}")]
    Backend(String),
}

/// What to publish: files plus the manifest's fields; the registry adds digests, sizes and the time.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub name: AdapterName,
    pub adapter: AdapterConfig,
    /// `(file name, bytes)`; must include `adapter_model.safetensors`.
    pub files: Vec<(String, Bytes)>,
    pub lineage: Lineage,
    pub eval: Option<EvalReport>,
}

/// A published version with its manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedVersion {
    pub record: AdapterVersionRecord,
    pub manifest: AdapterManifest,
}

#[async_trait]
pub trait AdapterRegistry: Send + Sync {
    /// Uploads the blobs, then the manifest, then records the version: a crash leaves at worst unreferenced
    /// blobs, never a version without its files.
    async fn publish(&self, request: PublishRequest) -> Result<AdapterVersionRecord, RegistryError>;
    /// The newest version of `name`, with its verified manifest.
    async fn latest(&self, name: &AdapterName) -> Result<Option<ResolvedVersion>, RegistryError>;
    async fn get(&self, name: &AdapterName, version: u64) -> Result<Option<ResolvedVersion>, RegistryError>;
    async fn list_versions(&self, name: &AdapterName) -> Result<Vec<AdapterVersionRecord>, RegistryError>;
    async fn list_adapters(&self) -> Result<Vec<AdapterName>, RegistryError>;
    /// A blob's bytes, verified against `digest`.
    async fn fetch_blob(&self, digest: &Digest) -> Result<Bytes, RegistryError>;
}

// ----------------------------------------------------------------------------------------------------------
// dataset sources

/// Errors reading a dataset location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("invalid location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    #[error("dataset location {location:?} does not exist")]
    NotFound { location: String },
    #[error("object store: {0}")]
    Backend(String),
}

/// Cheap facts about an object, used to skip reading it when nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    pub etag: Option<String>,
    pub last_modified: DateTime<Utc>,
    pub size: u64,
}

/// One object found below a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// The object's full key, such as `datasets/demo/part-1.jsonl`.
    pub key: String,
    pub stat: ObjectStat,
}

/// A place datasets live (an object-store bucket or a local directory), addressed by keys like
/// `datasets/demo/train.jsonl`.
#[async_trait]
pub trait DatasetSource: Send + Sync {
    /// `None` when nothing is stored at `location`.
    async fn stat(&self, location: &str) -> Result<Option<ObjectStat>, SourceError>;
    async fn read(&self, location: &str) -> Result<Bytes, SourceError>;
    async fn write(&self, location: &str, bytes: Bytes) -> Result<(), SourceError>;
    /// Every object whose key lies below `prefix` (a key prefix ending in `/`, such as `datasets/demo/`), at any
    /// depth, in key order. Sources that cannot list refuse, naming the prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, SourceError> {
        Err(SourceError::InvalidLocation {
            location: prefix.to_string(),
            reason: "this dataset source cannot list a prefix".to_string(),
        })
    }
}

// ----------------------------------------------------------------------------------------------------------
// execution

/// Runs training jobs somewhere (a thread, a local process, a Kubernetes Job) and waits for them.
#[async_trait]
pub trait TrainingExecutor: Send + Sync {
    async fn execute(
        &self,
        job: TrainJob,
        progress: std::sync::Arc<dyn ProgressSink>,
    ) -> Result<TrainOutput, TrainingFailure>;
}

/// The time, so that tests can control it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
