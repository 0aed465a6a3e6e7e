//! A pipeline's dataset as one value, whether its location names one object or a prefix (a location ending in
//! `/`): what a watch compares (a cheap version tag, then the content digest) and what a run trains on.
//!
//! A prefix's dataset is every object below it, in key order, each ending with a newline (JSONL files written
//! without a final newline still join into whole lines). Its version tag combines every object's key, ETag and
//! size, so a new, removed or changed object changes it; when an object has no ETag, there is no tag and the
//! content digest alone decides.
//!
//! A `file:///abs/path` location (a file, or a directory with the trailing `/`) is read from adapterd's own file
//! system instead of the dataset store, with the same rules.

use adapterci_core::Digest;
use adapterci_core::ports::{DatasetSource, ListedObject, ObjectStat, SourceError};
use bytes::{Bytes, BytesMut};

/// What a watch learns cheaply about a dataset location before reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DatasetVersion {
    /// Changes whenever the content may have changed; `None` when the store gives no such tag.
    pub etag: Option<String>,
}

fn is_prefix(location: &str) -> bool {
    location.ends_with('/')
}

/// The source and key of `location`: adapterd's file system for a `file:///...` location (the key is the
/// absolute path), else `store` as is.
fn resolve<'a>(store: &'a dyn DatasetSource, location: &'a str) -> (&'a dyn DatasetSource, &'a str) {
    match location.strip_prefix(adapterci_pipeline::LOCAL_SCHEME) {
        Some(path) => (&LocalFiles, path),
        None => (store, location),
    }
}

/// Files on this machine as a dataset source: keys are absolute paths; the version tag is the file's size and
/// modification time (the content digest decides whether it changed).
struct LocalFiles;

fn local_error(path: &str, error: std::io::Error) -> SourceError {
    match error.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound { location: format!("file://{path}") },
        _ => SourceError::Backend(format!("{path}: {error}")),
    }
}

fn local_stat(path: &str, meta: &std::fs::Metadata) -> ObjectStat {
    let modified: chrono::DateTime<chrono::Utc> = meta.modified().map(Into::into).unwrap_or_default();
    let stamp = modified.timestamp_nanos_opt().unwrap_or_default();
    ObjectStat { etag: Some(format!("{stamp}-{}-{path}", meta.len())), last_modified: modified, size: meta.len() }
}

