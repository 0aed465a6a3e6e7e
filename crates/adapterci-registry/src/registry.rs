//! `ObjectStoreRegistry`: the adapter registry on any object store. Files and manifests are content-addressed
//! blobs; version numbers live in the metadata store's index, the only place that can allocate them atomically
//! (a local directory has no compare-and-swap, so no pointer object in the store is ever the source of truth).

use std::sync::Arc;

use adapterci_core::channels::{VersionIdentity, VersionIndex, base_binding};
use adapterci_core::manifest::{ADAPTER_WEIGHTS_FILE, AdapterManifest, MANIFEST_SCHEMA_VERSION, ManifestFile};
use adapterci_core::ports::{
    AdapterRegistry, AdapterVersionRecord, Clock, NewAdapterVersion, PublishRequest, RegistryError, ResolvedVersion,
    SystemClock,
};
use adapterci_core::{AdapterName, Digest};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::blobs::{BlobStore, DEFAULT_MULTIPART_THRESHOLD};
use crate::failpoint;
use crate::location::parse_key;

/// The longest file name a version may hold (the common file-system limit).
const MAX_FILE_NAME_BYTES: usize = 255;

/// An [`AdapterRegistry`] over an object store and an [`AdapterIndex`].
///
/// Layout below the prefix: `blobs/sha256/<hex>` for every file and every manifest (the canonical JSON of an
/// [`AdapterManifest`], whose digest is the version's identity). Base releases go beside them under `releases/`
/// through [`ObjectStoreRegistry::releases`] (see `releases.rs`), outside what garbage collection sweeps.
#[derive(Clone)]
pub struct ObjectStoreRegistry {
    blobs: BlobStore,
    index: Arc<dyn VersionIndex>,
    clock: Arc<dyn Clock>,
    /// Prunes versions for retention policies (see `retention.rs`); `None` refuses a policy.
    pub(crate) retention: Option<Arc<dyn adapterci_core::retention::VersionRetention>>,
}

impl std::fmt::Debug for ObjectStoreRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreRegistry").field("blobs", &self.blobs).finish_non_exhaustive()
    }
}

impl ObjectStoreRegistry {
    /// A registry at the root of `store`, with the system clock.
    pub fn new(store: Arc<dyn ObjectStore>, index: Arc<dyn VersionIndex>) -> Self {
        ObjectStoreRegistry {
            blobs: BlobStore { store, prefix: Path::default(), multipart_threshold: DEFAULT_MULTIPART_THRESHOLD },
            index,
            clock: Arc::new(SystemClock),
            retention: None,
        }
    }

