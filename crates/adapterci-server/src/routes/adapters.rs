//! Registry endpoints: adapters, their versions and manifests.

use adapterci_api::{AdapterInfo, AdapterVersionInfo};
use adapterci_core::AdapterName;
use axum::Json;
use axum::extract::{Path, State};

use super::convert::version_info;
use crate::{AppError, AppState};

fn adapter_name(name: &str) -> Result<AdapterName, AppError> {
    AdapterName::new(name).map_err(|error| AppError::invalid_request(error.to_string()))
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<AdapterInfo>>, AppError> {
    let store = &state.controller.ports().store;
    let mut adapters = Vec::new();
    for name in store.list_adapter_names().await? {
        let Some(latest) = store.latest_version(&name).await? else {
            continue;
        };
        let served_version = state.worker.as_ref().and_then(|worker| worker.served(&name)).map(|served| served.version);
        adapters.push(AdapterInfo {
            name: name.to_string(),
            latest_version: latest.version,
            manifest_digest: latest.manifest_digest.to_string(),
            base_model_digest: latest.base_model_digest.to_string(),
            created_at: latest.created_at,
            served_version,
        });
    }
    Ok(Json(adapters))
}

pub(super) async fn versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AdapterVersionInfo>>, AppError> {
    let name = adapter_name(&name)?;
    let versions = state.controller.ports().store.list_versions(&name).await?;
    if versions.is_empty() {
        return Err(AppError::not_found(format!("adapter {name:?} has no published version")));
    }
    Ok(Json(versions.iter().map(version_info).collect()))
}

pub(super) async fn manifest(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let name = adapter_name(&name)?;
    let version: u64 = version
        .parse()
        .map_err(|_| AppError::invalid_request(format!("version {version:?} is not a positive integer")))?;
    let resolved = state
        .controller
        .ports()
        .registry
        .get(&name, version)
        .await?
        .ok_or_else(|| AppError::not_found(format!("adapter {name} has no version {version}")))?;
    Ok(Json(serde_json::to_value(&resolved.manifest).map_err(|error| {
        AppError::new(adapterci_api::ErrorCode::Internal, format!("cannot encode the manifest: {error}"))
    })?))
}
