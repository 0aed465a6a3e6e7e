//! Retention of adapter versions: which old versions the registry may forget. A version survives when it is one
//! of the newest `keep_last`, when a channel points at it (pinned channels included) or when a tag names it.
//! Pruning removes the version from the index in one transaction (a foreign key from channels and tags makes a
//! racing promote of a doomed version fail rather than dangle); garbage collection then sweeps its blobs.

use async_trait::async_trait;

use crate::AdapterName;
use crate::ports::StoreError;

/// How many versions of each adapter to keep beside the referenced ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    keep_last: u64,
}

impl RetentionPolicy {
    /// Keeps the newest `keep_last` versions (at least one: the latest version is never pruned).
    pub fn keep_last(keep_last: u64) -> Result<RetentionPolicy, String> {
        if keep_last == 0 {
            return Err("keep_last must be at least 1: the latest version is always kept".to_string());
        }
        Ok(RetentionPolicy { keep_last })
    }

    pub fn kept_newest(self) -> u64 {
        self.keep_last
    }
}

/// Removes versions a retention policy no longer keeps.
#[async_trait]
pub trait VersionRetention: Send + Sync {
    /// Removes `adapter`'s versions beyond the policy that no channel or tag references; returns them, oldest
    /// first. Version numbers are never reused: the next publish still gets the next number.
    async fn prune_versions(&self, adapter: &AdapterName, policy: RetentionPolicy) -> Result<Vec<u64>, StoreError>;
}
