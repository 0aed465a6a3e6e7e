//! What every request handler shares.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use adapterci_controller::Controller;
use adapterci_worker::Worker;
use tokio::sync::Semaphore;

/// The state behind the router; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
    /// `None` when adapterd runs without its embedded worker (`--no-worker`).
    pub worker: Option<Arc<Worker>>,
    /// The registry on its object store, for administration (garbage collection); `None` where there is none.
    pub registry: Option<Arc<adapterci_registry::ObjectStoreRegistry>>,
    /// Outbound registry events (webhooks on publish, promote, rollback).
    pub events: Option<Arc<crate::events::EventNotifier>>,
    /// Per-step training metrics of runs (`GET /api/v1/runs/{id}/metrics`); `None` serves the report's curve.
    pub run_metrics: Option<Arc<dyn adapterci_core::run_metrics::RunMetricsStore>>,
    /// Where merged exports are written before they are sent, and how many may run at once.
    pub merged_exports: MergedExports,
    /// adapterd serves only (`--serve-only`): requests that change state are refused (`serve_only.rs`).
    pub serve_only: bool,
}

/// What merged exports (`routes/merged.rs`) share.
#[derive(Clone, Debug)]
pub struct MergedExports {
    /// The folder of the files being sent (created on first use). They have no name in it: each is removed by
    /// the system once sent, failed or abandoned, even if adapterd stops.
    pub scratch_dir: PathBuf,
    /// One per export that may load a base and merge at the same time; a request without one waits.
    pub permits: Arc<Semaphore>,
}

impl MergedExports {
    pub fn new(scratch_dir: PathBuf, max_concurrent: NonZeroUsize) -> MergedExports {
        MergedExports { scratch_dir, permits: Arc::new(Semaphore::new(max_concurrent.get())) }
    }
}
