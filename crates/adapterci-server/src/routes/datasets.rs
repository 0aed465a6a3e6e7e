//! Dataset upload into the dataset object store (what watched pipelines poll).

use adapterci_api::DatasetPushResponse;
use adapterci_core::Digest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};

use crate::{AppError, AppState};

pub(super) async fn push(
    State(state): State<AppState>,
    Path(location): Path<String>,
    body: Bytes,
) -> Result<Json<DatasetPushResponse>, AppError> {
    let digest = Digest::of(&body);
    let size = body.len() as u64;
    state.controller.ports().datasets.write(&location, body).await?;
    tracing::info!(location, %digest, size, "dataset stored");
    Ok(Json(DatasetPushResponse { location, digest: digest.to_string(), size }))
}
