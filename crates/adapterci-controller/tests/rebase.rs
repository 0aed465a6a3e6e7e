//! The rebase DAG on in-memory ports with a fake base-release builder (the engine's base-release stage plugs
//! into the same port): one base-model change gives one base release and one retrained adapter per dependent
//! pipeline, each bound to that release; a release whose gate fails retrains and publishes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use adapterci_controller::{BaseModels, Controller, ControllerConfig, Ports, ResolvedBase};
use adapterci_core::base_release::{BaseReleaseBuilder, BaseReleaseError, BaseReleaseOutcome, BaseReleaseRequest};
use adapterci_core::ports::{AdapterRegistry, DatasetSource};
use adapterci_core::run::RunState;
use adapterci_core::{AdapterName, Digest};
use adapterci_pipeline::BaseModelRef;
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use async_trait::async_trait;
use bytes::Bytes;

/// A catalog whose one model can be replaced, as when a new base model file is installed.
struct ChangingCatalog(Mutex<ResolvedBase>);

impl BaseModels for ChangingCatalog {
    fn resolve(&self, base: &BaseModelRef) -> Result<ResolvedBase, String> {
        let current = self.0.lock().unwrap().clone();
        match base {
            BaseModelRef::Named(name) if *name == current.name => Ok(current),
            other => Err(format!("{other:?} is not in the catalog")),
        }
    }
}

/// The base-release stage, faked: releases get a digest derived from the base, or the gate fails.
struct FakeReleaseBuilder {
    passes: bool,
    requests: Mutex<Vec<BaseReleaseRequest>>,
}

#[async_trait]
impl BaseReleaseBuilder for FakeReleaseBuilder {
    async fn build(&self, request: BaseReleaseRequest) -> Result<BaseReleaseOutcome, BaseReleaseError> {
        self.requests.lock().unwrap().push(request.clone());
        Ok(if self.passes {
            BaseReleaseOutcome::Released {
                release_digest: Digest::of(format!("release of {}", request.base_model_digest).as_bytes()),
            }
        } else {
            BaseReleaseOutcome::GateFailed { reason: "palettized perplexity 31.0 above the gate's 20.0".to_string() }
        })
    }
}

fn pipeline(name: &str) -> String {
    format!(
        "version: v1\nname: {name}\nbase:\n  model: tiny\ndataset:\n  location: datasets/{name}.jsonl\n\
         triggers:\n  - kind: manual\npublish:\n  adapter: {name}\n"
    )
}

struct Harness {
    controller: Controller,
    catalog: Arc<ChangingCatalog>,
    registry: Arc<ObjectStoreRegistry>,
}

async fn harness() -> Harness {
    let store = Arc::new(InMemoryMetadataStore::new());
    let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
    let registry = Arc::new(ObjectStoreRegistry::new(open_object_store("memory://").unwrap(), store.clone()));
    let datasets = Arc::new(ObjectStoreDatasetSource::new(open_object_store("memory://").unwrap()));
    let base = ResolvedBase {
        name: "tiny".into(),
        path: PathBuf::from("tiny.gguf"),
        digest: Digest::of(b"tiny v1"),
        recovery_adapter: None,
    };
    let catalog = Arc::new(ChangingCatalog(Mutex::new(base)));
    let ports = Ports {
        store: store.clone(),
        registry: registry.clone(),
        datasets: datasets.clone(),
        executor: ScriptedExecutor::new(),
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
    let other = pipeline("other").replace("model: tiny", "model: huge");
    // A pipeline on another base is stored directly (apply would refuse a base missing from this catalog).
    adapterci_core::ports::PipelineStore::upsert_pipeline(
        &*store,
        &adapterci_core::PipelineName::new("other").unwrap(),
        &other,
    )
    .await
    .unwrap();
    Harness { controller, catalog, registry }
}

impl Harness {
    fn install_new_base(&self) -> Digest {
        let mut base = self.catalog.0.lock().unwrap();
        base.digest = Digest::of(b"tiny v2");
        base.digest.clone()
    }
}

#[tokio::test]
async fn one_base_change_gives_one_release_and_three_adapters_bound_to_it() {
    let h = harness().await;
    let new_base = h.install_new_base();
    let builder = FakeReleaseBuilder { passes: true, requests: Mutex::new(Vec::new()) };
    let outcome = h.controller.rebase("tiny", new_base.clone(), &builder).await.unwrap();
    assert_eq!(builder.requests.lock().unwrap().len(), 1, "one base release for all dependents");
    let release = outcome.release_digest.clone().expect("released");
    let mut pipelines: Vec<String> = outcome.runs.iter().map(|run| run.pipeline.to_string()).collect();
    pipelines.sort();
    assert_eq!(pipelines, ["alpha", "beta", "gamma"], "the pipeline on another base is not rebased");

    let mut finished = 0;
    while let Some(run) = h.controller.run_next().await.unwrap() {
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        finished += 1;
    }
    assert_eq!(finished, 3);
    for name in ["alpha", "beta", "gamma"] {
        let latest = h.registry.latest(&AdapterName::new(name).unwrap()).await.unwrap().expect("published");
        assert_eq!(latest.manifest.lineage.base_model_digest, new_base, "{name}");
        assert_eq!(latest.manifest.lineage.base_release_digest.as_ref(), Some(&release), "{name}");
    }
}

#[tokio::test]
async fn a_failed_base_release_gate_retrains_and_publishes_nothing() {
    let h = harness().await;
    let new_base = h.install_new_base();
    let builder = FakeReleaseBuilder { passes: false, requests: Mutex::new(Vec::new()) };
    let outcome = h.controller.rebase("tiny", new_base, &builder).await.unwrap();
    assert_eq!(outcome.release_digest, None);
    assert!(outcome.gate_failure.unwrap().contains("perplexity"));
    assert!(outcome.runs.is_empty());
    assert!(h.controller.run_next().await.unwrap().is_none());
    assert!(h.registry.list_adapters().await.unwrap().is_empty(), "nothing published");
}

#[tokio::test]
async fn a_rebase_run_refuses_a_base_that_moved_on_before_it_ran() {
    let h = harness().await;
    let new_base = h.install_new_base();
    let builder = FakeReleaseBuilder { passes: true, requests: Mutex::new(Vec::new()) };
    h.controller.rebase("tiny", new_base, &builder).await.unwrap();
    h.catalog.0.lock().unwrap().digest = Digest::of(b"tiny v3");
    let run = h.controller.run_next().await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.error.unwrap_or_default().contains("queued to retrain on base"));
    assert!(h.registry.list_adapters().await.unwrap().is_empty());
}
