//! What every request handler shares.

use std::sync::Arc;

use adapterci_controller::Controller;
use adapterci_worker::Worker;

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
}
