//! A worker with an empty releases folder serves a version bound to a base release by fetching the release from
//! the registry's store (`ReleaseStore` on a real local directory, the index on SQLite), checked against its digest;
//! a release the store does not have, or has damaged, is an error naming the release and the key, and the served
//! version stays as it was. libtorch on the CPU, tiny models.
//!
//! The "release" here is a second tiny GGUF: the worker fetches and checks a release by the sha256 of its weights
//! file whatever its format (as the engine checks it when it loads it), and a GGUF loads in a few milliseconds where
//! building a palettized release takes a while; adapterd's end-to-end test (`serve_only_e2e.rs`) serves a real one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapterci_core::Digest;
use adapterci_core::base_release::{RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE};
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::ports::{AdapterRegistry, RegistryError};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::LoraWeights;
use adapterci_registry::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, ReleaseStore, open_object_store};
use adapterci_store::SeaStore;
use adapterci_testkit::registry_conformance::{adapter_name, publish_request};
use adapterci_worker::{Prompt, ReleaseSource, SamplingRequest, Worker, WorkerConfig, WorkerError};
use bytes::Bytes;

/// The registry's release store as the worker's release source (adapterd wires the same).
#[derive(Debug)]
struct StoreReleases(ReleaseStore);

#[async_trait::async_trait]
impl ReleaseSource for StoreReleases {
    async fn fetch_release(&self, release: &Digest, releases_dir: &Path) -> Result<PathBuf, RegistryError> {
        self.0.download(release, releases_dir).await
    }
}

struct Setup {
    dir: tempfile::TempDir,
    registry: ObjectStoreRegistry,
    store: Arc<dyn ObjectStore>,
    worker: Arc<Worker>,
}

/// A registry on SQLite and local files, a "release" (tiny model, seed 2) uploaded to its store, and a worker on the
/// tiny model (seed 1) with an empty releases folder and the store as its release source.
async fn setup() -> (Setup, Digest) {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
    let index = Arc::new(SeaStore::connect(&database).await.unwrap());
    let store = open_object_store(&dir.path().join("registry").display().to_string()).unwrap();
    let registry = ObjectStoreRegistry::new(store.clone(), index);

    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 1).unwrap();
    let release = build_release_dir(&dir.path().join("built"), 2);
    registry.releases().upload(&release, &dir.path().join("built").join(release.hex())).await.unwrap();

    let worker = Worker::start(
        WorkerConfig {
            model_path: model,
            model_name: "tiny".to_string(),
            device: DeviceChoice::Cpu,
            adapter_cache_bytes: 64 << 20,
            refresh_interval: Duration::from_secs(3600),
            releases_dir: Some(dir.path().join("worker-releases")),
            release_source: Some(Arc::new(StoreReleases(registry.releases()))),
        },
        Arc::new(registry.clone()),
    )
    .await
    .unwrap();
    (Setup { dir, registry, store, worker }, release)
}

/// A release folder under `releases` whose weights are the tiny model of `seed`; returns its digest.
fn build_release_dir(releases: &Path, seed: u64) -> Digest {
    let staging = releases.join(format!("seed-{seed}.gguf"));
    std::fs::create_dir_all(releases).unwrap();
    adapterci_engine::tiny::write_tiny_model(&staging, seed).unwrap();
    let bytes = std::fs::read(&staging).unwrap();
    let digest = Digest::of(&bytes);
    let dir = releases.join(digest.hex());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(&staging, dir.join(RELEASE_WEIGHTS_FILE)).unwrap();
    std::fs::write(dir.join(RELEASE_RECOVERY_FILE), b"recovery adapter").unwrap();
    digest
}

/// Publishes `name` with real LoRA weights for the tiny model, bound to `release`.
async fn publish_on(setup: &Setup, name: &str, release: &Digest, seed: u64) -> u64 {
    let mut request = publish_request(name, b"placeholder");
    let config = adapterci_engine::model::model_config(&setup.dir.path().join("tiny.gguf")).unwrap();
    let weights =
        LoraWeights::init_standard(&request.adapter, 0.0, &config, seed, DeviceChoice::Cpu.resolve().unwrap())
            .unwrap()
            .to_safetensors()
            .unwrap();
    request.files = vec![(ADAPTER_WEIGHTS_FILE.to_string(), Bytes::from(weights))];
    request.lineage.base_model_digest = release.clone();
    request.lineage.base_release_digest = Some(release.clone());
    request.lineage.run_id = Some(format!("run-{name}-{seed}"));
    setup.registry.publish(request).await.unwrap().version
}

fn sampling() -> SamplingRequest {
    SamplingRequest { max_tokens: 2, temperature: 0.0, top_p: 1.0, seed: 1, stop: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_on_a_release_the_worker_lacks_is_served_once_the_release_is_fetched() {
    let (setup, release) = setup().await;
    let version = publish_on(&setup, "support", &release, 1).await;

    let served = setup.worker.refresh(&adapter_name("support")).await.unwrap().expect("a new version is served");
    assert_eq!((served.version, &served.base_model_digest), (version, &release));
    let fetched = setup.dir.path().join("worker-releases").join(release.hex());
    let expected =
        std::fs::read(setup.dir.path().join("built").join(release.hex()).join(RELEASE_WEIGHTS_FILE)).unwrap();
    assert_eq!(std::fs::read(fetched.join(RELEASE_WEIGHTS_FILE)).unwrap(), expected);
    let output = setup.worker.complete("support", Prompt::Text("hello".to_string()), sampling()).await.unwrap();
    assert_eq!(output.adapter.map(|adapter| adapter.version), Some(version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_missing_from_the_store_is_an_error_naming_it_and_the_served_version_stays() {
    let (setup, release) = setup().await;
    let first = publish_on(&setup, "support", &release, 1).await;
    setup.worker.refresh(&adapter_name("support")).await.unwrap();

    let missing = Digest::of(b"a release never uploaded");
    publish_on(&setup, "support", &missing, 2).await;
    let err = setup.worker.refresh(&adapter_name("support")).await.unwrap_err();
    assert!(matches!(err, WorkerError::ReleaseFetch { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&missing.to_string()), "{message}");
    assert!(message.contains(&format!("releases/{}/release.json", missing.hex())), "{message}");
    assert_eq!(setup.worker.served(&adapter_name("support")).map(|served| served.version), Some(first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_release_in_the_store_is_refused_and_never_takes_its_name() {
    let (setup, _release) = setup().await;
    let damaged = build_release_dir(&setup.dir.path().join("built"), 3);
    let releases = setup.registry.releases();
    releases.upload(&damaged, &setup.dir.path().join("built").join(damaged.hex())).await.unwrap();
    let location = releases.location(&damaged, RELEASE_WEIGHTS_FILE);
    let mut bytes = setup.store.get(&location).await.unwrap().bytes().await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    setup.store.put(&location, PutPayload::from(bytes)).await.unwrap();
    publish_on(&setup, "support", &damaged, 1).await;

    let err = setup.worker.refresh(&adapter_name("support")).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, WorkerError::ReleaseFetch { error, .. } if matches!(**error, RegistryError::DigestMismatch { .. })),
        "{message}"
    );
    assert!(message.contains(&damaged.to_string()) && message.contains(&location.to_string()), "{message}");
    assert!(setup.worker.served(&adapter_name("support")).is_none());
    let folder = setup.dir.path().join("worker-releases").join(damaged.hex());
    assert!(!folder.join(RELEASE_WEIGHTS_FILE).exists(), "the damaged weights did not take the release's name");
}
