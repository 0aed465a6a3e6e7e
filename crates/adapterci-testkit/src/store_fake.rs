//! An in-memory `MetadataStore` with the semantics of the database one (revisions, the run state machine,
//! gapless versions, microsecond timestamps), for controller tests that must not touch a database. The
//! conformance suite in `store_conformance` holds it to the same behaviour as `SeaStore`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use adapterci_core::channels::{ChannelEvent, ChannelName, ChannelRecord, TagName, VersionIdentity};
use adapterci_core::ports::{
    AdapterIndex, AdapterVersionRecord, Clock, NewAdapterVersion, PipelineRecord, PipelineStore, RunStore, StoreError,
    SystemClock, WatchState, WatchStore,
};
use adapterci_core::run::{NewRun, RunPatch, RunRecord, RunState};
use adapterci_core::{AdapterName, Digest, PipelineName};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

#[derive(Default)]
pub(crate) struct State {
    pipelines: BTreeMap<PipelineName, PipelineRecord>,
    runs: HashMap<String, RunRecord>,
    watches: HashMap<(PipelineName, String), WatchState>,
    /// Each adapter's versions, oldest first; version `n` is at index `n - 1`.
    pub(crate) versions: BTreeMap<AdapterName, Vec<AdapterVersionRecord>>,
    /// `(identity, deprecated)` of each version, in step with `versions`; `None` identity for plain records.
    pub(crate) version_facts: BTreeMap<AdapterName, Vec<(Option<VersionIdentity>, bool)>>,
    pub(crate) channels: BTreeMap<(AdapterName, ChannelName), ChannelRecord>,
    pub(crate) channel_events: Vec<ChannelEvent>,
    pub(crate) tags: BTreeMap<(AdapterName, TagName), u64>,
    /// Publishes registered with the garbage collector: id -> (digests, started at).
    pub(crate) publishes: BTreeMap<String, (Vec<Digest>, DateTime<Utc>)>,
    /// When the running sweep started.
    pub(crate) sweep: Option<DateTime<Utc>>,
}

/// A metadata store that lives in a mutex. Cheap to create: make one per test.
pub struct InMemoryMetadataStore {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InMemoryMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryMetadataStore").finish_non_exhaustive()
    }
}

impl Default for InMemoryMetadataStore {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// Adds the next version of `version.name` (the caller checked it is new).
    pub(crate) fn push_version(
        &mut self,
        version: NewAdapterVersion,
        identity: Option<VersionIdentity>,
        now: DateTime<Utc>,
    ) -> AdapterVersionRecord {
        let versions = self.versions.entry(version.name.clone()).or_default();
        let record = AdapterVersionRecord {
            version: versions.len() as u64 + 1,
            name: version.name,
            manifest_digest: version.manifest_digest,
            base_model_digest: version.base_model_digest,
            run_id: version.run_id,
            created_at: now,
        };
        versions.push(record.clone());
        let facts = self.version_facts.entry(record.name.clone()).or_default();
        facts.resize(versions.len() - 1, (None, false));
        facts.push((identity, false));
        record
    }
}

