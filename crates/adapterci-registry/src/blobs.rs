//! Content-addressed blobs under `<prefix>/blobs/sha256/<hex>`: written once, re-checked when found already
//! present, and verified against their digest on every read.

use std::sync::Arc;

use adapterci_core::Digest;
use adapterci_core::digest::DigestWriter;
use adapterci_core::ports::RegistryError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};

/// Blobs larger than this are uploaded in parts, so that S3 never receives one huge request.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// The part size of multipart uploads: S3's minimum for every part but the last.
const MULTIPART_CHUNK: usize = 5 * 1024 * 1024;

/// How many parts of one blob may be in flight at once.
const MULTIPART_CONCURRENCY: usize = 4;

/// The blob area of a registry.
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) multipart_threshold: usize,
}

impl BlobStore {
    pub(crate) fn location(&self, digest: &Digest) -> Path {
        self.prefix.clone().join("blobs").join("sha256").join(digest.hex())
    }

    /// Stores `bytes`, whose digest is `digest`, unless an intact copy is already there.
    pub(crate) async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), RegistryError> {
        let location = self.location(digest);
        if bytes.len() > self.multipart_threshold {
            // Multipart uploads cannot be conditional, so look first; a concurrent identical upload is harmless.
            if self.holds_intact(&location, digest).await? {
                return Ok(());
            }
            return self.put_multipart(&location, bytes).await;
        }
        let payload = PutPayload::from_bytes(bytes.clone());
        match self.store.put_opts(&location, payload, PutMode::Create.into()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                if self.holds_intact(&location, digest).await? {
                    return Ok(());
                }
                // The stored copy is damaged (or was truncated by a crash on a store without atomic writes):
                // the bytes in hand are the right ones, so replace it.
                tracing::warn!(%location, %digest, "replacing a damaged blob");
                self.store
                    .put(&location, PutPayload::from_bytes(bytes))
                    .await
                    .map(|_| ())
                    .map_err(|err| store_error("write", &location, err))
            }
            Err(err) => Err(store_error("write", &location, err)),
        }
    }

    async fn put_multipart(&self, location: &Path, bytes: Bytes) -> Result<(), RegistryError> {
        let upload =
            self.store.put_multipart(location).await.map_err(|err| store_error("start upload of", location, err))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        let mut offset = 0;
        while offset < bytes.len() {
            if let Err(err) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
                // Best effort: the store garbage-collects abandoned uploads itself if this fails too.
                let _ = writer.abort().await;
                return Err(store_error("upload", location, err));
            }
            let end = (offset + MULTIPART_CHUNK).min(bytes.len());
            writer.put(bytes.slice(offset..end));
            offset = end;
        }
        writer.finish().await.map(|_| ()).map_err(|err| store_error("finish upload of", location, err))
    }

    /// Whether `location` holds exactly the bytes of `digest`; a missing object is `false`.
    async fn holds_intact(&self, location: &Path, digest: &Digest) -> Result<bool, RegistryError> {
        let result = match self.store.get(location).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(err) => return Err(store_error("read", location, err)),
        };
        let mut stream = result.into_stream();
        let mut writer = DigestWriter::new();
        while let Some(chunk) = stream.try_next().await.map_err(|err| store_error("read", location, err))? {
            writer.update(&chunk);
        }
        Ok(writer.finish() == *digest)
    }

    /// The bytes of `digest`, verified; `what` says what the blob is for in errors ("blob", "manifest of x v1").
    pub(crate) async fn read(&self, digest: &Digest, what: &str) -> Result<Bytes, RegistryError> {
        let location = self.location(digest);
        let not_found = || RegistryError::NotFound { what: format!("{what} {digest} at {location}") };
        let bytes = match self.store.get(&location).await {
            Ok(result) => result.bytes().await,
            Err(err) => Err(err),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
            Err(err) => return Err(store_error("read", &location, err)),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("{what} at {location}"),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// An object-store failure as a registry error naming the operation and the object.
pub(crate) fn store_error(operation: &str, location: &Path, err: object_store::Error) -> RegistryError {
    match err {
        object_store::Error::NotFound { .. } => RegistryError::NotFound { what: format!("object {location}") },
        err => RegistryError::Backend(format!("{operation} {location}: {err}")),
    }
}
