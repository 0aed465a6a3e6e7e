//! `ChannelStore` for the in-memory metadata store: the same rules as the database one (pinning, deprecation,
//! base binding, "previous" from the event log), each change under the one mutex, so it is atomic too.

use adapterci_core::channels::{
    BaseMismatch, ChannelAction, ChannelError, ChannelEvent, ChannelName, ChannelRecord, ChannelStore, PromoteRequest,
    RollbackTarget, TagName, VersionIdentity,
};
use adapterci_core::ports::{AdapterVersionRecord, NewAdapterVersion, StoreError};
use adapterci_core::{AdapterName, Digest};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store_fake::{InMemoryMetadataStore, State};

impl State {
    /// `(base binding, deprecated)` of a version, or `None` when it does not exist.
    fn version_facts_of(&self, adapter: &AdapterName, version: u64) -> Option<(Digest, bool)> {
        let record = self.versions.get(adapter)?.get(usize::try_from(version).ok()?.checked_sub(1)?)?;
        let (identity, deprecated) =
            self.version_facts.get(adapter).and_then(|facts| facts.get(record.version as usize - 1)).cloned()?;
        let binding = identity.map_or_else(|| record.base_model_digest.clone(), |identity| identity.base_binding);
        Some((binding, deprecated))
    }

    fn check_move(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        version: u64,
        allow_base_change: bool,
    ) -> Result<Digest, ChannelError> {
        let current = self.channels.get(&(adapter.clone(), channel.clone()));
        let Some((binding, deprecated)) = self.version_facts_of(adapter, version) else {
            return Err(ChannelError::NoSuchVersion { adapter: adapter.clone(), version });
        };
        if let Some(current) = current
            && current.pinned
        {
            return Err(ChannelError::Pinned {
                adapter: adapter.clone(),
                channel: channel.clone(),
                version: current.version,
            });
        }
        if deprecated {
            return Err(ChannelError::Deprecated { adapter: adapter.clone(), version });
        }
        if let Some(current) = current
            && !allow_base_change
            && current.base_binding != binding
        {
            return Err(ChannelError::BaseMismatch(Box::new(BaseMismatch {
                adapter: adapter.clone(),
                channel: channel.clone(),
                version,
                version_base: binding,
                current: current.version,
                channel_base: current.base_binding.clone(),
            })));
        }
        Ok(binding)
    }

    fn move_channel(
        &mut self,
        adapter: &AdapterName,
        channel: &ChannelName,
        (version, binding): (u64, Digest),
        action: ChannelAction,
        now: DateTime<Utc>,
    ) -> ChannelRecord {
        let key = (adapter.clone(), channel.clone());
        let current = self.channels.get(&key);
        let record = ChannelRecord {
            adapter: adapter.clone(),
            channel: channel.clone(),
            version,
            base_binding: binding,
            pinned: current.is_some_and(|current| current.pinned),
            updated_at: now,
        };
        self.channel_events.push(ChannelEvent {
            adapter: adapter.clone(),
            channel: channel.clone(),
            action,
            from_version: current.map(|current| current.version),
            to_version: version,
            at: now,
        });
        self.channels.insert(key, record.clone());
        record
    }

    fn previous_version(&self, current: &ChannelRecord) -> Option<u64> {
        self.channel_events
            .iter()
            .rev()
            .filter(|event| event.adapter == current.adapter && event.channel == current.channel)
            .map(|event| event.to_version)
            .filter(|version| *version < current.version)
            .find(|version| {
                self.version_facts_of(&current.adapter, *version)
                    .is_some_and(|(binding, deprecated)| !deprecated && binding == current.base_binding)
            })
    }
}

#[async_trait]
impl ChannelStore for InMemoryMetadataStore {
    async fn promote(&self, request: PromoteRequest) -> Result<ChannelRecord, ChannelError> {
        let now = self.now();
        let mut state = self.lock()?;
        if let Some(current) = state.channels.get(&(request.adapter.clone(), request.channel.clone()))
            && current.version == request.version
        {
            // Already there (a retried promote): nothing changes and no second event is recorded.
            return Ok(current.clone());
        }
        let binding =
            state.check_move(&request.adapter, &request.channel, request.version, request.allow_base_change)?;
        Ok(state.move_channel(
            &request.adapter,
            &request.channel,
            (request.version, binding),
            ChannelAction::Promote,
            now,
        ))
    }

    async fn rollback(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        target: RollbackTarget,
    ) -> Result<ChannelRecord, ChannelError> {
        let now = self.now();
        let mut state = self.lock()?;
        let Some(current) = state.channels.get(&(adapter.clone(), channel.clone())).cloned() else {
            return Err(ChannelError::NoSuchChannel { adapter: adapter.clone(), channel: channel.clone() });
        };
        let version = match target {
            RollbackTarget::Version(version) => version,
            RollbackTarget::Previous => {
                state.previous_version(&current).ok_or_else(|| ChannelError::NothingToRollBackTo {
                    adapter: adapter.clone(),
                    channel: channel.clone(),
                    current: current.version,
                })?
            }
        };
        let binding = state.check_move(adapter, channel, version, false)?;
        Ok(state.move_channel(adapter, channel, (version, binding), ChannelAction::Rollback, now))
    }

