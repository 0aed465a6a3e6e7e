//! The in-memory scheduler passes the same scheduling conformance suite as the database store.

use std::sync::Arc;

use adapterci_testkit::scheduling_conformance::{Scheduling, run_scheduling_conformance};
use adapterci_testkit::scheduling_fake::InMemoryScheduler;
use adapterci_testkit::store_fake::InMemoryMetadataStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_scheduler_conforms() {
    run_scheduling_conformance(|| async {
        let store = Arc::new(InMemoryMetadataStore::new());
        let scheduler = Arc::new(InMemoryScheduler::new(store.clone()));
        Scheduling { runs: store, scheduler: scheduler.clone(), deliveries: scheduler }
    })
    .await;
}
