//! `ObjectStoreDatasetSource`: dataset files in a bucket or a local directory, addressed by relative keys that
//! are validated before they reach the store (so a pipeline cannot name `../../etc/passwd`).

use std::sync::Arc;

use adapterci_core::ports::{DatasetSource, ListedObject, ObjectStat, SourceError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::location::{join, parse_key};

/// A [`DatasetSource`] over an object store.
#[derive(Clone, Debug)]
pub struct ObjectStoreDatasetSource {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl ObjectStoreDatasetSource {
    /// Keys are read from the root of `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectStoreDatasetSource { store, prefix: Path::default() }
    }

    /// Keys are read below `prefix` (an empty prefix is the root).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, SourceError> {
        self.prefix = if prefix.is_empty() { Path::default() } else { validated(prefix)? };
        Ok(self)
    }

    /// The object-store path of `location`, or why it is refused.
    fn path(&self, location: &str) -> Result<Path, SourceError> {
        Ok(join(&self.prefix, &validated(location)?))
    }
}

fn validated(location: &str) -> Result<Path, SourceError> {
    parse_key(location).map_err(|reason| SourceError::InvalidLocation { location: location.to_string(), reason })
}

fn backend(operation: &str, location: &str, err: object_store::Error) -> SourceError {
    SourceError::Backend(format!("{operation} {location:?}: {err}"))
}

#[async_trait]
impl DatasetSource for ObjectStoreDatasetSource {
    async fn stat(&self, location: &str) -> Result<Option<ObjectStat>, SourceError> {
        let path = self.path(location)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(ObjectStat { etag: meta.e_tag, last_modified: meta.last_modified, size: meta.size })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(backend("stat", location, err)),
        }
    }

    async fn read(&self, location: &str) -> Result<Bytes, SourceError> {
        let path = self.path(location)?;
        let bytes = match self.store.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(err) => Err(err),
        };
        bytes.map_err(|err| match err {
            object_store::Error::NotFound { .. } => SourceError::NotFound { location: location.to_string() },
            err => backend("read", location, err),
        })
    }

    async fn write(&self, location: &str, bytes: Bytes) -> Result<(), SourceError> {
        let path = self.path(location)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|err| backend("write", location, err))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, SourceError> {
        let Some(bare) = prefix.strip_suffix('/') else {
            return Err(SourceError::InvalidLocation {
                location: prefix.to_string(),
                reason: "a prefix ends with '/'".to_string(),
            });
        };
        let root = self.path(bare)?;
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&root)).try_collect().await.map_err(|err| backend("list", prefix, err))?;
        let strip = self.prefix.parts().count();
        let mut listed: Vec<ListedObject> = metas
            .into_iter()
            .map(|meta| {
                // keys are reported relative to this source's own prefix, as callers name them
                let key = meta.location.parts().skip(strip).map(|part| part.as_ref().to_string()).collect::<Vec<_>>();
                ListedObject {
                    key: key.join("/"),
                    stat: ObjectStat { etag: meta.e_tag, last_modified: meta.last_modified, size: meta.size },
                }
            })
            .collect();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}