    async fn set_pinned(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        pinned: bool,
    ) -> Result<ChannelRecord, ChannelError> {
        let mut state = self.lock()?;
        let Some(current) = state.channels.get_mut(&(adapter.clone(), channel.clone())) else {
            return Err(ChannelError::NoSuchChannel { adapter: adapter.clone(), channel: channel.clone() });
        };
        current.pinned = pinned;
        Ok(current.clone())
    }

    async fn get_channel(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self.lock()?.channels.get(&(adapter.clone(), channel.clone())).cloned())
    }

    async fn list_channels(&self, adapter: &AdapterName) -> Result<Vec<ChannelRecord>, StoreError> {
        let state = self.lock()?;
        Ok(state.channels.values().filter(|record| &record.adapter == adapter).cloned().collect())
    }

    async fn channel_history(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
    ) -> Result<Vec<ChannelEvent>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .channel_events
            .iter()
            .filter(|event| &event.adapter == adapter && &event.channel == channel)
            .cloned()
            .collect())
    }

    async fn set_deprecated(&self, adapter: &AdapterName, version: u64, deprecated: bool) -> Result<(), ChannelError> {
        let mut state = self.lock()?;
        let count = state.versions.get(adapter).map_or(0, Vec::len);
        let index = usize::try_from(version).ok().and_then(|v| v.checked_sub(1)).filter(|index| *index < count);
        let Some(index) = index else {
            return Err(ChannelError::NoSuchVersion { adapter: adapter.clone(), version });
        };
        let facts = state.version_facts.entry(adapter.clone()).or_default();
        facts.resize(count.max(facts.len()), (None, false));
        facts[index].1 = deprecated;
        Ok(())
    }

    async fn deprecated_versions(&self, adapter: &AdapterName) -> Result<Vec<u64>, StoreError> {
        let state = self.lock()?;
        let facts = state.version_facts.get(adapter).map(Vec::as_slice).unwrap_or_default();
        Ok(facts.iter().enumerate().filter(|(_, (_, deprecated))| *deprecated).map(|(i, _)| i as u64 + 1).collect())
    }

    async fn tag_version(&self, adapter: &AdapterName, version: u64, tag: &TagName) -> Result<(), ChannelError> {
        let mut state = self.lock()?;
        if state.version_facts_of(adapter, version).is_none() {
            return Err(ChannelError::NoSuchVersion { adapter: adapter.clone(), version });
        }
        let existing = *state.tags.entry((adapter.clone(), tag.clone())).or_insert(version);
        if existing != version {
            return Err(ChannelError::TagTaken { adapter: adapter.clone(), tag: tag.clone(), existing });
        }
        Ok(())
    }

    async fn resolve_tag(&self, adapter: &AdapterName, tag: &TagName) -> Result<Option<u64>, StoreError> {
        Ok(self.lock()?.tags.get(&(adapter.clone(), tag.clone())).copied())
    }

    async fn list_tags(&self, adapter: &AdapterName) -> Result<Vec<(TagName, u64)>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .tags
            .iter()
            .filter(|((owner, _), _)| owner == adapter)
            .map(|((_, tag), version)| (tag.clone(), *version))
            .collect())
    }

    async fn record_version_once(
        &self,
        version: NewAdapterVersion,
        identity: VersionIdentity,
    ) -> Result<(AdapterVersionRecord, bool), StoreError> {
        let now = self.now();
        let mut state = self.lock()?;
        if let Some(latest) = state.versions.get(&version.name).and_then(|versions| versions.last()) {
            let index = latest.version as usize - 1;
            let facts = state.version_facts.get(&version.name).and_then(|facts| facts.get(index));
            let content = facts.and_then(|(identity, _)| identity.as_ref()).map(|identity| &identity.content_digest);
            if content == Some(&identity.content_digest) {
                return Ok((latest.clone(), false));
            }
        }
        if let Some(existing) = state
            .versions
            .get(&version.name)
            .and_then(|versions| versions.iter().find(|record| record.manifest_digest == version.manifest_digest))
        {
            return Ok((existing.clone(), false));
        }
        Ok((state.push_version(version, Some(identity), now), true))
    }
}

#[async_trait]
impl adapterci_core::gc::BlobGuard for InMemoryMetadataStore {
    async fn try_begin_publish(&self, digests: &[Digest]) -> Result<Option<String>, StoreError> {
        let now = self.now();
        let mut state = self.lock()?;
        if state.sweep.is_some_and(|started| now - started < adapterci_core::gc::SWEEP_TTL) {
            return Ok(None);
        }
        let id = uuid::Uuid::now_v7().to_string();
        state.publishes.insert(id.clone(), (digests.to_vec(), now));
        Ok(Some(id))
    }

    async fn end_publish(&self, id: &str) -> Result<(), StoreError> {
        self.lock()?.publishes.remove(id);
        Ok(())
    }

    async fn try_begin_sweep(&self) -> Result<Option<Vec<Digest>>, StoreError> {
        let now = self.now();
        let mut state = self.lock()?;
        if state.sweep.is_some_and(|started| now - started < adapterci_core::gc::SWEEP_TTL) {
            return Ok(None);
        }
        state.sweep = Some(now);
        state.publishes.retain(|_, (_, started)| now - *started < adapterci_core::gc::PUBLISH_REGISTRATION_TTL);
        Ok(Some(state.publishes.values().flat_map(|(digests, _)| digests.iter().cloned()).collect()))
    }

    async fn end_sweep(&self) -> Result<(), StoreError> {
        self.lock()?.sweep = None;
        Ok(())
    }
}
