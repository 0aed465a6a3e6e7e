//! Hugging Face PEFT interop over the API: a version is exported file by file
//! (`GET /api/v1/adapters/{name}/versions/{version}/peft/{file}`, raw bytes), and a PEFT adapter folder is
//! imported as a new version with this body (`POST /api/v1/adapters/{name}/peft`).

use serde::{Deserialize, Serialize};

/// A PEFT adapter folder to publish as a new version of an adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeftImportRequest {
    /// The model in adapterd's catalog the adapter was trained on (its weights decide the shapes).
    pub base: String,
    /// `adapter_config.json`, as PEFT wrote it.
    pub adapter_config: serde_json::Value,
    /// `adapter_model.safetensors`, hex-encoded.
    pub adapter_model_hex: String,
}
