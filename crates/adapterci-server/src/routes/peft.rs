//! Export of a published adapter version in Hugging Face PEFT's format: `adapter_config.json` and
//! `adapter_model.safetensors` with PEFT's key names (the engine's `lora::peft`), for the base model the version
//! was trained on (found in adapterd's model catalog, or among its base releases).

use std::path::PathBuf;

use adapterci_api::ErrorCode;
use adapterci_core::AdapterName;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_engine::config::LlamaConfig;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::lora::peft::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, export_peft};
use adapterci_pipeline::BaseModelRef;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::{AppError, AppState};

pub(super) async fn export(
    State(state): State<AppState>,
    Path((name, version, file)): Path<(String, u64, String)>,
) -> Result<Response, AppError> {
    if file != PEFT_CONFIG_FILE && file != PEFT_WEIGHTS_FILE {
        return Err(AppError::not_found(format!(
            "a PEFT export has {PEFT_CONFIG_FILE} and {PEFT_WEIGHTS_FILE}, not {file:?}"
        )));
    }
    let name = AdapterName::new(&name).map_err(|error| AppError::invalid_request(error.to_string()))?;
    let ports = state.controller.ports();
    let resolved = ports
        .registry
        .get(&name, version)
        .await?
        .ok_or_else(|| AppError::not_found(format!("adapter {name} has no version {version}")))?;
    let lineage = &resolved.manifest.lineage;
    let base = ports
        .base_models
        .resolve(&BaseModelRef::Named(lineage.base_model_name.clone()))
        .map_err(|reason| base_unknown(&name, version, &reason))?;
    let base_path: PathBuf = if base.digest == lineage.base_model_digest {
        base.path.clone()
    } else {
        ports.base_models.release(&base, &lineage.base_model_digest).map(|release| release.path).ok_or_else(|| {
            base_unknown(&name, version, &format!("no base with digest {}", lineage.base_model_digest))
        })?
    };
    let weights = resolved.manifest.file(ADAPTER_WEIGHTS_FILE).ok_or_else(|| {
        AppError::new(ErrorCode::Internal, format!("{name}@{version}: the manifest lists no {ADAPTER_WEIGHTS_FILE}"))
    })?;
    let bytes = ports.registry.fetch_blob(&weights.digest).await?;
    let base_name = lineage.base_model_name.clone();
    let files = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let config = model_config(&base_path)?;
        let cpu = DeviceChoice::Cpu.resolve().map_err(|e| e.to_string())?;
        let lora = LoraWeights::from_safetensors(&bytes, &config, cpu).map_err(|e| e.to_string())?;
        export_peft(&lora, &config, &base_name).map_err(|e| e.to_string())
    })
    .await
    .map_err(|error| AppError::new(ErrorCode::Internal, format!("the export task failed: {error}")))?
    .map_err(|reason| AppError::new(ErrorCode::Internal, format!("{name}@{version}: {reason}")))?;
    Ok(if file == PEFT_CONFIG_FILE {
        ([(header::CONTENT_TYPE, "application/json")], files.config_json.into_bytes()).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/octet-stream")], files.safetensors).into_response()
    })
}

fn base_unknown(name: &AdapterName, version: u64, reason: &str) -> AppError {
    AppError::new(
        ErrorCode::Conflict,
        format!("{name}@{version}: the base model it was trained on is not in adapterd's catalog ({reason})"),
    )
}

/// The decoder shape of a base model file (GGUF or base release).
fn model_config(path: &std::path::Path) -> Result<LlamaConfig, String> {
    if adapterci_engine::release::is_release_path(path).map_err(|e| e.to_string())? {
        let (release, _) = adapterci_engine::release::BaseRelease::open(path).map_err(|e| e.to_string())?;
        return Ok(release.config);
    }
    let gguf = adapterci_engine::gguf::GgufFile::open(path).map_err(|e| e.to_string())?;
    LlamaConfig::from_gguf(&gguf).map_err(|e| e.to_string())
}
