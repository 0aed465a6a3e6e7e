//! Garbage collection of blobs no version references: mark (every manifest of every version, and every blob a
//! publish in progress will write) and sweep (delete the rest once older than a grace period).
//!
//! The sweep never races a publish: both coordinate through the metadata store's [`BlobGuard`]. A publish
//! registers the digests it will write before writing any; a sweep starts in a transaction that sees every
//! registration and protects those digests, and no publish registers while a sweep runs (it waits). So a blob
//! a publish relies on is either protected by its registration or referenced by its recorded version.
//!
//! Only `blobs/sha256/` below the registry's prefix is listed and swept: base releases (`releases/`, see
//! `releases.rs`) and the Kubernetes executor's staging area (`staging/`) beside it are never touched.

use std::collections::HashSet;
use std::str::FromStr;

use adapterci_core::Digest;
use adapterci_core::channels::VersionIndex;
use adapterci_core::gc::SWEEP_TTL;
use adapterci_core::ports::RegistryError;
use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::ObjectStoreRegistry;
use crate::blobs::store_error;

/// How long a publish waits in all for a running sweep to end before giving up.
const REGISTER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs found in the store.
    pub scanned: usize,
    /// Blobs referenced by a version or protected by a publish in progress.
    pub referenced: usize,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Unreferenced blobs deleted.
    pub deleted: Vec<Digest>,
}

/// Registers a publish of `digests`, waiting (with backoff) while a sweep runs; returns the registration id.
pub(crate) async fn register_publish(guard: &dyn VersionIndex, digests: &[Digest]) -> Result<String, RegistryError> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if let Some(id) = guard.try_begin_publish(digests).await? {
            return Ok(id);
        }
        if started.elapsed() > REGISTER_WAIT {
            return Err(RegistryError::Backend(format!(
                "a garbage-collection sweep has held the registry for over {}s; try again later",
                REGISTER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
}

impl ObjectStoreRegistry {
    /// Deletes every blob that no version references and no publish in progress will write, once it is older
    /// than `grace` (which also spares the blobs of a publish that crashed a moment ago, for inspection).
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, RegistryError> {
        let Some(protected) = self.index().try_begin_sweep().await? else {
            return Err(RegistryError::InvalidRequest {
                what: "garbage collection".to_string(),
                reason: "another sweep is running".to_string(),
            });
        };
        let sweep_started = Utc::now();
        let result = self.sweep(protected, grace, sweep_started).await;
        if let Err(err) = self.index().end_sweep().await {
            tracing::warn!(error = %err, "could not end the sweep; publishes wait until it expires");
        }
        result
    }

    async fn sweep(
        &self,
        protected: Vec<Digest>,
        grace: Duration,
        sweep_started: DateTime<Utc>,
    ) -> Result<GcReport, RegistryError> {
        // Listed before marking: a blob written after the listing is not a candidate at all.
        let root = self.blob_root();
        let listed: Vec<_> =
            self.object_store().list(Some(&root)).try_collect().await.map_err(|err| store_error("list", &root, err))?;
        let mut referenced: HashSet<Digest> = protected.into_iter().collect();
        for name in self.index().list_adapter_names().await? {
            for record in self.index().list_versions(&name).await? {
                // An unreadable manifest hides which blobs it needs: stop rather than delete them.
                let manifest = self.manifest_of(&record).await?;
                referenced.insert(record.manifest_digest.clone());
                referenced.extend(manifest.files.into_iter().map(|file| file.digest));
            }
        }
        let mut report = GcReport { scanned: listed.len(), ..GcReport::default() };
        let cutoff = self.now() - grace;
        for object in listed {
            let Some(hex) = object.location.filename() else { continue };
            let Ok(digest) = Digest::from_str(&format!("sha256:{hex}")) else {
                tracing::warn!(location = %object.location, "not a blob name; left alone");
                continue;
            };
            if referenced.contains(&digest) {
                report.referenced += 1;
                continue;
            }
            if object.last_modified > cutoff {
                report.kept_young += 1;
                continue;
            }
            if Utc::now() - sweep_started > SWEEP_TTL - Duration::minutes(1) {
                tracing::warn!("sweep stopped before its lease expires; run it again to continue");
                break;
            }
            match self.object_store().delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => report.deleted.push(digest),
                Err(err) => return Err(store_error("delete", &object.location, err)),
            }
        }
        tracing::info!(scanned = report.scanned, deleted = report.deleted.len(), "garbage collected");
        Ok(report)
    }
}
