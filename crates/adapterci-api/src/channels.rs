//! Channels, deprecation and garbage collection of the registry: `GET /api/v1/adapters/{name}/channels`,
//! `POST .../channels/{channel}/promote|rollback|pin`, `POST /api/v1/adapters/{name}/versions/{version}/deprecate`
//! and `POST /api/v1/registry/gc`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a channel points at now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub adapter: String,
    pub channel: String,
    pub version: u64,
    /// The base the served version is bound to (its base release, else its base model).
    pub base_binding: String,
    /// A pinned channel refuses promotions and rollbacks until unpinned.
    pub pinned: bool,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST .../channels/{channel}/promote`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteBody {
    pub version: u64,
    /// Allow the channel to move to a version bound to another base.
    #[serde(default)]
    pub allow_base_change: bool,
}

/// Body of `POST .../channels/{channel}/rollback`: a named version, or the one served before when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Body of `POST .../channels/{channel}/pin`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinBody {
    pub pinned: bool,
}

/// Body of `POST /api/v1/adapters/{name}/versions/{version}/deprecate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecateBody {
    pub deprecated: bool,
}

/// Answer of a deprecation: the version and its state now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecateResponse {
    pub adapter: String,
    pub version: u64,
    pub deprecated: bool,
}

/// One attempt to deliver an outbound registry event (`GET /api/v1/registry/events`, newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAttemptInfo {
    pub event_id: String,
    /// `published`, `promoted`, `rolled_back` or `gate_failed`.
    pub kind: String,
    pub endpoint: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The HTTP status the endpoint answered, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Body of `POST /api/v1/registry/gc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcBody {
    /// Unreferenced blobs younger than this are kept.
    pub grace_secs: u64,
    /// Retention: first remove each adapter's versions beyond the newest `keep_last` that no channel or tag
    /// references. Absent, no version is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u64>,
}

/// What a garbage-collection sweep did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    /// Blobs found in the store.
    pub scanned: usize,
    /// Blobs referenced by a version or protected by a publish in progress.
    pub referenced: usize,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Digests of the unreferenced blobs deleted.
    pub deleted: Vec<String>,
    /// The versions the retention policy removed, as `name@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}
