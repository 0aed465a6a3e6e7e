//! The router: every endpoint of adapterd, with paths shared with the client through `adapterci_api::routes`.

mod adapters;
mod channels;
mod convert;
mod datasets;
mod exports;
mod inference;
mod merged;
mod peft;
mod pipelines;
mod run_metrics;
mod runs;
mod webhooks;

use adapterci_api::{HealthResponse, ReadinessResponse, routes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::AppState;

/// Builds the router over `state`; `max_body_bytes` bounds every request body.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(routes::HEALTHZ, get(health))
        .route(routes::READYZ, get(readiness))
        .route(routes::PIPELINES, post(pipelines::apply).get(pipelines::list))
        .route(routes::PIPELINE, get(pipelines::get_one))
        .route(routes::PIPELINE_TRIGGER, post(pipelines::trigger))
        .route(routes::RUNS, get(runs::list))
        .route(routes::RUN, get(runs::get_one))
        .route(routes::RUN_CANCEL, post(runs::cancel))
        .route(routes::RUN_METRICS, get(run_metrics::get))
        .route(routes::RUN_LOGS, get(runs::logs))
        .route(routes::WEBHOOK, post(webhooks::receive))
        .route(routes::ADAPTERS, get(adapters::list))
        .route(routes::ADAPTER_VERSIONS, get(adapters::versions))
        .route(routes::ADAPTER_VERSION, get(adapters::manifest))
        .route(routes::ADAPTER_VERSION_DEPRECATE, post(channels::deprecate))
        .route(routes::ADAPTER_VERSION_PEFT, get(peft::export))
        .route(routes::ADAPTER_VERSION_MERGED, get(merged::export))
        .route(routes::ADAPTER_PEFT_IMPORT, post(peft::import))
        .route(routes::ADAPTER_CHANNELS, get(channels::list))
        .route(routes::ADAPTER_CHANNEL_PROMOTE, post(channels::promote))
        .route(routes::ADAPTER_CHANNEL_ROLLBACK, post(channels::rollback))
        .route(routes::ADAPTER_CHANNEL_PIN, post(channels::pin))
        .route(routes::REGISTRY_GC, post(channels::collect_garbage))
        .route(routes::REGISTRY_EVENTS, get(channels::event_attempts))
        .route(routes::DATASET, put(datasets::push))
        .route(routes::COMPLETIONS, post(inference::completions))
        .route(routes::CHAT_COMPLETIONS, post(inference::chat_completions))
        .route(routes::MODELS, get(inference::models))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::serve_only::refuse_state_changes))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".to_string(), version: env!("CARGO_PKG_VERSION").to_string() })
}

/// 200 once the embedded worker has gone over every published adapter (`Worker::readiness`), 503 with the reason
/// before; ready at once without a worker (`--no-worker`, no served base), which has nothing to pull.
async fn readiness(State(state): State<AppState>) -> (StatusCode, Json<ReadinessResponse>) {
    let Some(worker) = &state.worker else {
        return (StatusCode::OK, Json(ReadinessResponse { ready: true, reason: None }));
    };
    let readiness = worker.readiness();
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ReadinessResponse { ready: readiness.ready, reason: readiness.reason }))
}
