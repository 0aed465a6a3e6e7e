//! Base releases in the registry's object store, so that a serving replica on another machine can fetch the release
//! an adapter is bound to: `<registry prefix>/releases/<release digest hex>/` holds `base.safetensors`,
//! `recovery.safetensors` (when the release has one) and `release.json`, the list of the files with their digests
//! and sizes, written last so that its presence means the files before it are complete.
//!
//! The `releases/` prefix lies outside `blobs/sha256/`, the only folder garbage collection lists and sweeps
//! (`gc.rs`, [`crate::ObjectStoreRegistry::collect_garbage`]), so a release is never collected, whatever adapter
//! versions reference it. Nothing deletes releases from the store.
//!
//! A release's digest is the sha256 of its `base.safetensors` (what the engine's `BaseRelease::open` computes and
//! the worker checks at load), so both an upload and a download check it: an upload refuses a local file that does
//! not hash to its folder's name, a download refuses bytes that do not hash to the digest asked for.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use adapterci_core::Digest;
use adapterci_core::base_release::{RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE};
use adapterci_core::digest::DigestWriter;
use adapterci_core::manifest::ManifestFile;
use adapterci_core::ports::RegistryError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::blobs::{DEFAULT_MULTIPART_THRESHOLD, store_error};

/// The folder of releases below the registry's prefix.
pub const RELEASES_FOLDER: &str = "releases";
/// The file list of a release in the store, written after its files.
pub const RELEASE_INDEX_FILE: &str = "release.json";
/// The schema of [`RELEASE_INDEX_FILE`] this build writes and reads.
const RELEASE_INDEX_SCHEMA: u32 = 1;

/// Parts of multipart uploads and reads of local files (S3's minimum part size).
const CHUNK: usize = 5 * 1024 * 1024;
/// How many parts of one file may be in flight at once.
const MULTIPART_CONCURRENCY: usize = 4;

/// The release files a store may hold, in the order a download writes them: the weights last, since their presence
/// in the releases folder is what tells the worker that the release is there.
const RELEASE_FILES: [&str; 2] = [RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE];

/// `release.json`: which files a release in the store has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseIndex {
    schema_version: u32,
    release_digest: Digest,
    files: Vec<ManifestFile>,
}

/// What [`ReleaseStore::upload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseUpload {
    /// The files and their list were written.
    Uploaded,
    /// The store already held the release, with the same files (digests and sizes).
    AlreadyPresent,
}

/// Base releases below an object store's prefix; see the module documentation for the layout.
#[derive(Clone, Debug)]
pub struct ReleaseStore {
    store: Arc<dyn ObjectStore>,
    /// The registry's prefix; releases are below `<prefix>/releases/`.
    prefix: Path,
    multipart_threshold: usize,
}

impl crate::ObjectStoreRegistry {
    /// The base releases kept beside this registry's blobs (same store, same prefix).
    pub fn releases(&self) -> ReleaseStore {
        ReleaseStore {
            store: self.object_store().clone(),
            prefix: self.prefix().clone(),
            multipart_threshold: self.multipart_threshold(),
        }
    }
}

