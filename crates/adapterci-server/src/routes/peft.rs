//! Export of a published adapter version in Hugging Face PEFT's format: `adapter_config.json` and
//! `adapter_model.safetensors` with PEFT's key names (the engine's `lora::peft`), for the base model the version
//! was trained on (found in adapterd's model catalog, or among its base releases, by `exports::version_on_base`),
//! and the import of such a folder as a new version.

use adapterci_api::ErrorCode;
use adapterci_api::{AdapterVersionInfo, PeftImportRequest};
use adapterci_core::AdapterName;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::manifest::Lineage;
use adapterci_core::ports::PublishRequest;
use adapterci_core::training::InitialAdapterRef;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::lora::peft::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, PeftFiles, export_peft, import_peft};
use adapterci_engine::model::{model_config, model_config_and_digest};
use adapterci_pipeline::BaseModelRef;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::exports::version_on_base;
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
    let version = version_on_base(&state, &name, version).await?;
    let files = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        // Only the shapes are needed, but the file must still be the one the version was trained on.
        let (config, digest) = model_config_and_digest(&version.base_path).map_err(|error| version.internal(error))?;
        version.check_base_digest(&digest)?;
        let cpu = DeviceChoice::Cpu.resolve().map_err(|error| version.internal(error))?;
        let lora = LoraWeights::from_safetensors(&version.adapter_weights, &config, cpu)
            .map_err(|error| version.internal(error))?;
        export_peft(&lora, &config, &version.lineage.base_model_name).map_err(|error| version.internal(error))
    })
    .await
    .map_err(|error| AppError::new(ErrorCode::Internal, format!("the export task failed: {error}")))??;
    Ok(if file == PEFT_CONFIG_FILE {
        ([(header::CONTENT_TYPE, "application/json")], files.config_json.into_bytes()).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/octet-stream")], files.safetensors).into_response()
    })
}

/// Publishes a PEFT adapter folder as the next version of `name`, bound to the catalog model `request.base`.
pub(super) async fn import(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<PeftImportRequest>,
) -> Result<Json<AdapterVersionInfo>, AppError> {
    let name = AdapterName::new(&name).map_err(|error| AppError::invalid_request(error.to_string()))?;
    let ports = state.controller.ports();
    let base = ports.base_models.resolve(&BaseModelRef::Named(request.base.clone())).map_err(|reason| {
        AppError::not_found(format!("base model {:?} is not in adapterd's catalog: {reason}", request.base))
    })?;
    let safetensors = hex::decode(&request.adapter_model_hex)
        .map_err(|error| AppError::invalid_request(format!("adapter_model_hex: not hex ({error})")))?;
    let config_json = serde_json::to_string_pretty(&request.adapter_config)
        .map_err(|error| AppError::invalid_request(format!("adapter_config: {error}")))?;
    let base_path = base.path.clone();
    let (weights, adapter, config_json) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let config = model_config(&base_path).map_err(|e| e.to_string())?;
        let cpu = DeviceChoice::Cpu.resolve().map_err(|e| e.to_string())?;
        let files = PeftFiles { config_json, safetensors };
        let lora = import_peft(&files, &config, cpu).map_err(|e| e.to_string())?;
        Ok((lora.to_safetensors().map_err(|e| e.to_string())?, lora.config().clone(), files.config_json))
    })
    .await
    .map_err(|error| AppError::new(ErrorCode::Internal, format!("the import task failed: {error}")))?
    .map_err(|reason| AppError::invalid_request(format!("not a PEFT adapter adapterd can serve: {reason}")))?;
    let record = ports
        .registry
        .publish(PublishRequest {
            name,
            adapter,
            files: vec![
                (ADAPTER_WEIGHTS_FILE.to_string(), Bytes::from(weights)),
                (PEFT_CONFIG_FILE.to_string(), Bytes::from(config_json.into_bytes())),
            ],
            lineage: Lineage {
                base_model_digest: base.digest.clone(),
                base_model_name: base.name.clone(),
                base_release_digest: None,
                dataset_digests: Vec::new(),
                pipeline: None,
                run_id: None,
                initial_adapter: InitialAdapterRef::Imported { format: "peft".to_string() },
                code_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            eval: None,
        })
        .await?;
    Ok(Json(super::convert::version_info(&record)))
}
