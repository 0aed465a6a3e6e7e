//! The base-model watcher on a real model file, with a fake release builder that writes its bundle where the
//! engine's builder does: a touch without a change starts nothing; a new file content gives one release and one
//! retrain per dependent pipeline, each training on the release's weights from its recovery adapter; a build
//! that broke is tried again at the next pass; a finished rebase is not repeated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use adapterci_controller::{
    Controller, ControllerConfig, Ports, RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE, ResolvedBase, WatchedBaseModels,
};
use adapterci_core::base_release::{BaseReleaseBuilder, BaseReleaseError, BaseReleaseOutcome, BaseReleaseRequest};
use adapterci_core::ports::{AdapterRegistry, DatasetSource};
use adapterci_core::run::{RunState, Trigger};
use adapterci_core::training::InitialAdapterRef;
use adapterci_core::{AdapterName, Digest};
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use async_trait::async_trait;
use bytes::Bytes;

/// Writes `<dir>/<digest>/base.safetensors` and `recovery.safetensors` as the engine's builder does; fails the
/// first `failures` builds.
struct DirReleaseBuilder {
    dir: PathBuf,
    failures: AtomicUsize,
    requests: Mutex<Vec<BaseReleaseRequest>>,
}

#[async_trait]
impl BaseReleaseBuilder for DirReleaseBuilder {
    async fn build(&self, request: BaseReleaseRequest) -> Result<BaseReleaseOutcome, BaseReleaseError> {
        self.requests.lock().unwrap().push(request.clone());
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(BaseReleaseError { base_model_name: request.base_model_name, reason: "out of memory".into() });
        }
        let weights = format!("palettized {}", request.base_model_digest);
        let release_digest = Digest::of(weights.as_bytes());
        let bundle = self.dir.join(release_digest.hex());
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join(RELEASE_WEIGHTS_FILE), weights).unwrap();
        std::fs::write(bundle.join(RELEASE_RECOVERY_FILE), b"recovery adapter").unwrap();
        Ok(BaseReleaseOutcome::Released { release_digest })
    }
}

fn pipeline(name: &str) -> String {
    format!(
        "version: v1\nname: {name}\nbase:\n  model: tiny\ndataset:\n  location: datasets/{name}.jsonl\n\
         triggers:\n  - kind: manual\npublish:\n  adapter: {name}\n"
    )
}

/// Replaces the file's content the way an installer should: a new file renamed over the old.
fn install(path: &Path, content: &[u8]) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, content).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

#[tokio::test]
async fn a_changed_base_model_file_is_rebased_once_onto_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    install(&model, b"tiny v1");
    let releases = dir.path().join("releases");
    let base = ResolvedBase {
        name: "tiny".into(),
        path: model.clone(),
        digest: Digest::of(b"tiny v1"),
        recovery_adapter: None,
    };
    let catalog = Arc::new(WatchedBaseModels::new([base], Some(releases.clone())).await);

    let store = Arc::new(InMemoryMetadataStore::new());
    let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
    let registry = Arc::new(ObjectStoreRegistry::new(open_object_store("memory://").unwrap(), store.clone()));
    let datasets = Arc::new(ObjectStoreDatasetSource::new(open_object_store("memory://").unwrap()));
    let executor = Arc::new(ScriptedExecutor::default());
    let ports = Ports {
        store: store.clone(),
        registry: registry.clone(),
        datasets: datasets.clone(),
        executor: executor.clone(),
        base_models: catalog.clone(),
        clock: Arc::new(ManualClock::new()),
        scheduler: scheduler.clone(),
        deliveries: scheduler,
    };
    let controller = Controller::new(ports, ControllerConfig::default());
    for name in ["alpha", "beta", "gamma"] {
        controller.apply(&pipeline(name), None).await.unwrap();
        datasets.write(&format!("datasets/{name}.jsonl"), Bytes::from_static(b"good\n")).await.unwrap();
    }
    let builder =
        DirReleaseBuilder { dir: releases.clone(), failures: AtomicUsize::new(1), requests: Mutex::default() };

    assert!(controller.poll_base_models(&catalog, &builder).await.is_empty(), "nothing changed");
    install(&model, b"tiny v1");
    assert!(controller.poll_base_models(&catalog, &builder).await.is_empty(), "a touch without a change");
    assert!(builder.requests.lock().unwrap().is_empty());

    install(&model, b"tiny v2");
    let first = controller.poll_base_models(&catalog, &builder).await;
    assert_eq!(first.len(), 1);
    assert!(first[0].1.as_ref().unwrap_err().to_string().contains("out of memory"), "{:?}", first[0].1);
    assert!(controller.run_next().await.unwrap().is_none(), "nothing queued when the build broke");

    let second = controller.poll_base_models(&catalog, &builder).await;
    let outcome = second[0].1.as_ref().expect("the build is tried again and releases");
    let release = outcome.release_digest.clone().expect("released");
    assert_eq!(outcome.runs.len(), 3);
    assert!(controller.poll_base_models(&catalog, &builder).await.is_empty(), "a finished rebase is not repeated");
    let requests = builder.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one failed build, then one release");
    assert_eq!(requests[1].base_model_digest, Digest::of(b"tiny v2"));

    while let Some(run) = controller.run_next().await.unwrap() {
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        assert!(matches!(run.trigger, Trigger::BaseModelChanged { .. }));
    }
    let jobs = executor.jobs();
    assert_eq!(jobs.len(), 3);
    let bundle = releases.join(release.hex());
    for job in &jobs {
        assert_eq!(job.base_model_path, bundle.join(RELEASE_WEIGHTS_FILE), "trains on the release");
        assert_eq!(job.base_model_digest, release);
        let initial = job.initial_adapter.as_ref().expect("starts from the recovery adapter");
        assert_eq!(initial.safetensors, b"recovery adapter");
    }
    for name in ["alpha", "beta", "gamma"] {
        let latest = registry.latest(&AdapterName::new(name).unwrap()).await.unwrap().expect("published");
        let lineage = &latest.manifest.lineage;
        assert_eq!(lineage.base_release_digest.as_ref(), Some(&release), "{name}");
        assert_eq!(lineage.base_model_digest, release, "{name} is bound to the release it runs on");
        assert!(
            matches!(&lineage.initial_adapter, InitialAdapterRef::RecoveryAdapter { base_release, .. } if *base_release == release)
        );
    }

    // adapterd stops, the model is replaced, adapterd starts again (hashing the file it finds): the change made
    // while stopped is rebased at the next pass
    drop(controller);
    install(&model, b"tiny v3");
    let restarted_base = ResolvedBase {
        name: "tiny".into(),
        path: model.clone(),
        digest: Digest::of(b"tiny v3"),
        recovery_adapter: None,
    };
    let restarted = WatchedBaseModels::new([restarted_base], Some(releases.clone())).await;
    assert_eq!(restarted.refresh().await, vec![("tiny".to_string(), Digest::of(b"tiny v3"))]);
    // a first start knows nothing to rebase
    let fresh = tempfile::tempdir().unwrap();
    let first_start =
        ResolvedBase { name: "tiny".into(), path: model, digest: Digest::of(b"tiny v3"), recovery_adapter: None };
    let first = WatchedBaseModels::new([first_start], Some(fresh.path().join("releases"))).await;
    assert!(first.refresh().await.is_empty());
}
