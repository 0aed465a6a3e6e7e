//! The in-memory metadata store passes the same conformance suite as the database store.

use std::sync::Arc;

use adapterci_core::PipelineName;
use adapterci_core::ports::{PipelineStore, RunStore};
use adapterci_core::run::{NewRun, Trigger};
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::store_conformance::run_conformance;
use adapterci_testkit::store_fake::InMemoryMetadataStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_store_conforms() {
    run_conformance(|| async { InMemoryMetadataStore::new() }).await;
}

#[tokio::test]
async fn records_are_stamped_by_the_given_clock() {
    let clock = Arc::new(ManualClock::new());
    let store = InMemoryMetadataStore::with_clock(clock.clone());
    let demo = PipelineName::new("demo").unwrap();
    let pipeline = store.upsert_pipeline(&demo, "a").await.unwrap();
    assert_eq!(pipeline.created_at, adapterci_core::ports::Clock::now(&*clock));
    clock.advance(chrono::Duration::seconds(5));
    let run = NewRun { pipeline: demo, pipeline_revision: 1, trigger: Trigger::Manual, dataset_digest: None };
    let run = store.create_run(run).await.unwrap();
    assert_eq!(run.created_at - pipeline.created_at, chrono::Duration::seconds(5));
}