impl InMemoryMetadataStore {
    /// An empty store on the system clock.
    pub fn new() -> InMemoryMetadataStore {
        InMemoryMetadataStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that stamps records with `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> InMemoryMetadataStore {
        InMemoryMetadataStore { state: Mutex::new(State::default()), clock }
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Backend("in-memory store poisoned by a panicking test".to_string()))
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        stored_time(self.clock.now())
    }
}

/// The database keeps microseconds; so does the fake.
fn stored_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// Newest first, as the database orders them (creation time, then the time-ordered id).
fn newest_first(a: &RunRecord, b: &RunRecord) -> std::cmp::Ordering {
    b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id))
}

#[async_trait]
impl PipelineStore for InMemoryMetadataStore {
    async fn upsert_pipeline(&self, name: &PipelineName, spec_yaml: &str) -> Result<PipelineRecord, StoreError> {
        let now = self.now();
        let spec_digest = Digest::of(spec_yaml.as_bytes());
        let mut state = self.lock()?;
        let record = match state.pipelines.get(name) {
            Some(current) if current.spec_digest == spec_digest => return Ok(current.clone()),
            Some(current) => PipelineRecord {
                revision: current.revision + 1,
                spec_yaml: spec_yaml.to_string(),
                spec_digest,
                updated_at: now,
                ..current.clone()
            },
            None => PipelineRecord {
                name: name.clone(),
                revision: 1,
                spec_yaml: spec_yaml.to_string(),
                spec_digest,
                created_at: now,
                updated_at: now,
            },
        };
        state.pipelines.insert(name.clone(), record.clone());
        Ok(record)
    }

    async fn get_pipeline(&self, name: &PipelineName) -> Result<Option<PipelineRecord>, StoreError> {
        Ok(self.lock()?.pipelines.get(name).cloned())
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError> {
        Ok(self.lock()?.pipelines.values().cloned().collect())
    }
}

#[async_trait]
impl RunStore for InMemoryMetadataStore {
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError> {
        let now = self.now();
        let record = run.into_queued_record(uuid::Uuid::now_v7().to_string(), now);
        self.lock()?.runs.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.lock()?.runs.get(id).cloned())
    }

    async fn list_runs(&self, pipeline: Option<&PipelineName>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let state = self.lock()?;
        let mut runs: Vec<RunRecord> =
            state.runs.values().filter(|run| pipeline.is_none_or(|name| &run.pipeline == name)).cloned().collect();
        runs.sort_by(newest_first);
        runs.truncate(limit);
        Ok(runs)
    }

    async fn update_run(&self, id: &str, patch: RunPatch) -> Result<RunRecord, StoreError> {
        let now = self.now();
        let mut state = self.lock()?;
        let run = state.runs.get_mut(id).ok_or_else(|| StoreError::NotFound { what: format!("run {id}") })?;
        if let Some(next) = patch.state {
            run.state.transition(next).map_err(|err| StoreError::InvalidTransition(format!("run {id}: {err}")))?;
        }
        let RunPatch { state: next_state, stage, dataset_digest, report, published, error } = patch;
        run.state = next_state.unwrap_or(run.state);
        run.stage = stage.or(run.stage);
        run.dataset_digest = dataset_digest.or(run.dataset_digest.take());
        run.report = report.or(run.report.take());
        run.published = published.or(run.published.take());
        run.error = error.or(run.error.take());
        run.updated_at = now;
        Ok(run.clone())
    }

    async fn claim_next_run(&self) -> Result<Option<RunRecord>, StoreError> {
        let now = self.now();
        let mut state = self.lock()?;
        let oldest = state.runs.values().filter(|run| run.state == RunState::Queued).max_by(|a, b| newest_first(a, b));
        let Some(id) = oldest.map(|run| run.id.clone()) else {
            return Ok(None);
        };
        let run = state.runs.get_mut(&id).ok_or_else(|| StoreError::NotFound { what: format!("run {id}") })?;
        run.state = RunState::Running;
        run.updated_at = now;
        Ok(Some(run.clone()))
    }
}

#[async_trait]
impl WatchStore for InMemoryMetadataStore {
    async fn get_watch(&self, pipeline: &PipelineName, location: &str) -> Result<Option<WatchState>, StoreError> {
        Ok(self.lock()?.watches.get(&(pipeline.clone(), location.to_string())).cloned())
    }

    async fn put_watch(&self, pipeline: &PipelineName, location: &str, state: &WatchState) -> Result<(), StoreError> {
        let stored = WatchState { seen_at: stored_time(state.seen_at), ..state.clone() };
        self.lock()?.watches.insert((pipeline.clone(), location.to_string()), stored);
        Ok(())
    }
}

#[async_trait]
impl AdapterIndex for InMemoryMetadataStore {
    async fn record_version(&self, version: NewAdapterVersion) -> Result<AdapterVersionRecord, StoreError> {
        let now = self.now();
        let mut state = self.lock()?;
        let versions = state.versions.entry(version.name.clone()).or_default();
        if let Some(existing) = versions.iter().find(|record| record.manifest_digest == version.manifest_digest) {
            return Ok(existing.clone());
        }
        Ok(state.push_version(version, None, now))
    }

    async fn get_version(&self, name: &AdapterName, version: u64) -> Result<Option<AdapterVersionRecord>, StoreError> {
        let state = self.lock()?;
        let found = state.versions.get(name).and_then(|versions| versions.iter().find(|r| r.version == version));
        Ok(found.cloned())
    }

    async fn latest_version(&self, name: &AdapterName) -> Result<Option<AdapterVersionRecord>, StoreError> {
        Ok(self.lock()?.versions.get(name).and_then(|versions| versions.last().cloned()))
    }

    async fn list_versions(&self, name: &AdapterName) -> Result<Vec<AdapterVersionRecord>, StoreError> {
        Ok(self.lock()?.versions.get(name).cloned().unwrap_or_default())
    }

    async fn list_adapter_names(&self) -> Result<Vec<AdapterName>, StoreError> {
        let state = self.lock()?;
        Ok(state.versions.iter().filter(|(_, versions)| !versions.is_empty()).map(|(name, _)| name.clone()).collect())
    }
}