#[async_trait::async_trait]
impl DatasetSource for LocalFiles {
    async fn stat(&self, location: &str) -> Result<Option<ObjectStat>, SourceError> {
        match tokio::fs::metadata(location).await {
            Ok(meta) if meta.is_file() => Ok(Some(local_stat(location, &meta))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(local_error(location, error)),
        }
    }

    async fn read(&self, location: &str) -> Result<Bytes, SourceError> {
        tokio::fs::read(location).await.map(Bytes::from).map_err(|error| local_error(location, error))
    }

    async fn write(&self, location: &str, _: Bytes) -> Result<(), SourceError> {
        Err(SourceError::InvalidLocation {
            location: format!("file://{location}"),
            reason: "local dataset files are written by their owner, not through adapterd".to_string(),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, SourceError> {
        let mut listed = Vec::new();
        let mut pending = vec![std::path::PathBuf::from(prefix)];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(local_error(&dir.display().to_string(), error)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| local_error(prefix, e))? {
                let path = entry.path();
                let meta = entry.metadata().await.map_err(|e| local_error(&path.display().to_string(), e))?;
                if meta.is_dir() {
                    pending.push(path);
                } else if meta.is_file() {
                    let key = path.display().to_string();
                    listed.push(ListedObject { stat: local_stat(&key, &meta), key });
                }
            }
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}

/// The version of the dataset at `location`; `None` when nothing is there (an empty prefix included).
pub(crate) async fn dataset_version(
    source: &dyn DatasetSource,
    location: &str,
) -> Result<Option<DatasetVersion>, SourceError> {
    let (source, location) = resolve(source, location);
    if !is_prefix(location) {
        return Ok(source.stat(location).await?.map(|stat| DatasetVersion { etag: stat.etag }));
    }
    let listed = source.list(location).await?;
    if listed.is_empty() {
        return Ok(None);
    }
    let mut combined = String::new();
    for object in &listed {
        let Some(etag) = &object.stat.etag else {
            return Ok(Some(DatasetVersion { etag: None }));
        };
        combined.push_str(&format!("{}\0{}\0{}\n", object.key, etag, object.stat.size));
    }
    Ok(Some(DatasetVersion { etag: Some(format!("prefix:{}", Digest::of(combined.as_bytes()))) }))
}

/// The dataset's bytes: the object, or a prefix's objects joined in key order.
pub(crate) async fn read_dataset(source: &dyn DatasetSource, location: &str) -> Result<Bytes, SourceError> {
    let (source, location) = resolve(source, location);
    if !is_prefix(location) {
        return source.read(location).await;
    }
    let listed = source.list(location).await?;
    if listed.is_empty() {
        return Err(SourceError::NotFound { location: location.to_string() });
    }
    let mut joined = BytesMut::new();
    for object in listed {
        let bytes = match source.read(&object.key).await {
            Ok(bytes) => bytes,
            // removed between the listing and the read: the next poll sees the new listing
            Err(SourceError::NotFound { .. }) => continue,
            Err(error) => return Err(error),
        };
        joined.extend_from_slice(&bytes);
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            joined.extend_from_slice(b"\n");
        }
    }
    Ok(joined.freeze())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use adapterci_registry::ObjectStoreDatasetSource;
    use adapterci_registry::object_store::memory::InMemory;

    use super::*;

    fn source() -> ObjectStoreDatasetSource {
        ObjectStoreDatasetSource::new(Arc::new(InMemory::new()))
    }

    #[tokio::test]
    async fn a_prefix_joins_its_objects_in_key_order_and_tags_their_versions() {
        let source = source();
        assert_eq!(dataset_version(&source, "d/").await.unwrap(), None, "an empty prefix is not there yet");
        assert!(matches!(read_dataset(&source, "d/").await, Err(SourceError::NotFound { .. })));
        source.write("d/b.jsonl", Bytes::from_static(b"{\"b\":1}\n")).await.unwrap();
        source.write("d/a.jsonl", Bytes::from_static(b"{\"a\":1}")).await.unwrap();
        source.write("d/sub/c.jsonl", Bytes::from_static(b"{\"c\":1}\n")).await.unwrap();
        source.write("dx/other.jsonl", Bytes::from_static(b"{\"x\":1}\n")).await.unwrap();
        let joined = read_dataset(&source, "d/").await.unwrap();
        assert_eq!(&joined[..], b"{\"a\":1}\n{\"b\":1}\n{\"c\":1}\n".as_slice());
        let first = dataset_version(&source, "d/").await.unwrap().unwrap();
        assert!(first.etag.is_some());
        assert_eq!(dataset_version(&source, "d/").await.unwrap().unwrap(), first, "nothing changed");
        source.write("d/d.jsonl", Bytes::from_static(b"{\"d\":1}\n")).await.unwrap();
        assert_ne!(dataset_version(&source, "d/").await.unwrap().unwrap(), first, "a new object changes the tag");
    }

    #[tokio::test]
    async fn a_single_object_location_is_read_as_it_is() {
        let source = source();
        assert_eq!(dataset_version(&source, "d/train.jsonl").await.unwrap(), None);
        source.write("d/train.jsonl", Bytes::from_static(b"x")).await.unwrap();
        assert!(dataset_version(&source, "d/train.jsonl").await.unwrap().is_some());
        assert_eq!(&read_dataset(&source, "d/train.jsonl").await.unwrap()[..], b"x".as_slice());
    }
}
