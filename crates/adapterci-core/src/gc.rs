//! Coordination between publishes and the registry's garbage collector, through the metadata store.
//!
//! A sweep deletes blobs that no version references. A publish may reuse a blob that is unreferenced at that
//! moment (left by an earlier crash), so a sweep must never decide on a blob while a publish that needs it is
//! under way. Publishes register the digests they will write before writing any; a sweep starts only in a
//! transaction that sees every registered publish (and protects their digests), and no publish registers
//! while a sweep runs. Registrations and sweeps left behind by a crash expire.

use async_trait::async_trait;
use chrono::Duration;

use crate::Digest;
use crate::ports::StoreError;

/// A registration or sweep older than this is treated as left behind by a crash.
pub const PUBLISH_REGISTRATION_TTL: Duration = Duration::hours(6);
/// A sweep older than this is treated as crashed; the collector stops deleting before it is that old.
pub const SWEEP_TTL: Duration = Duration::minutes(10);

/// Publishes in progress and the one sweep at a time.
#[async_trait]
pub trait BlobGuard: Send + Sync {
    /// Registers a publish that will write `digests`; `Ok(None)` while a sweep runs (try again shortly).
    async fn try_begin_publish(&self, digests: &[Digest]) -> Result<Option<String>, StoreError>;
    /// Ends the registration `id` (whatever the publish's outcome).
    async fn end_publish(&self, id: &str) -> Result<(), StoreError>;
    /// Starts a sweep and returns the digests of every publish in progress; `Ok(None)` when another sweep runs.
    async fn try_begin_sweep(&self) -> Result<Option<Vec<Digest>>, StoreError>;
    async fn end_sweep(&self) -> Result<(), StoreError>;
}
