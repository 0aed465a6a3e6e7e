//! The registry conformance suite on a real S3-compatible server: SeaweedFS from PyPI started by the testkit
//! harness on 127.0.0.1, reached through `open_object_store("s3://…")` with SigV4 credentials, with single and
//! multipart uploads. Skipped with a notice where `weed` is not installed (`scripts/install_seaweedfs.sh`),
//! unless `ADAPTERCI_REQUIRE_SEAWEEDFS` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adapterci_core::Digest;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_registry::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, open_object_store_with_env};
use adapterci_testkit::registry_conformance::{self as suite, BoxFuture, RegistryUnderTest, publish_request};
use adapterci_testkit::seaweedfs::{BUCKET, SeaweedServer};
use adapterci_testkit::servers::seaweedfs_or_skip;
use adapterci_testkit::store_fake::InMemoryMetadataStore;

/// A running server, or `None` (with a notice) where `weed` is not installed and not required.
pub async fn seaweed_server() -> Option<Arc<SeaweedServer>> {
    if !seaweedfs_or_skip(module_path!()) {
        return None;
    }
    let server = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap();
    Some(Arc::new(server.unwrap_or_else(|err| panic!("starting SeaweedFS: {err}"))))
}

/// The store at `s3://BUCKET/<prefix>` on `server`, opened the way adapterd opens it.
fn s3_store(server: &SeaweedServer, prefix: &str) -> Arc<dyn ObjectStore> {
    let env: HashMap<&str, String> = server.env().into_iter().collect();
    open_object_store_with_env(&format!("s3://{BUCKET}/{prefix}"), &|key| env.get(key).cloned()).unwrap()
}

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

/// A fresh registry below its own prefix of the bucket.
fn under_test(server: &Arc<SeaweedServer>, multipart_threshold: usize) -> RegistryUnderTest {
    let prefix = format!("suite-{}", PREFIXES.fetch_add(1, Ordering::SeqCst));
    let store = s3_store(server, &prefix);
    let registry = ObjectStoreRegistry::new(store.clone(), Arc::new(InMemoryMetadataStore::new()))
        .with_multipart_threshold(multipart_threshold);
    let locator = registry.clone();
    let keep = server.clone();
    RegistryUnderTest {
        registry: Arc::new(registry),
        corrupt_blob: Box::new(move |digest: Digest| -> BoxFuture<()> {
            let (store, location, _keep) = (store.clone(), locator.blob_location(&digest), keep.clone());
            Box::pin(async move {
                let mut bytes = store.get(&location).await.unwrap().bytes().await.unwrap().to_vec();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
                store.put(&location, PutPayload::from(bytes)).await.unwrap();
            })
        }),
    }
}

/// Waits (bounded) until the bucket takes writes: `weed mini` reports ready slightly before the bucket exists.
async fn wait_for_bucket(server: &SeaweedServer) {
    let store = s3_store(server, "probe");
    let location = "probe/ready".into();
    let mut last_error = String::new();
    for _ in 0..100 {
        match store.put(&location, PutPayload::from_static(b"ok")).await {
            Ok(_) => return,
            Err(err) => last_error = err.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the bucket never took a write: {last_error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_conforms_on_seaweedfs_s3() {
    let Some(server) = seaweed_server().await else { return };
    wait_for_bucket(&server).await;
    // Every behaviour twice: blobs in one request, and every blob above 16 bytes in parts.
    for threshold in [adapterci_registry::DEFAULT_MULTIPART_THRESHOLD, 16] {
        eprintln!("multipart threshold {threshold}");
        suite::publish_then_latest_returns_the_same_manifest_and_files(under_test(&server, threshold)).await;
        suite::versions_are_numbered_one_two_three_in_order(under_test(&server, threshold)).await;
        suite::republishing_the_same_request_is_idempotent(under_test(&server, threshold)).await;
        suite::a_flipped_bit_in_a_stored_blob_is_detected_on_fetch(under_test(&server, threshold)).await;
        suite::publish_without_weights_or_with_bad_names_is_refused(under_test(&server, threshold)).await;
        suite::sixteen_concurrent_publishes_get_versions_one_to_sixteen(under_test(&server, threshold)).await;
        suite::unknown_adapters_versions_and_blobs_are_absent(under_test(&server, threshold)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_12_mib_adapter_goes_up_in_parts_and_comes_back_verified_on_seaweedfs() {
    let Some(server) = seaweed_server().await else { return };
    wait_for_bucket(&server).await;
    let registry = under_test(&server, adapterci_registry::DEFAULT_MULTIPART_THRESHOLD).registry;
    // 12 MiB of varied bytes: above the 8 MiB threshold, so three 5 MiB-or-less parts.
    let weights: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let record = registry.publish(publish_request("large", &weights)).await.unwrap();
    let resolved = registry.get(&record.name, record.version).await.unwrap().unwrap();
    let file = resolved.manifest.file(ADAPTER_WEIGHTS_FILE).unwrap();
    assert_eq!(file.size, weights.len() as u64);
    assert_eq!(registry.fetch_blob(&file.digest).await.unwrap().as_ref(), weights.as_slice());
}
