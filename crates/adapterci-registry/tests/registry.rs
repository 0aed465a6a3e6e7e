//! The registry conformance suite on in-memory and local-directory stores (with single and multipart uploads),
//! plus what only this implementation promises: its layout, repair of damaged blobs, refusal of bad manifests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use adapterci_core::Digest;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::ports::{AdapterIndex, AdapterRegistry, Clock, NewAdapterVersion, RegistryError};
use adapterci_registry::object_store::memory::InMemory;
use adapterci_registry::object_store::path::Path;
use adapterci_registry::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, open_object_store};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::registry_conformance::{BoxFuture, RegistryUnderTest, adapter_name, publish_request};
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;

/// A clock that moves one second every time it is read, so no two publishes share a `created_at`.
struct TickingClock(AtomicI64);

impl Clock for TickingClock {
    fn now(&self) -> DateTime<Utc> {
        let seconds = self.0.fetch_add(1, Ordering::SeqCst);
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().unwrap_or_default()
    }
}

/// Flips one bit in the middle of the object at `location`.
async fn flip_bit(store: &dyn ObjectStore, location: &Path) {
    let mut bytes = store.get(location).await.expect("read").bytes().await.expect("read").to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    store.put(location, PutPayload::from(bytes)).await.expect("write");
}

fn under_test(
    store: Arc<dyn ObjectStore>,
    registry: ObjectStoreRegistry,
    keep: Option<tempfile::TempDir>,
) -> RegistryUnderTest {
    let keep = Arc::new(keep);
    let locator = registry.clone();
    RegistryUnderTest {
        registry: Arc::new(registry),
        corrupt_blob: Box::new(move |digest: Digest| -> BoxFuture<()> {
            let (store, location, _keep) = (store.clone(), locator.blob_location(&digest), keep.clone());
            Box::pin(async move { flip_bit(store.as_ref(), &location).await })
        }),
    }
}

/// In memory, with a clock that stands still: a republish makes the same manifest digest.
async fn in_memory() -> RegistryUnderTest {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let registry = ObjectStoreRegistry::new(store.clone(), Arc::new(InMemoryMetadataStore::new()))
        .with_clock(Arc::new(ManualClock::new()));
    under_test(store, registry, None)
}

/// In a temporary directory below a prefix, with a moving clock: a republish is recognised by content.
async fn local_dir(multipart_threshold: usize) -> RegistryUnderTest {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_object_store(&format!("file://{}", dir.path().display())).expect("open the directory");
    let registry = ObjectStoreRegistry::new(store.clone(), Arc::new(InMemoryMetadataStore::new()))
        .with_prefix("registry")
        .expect("valid prefix")
        .with_clock(Arc::new(TickingClock(AtomicI64::new(0))))
        .with_multipart_threshold(multipart_threshold);
    under_test(store, registry, Some(dir))
}

mod in_memory {
    adapterci_testkit::registry_conformance_tests!(super::in_memory());
}

mod local_dir {
    adapterci_testkit::registry_conformance_tests!(super::local_dir(adapterci_registry::DEFAULT_MULTIPART_THRESHOLD));
}

/// Every blob above 16 bytes (all the weights of the suite) goes through the multipart path.
mod local_dir_multipart {
    adapterci_testkit::registry_conformance_tests!(super::local_dir(16));
}

struct Fixture {
    store: Arc<dyn ObjectStore>,
    index: Arc<InMemoryMetadataStore>,
    registry: ObjectStoreRegistry,
}

fn fixture() -> Fixture {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let index = Arc::new(InMemoryMetadataStore::new());
    let registry = ObjectStoreRegistry::new(store.clone(), index.clone())
        .with_prefix("reg/v1")
        .expect("valid prefix")
        .with_clock(Arc::new(TickingClock(AtomicI64::new(0))));
    Fixture { store, index, registry }
}

