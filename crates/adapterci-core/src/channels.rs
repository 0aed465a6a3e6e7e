//! Channels, tags and deprecation of adapter versions, and the port that changes them.
//!
//! A channel (`stable`, `canary`, any [`ChannelName`]) is a pointer from an adapter to one of its versions. It
//! lives in the metadata store and every change (promote, rollback, pin) is one transaction there, together
//! with the event that records it: a reader sees a change wholly or not at all, and a pointer never names a
//! version that does not exist. A channel is bound to the base its version was trained for: promoting a version
//! trained for another base is refused unless the caller asks for the base to change.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::Lineage;
use crate::ports::{AdapterVersionRecord, NewAdapterVersion, StoreError};
use crate::{AdapterName, Digest};

pub use crate::names::{ChannelName, TagName};

/// The base a version must be served on: its base release when it was trained on one, else its base model.
pub fn base_binding(lineage: &Lineage) -> Digest {
    lineage.base_release_digest.clone().unwrap_or_else(|| lineage.base_model_digest.clone())
}

/// What makes two publishes "the same" apart from their time: the digest of the manifest with its creation
/// time blanked, and the base binding. Recorded with the version so that the index can refuse to add a second
/// version for a retried or duplicated publish inside its own transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionIdentity {
    pub content_digest: Digest,
    pub base_binding: Digest,
}

/// What a channel points at now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub adapter: AdapterName,
    pub channel: ChannelName,
    pub version: u64,
    /// The base the served version is bound to.
    pub base_binding: Digest,
    /// A pinned channel refuses promotions and rollbacks until unpinned.
    pub pinned: bool,
    pub updated_at: DateTime<Utc>,
}

/// How a channel came to point where it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelAction {
    Promote,
    Rollback,
}

impl ChannelAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelAction::Promote => "promote",
            ChannelAction::Rollback => "rollback",
        }
    }

    /// Parses what [`ChannelAction::as_str`] wrote.
    pub fn parse(value: &str) -> Option<ChannelAction> {
        match value {
            "promote" => Some(ChannelAction::Promote),
            "rollback" => Some(ChannelAction::Rollback),
            _ => None,
        }
    }
}

/// One change of a channel, kept forever (the audit log and the source of "previous" for rollbacks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEvent {
    pub adapter: AdapterName,
    pub channel: ChannelName,
    pub action: ChannelAction,
    pub from_version: Option<u64>,
    pub to_version: u64,
    pub at: DateTime<Utc>,
}

/// Where a rollback goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackTarget {
    /// The newest version this channel served before that is older than the current one and not deprecated.
    Previous,
    /// A named version (it must not be deprecated and must be bound to the channel's base).
    Version(u64),
}

/// A request to point `channel` of `adapter` at `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromoteRequest {
    pub adapter: AdapterName,
    pub channel: ChannelName,
    pub version: u64,
    /// Allows the channel to move to a version bound to another base (a deliberate base upgrade).
    pub allow_base_change: bool,
}

/// Why a channel change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("adapter {adapter} has no version {version}")]
    NoSuchVersion { adapter: AdapterName, version: u64 },
    #[error("adapter {adapter} has no channel {channel}")]
    NoSuchChannel { adapter: AdapterName, channel: ChannelName },
    /// The version was trained for another base than the one the channel serves.
    #[error("{0}")]
    BaseMismatch(Box<BaseMismatch>),
    #[error("refused: channel {channel} of {adapter} is pinned to v{version}; unpin it first")]
    Pinned { adapter: AdapterName, channel: ChannelName, version: u64 },
    #[error("refused: {adapter} v{version} is deprecated")]
    Deprecated { adapter: AdapterName, version: u64 },
    #[error("channel {channel} of {adapter} has no earlier version to roll back to (it serves v{current})")]
    NothingToRollBackTo { adapter: AdapterName, channel: ChannelName, current: u64 },
    #[error("tag {tag} of {adapter} already names v{existing}")]
    TagTaken { adapter: AdapterName, tag: TagName, existing: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The details of [`ChannelError::BaseMismatch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused: {adapter} v{version} is bound to base {version_base}, but channel {channel} serves v{current} on base \
     {channel_base}; publish a version trained on that base, or promote with --allow-base-change to move the \
     channel to the new base"
)]
pub struct BaseMismatch {
    pub adapter: AdapterName,
    pub channel: ChannelName,
    pub version: u64,
    pub version_base: Digest,
    pub current: u64,
    pub channel_base: Digest,
}

/// Channels, tags and deprecation, each change one transaction of the metadata store.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Points the channel at the version (creating the channel) and records the event, in one transaction.
    async fn promote(&self, request: PromoteRequest) -> Result<ChannelRecord, ChannelError>;
    /// Moves the channel back and records the event, in one transaction.
    async fn rollback(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        target: RollbackTarget,
    ) -> Result<ChannelRecord, ChannelError>;
    async fn set_pinned(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        pinned: bool,
    ) -> Result<ChannelRecord, ChannelError>;
    async fn get_channel(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
    ) -> Result<Option<ChannelRecord>, StoreError>;
    /// By channel name.
    async fn list_channels(&self, adapter: &AdapterName) -> Result<Vec<ChannelRecord>, StoreError>;
    /// Oldest first.
    async fn channel_history(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
    ) -> Result<Vec<ChannelEvent>, StoreError>;
    /// Marks a version deprecated (it can no longer be promoted) or clears the mark.
    async fn set_deprecated(&self, adapter: &AdapterName, version: u64, deprecated: bool) -> Result<(), ChannelError>;
    /// The deprecated versions of `adapter`, ascending.
    async fn deprecated_versions(&self, adapter: &AdapterName) -> Result<Vec<u64>, StoreError>;
    /// Names a version with a tag; a tag names one version for good (the same tag on the same version is a no-op).
    async fn tag_version(&self, adapter: &AdapterName, version: u64, tag: &TagName) -> Result<(), ChannelError>;
    async fn resolve_tag(&self, adapter: &AdapterName, tag: &TagName) -> Result<Option<u64>, StoreError>;
    /// `(tag, version)` by tag.
    async fn list_tags(&self, adapter: &AdapterName) -> Result<Vec<(TagName, u64)>, StoreError>;
    /// Records a version unless the adapter's latest version already has the same identity, in which case that
    /// version is returned: the check and the insert are one transaction, so identical publishes racing each
    /// other make one version. The flag is false when the latest version was returned for its identity.
    async fn record_version_once(
        &self,
        version: NewAdapterVersion,
        identity: VersionIdentity,
    ) -> Result<(AdapterVersionRecord, bool), StoreError>;
}

/// What the registry needs from the metadata store: the version index, its channels, and the guard that keeps
/// the garbage collector away from blobs being published.
pub trait VersionIndex: crate::ports::AdapterIndex + ChannelStore + crate::gc::BlobGuard {}
impl<T: crate::ports::AdapterIndex + ChannelStore + crate::gc::BlobGuard> VersionIndex for T {}
