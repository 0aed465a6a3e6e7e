//! The promotion policy acted on after the gates pass, on in-memory ports whose store and controller share one
//! manual clock: without a policy a published version goes to the pipeline's channel at once; with a canary
//! policy it goes to the canary at once and to stable once it served a clean period there, not before; a
//! canary rolled back, or a deprecated version, is not promoted; a failed gate promotes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use adapterci_controller::{Controller, ControllerConfig, Ports, ResolvedBase, StaticBaseModels};
use adapterci_core::channels::{ChannelName, ChannelStore, RollbackTarget};
use adapterci_core::ports::DatasetSource;
use adapterci_core::run::{RunState, Trigger};
use adapterci_core::{AdapterName, Digest, PipelineName};
use adapterci_registry::{ObjectStoreDatasetSource, ObjectStoreRegistry, open_object_store};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::executor_fake::ScriptedExecutor;
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::store_fake::InMemoryMetadataStore;
use bytes::Bytes;

const DIRECT: &str = "version: v1
name: direct
base: {model: tiny}
dataset: {location: datasets/direct.jsonl}
triggers: [{kind: manual}]
publish:
  adapter: direct
  channel: prod
";

const CANARY: &str = "version: v1
name: careful
base: {model: tiny}
dataset: {location: datasets/careful.jsonl}
triggers: [{kind: manual}]
publish:
  adapter: careful
  channel: stable
  promotion:
    canary: canary
    stable_after: 1h
";

struct Harness {
    store: Arc<InMemoryMetadataStore>,
    datasets: Arc<ObjectStoreDatasetSource>,
    clock: Arc<ManualClock>,
    controller: Controller,
}

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(InMemoryMetadataStore::with_clock(clock.clone()));
    let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
    let registry = Arc::new(ObjectStoreRegistry::new(open_object_store("memory://").unwrap(), store.clone()));
    let datasets = Arc::new(ObjectStoreDatasetSource::new(open_object_store("memory://").unwrap()));
    let base = ResolvedBase {
        name: "tiny".into(),
        path: PathBuf::from("tiny.gguf"),
        digest: Digest::of(b"t"),
        recovery_adapter: None,
    };
    let ports = Ports {
        store: store.clone(),
        registry,
        datasets: datasets.clone(),
        executor: Arc::new(ScriptedExecutor::default()),
        base_models: Arc::new(StaticBaseModels::new([base])),
        clock: clock.clone(),
        scheduler: scheduler.clone(),
        deliveries: scheduler,
    };
    let controller = Controller::new(ports, ControllerConfig::default());
    Harness { store, datasets, clock, controller }
}

impl Harness {
    /// Runs `pipeline` on `data` to its end; the version it published.
    async fn publish(&self, pipeline: &str, data: &str) -> u64 {
        self.datasets.write(&format!("datasets/{pipeline}.jsonl"), Bytes::from(data.to_string())).await.unwrap();
        self.controller.trigger(&PipelineName::new(pipeline).unwrap(), Trigger::Manual).await.unwrap();
        let run = self.controller.run_next().await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        run.published.unwrap().version
    }

    async fn channel(&self, adapter: &str, channel: &str) -> Option<u64> {
        let adapter = AdapterName::new(adapter).unwrap();
        let channel = ChannelName::new(channel).unwrap();
        self.store.get_channel(&adapter, &channel).await.unwrap().map(|record| record.version)
    }

    fn advance_minutes(&self, minutes: i64) {
        self.clock.advance(chrono::Duration::minutes(minutes));
    }
}

#[tokio::test]
async fn without_a_policy_a_published_version_goes_to_the_pipelines_channel_at_once() {
    let h = harness();
    h.controller.apply(DIRECT, None).await.unwrap();
    assert_eq!(h.publish("direct", "good 1\n").await, 1);
    assert_eq!(h.channel("direct", "prod").await, Some(1));
    assert_eq!(h.publish("direct", "good 2\n").await, 2);
    assert_eq!(h.channel("direct", "prod").await, Some(2));
    assert!(h.controller.promote_due_canaries().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_canary_policy_promotes_to_stable_only_after_a_clean_period() {
    let h = harness();
    h.controller.apply(CANARY, None).await.unwrap();
    let careful = AdapterName::new("careful").unwrap();
    let canary = ChannelName::new("canary").unwrap();

    assert_eq!(h.publish("careful", "good 1\n").await, 1);
    assert_eq!((h.channel("careful", "canary").await, h.channel("careful", "stable").await), (Some(1), None));
    h.advance_minutes(59);
    assert!(h.controller.promote_due_canaries().await.unwrap().is_empty(), "not clean for an hour yet");
    h.advance_minutes(1);
    let moved = h.controller.promote_due_canaries().await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(h.channel("careful", "stable").await, Some(1));
    assert!(h.controller.promote_due_canaries().await.unwrap().is_empty(), "stable already serves it");

    // v2 on the canary, rolled back within its hour: stable keeps v1
    assert_eq!(h.publish("careful", "good 2\n").await, 2);
    assert_eq!(h.channel("careful", "canary").await, Some(2));
    h.advance_minutes(30);
    h.store.rollback(&careful, &canary, RollbackTarget::Previous).await.unwrap();
    h.advance_minutes(120);
    assert!(h.controller.promote_due_canaries().await.unwrap().is_empty());
    assert_eq!(h.channel("careful", "stable").await, Some(1));

    // v3 on the canary, deprecated: never promoted
    assert_eq!(h.publish("careful", "good 3\n").await, 3);
    h.store.set_deprecated(&careful, 3, true).await.unwrap();
    h.advance_minutes(120);
    assert!(h.controller.promote_due_canaries().await.unwrap().is_empty());
    assert_eq!(h.channel("careful", "stable").await, Some(1));

    // v4, a newer version arriving on the canary restarts the period
    assert_eq!(h.publish("careful", "good 4\n").await, 4);
    h.advance_minutes(45);
    assert!(h.controller.promote_due_canaries().await.unwrap().is_empty());
    h.advance_minutes(15);
    assert_eq!(h.controller.promote_due_canaries().await.unwrap().len(), 1);
    assert_eq!(h.channel("careful", "stable").await, Some(4));
}

#[tokio::test]
async fn a_failed_gate_promotes_nothing() {
    let h = harness();
    let gated = DIRECT.replace("triggers:", "eval:\n  gates:\n    - {metric: eval_loss, max: -1}\ntriggers:");
    h.controller.apply(&gated, None).await.unwrap();
    h.datasets.write("datasets/direct.jsonl", Bytes::from_static(b"good\n")).await.unwrap();
    h.controller.trigger(&PipelineName::new("direct").unwrap(), Trigger::Manual).await.unwrap();
    let run = h.controller.run_next().await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Rejected, "{run:#?}");
    assert_eq!(h.channel("direct", "prod").await, None);
}
