//! A worker is not ready until its first refresh pass has gone over every published adapter: then it is, with the
//! adapters it could load served and the one it could not (bound to a base this worker does not have) left out
//! rather than keeping it unready for ever. The registry on SQLite and local files, libtorch on the CPU, tiny models.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use adapterci_core::Digest;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::ports::AdapterRegistry;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::LoraWeights;
use adapterci_registry::{ObjectStoreRegistry, open_object_store};
use adapterci_store::SeaStore;
use adapterci_testkit::registry_conformance::{adapter_name, publish_request};
use adapterci_worker::{Readiness, Worker, WorkerConfig};
use bytes::Bytes;

/// Publishes `name` with real LoRA weights for the tiny model at `model`, bound to the base `base`.
async fn publish(registry: &ObjectStoreRegistry, model: &std::path::Path, name: &str, base: &Digest) -> u64 {
    let mut request = publish_request(name, b"placeholder");
    let config = adapterci_engine::model::model_config(model).unwrap();
    let weights = LoraWeights::init_standard(&request.adapter, 0.0, &config, 1, DeviceChoice::Cpu.resolve().unwrap())
        .unwrap()
        .to_safetensors()
        .unwrap();
    request.files = vec![(ADAPTER_WEIGHTS_FILE.to_string(), Bytes::from(weights))];
    request.lineage.base_model_digest = base.clone();
    registry.publish(request).await.unwrap().version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_the_first_pass_went_over_every_adapter_even_one_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
    let index = Arc::new(SeaStore::connect(&database).await.unwrap());
    let store = open_object_store(&dir.path().join("registry").display().to_string()).unwrap();
    let registry = ObjectStoreRegistry::new(store, index);
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 1).unwrap();
    let worker = Worker::start(
        WorkerConfig {
            model_path: model.clone(),
            model_name: "tiny".to_string(),
            device: DeviceChoice::Cpu,
            adapter_cache_bytes: 64 << 20,
            refresh_interval: Duration::from_secs(3600),
            releases_dir: None,
            release_source: None,
        },
        Arc::new(registry.clone()),
    )
    .await
    .unwrap();
    let version = publish(&registry, &model, "support", worker.base_digest()).await;
    publish(&registry, &model, "elsewhere", &Digest::of(b"a base this worker does not have")).await;

    let before = worker.readiness();
    assert!(!before.ready, "{before:?}");
    let reason = before.reason.expect("an unready worker says why");
    assert!(reason.contains("first pull of the published adapters has not finished"), "{reason}");
    assert!(worker.served(&adapter_name("support")).is_none());

    worker.refresh_all().await.unwrap();
    assert_eq!(worker.readiness(), Readiness { ready: true, reason: None });
    assert_eq!(worker.served(&adapter_name("support")).map(|served| served.version), Some(version));
    assert!(worker.served(&adapter_name("elsewhere")).is_none(), "bound to another base: not served");
}