    /// Keeps everything below `prefix` (such as `registry`), so the store can hold other things too.
    /// An empty prefix is the root.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, RegistryError> {
        self.blobs.prefix = if prefix.is_empty() {
            Path::default()
        } else {
            parse_key(prefix).map_err(|reason| RegistryError::InvalidRequest {
                what: format!("registry prefix {prefix:?}"),
                reason,
            })?
        };
        Ok(self)
    }

    /// The clock that stamps `created_at` on new manifests.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Blobs above `bytes` are uploaded in parts (default 8 MiB).
    pub fn with_multipart_threshold(mut self, bytes: usize) -> Self {
        self.blobs.multipart_threshold = bytes;
        self
    }

    pub(crate) fn index(&self) -> &dyn VersionIndex {
        self.index.as_ref()
    }

    pub(crate) fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.blobs.store
    }

    /// The prefix everything of this registry is below.
    pub(crate) fn prefix(&self) -> &Path {
        &self.blobs.prefix
    }

    pub(crate) fn multipart_threshold(&self) -> usize {
        self.blobs.multipart_threshold
    }

    /// The folder holding every blob: the only one garbage collection sweeps (`releases/` and `staging/` beside it
    /// are never listed by it).
    pub(crate) fn blob_root(&self) -> Path {
        self.blobs.prefix.clone().join("blobs").join("sha256")
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub(crate) async fn manifest_of(&self, record: &AdapterVersionRecord) -> Result<AdapterManifest, RegistryError> {
        self.load_manifest(record).await
    }

    /// Where the blob `digest` is stored, for tools and tests that inspect the store directly.
    pub fn blob_location(&self, digest: &Digest) -> Path {
        self.blobs.location(digest)
    }

    /// The manifest of `record`, verified against its digest and checked to belong to `record`.
    async fn load_manifest(&self, record: &AdapterVersionRecord) -> Result<AdapterManifest, RegistryError> {
        let what = format!("manifest of {} v{}", record.name, record.version);
        let bytes = self.blobs.read(&record.manifest_digest, &what).await?;
        let manifest = parse_manifest(&record.manifest_digest, &bytes)?;
        if manifest.name != record.name {
            return Err(RegistryError::InvalidManifest {
                digest: record.manifest_digest.clone(),
                reason: format!(
                    "it describes adapter {} but is recorded as {} v{}",
                    manifest.name, record.name, record.version
                ),
            });
        }
        Ok(manifest)
    }

    async fn resolve(&self, record: Option<AdapterVersionRecord>) -> Result<Option<ResolvedVersion>, RegistryError> {
        let Some(record) = record else { return Ok(None) };
        let manifest = self.load_manifest(&record).await?;
        Ok(Some(ResolvedVersion { record, manifest }))
    }

    /// The latest version when it already holds exactly `manifest` (publish time aside): a retried publish,
    /// which must not add a version even though the clock has moved on.
    async fn unchanged_latest(
        &self,
        manifest: &AdapterManifest,
    ) -> Result<Option<AdapterVersionRecord>, RegistryError> {
        let Some(latest) = self.index.latest_version(&manifest.name).await? else { return Ok(None) };
        match self.load_manifest(&latest).await {
            Ok(existing) => {
                let mut candidate = manifest.clone();
                candidate.created_at = existing.created_at;
                Ok((candidate == existing).then_some(latest))
            }
            Err(err) => {
                // A damaged latest version must not block publishing a good one.
                tracing::warn!(adapter = %manifest.name, version = latest.version, error = %err, "latest manifest unreadable");
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl AdapterRegistry for ObjectStoreRegistry {
    async fn publish(&self, request: PublishRequest) -> Result<AdapterVersionRecord, RegistryError> {
        validate_files(&request)?;
        let mut blobs: Vec<(ManifestFile, Bytes)> = request
            .files
            .into_iter()
            .map(|(name, bytes)| {
                let file = ManifestFile { name, digest: Digest::of(&bytes), size: bytes.len() as u64 };
                (file, bytes)
            })
            .collect();
        // Sorted so that the same files in another order make the same manifest.
        blobs.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let manifest = AdapterManifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            name: request.name,
            created_at: self.clock.now(),
            adapter: request.adapter,
            files: blobs.iter().map(|(file, _)| file.clone()).collect(),
            lineage: request.lineage,
            eval: request.eval,
        };
        let manifest_bytes = canonical_bytes(&manifest)?;
        // Registered with the garbage collector before any blob is written, so no sweep can delete a blob this
        // publish relies on (one left unreferenced by an earlier crash, say).
        let mut digests: Vec<Digest> = blobs.iter().map(|(file, _)| file.digest.clone()).collect();
        digests.push(Digest::of(&manifest_bytes));
        let registration = crate::gc::register_publish(self.index.as_ref(), &digests).await?;
        let result = self.publish_registered(manifest, manifest_bytes, blobs).await;
        if let Err(err) = self.index.end_publish(&registration).await {
            // The registration expires; until then it only keeps its blobs from being collected.
            tracing::warn!(registration, error = %err, "could not end a publish registration");
        }
        result
    }

    async fn latest(&self, name: &AdapterName) -> Result<Option<ResolvedVersion>, RegistryError> {
        let record = self.index.latest_version(name).await?;
        self.resolve(record).await
    }

    async fn get(&self, name: &AdapterName, version: u64) -> Result<Option<ResolvedVersion>, RegistryError> {
        let record = self.index.get_version(name, version).await?;
        self.resolve(record).await
    }

    async fn list_versions(&self, name: &AdapterName) -> Result<Vec<AdapterVersionRecord>, RegistryError> {
        Ok(self.index.list_versions(name).await?)
    }

    async fn list_adapters(&self) -> Result<Vec<AdapterName>, RegistryError> {
        Ok(self.index.list_adapter_names().await?)
    }

    async fn fetch_blob(&self, digest: &Digest) -> Result<Bytes, RegistryError> {
        self.blobs.read(digest, "blob").await
    }
}

impl ObjectStoreRegistry {
    /// The steps of a publish once it is registered: blobs, manifest, index.
    async fn publish_registered(
        &self,
        manifest: AdapterManifest,
        manifest_bytes: Vec<u8>,
        blobs: Vec<(ManifestFile, Bytes)>,
    ) -> Result<AdapterVersionRecord, RegistryError> {
        // Files first, even for a retried publish: putting a blob that is already there re-checks it and
        // replaces a damaged copy.
        let mut blobs = blobs.into_iter();
        if let Some((file, bytes)) = blobs.next() {
            self.blobs.put(&file.digest, bytes).await?;
            failpoint::check("after-first-blob");
        }
        futures::future::try_join_all(
            blobs.map(|(file, bytes)| async move { self.blobs.put(&file.digest, bytes).await }),
        )
        .await?;
        failpoint::check("after-blobs");
        if let Some(existing) = self.unchanged_latest(&manifest).await? {
            tracing::info!(adapter = %manifest.name, version = existing.version, "publish unchanged: kept the latest version");
            return Ok(existing);
        }
        let manifest_digest = Digest::of(&manifest_bytes);
        self.blobs.put(&manifest_digest, Bytes::from(manifest_bytes)).await?;
        failpoint::check("after-manifest");

        // The identity check is repeated inside the index's transaction: two identical publishes racing past the
        // check above still make one version.
        let (record, added) = self
            .index
            .record_version_once(
                NewAdapterVersion {
                    name: manifest.name.clone(),
                    manifest_digest,
                    base_model_digest: manifest.lineage.base_model_digest.clone(),
                    run_id: manifest.lineage.run_id.clone(),
                },
                version_identity(&manifest),
            )
            .await?;
        failpoint::check("after-record");
        if !added {
            tracing::info!(adapter = %record.name, version = record.version, "publish raced an identical one: kept its version");
            return Ok(record);
        }
        tracing::info!(adapter = %record.name, version = record.version, manifest = %record.manifest_digest, "published");
        Ok(record)
    }
}

/// What makes a publish the same as another apart from its time: the manifest digest with `created_at` blanked.
pub fn version_identity(manifest: &AdapterManifest) -> VersionIdentity {
    let mut timeless = manifest.clone();
    timeless.created_at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    VersionIdentity {
        content_digest: Digest::of(&timeless.to_canonical_json()),
        base_binding: base_binding(&manifest.lineage),
    }
}

/// Reads a stored manifest; refuses bad JSON and any schema version this build does not know.
pub fn parse_manifest(digest: &Digest, bytes: &[u8]) -> Result<AdapterManifest, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidManifest { digest: digest.clone(), reason };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| invalid(format!("not valid JSON: {err}")))?;
    match value.get("schema_version").and_then(serde_json::Value::as_u64) {
        Some(version) if version == u64::from(MANIFEST_SCHEMA_VERSION) => {}
        Some(version) => {
            return Err(invalid(format!(
                "unsupported schema_version {version} (this build reads {MANIFEST_SCHEMA_VERSION})"
            )));
        }
        None => return Err(invalid("schema_version is missing or not a whole number".to_string())),
    }
    // Parsed from the bytes again, not the value, so that errors carry a line and column.
    serde_json::from_slice(bytes).map_err(|err| invalid(err.to_string()))
}

/// The manifest's canonical JSON, refused if it would not read back as the same manifest (a NaN metric, say,
/// becomes `null` and would make the version unreadable).
fn canonical_bytes(manifest: &AdapterManifest) -> Result<Vec<u8>, RegistryError> {
    let bytes = manifest.to_canonical_json();
    let refuse =
        |reason: String| RegistryError::InvalidRequest { what: format!("publish of {}", manifest.name), reason };
    match serde_json::from_slice::<AdapterManifest>(&bytes) {
        Ok(read_back) if read_back == *manifest => Ok(bytes),
        Ok(_) => {
            Err(refuse("the manifest does not survive a JSON round trip (a metric that is NaN or infinite?)".into()))
        }
        Err(err) => Err(refuse(format!("the manifest does not read back: {err} (a metric that is NaN or infinite?)"))),
    }
}

/// Checks the request's files: the weights are there, every name is a plain file name, no name repeats.
fn validate_files(request: &PublishRequest) -> Result<(), RegistryError> {
    let refuse = |what: String, reason: &str| RegistryError::InvalidRequest { what, reason: reason.to_string() };
    let mut names: Vec<&str> = Vec::with_capacity(request.files.len());
    for (name, _) in &request.files {
        let what = format!("file name {name:?} in the publish of {}", request.name);
        if let Some(reason) = file_name_problem(name) {
            return Err(refuse(what, reason));
        }
        if names.contains(&name.as_str()) {
            return Err(refuse(what, "appears twice"));
        }
        names.push(name);
    }
    if !names.contains(&ADAPTER_WEIGHTS_FILE) {
        return Err(refuse(
            format!("publish of {}", request.name),
            "the files must include adapter_model.safetensors (the adapter weights)",
        ));
    }
    Ok(())
}

/// Why `name` is not a plain file name, if it is not.
fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_FILE_NAME_BYTES {
        Some("must be at most 255 bytes long")
    } else if name == "." || name == ".." {
        Some("must be a file name, not '.' or '..'")
    } else if name.contains('/') || name.contains('\\') {
        Some("must be a plain file name without '/' or '\\'")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_plain() {
        let check = |name: &str, expect: Option<&str>| assert_eq!(file_name_problem(name), expect, "{name:?}");
        check("adapter_model.safetensors", None);
        check("adapter_config.json", None);
        check(".hidden", None);
        check("", Some("must not be empty"));
        check("..", Some("must be a file name, not '.' or '..'"));
        check(".", Some("must be a file name, not '.' or '..'"));
        check("dir/file", Some("must be a plain file name without '/' or '\\'"));
        check("/abs", Some("must be a plain file name without '/' or '\\'"));
        check("dir\\file", Some("must be a plain file name without '/' or '\\'"));
        check("new\nline", Some("must not contain control characters"));
        check(&"n".repeat(256), Some("must be at most 255 bytes long"));
    }

    #[test]
    fn manifests_of_unknown_schema_or_bad_json_are_refused() {
        let digest = Digest::of(b"x");
        let check = |bytes: &[u8], expect: &str| {
            let err = parse_manifest(&digest, bytes).unwrap_err();
            assert!(matches!(err, RegistryError::InvalidManifest { .. }), "{err}");
            assert!(err.to_string().contains(expect), "{err}");
        };
        check(b"{not json", "not valid JSON");
        check(br#"{"schema_version": 2}"#, "unsupported schema_version 2 (this build reads 1)");
        check(br#"{"schema_version": "1"}"#, "schema_version is missing or not a whole number");
        check(br#"{"name": "x"}"#, "schema_version is missing");
        check(br#"{"schema_version": 1, "name": "x"}"#, "missing field");
    }
}