impl ReleaseStore {
    /// Releases at the root of `store` (below `releases/`), as a registry without a prefix keeps them.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ReleaseStore { store, prefix: Path::default(), multipart_threshold: DEFAULT_MULTIPART_THRESHOLD }
    }

    /// Files above `bytes` are uploaded in parts (default 8 MiB).
    pub fn with_multipart_threshold(mut self, bytes: usize) -> Self {
        self.multipart_threshold = bytes;
        self
    }

    /// The key of `file` of `release` in the store (`releases/<hex>/base.safetensors`), for errors and tools.
    pub fn location(&self, release: &Digest, file: &str) -> Path {
        self.prefix.clone().join(RELEASES_FOLDER).join(release.hex()).join(file)
    }

    /// Uploads the release in `dir` (`base.safetensors`, and `recovery.safetensors` when there), whose digest is
    /// `release`, unless the store already has it: its file list there names the same files with the same sizes, and
    /// the objects have them (a release's folder is named by its digest and its files are written whole, so a size
    /// check suffices and nothing is hashed then). Otherwise the local files are hashed, and the weights must hash to
    /// `release`: a damaged local release is refused, never published for replicas to fetch.
    pub async fn upload(&self, release: &Digest, dir: &FsPath) -> Result<ReleaseUpload, RegistryError> {
        let mut sizes = Vec::new();
        for name in RELEASE_FILES {
            let path = dir.join(name);
            match tokio::fs::metadata(&path).await {
                Ok(meta) => sizes.push((name, meta.len())),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && name == RELEASE_RECOVERY_FILE => {}
                Err(err) => return Err(local_error("read", &path, &err)),
            }
        }
        if self.holds(release, &sizes).await? {
            return Ok(ReleaseUpload::AlreadyPresent);
        }
        let mut files = Vec::new();
        for (name, _) in sizes {
            let path = dir.join(name);
            let (digest, size) = hash_local_file(&path).await?;
            if name == RELEASE_WEIGHTS_FILE && digest != *release {
                return Err(RegistryError::DigestMismatch {
                    what: format!("the local base release at {}", path.display()),
                    expected: release.clone(),
                    actual: digest,
                });
            }
            files.push((path, ManifestFile { name: name.to_string(), digest, size }));
        }
        let index = ReleaseIndex {
            schema_version: RELEASE_INDEX_SCHEMA,
            release_digest: release.clone(),
            files: files.iter().map(|(_, file)| file.clone()).collect(),
        };
        for (path, file) in &files {
            self.put_file(path, &self.location(release, &file.name), file.size).await?;
        }
        let index_location = self.location(release, RELEASE_INDEX_FILE);
        let index_bytes = serde_json::to_vec_pretty(&index)
            .map_err(|err| RegistryError::Backend(format!("encode {index_location}: {err}")))?;
        self.store
            .put(&index_location, PutPayload::from(index_bytes))
            .await
            .map_err(|err| store_error("write", &index_location, err))?;
        tracing::info!(release = %release, location = %index_location, "base release uploaded to the registry store");
        Ok(ReleaseUpload::Uploaded)
    }

    /// Uploads every release found in `releases_dir` (folders named by a release digest's hex that hold
    /// `base.safetensors`) that the store does not hold yet, such as those built before releases were uploaded.
    /// A release that fails is logged and the others still go; returns what happened to each. The releases in
    /// `known` (found in the store or uploaded by an earlier call of the same process) are not looked at again.
    pub async fn upload_all(
        &self,
        releases_dir: &FsPath,
        known: &std::collections::BTreeSet<Digest>,
    ) -> Vec<(Digest, Result<ReleaseUpload, RegistryError>)> {
        let mut results = Vec::new();
        let entries = match std::fs::read_dir(releases_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return results,
            Err(err) => {
                tracing::warn!(dir = %releases_dir.display(), "cannot list the base releases: {err}");
                return results;
            }
        };
        let mut releases: Vec<(Digest, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                let digest: Digest = format!("sha256:{name}").parse().ok()?;
                let dir = entry.path();
                (!known.contains(&digest) && dir.join(RELEASE_WEIGHTS_FILE).is_file()).then_some((digest, dir))
            })
            .collect();
        releases.sort();
        for (digest, dir) in releases {
            let result = self.upload(&digest, &dir).await;
            if let Err(error) = &result {
                tracing::warn!(release = %digest, dir = %dir.display(), %error, "base release not uploaded");
            }
            results.push((digest, result));
        }
        results
    }

    /// Fetches release `release` into `releases_dir/<hex>/` and returns the path of its weights. Each file is
    /// written under a temporary name beside its final one, checked against its size and digest in `release.json`
    /// (the weights against `release` itself, as the engine checks a release), then renamed; the weights are
    /// renamed last. A file already there with the listed size is kept; nothing is left under a final name that
    /// did not pass the check.
    pub async fn download(&self, release: &Digest, releases_dir: &FsPath) -> Result<PathBuf, RegistryError> {
        let index = self.read_index(release).await?.ok_or_else(|| RegistryError::NotFound {
            what: format!(
                "base release {release} in the registry store (no {})",
                self.location(release, RELEASE_INDEX_FILE)
            ),
        })?;
        let dir = releases_dir.join(release.hex());
        tokio::fs::create_dir_all(&dir).await.map_err(|err| local_error("create", &dir, &err))?;
        for name in RELEASE_FILES {
            let Some(file) = index.files.iter().find(|file| file.name == name) else { continue };
            let target = dir.join(name);
            if name != RELEASE_WEIGHTS_FILE
                && tokio::fs::metadata(&target).await.is_ok_and(|meta| meta.len() == file.size)
            {
                continue;
            }
            self.download_file(release, file, &target).await?;
        }
        tracing::info!(release = %release, dir = %dir.display(), "base release fetched from the registry store");
        Ok(dir.join(RELEASE_WEIGHTS_FILE))
    }

    /// The release's file list, checked to describe `release`; `None` when the store has no such release.
    async fn read_index(&self, release: &Digest) -> Result<Option<ReleaseIndex>, RegistryError> {
        let location = self.location(release, RELEASE_INDEX_FILE);
        let bytes = match self.store.get(&location).await {
            Ok(result) => result.bytes().await.map_err(|err| store_error("read", &location, err))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(store_error("read", &location, err)),
        };
        let invalid = |reason: String| RegistryError::InvalidManifest {
            digest: release.clone(),
            reason: format!("the release's file list {location}: {reason}"),
        };
        let index: ReleaseIndex = serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
        if index.schema_version != RELEASE_INDEX_SCHEMA {
            return Err(invalid(format!(
                "unsupported schema_version {} (this build reads {RELEASE_INDEX_SCHEMA})",
                index.schema_version
            )));
        }
        if index.release_digest != *release {
            return Err(invalid(format!("it describes release {}", index.release_digest)));
        }
        match index.files.iter().find(|file| file.name == RELEASE_WEIGHTS_FILE) {
            Some(weights) if weights.digest == *release => {}
            Some(weights) => return Err(invalid(format!("it lists weights of digest {}", weights.digest))),
            None => return Err(invalid(format!("it lists no {RELEASE_WEIGHTS_FILE}"))),
        }
        Ok(Some(index))
    }

    /// Whether the store has release `release` with exactly the files `sizes` names, each of its size.
    async fn holds(&self, release: &Digest, sizes: &[(&str, u64)]) -> Result<bool, RegistryError> {
        let stored = match self.read_index(release).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(false),
            Err(error) => {
                // a damaged list is replaced by the upload
                tracing::warn!(release = %release, %error, "replacing an unreadable release file list");
                return Ok(false);
            }
        };
        let listed: Vec<(&str, u64)> = stored.files.iter().map(|file| (file.name.as_str(), file.size)).collect();
        if listed.len() != sizes.len() || !sizes.iter().all(|file| listed.contains(file)) {
            return Ok(false);
        }
        for (name, size) in sizes {
            let location = self.location(release, name);
            match self.store.head(&location).await {
                Ok(meta) if meta.size == *size => {}
                Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(err) => return Err(store_error("stat", &location, err)),
            }
        }
        Ok(true)
    }

    /// Uploads the local file `path` (`size` bytes) to `location`, in parts above the multipart threshold.
    async fn put_file(&self, path: &FsPath, location: &Path, size: u64) -> Result<(), RegistryError> {
        if size <= self.multipart_threshold as u64 {
            let bytes = tokio::fs::read(path).await.map_err(|err| local_error("read", path, &err))?;
            return self
                .store
                .put(location, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|err| store_error("write", location, err));
        }
        let mut file = tokio::fs::File::open(path).await.map_err(|err| local_error("open", path, &err))?;
        let upload =
            self.store.put_multipart(location).await.map_err(|err| store_error("start upload of", location, err))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            let read = (&mut file).take(CHUNK as u64).read_to_end(&mut chunk).await;
            let read = match read {
                Ok(read) => read,
                Err(err) => {
                    let _ = writer.abort().await;
                    return Err(local_error("read", path, &err));
                }
            };
            if read == 0 {
                break;
            }
            if let Err(err) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
                // Best effort: the store garbage-collects abandoned uploads itself if this fails too.
                let _ = writer.abort().await;
                return Err(store_error("upload", location, err));
            }
            writer.put(Bytes::from(chunk));
        }
        writer.finish().await.map(|_| ()).map_err(|err| store_error("finish upload of", location, err))
    }

    /// Streams `file` of `release` into a temporary file beside `target`, checks it, and renames it to `target`.
    async fn download_file(&self, release: &Digest, file: &ManifestFile, target: &FsPath) -> Result<(), RegistryError> {
        let location = self.location(release, &file.name);
        let partial = target.with_file_name(format!(".{}.partial-{}", file.name, std::process::id()));
        let result = self.stream_to(&location, &partial).await;
        let checked = result.and_then(|(digest, size)| {
            let what = || format!("{} of base release {release} at {location}", file.name);
            if size != file.size {
                return Err(RegistryError::Backend(format!(
                    "{} is {size} bytes, but the release's file list says {}",
                    what(),
                    file.size
                )));
            }
            if digest != file.digest {
                return Err(RegistryError::DigestMismatch {
                    what: what(),
                    expected: file.digest.clone(),
                    actual: digest,
                });
            }
            Ok(())
        });
        if let Err(error) = checked {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(match error {
                RegistryError::NotFound { .. } => {
                    RegistryError::NotFound { what: format!("{} of base release {release} ({location})", file.name) }
                }
                other => other,
            });
        }
        tokio::fs::rename(&partial, target).await.map_err(|err| local_error("rename into", target, &err))
    }

    /// Writes the object at `location` to the local file `path` (synced), returning its digest and size.
    async fn stream_to(&self, location: &Path, path: &FsPath) -> Result<(Digest, u64), RegistryError> {
        let result = self.store.get(location).await.map_err(|err| store_error("read", location, err))?;
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(path).await.map_err(|err| local_error("create", path, &err))?;
        let mut hasher = DigestWriter::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|err| store_error("read", location, err))? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(|err| local_error("write", path, &err))?;
        }
        out.sync_all().await.map_err(|err| local_error("sync", path, &err))?;
        Ok((hasher.finish(), size))
    }
}

/// The sha256 and size of a local file, read on a blocking thread (a release's weights can be gigabytes).
async fn hash_local_file(path: &FsPath) -> Result<(Digest, u64), RegistryError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<(Digest, u64), std::io::Error> {
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = DigestWriter::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok((hasher.finish(), size));
            }
            hasher.update(&buffer[..read]);
            size += read as u64;
        }
    })
    .await
    .map_err(|err| RegistryError::Backend(format!("hash {}: {err}", path.display())))?
    .map_err(|err| local_error("read", path, &err))
}

fn local_error(operation: &str, path: &FsPath, err: &std::io::Error) -> RegistryError {
    RegistryError::Backend(format!("{operation} {}: {err}", path.display()))
}
