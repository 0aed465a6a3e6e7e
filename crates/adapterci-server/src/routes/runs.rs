//! Run endpoints: list, show, cancel and the training log.

use adapterci_api::{RunInfo, RunListQuery, RunLogsQuery, RunLogsResponse};
use axum::Json;
use axum::extract::{Path, Query, State};

use super::convert::run_info;
use super::pipelines::pipeline_name;
use crate::{AppError, AppState};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<RunListQuery>,
) -> Result<Json<Vec<RunInfo>>, AppError> {
    let pipeline = query.pipeline.as_deref().map(pipeline_name).transpose()?;
    let limit = query.limit.map_or(DEFAULT_LIMIT, |limit| (limit as usize).min(MAX_LIMIT));
    let runs = state.controller.ports().store.list_runs(pipeline.as_ref(), limit).await?;
    Ok(Json(runs.into_iter().map(run_info).collect()))
}

/// The stored run `id`, or 404 naming it.
pub(super) async fn stored_run(state: &AppState, id: &str) -> Result<adapterci_core::run::RunRecord, AppError> {
    state
        .controller
        .ports()
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("run {id:?} does not exist")))
}

pub(super) async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunInfo>, AppError> {
    let run = stored_run(&state, &id).await?;
    Ok(Json(run_info(run)))
}

/// Cancels a queued or running run (a running one stops at once here, or at its next heartbeat elsewhere).
pub(super) async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunInfo>, AppError> {
    let run = state.controller.cancel(&id).await?;
    Ok(Json(run_info(run)))
}

/// The run's captured training log from `offset` on (404 when no log was captured: the run has not trained yet,
/// or trained inside adapterd with the thread executor).
pub(super) async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<RunLogsQuery>,
) -> Result<Json<RunLogsResponse>, AppError> {
    let offset = query.offset.unwrap_or(0);
    // read the state first: a run seen ended has its whole log on disk by now
    let run = stored_run(&state, &id).await?;
    let chunk = state.controller.run_logs(&id, offset).await?.ok_or_else(|| {
        AppError::not_found(format!(
            "run {id:?} has no captured log (it has not started training, or trained inside adapterd)"
        ))
    })?;
    Ok(Json(RunLogsResponse {
        text: String::from_utf8_lossy(&chunk.bytes).into_owned(),
        next_offset: chunk.next_offset,
        complete: run.state.is_terminal(),
    }))
}
