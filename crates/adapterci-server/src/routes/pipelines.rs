//! Pipeline endpoints: apply, list, show, trigger.

use adapterci_api::{
    ApplyOutcome, ApplyPipelineRequest, ApplyPipelineResponse, ErrorCode, PipelineDetail, PipelineInfo, RunInfo,
};
use adapterci_core::PipelineName;
use adapterci_core::ports::PipelineRecord;
use adapterci_core::run::Trigger;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::convert::{pipeline_info, run_info};
use crate::{AppError, AppState};

pub(crate) fn pipeline_name(name: &str) -> Result<PipelineName, AppError> {
    PipelineName::new(name).map_err(|error| AppError::invalid_request(error.to_string()))
}

/// The stored pipeline `name`, or a 400 for a bad name and a 404 when there is none.
async fn stored_pipeline(state: &AppState, name: &str) -> Result<(PipelineName, PipelineRecord), AppError> {
    let name = pipeline_name(name)?;
    let record = state
        .controller
        .ports()
        .store
        .get_pipeline(&name)
        .await?
        .ok_or_else(|| AppError::not_found(format!("pipeline {name:?} does not exist")))?;
    Ok((name, record))
}

pub(super) async fn apply(
    State(state): State<AppState>,
    Json(request): Json<ApplyPipelineRequest>,
) -> Result<Json<ApplyPipelineResponse>, AppError> {
    let (record, outcome) = state.controller.apply(&request.yaml, request.file.as_deref()).await?;
    let outcome = match outcome {
        adapterci_controller::ApplyOutcome::Created => ApplyOutcome::Created,
        adapterci_controller::ApplyOutcome::Configured => ApplyOutcome::Configured,
        adapterci_controller::ApplyOutcome::Unchanged => ApplyOutcome::Unchanged,
    };
    Ok(Json(ApplyPipelineResponse { pipeline: pipeline_info(&record), outcome: Some(outcome) }))
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<PipelineInfo>>, AppError> {
    let records = state.controller.ports().store.list_pipelines().await?;
    Ok(Json(records.iter().map(pipeline_info).collect()))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineDetail>, AppError> {
    let (_, record) = stored_pipeline(&state, &name).await?;
    Ok(Json(PipelineDetail { info: pipeline_info(&record), yaml: record.spec_yaml }))
}

pub(super) async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RunInfo>), AppError> {
    let (name, record) = stored_pipeline(&state, &name).await?;
    let manual_allowed = adapterci_pipeline::parse_pipeline(&record.spec_yaml, None)
        .map(|spec| spec.allows_manual_runs())
        .unwrap_or(false);
    if !manual_allowed {
        return Err(AppError::new(
            ErrorCode::Conflict,
            format!("pipeline {name:?} has no manual trigger: add `- kind: manual` to its triggers"),
        ));
    }
    let run = state.controller.trigger(&name, Trigger::Manual).await?;
    Ok((StatusCode::ACCEPTED, Json(run_info(run))))
}
