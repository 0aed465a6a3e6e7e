//! The conformance suite of the `AdapterRegistry` port: one async function per behaviour, run by every
//! implementation (in-memory and local-directory object stores today, S3 later) through
//! [`registry_conformance_tests!`](crate::registry_conformance_tests).
//!
//! The suite sees only the port; damaging a stored blob is a hook the implementation's tests provide, so this
//! crate never depends on a storage library.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use adapterci_core::gate::GateReport;
use adapterci_core::manifest::{ADAPTER_WEIGHTS_FILE, EvalReport, Lineage, MANIFEST_SCHEMA_VERSION};
use adapterci_core::ports::{AdapterRegistry, PublishRequest, RegistryError};
use adapterci_core::training::{AdapterConfig, InitialAdapterRef, LoraTarget};
use adapterci_core::{AdapterName, Digest};
use bytes::Bytes;

/// A boxed future, for the corruption hook.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A registry under test, with a way to damage what it stored.
pub struct RegistryUnderTest {
    pub registry: Arc<dyn AdapterRegistry>,
    /// Flips one bit of the stored blob `digest` in place, behind the registry's back. It should also keep alive
    /// whatever the store needs (a temporary directory, a server).
    pub corrupt_blob: Box<dyn Fn(Digest) -> BoxFuture<()> + Send + Sync>,
}

/// Stamps out one `#[tokio::test]` per behaviour of the suite; `$make` is an expression giving a future of a fresh
/// [`RegistryUnderTest`], evaluated once per test. The calling crate needs `tokio` as a dev-dependency.
#[macro_export]
macro_rules! registry_conformance_tests {
    ($make:expr) => {
        $crate::registry_conformance_tests!(@each $make;
            publish_then_latest_returns_the_same_manifest_and_files,
            versions_are_numbered_one_two_three_in_order,
            republishing_the_same_request_is_idempotent,
            a_flipped_bit_in_a_stored_blob_is_detected_on_fetch,
            publish_without_weights_or_with_bad_names_is_refused,
            sixteen_concurrent_publishes_get_versions_one_to_sixteen,
            unknown_adapters_versions_and_blobs_are_absent,
        );
    };
    (@each $make:expr; $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                $crate::registry_conformance::$behaviour($make.await).await;
            }
        )*
    };
}

/// An adapter name for tests.
pub fn adapter_name(name: &str) -> AdapterName {
    AdapterName::new(name).expect("test adapter names are valid")
}

/// A complete publish request: weights, a config file and an eval report, all distinct per `weights`.
pub fn publish_request(name: &str, weights: &[u8]) -> PublishRequest {
    let metrics = BTreeMap::from([("eval_loss".to_string(), 1.25), ("exact_match".to_string(), 0.5)]);
    PublishRequest {
        name: adapter_name(name),
        adapter: AdapterConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec![LoraTarget::Q, LoraTarget::V],
            layers: vec![0, 1],
            dtype: "f32".to_string(),
        },
        files: vec![
            (ADAPTER_WEIGHTS_FILE.to_string(), Bytes::copy_from_slice(weights)),
            ("adapter_config.json".to_string(), Bytes::from_static(br#"{"rank":4}"#)),
        ],
        lineage: Lineage {
            base_model_digest: Digest::of(b"base model"),
            base_model_name: "tiny".to_string(),
            base_release_digest: None,
            dataset_digests: vec![Digest::of(b"dataset")],
            pipeline: None,
            run_id: Some(format!("run-{}", Digest::of(weights).short())),
            initial_adapter: InitialAdapterRef::StandardInit,
            code_version: "test".to_string(),
        },
        eval: Some(EvalReport {
            metrics,
            gates: GateReport { passed: true, results: Vec::new() },
            samples: Vec::new(),
        }),
    }
}

fn file_bytes<'a>(request: &'a PublishRequest, name: &str) -> &'a Bytes {
    &request.files.iter().find(|(file, _)| file == name).expect("the request holds the file").1
}

