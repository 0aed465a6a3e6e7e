//! Export of a published adapter version merged into the base model it was trained on: the whole model as one
//! f32 safetensors state dict with Hugging Face Llama names (the engine's `lora::merge`), what PEFT's
//! `merge_and_unload()` followed by `save_pretrained` gives. A base release is dequantized at load, so its
//! merged export is f32 too.
//!
//! The file is about four bytes per parameter (540 MB for a 135M model): the engine writes it to an unnamed file
//! in the scratch folder, and the response streams it from there with its `Content-Length`, so the serialized
//! model is never held in memory. Loading and merging hold the base in f32 and the merged tensors; at most
//! `--max-merged-exports` requests do that at once, the others wait for a permit.

use std::io::{BufWriter, Seek, SeekFrom};

use adapterci_api::ErrorCode;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::merge::write_merged_state_dict;
use adapterci_engine::model::BaseModel;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;
use tokio_util::io::ReaderStream;

use super::exports::{VersionOnBase, version_on_base};
use crate::{AppError, AppState};

/// The writer's buffer, and the size of the pieces the response is sent in.
const CHUNK_BYTES: usize = 1 << 20;

pub(super) async fn export(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u64)>,
) -> Result<Response, AppError> {
    let version = version_on_base(&state, &name, version).await?;
    let exports = state.merged_exports.clone();
    // Owned, so the permit goes with the work into the blocking task: a client that leaves while its merge runs
    // does not let another merge start beside it.
    let permit = exports
        .permits
        .acquire_owned()
        .await
        .map_err(|error| AppError::new(ErrorCode::Unavailable, format!("merged exports are closed: {error}")))?;
    // Loading the base and merging are seconds of CPU work for a real model: never on a runtime worker.
    let (file, length) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        write_merged(&version, &exports.scratch_dir)
    })
    .await
    .map_err(|error| AppError::new(ErrorCode::Internal, format!("the merge task failed: {error}")))??;
    // The stream owns the only handle of the unnamed file: when the body is sent, or dropped because the client
    // left or a read failed, the handle closes and the system removes the file.
    let body = Body::from_stream(ReaderStream::with_capacity(tokio::fs::File::from_std(file), CHUNK_BYTES));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|error| AppError::new(ErrorCode::Internal, format!("cannot build the response: {error}")))
}

/// Loads the version's base, checks it is the one the version was trained on, and writes the merged model to an
/// unnamed file in `scratch_dir`; returns the file, rewound, and its length.
fn write_merged(version: &VersionOnBase, scratch_dir: &std::path::Path) -> Result<(std::fs::File, u64), AppError> {
    let base = BaseModel::load(&version.base_path, DeviceChoice::Cpu)
        .map_err(|error| version.internal(format!("cannot load its base {}: {error}", version.base_path.display())))?;
    // The catalog model's file may have changed since the lookup; merging into other weights would be wrong.
    version.check_base_digest(base.digest())?;
    let adapter = base.load_adapter(&version.adapter_weights).map_err(|error| version.internal(error))?;
    let scratch = |error: std::io::Error| {
        version.internal(format!("cannot write the merged model in {}: {error}", scratch_dir.display()))
    };
    std::fs::create_dir_all(scratch_dir).map_err(scratch)?;
    // Unnamed (or unlinked at once where the system cannot): nothing is left behind whatever happens next.
    let file = tempfile::tempfile_in(scratch_dir).map_err(scratch)?;
    let mut writer = BufWriter::with_capacity(CHUNK_BYTES, file);
    let length = write_merged_state_dict(base.llama(), adapter.lora(), &mut writer)
        .map_err(|error| version.internal(format!("cannot merge: {error}")))?;
    let mut file = writer.into_inner().map_err(|error| scratch(error.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(scratch)?;
    Ok((file, length))
}
