//! What the exports of a published version share (the PEFT export in `peft.rs`, the merged one in `merged.rs`):
//! finding the base model file it was trained on, and refusing to export for a file whose content is no longer
//! the one its lineage names.

use std::path::PathBuf;

use adapterci_api::ErrorCode;
use adapterci_core::manifest::ADAPTER_WEIGHTS_FILE;
use adapterci_core::manifest::Lineage;
use adapterci_core::{AdapterName, Digest};
use adapterci_pipeline::BaseModelRef;
use bytes::Bytes;

use crate::{AppError, AppState};

/// A published version with what an export of it starts from.
pub(super) struct VersionOnBase {
    /// `name@version`, for messages.
    pub(super) label: String,
    pub(super) lineage: Lineage,
    /// The model file it was trained on: the catalog model, or the base release named by the lineage's digest.
    pub(super) base_path: PathBuf,
    /// The version's adapter weights, in the registry's own safetensors format.
    pub(super) adapter_weights: Bytes,
}

impl VersionOnBase {
    /// Refuses with 409, naming both digests, when `digest` (of the base file as the export read it) is not the
    /// one the version was trained on: the catalog model's file may have changed since adapterd hashed it, and an
    /// export for other weights would be wrong (a merge into them, or PEFT files for them).
    pub(super) fn check_base_digest(&self, digest: &Digest) -> Result<(), AppError> {
        if *digest == self.lineage.base_model_digest {
            return Ok(());
        }
        Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "{}: it was trained on base {} with digest {}, but {} now has digest {digest}",
                self.label,
                self.lineage.base_model_name,
                self.lineage.base_model_digest,
                self.base_path.display(),
            ),
        ))
    }

    /// An internal error about this version, for what fails while exporting it.
    pub(super) fn internal(&self, reason: impl std::fmt::Display) -> AppError {
        AppError::new(ErrorCode::Internal, format!("{}: {reason}", self.label))
    }
}

/// Finds `name@version`, the base model file it was trained on and its adapter weights. An unknown adapter or
/// version is 404; a base adapterd does not have (its catalog model is gone, or now has other content and no
/// base release carries the lineage's digest) is 409 naming the base. The file itself is read later, by the
/// export: it checks the digest of what it read with [`VersionOnBase::check_base_digest`].
pub(super) async fn version_on_base(state: &AppState, name: &str, version: u64) -> Result<VersionOnBase, AppError> {
    let name = AdapterName::new(name).map_err(|error| AppError::invalid_request(error.to_string()))?;
    let ports = state.controller.ports();
    let resolved = ports
        .registry
        .get(&name, version)
        .await?
        .ok_or_else(|| AppError::not_found(format!("adapter {name} has no version {version}")))?;
    let label = format!("{name}@{version}");
    let lineage = resolved.manifest.lineage.clone();
    let base = ports
        .base_models
        .resolve(&BaseModelRef::Named(lineage.base_model_name.clone()))
        .map_err(|reason| base_unknown(&label, &reason))?;
    let base_path: PathBuf = if base.digest == lineage.base_model_digest {
        base.path.clone()
    } else {
        ports
            .base_models
            .release(&base, &lineage.base_model_digest)
            .map(|release| release.path)
            .ok_or_else(|| base_unknown(&label, &format!("no base with digest {}", lineage.base_model_digest)))?
    };
    let weights = resolved.manifest.file(ADAPTER_WEIGHTS_FILE).ok_or_else(|| {
        AppError::new(ErrorCode::Internal, format!("{label}: the manifest lists no {ADAPTER_WEIGHTS_FILE}"))
    })?;
    let adapter_weights = ports.registry.fetch_blob(&weights.digest).await?;
    Ok(VersionOnBase { label, lineage, base_path, adapter_weights })
}

fn base_unknown(label: &str, reason: &str) -> AppError {
    AppError::new(
        ErrorCode::Conflict,
        format!("{label}: the base model it was trained on is not in adapterd's catalog ({reason})"),
    )
}