pub async fn publish_then_latest_returns_the_same_manifest_and_files(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let request = publish_request("round-trip", b"weights v1");
    let record = registry.publish(request.clone()).await.expect("publish");
    assert_eq!((record.name.as_str(), record.version), ("round-trip", 1));
    assert_eq!(record.base_model_digest, request.lineage.base_model_digest);
    assert_eq!(record.run_id, request.lineage.run_id);

    let latest = registry.latest(&request.name).await.expect("latest").expect("a version exists");
    assert_eq!(latest.record, record);
    let manifest = &latest.manifest;
    assert_eq!(manifest.schema_version, MANIFEST_SCHEMA_VERSION);
    assert_eq!(manifest.name, request.name);
    assert_eq!(manifest.adapter, request.adapter);
    assert_eq!(manifest.lineage, request.lineage);
    assert_eq!(manifest.eval, request.eval);
    assert_eq!(manifest.files.len(), request.files.len());
    for (name, bytes) in &request.files {
        let file = manifest.file(name).unwrap_or_else(|| panic!("the manifest lists {name}"));
        assert_eq!(file.digest, Digest::of(bytes), "{name}");
        assert_eq!(file.size, bytes.len() as u64, "{name}");
        assert_eq!(&registry.fetch_blob(&file.digest).await.expect("fetch"), bytes, "{name}");
    }
    // The manifest is itself a blob whose digest is the version's identity.
    let manifest_bytes = registry.fetch_blob(&record.manifest_digest).await.expect("fetch the manifest");
    assert_eq!(Digest::of(&manifest_bytes), record.manifest_digest);
    assert_eq!(registry.get(&request.name, 1).await.expect("get"), Some(latest));
    assert_eq!(registry.list_adapters().await.expect("list"), vec![request.name]);
}

