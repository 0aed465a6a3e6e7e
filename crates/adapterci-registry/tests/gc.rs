//! Garbage collection on SQLite + local files: unreferenced blobs go, referenced ones stay, and publishes racing
//! sweeps (including publishes that reuse a blob the sweep sees as unreferenced) never lose a blob.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use adapterci_core::Digest;
use adapterci_core::ports::AdapterRegistry;
use adapterci_registry::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, open_object_store};
use adapterci_store::SeaStore;
use adapterci_testkit::registry_conformance::{adapter_name, publish_request};
use chrono::Duration;

async fn registry(dir: &tempfile::TempDir) -> (ObjectStoreRegistry, Arc<dyn ObjectStore>) {
    let database = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
    let index = Arc::new(SeaStore::connect(&database).await.unwrap());
    let store = open_object_store(&dir.path().join("blobs").display().to_string()).unwrap();
    (ObjectStoreRegistry::new(store.clone(), index), store)
}

/// Stores `bytes` as a blob that no version references (what a crashed publish leaves).
async fn plant_orphan(registry: &ObjectStoreRegistry, store: &Arc<dyn ObjectStore>, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    store.put(&registry.blob_location(&digest), PutPayload::from(bytes.to_vec())).await.unwrap();
    digest
}

/// Every blob of every version can be read back intact.
async fn assert_every_version_whole(registry: &ObjectStoreRegistry) {
    for name in registry.list_adapters().await.unwrap() {
        for record in registry.list_versions(&name).await.unwrap() {
            let resolved = registry.get(&name, record.version).await.unwrap().expect("manifest readable");
            for file in &resolved.manifest.files {
                registry
                    .fetch_blob(&file.digest)
                    .await
                    .unwrap_or_else(|err| panic!("{name} v{}: {err}", record.version));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_blobs_are_swept_after_the_grace_period_and_referenced_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = registry(&dir).await;
    registry.publish(publish_request("kept", b"weights of a version")).await.unwrap();
    let orphan = plant_orphan(&registry, &store, b"left by a crashed publish").await;

    let young = registry.collect_garbage(Duration::hours(1)).await.unwrap();
    assert_eq!((young.deleted.len(), young.kept_young), (0, 1), "{young:?}");
    let swept = registry.collect_garbage(Duration::zero()).await.unwrap();
    assert_eq!(swept.deleted, std::slice::from_ref(&orphan));
    assert_eq!(swept.referenced, 3, "two files and the manifest");
    assert!(registry.fetch_blob(&orphan).await.is_err(), "the orphan is gone");
    assert_every_version_whole(&registry).await;
    assert!(registry.collect_garbage(Duration::zero()).await.unwrap().deleted.is_empty(), "nothing left to sweep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_sweeps_lose_no_referenced_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = registry(&dir).await;
    let registry = Arc::new(registry);
    for round in 0..12u8 {
        // The weights this round publishes already sit in the store unreferenced: the sweep sees an orphan that
        // the publish is about to rely on.
        let weights = vec![round; 2048];
        plant_orphan(&registry, &store, &weights).await;
        let publisher = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.publish(publish_request("raced", &weights)).await.unwrap() })
        };
        let sweeper = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.collect_garbage(Duration::zero()).await.unwrap() })
        };
        let (published, _) = (publisher.await.unwrap(), sweeper.await.unwrap());
        assert_eq!(published.version, u64::from(round) + 1);
        assert_every_version_whole(&registry).await;
    }
    assert_eq!(registry.list_versions(&adapter_name("raced")).await.unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_unreferenced_versions_and_the_sweep_deletes_only_their_blobs() {
    use adapterci_core::channels::{ChannelName, ChannelStore, PromoteRequest};
    use adapterci_core::retention::RetentionPolicy;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
    let index = Arc::new(SeaStore::connect(&database).await.unwrap());
    let store = open_object_store(&dir.path().join("blobs").display().to_string()).unwrap();
    let registry = ObjectStoreRegistry::new(store.clone(), index.clone()).with_retention(index.clone());
    let weights = |version: u8| format!("weights of version {version}").into_bytes();
    for version in 1..=5u8 {
        registry.publish(publish_request("kept", &weights(version))).await.unwrap();
    }
    let stable = ChannelName::new("stable").unwrap();
    let request =
        PromoteRequest { adapter: adapter_name("kept"), channel: stable, version: 2, allow_base_change: false };
    index.promote(request).await.unwrap();

    let policy = RetentionPolicy::keep_last(2).unwrap();
    let report = registry.collect_garbage_with_retention(Some(policy), Duration::zero()).await.unwrap();
    assert_eq!(report.pruned, [(adapter_name("kept"), vec![1, 3])]);
    let gone: Vec<Digest> = [1u8, 3].iter().map(|v| Digest::of(&weights(*v))).collect();
    for digest in &gone {
        assert!(report.gc.deleted.contains(digest), "the weights of a pruned version are swept: {report:?}");
        assert!(store.head(&registry.blob_location(digest)).await.is_err());
    }
    assert_eq!(report.gc.deleted.len(), 4, "two weights and two manifests; the shared config blob stays");
    let left: Vec<u64> =
        registry.list_versions(&adapter_name("kept")).await.unwrap().iter().map(|r| r.version).collect();
    assert_eq!(left, [2, 4, 5]);
    assert_every_version_whole(&registry).await;
    let unable = ObjectStoreRegistry::new(store.clone(), index.clone());
    let refused = unable.collect_garbage_with_retention(Some(policy), Duration::zero()).await.unwrap_err();
    assert!(refused.to_string().contains("without a store that can prune versions"), "{refused}");
    let again = registry.collect_garbage_with_retention(Some(policy), Duration::zero()).await.unwrap();
    assert!(again.pruned.is_empty() && again.gc.deleted.is_empty(), "{again:?}");
}
