//! Run endpoints: list, show and cancel.

use adapterci_api::{RunInfo, RunListQuery};
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

pub(super) async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunInfo>, AppError> {
    let run = state
        .controller
        .ports()
        .store
        .get_run(&id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("run {id:?} does not exist")))?;
    Ok(Json(run_info(run)))
}

/// Cancels a queued or running run (a running one stops at once here, or at its next heartbeat elsewhere).
pub(super) async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunInfo>, AppError> {
    let run = state.controller.cancel(&id).await?;
    Ok(Json(run_info(run)))
}