pub async fn versions_are_numbered_one_two_three_in_order(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let name = adapter_name("ordered");
    for (index, weights) in [b"one", b"two", b"tre"].iter().enumerate() {
        let record = registry.publish(publish_request("ordered", *weights)).await.expect("publish");
        assert_eq!(record.version, index as u64 + 1);
        let latest = registry.latest(&name).await.expect("latest").expect("a version exists");
        assert_eq!(latest.record.version, index as u64 + 1, "latest follows each publish");
    }
    let versions = registry.list_versions(&name).await.expect("list");
    assert_eq!(versions.iter().map(|record| record.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    let second = registry.get(&name, 2).await.expect("get").expect("version 2 exists");
    let weights = second.manifest.file(ADAPTER_WEIGHTS_FILE).expect("weights listed");
    assert_eq!(registry.fetch_blob(&weights.digest).await.expect("fetch"), Bytes::from_static(b"two"));
    assert_eq!(second.record, versions[1]);
}

pub async fn republishing_the_same_request_is_idempotent(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let request = publish_request("again", b"same weights");
    let first = registry.publish(request.clone()).await.expect("publish");
    let second = registry.publish(request.clone()).await.expect("publish again");
    assert_eq!(second, first);
    let mut reordered = request.clone();
    reordered.files.reverse();
    assert_eq!(registry.publish(reordered).await.expect("publish reordered"), first, "file order is irrelevant");
    assert_eq!(registry.list_versions(&request.name).await.expect("list").len(), 1);

    let changed = publish_request("again", b"other weights");
    assert_eq!(registry.publish(changed).await.expect("publish a change").version, 2);
}

pub async fn a_flipped_bit_in_a_stored_blob_is_detected_on_fetch(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let request = publish_request("damaged", b"weights that will be damaged");
    let record = registry.publish(request.clone()).await.expect("publish");
    let weights = Digest::of(file_bytes(&request, ADAPTER_WEIGHTS_FILE));
    (under_test.corrupt_blob)(weights.clone()).await;
    expect_mismatch(registry.fetch_blob(&weights).await.map(|_| ()), &weights);
    // Other blobs are unaffected.
    let config = file_bytes(&request, "adapter_config.json");
    assert_eq!(&registry.fetch_blob(&Digest::of(config)).await.expect("fetch the config"), config);

    (under_test.corrupt_blob)(record.manifest_digest.clone()).await;
    expect_mismatch(registry.latest(&request.name).await.map(|_| ()), &record.manifest_digest);
    expect_mismatch(registry.get(&request.name, 1).await.map(|_| ()), &record.manifest_digest);
}

fn expect_mismatch(result: Result<(), RegistryError>, digest: &Digest) {
    match result {
        Err(RegistryError::DigestMismatch { what, expected, actual }) => {
            assert!(what.contains(&digest.hex()), "the error names the blob: {what}");
            assert_eq!(&expected, digest);
            assert_ne!(&actual, digest);
        }
        other => panic!("expected a digest mismatch for {digest}, got {other:?}"),
    }
}

pub async fn publish_without_weights_or_with_bad_names_is_refused(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let check = |mutate: fn(&mut PublishRequest), expect: &'static str| {
        let registry = registry.clone();
        async move {
            let mut request = publish_request("refused", b"weights");
            mutate(&mut request);
            match registry.publish(request).await {
                Err(err @ RegistryError::InvalidRequest { .. }) => {
                    assert!(err.to_string().contains(expect), "expected {expect:?} in: {err}")
                }
                other => panic!("expected a refusal containing {expect:?}, got {other:?}"),
            }
        }
    };
    check(|request| request.files.retain(|(name, _)| name != ADAPTER_WEIGHTS_FILE), ADAPTER_WEIGHTS_FILE).await;
    check(|request| request.files.clear(), ADAPTER_WEIGHTS_FILE).await;
    check(|request| request.files.push(("../escape".into(), Bytes::new())), "../escape").await;
    check(|request| request.files.push(("dir/file".into(), Bytes::new())), "plain file name").await;
    check(|request| request.files.push(("".into(), Bytes::new())), "must not be empty").await;
    check(|request| request.files.push(("adapter_config.json".into(), Bytes::new())), "appears twice").await;
    let name = adapter_name("refused");
    assert_eq!(registry.list_versions(&name).await.expect("list"), Vec::new(), "nothing was recorded");
    assert_eq!(registry.latest(&name).await.expect("latest"), None);
}

pub async fn sixteen_concurrent_publishes_get_versions_one_to_sixteen(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..16u8 {
        let registry = registry.clone();
        tasks.spawn(async move {
            let weights = vec![index; 64 + usize::from(index)];
            let record = registry.publish(publish_request("raced", &weights)).await.expect("publish");
            (record, Digest::of(&weights))
        });
    }
    let mut published = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        published.push(joined.expect("the publish task finished"));
    }
    let mut versions: Vec<u64> = published.iter().map(|(record, _)| record.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<_>>());
    for (record, weights_digest) in &published {
        let resolved = registry.get(&record.name, record.version).await.expect("get").expect("the version exists");
        assert_eq!(&resolved.record, record);
        let weights = resolved.manifest.file(ADAPTER_WEIGHTS_FILE).expect("weights listed");
        assert_eq!(
            &weights.digest, weights_digest,
            "version {} holds the weights it was published with",
            record.version
        );
        registry.fetch_blob(&weights.digest).await.expect("the weights are readable");
    }
    let listed = registry.list_versions(&adapter_name("raced")).await.expect("list");
    assert_eq!(listed.iter().map(|record| record.version).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
}

pub async fn unknown_adapters_versions_and_blobs_are_absent(under_test: RegistryUnderTest) {
    let registry = under_test.registry;
    let name = adapter_name("absent");
    assert_eq!(registry.latest(&name).await.expect("latest"), None);
    assert_eq!(registry.get(&name, 1).await.expect("get"), None);
    assert_eq!(registry.list_versions(&name).await.expect("list"), Vec::new());
    assert_eq!(registry.list_adapters().await.expect("list adapters"), Vec::new());
    let missing = Digest::of(b"never stored");
    match registry.fetch_blob(&missing).await {
        Err(RegistryError::NotFound { what }) => assert!(what.contains(&missing.hex()), "{what}"),
        other => panic!("expected not found, got {other:?}"),
    }
    registry.publish(publish_request("absent", b"w")).await.expect("publish");
    assert_eq!(registry.get(&name, 2).await.expect("get"), None, "a version past the latest is absent");
}
