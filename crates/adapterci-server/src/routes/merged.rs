//! Export of a published adapter version merged into the base model it was trained on: the whole model as one
//! f32 safetensors state dict with Hugging Face Llama names (the engine's `lora::merge`), what PEFT's
//! `merge_and_unload()` followed by `save_pretrained` gives. A base release is dequantized at load, so its
//! merged export is f32 too.

use adapterci_api::ErrorCode;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::merge::merged_state_dict;
use adapterci_engine::model::BaseModel;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::exports::version_on_base;
use crate::{AppError, AppState};

pub(super) async fn export(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u64)>,
) -> Result<Response, AppError> {
    let version = version_on_base(&state, &name, version).await?;
    // Loading the base and merging are seconds of CPU work for a real model: never on a runtime worker.
    let merged = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, AppError> {
        let base = BaseModel::load(&version.base_path, DeviceChoice::Cpu).map_err(|error| {
            version.internal(format!("cannot load its base {}: {error}", version.base_path.display()))
        })?;
        // The catalog model's file may have changed since the lookup; merging into other weights would be wrong.
        version.check_base_digest(base.digest())?;
        let adapter = base.load_adapter(&version.adapter_weights).map_err(|error| version.internal(error))?;
        merged_state_dict(base.llama(), adapter.lora())
            .map_err(|error| version.internal(format!("cannot merge: {error}")))
    })
    .await
    .map_err(|error| AppError::new(ErrorCode::Internal, format!("the merge task failed: {error}")))??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], merged).into_response())
}