#[tokio::test]
async fn only_content_addressed_blobs_are_written_below_the_prefix() {
    let f = fixture();
    let request = publish_request("layout", b"weights");
    let record = f.registry.publish(request.clone()).await.unwrap();
    let mut listed: Vec<String> =
        f.store.list(None).map_ok(|meta| meta.location.to_string()).try_collect().await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = request
        .files
        .iter()
        .map(|(_, bytes)| Digest::of(bytes))
        .chain([record.manifest_digest.clone()])
        .map(|digest| format!("reg/v1/blobs/sha256/{}", digest.hex()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn republishing_repairs_a_damaged_blob() {
    let f = fixture();
    let request = publish_request("repaired", b"weights to repair");
    f.registry.publish(request.clone()).await.unwrap();
    let weights = Digest::of(&request.files[0].1);
    flip_bit(f.store.as_ref(), &f.registry.blob_location(&weights)).await;
    assert!(matches!(f.registry.fetch_blob(&weights).await, Err(RegistryError::DigestMismatch { .. })));

    assert_eq!(f.registry.publish(request.clone()).await.unwrap().version, 1);
    assert_eq!(f.registry.fetch_blob(&weights).await.unwrap(), request.files[0].1);
}

#[tokio::test]
async fn large_blobs_round_trip_through_multipart_upload_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_object_store(dir.path().to_str().unwrap()).unwrap();
    let registry = ObjectStoreRegistry::new(store, Arc::new(InMemoryMetadataStore::new()));
    let weights: Vec<u8> = (0..12 * 1024 * 1024 + 7).map(|i: usize| (i % 251) as u8).collect();
    let record = registry.publish(publish_request("large", &weights)).await.unwrap();
    let manifest = registry.get(&record.name, 1).await.unwrap().unwrap().manifest;
    let file = manifest.file(ADAPTER_WEIGHTS_FILE).unwrap();
    assert_eq!(file.size, weights.len() as u64);
    assert_eq!(registry.fetch_blob(&file.digest).await.unwrap(), weights);
    let on_disk = dir.path().join("blobs/sha256").join(file.digest.hex());
    assert_eq!(std::fs::metadata(on_disk).unwrap().len(), weights.len() as u64);
}

/// Stores `bytes` as a manifest blob and records it as version 1 of `name`, bypassing publish.
async fn record_raw_manifest(f: &Fixture, name: &str, bytes: Vec<u8>) -> Digest {
    let digest = Digest::of(&bytes);
    f.store.put(&f.registry.blob_location(&digest), PutPayload::from(bytes)).await.expect("write");
    f.index
        .record_version(NewAdapterVersion {
            name: adapter_name(name),
            manifest_digest: digest.clone(),
            base_model_digest: Digest::of(b"base"),
            run_id: None,
        })
        .await
        .expect("record");
    digest
}

async fn check_invalid_manifest(bytes: Vec<u8>, expect: &str) {
    let f = fixture();
    let digest = record_raw_manifest(&f, "bad-manifest", bytes).await;
    for result in
        [f.registry.get(&adapter_name("bad-manifest"), 1).await, f.registry.latest(&adapter_name("bad-manifest")).await]
    {
        match result {
            Err(RegistryError::InvalidManifest { digest: named, reason }) => {
                assert_eq!(named, digest);
                assert!(reason.contains(expect), "expected {expect:?} in {reason:?}");
            }
            other => panic!("expected an invalid manifest, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn manifests_that_cannot_be_read_are_refused_with_the_reason() {
    let good = {
        let f = fixture();
        let record = f.registry.publish(publish_request("other-name", b"w")).await.unwrap();
        f.registry.fetch_blob(&record.manifest_digest).await.unwrap()
    };
    let future = String::from_utf8(good.to_vec()).unwrap().replace("\"schema_version\": 1", "\"schema_version\": 2");
    check_invalid_manifest(future.into_bytes(), "unsupported schema_version 2").await;
    check_invalid_manifest(b"{\"schema_version\": 1,".to_vec(), "not valid JSON").await;
    check_invalid_manifest(b"[]".to_vec(), "schema_version is missing").await;
    check_invalid_manifest(good.to_vec(), "describes adapter other-name but is recorded as bad-manifest v1").await;
}

#[tokio::test]
async fn a_manifest_that_would_not_read_back_is_refused_at_publish() {
    let f = fixture();
    let mut request = publish_request("nan", b"w");
    if let Some(eval) = request.eval.as_mut() {
        eval.metrics.insert("eval_loss".into(), f64::NAN);
    }
    let err = f.registry.publish(request).await.unwrap_err();
    assert!(matches!(err, RegistryError::InvalidRequest { .. }), "{err}");
    assert!(err.to_string().contains("NaN"), "{err}");
    assert_eq!(f.registry.list_versions(&adapter_name("nan")).await.unwrap(), Vec::new());
}

#[tokio::test]
async fn bad_prefixes_are_refused() {
    for (prefix, expect) in [("/abs", "no leading '/'"), ("a/../b", "'..' segments"), ("a//b", "empty segments")] {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let err =
            ObjectStoreRegistry::new(store, Arc::new(InMemoryMetadataStore::new())).with_prefix(prefix).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidRequest { .. }), "{err}");
        assert!(err.to_string().contains(expect) && err.to_string().contains(prefix), "{err}");
    }
}
