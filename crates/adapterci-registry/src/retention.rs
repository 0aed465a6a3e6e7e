//! Garbage collection with a retention policy: first every adapter's versions outside the policy leave the index
//! (never the newest ones, never one a channel or tag references), then the sweep deletes the blobs nothing
//! references any more. A publish racing either step is as safe as with a plain sweep: its blobs are registered
//! with the guard before it writes them.

use adapterci_core::AdapterName;
use adapterci_core::ports::RegistryError;
use adapterci_core::retention::{RetentionPolicy, VersionRetention};
use chrono::Duration;

use crate::{GcReport, ObjectStoreRegistry};

/// The versions a retention pass removed, per adapter (oldest first), and what the sweep after it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub pruned: Vec<(AdapterName, Vec<u64>)>,
    pub gc: GcReport,
}

impl ObjectStoreRegistry {
    /// Lets garbage collection prune versions through `retention` (the metadata store behind the index).
    pub fn with_retention(mut self, retention: std::sync::Arc<dyn VersionRetention>) -> Self {
        self.retention = Some(retention);
        self
    }

    fn retention(&self) -> Option<&dyn VersionRetention> {
        self.retention.as_deref()
    }

    /// Applies `policy` to every adapter (when given), then collects unreferenced blobs older than `grace`.
    pub async fn collect_garbage_with_retention(
        &self,
        policy: Option<RetentionPolicy>,
        grace: Duration,
    ) -> Result<RetentionReport, RegistryError> {
        let mut pruned = Vec::new();
        if let Some(policy) = policy {
            let Some(retention) = self.retention() else {
                return Err(RegistryError::InvalidRequest {
                    what: "garbage collection with a retention policy".to_string(),
                    reason: "this registry was opened without a store that can prune versions".to_string(),
                });
            };
            for adapter in self.index().list_adapter_names().await? {
                let versions = retention.prune_versions(&adapter, policy).await?;
                if !versions.is_empty() {
                    pruned.push((adapter, versions));
                }
            }
        }
        let gc = self.collect_garbage(grace).await?;
        Ok(RetentionReport { pruned, gc })
    }
}
