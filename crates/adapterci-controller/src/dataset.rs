//! A pipeline's dataset as one value, whether its location names one object or a prefix (a location ending in
//! `/`): what a watch compares (a cheap version tag, then the content digest) and what a run trains on.
//!
//! A prefix's dataset is every object below it, in key order, each ending with a newline (JSONL files written
//! without a final newline still join into whole lines). Its version tag combines every object's key, ETag and
//! size, so a new, removed or changed object changes it; when an object has no ETag, there is no tag and the
//! content digest alone decides.

use adapterci_core::Digest;
use adapterci_core::ports::{DatasetSource, SourceError};
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

/// The version of the dataset at `location`; `None` when nothing is there (an empty prefix included).
pub(crate) async fn dataset_version(
    source: &dyn DatasetSource,
    location: &str,
) -> Result<Option<DatasetVersion>, SourceError> {
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
