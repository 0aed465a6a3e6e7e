//! Dataset upload: `PUT /api/v1/datasets/{location...}` with the raw file as the body.

use serde::{Deserialize, Serialize};

/// What the server stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetPushResponse {
    /// The location key, as pipelines name it in `dataset.location`.
    pub location: String,
    /// `sha256:<hex>` of the stored bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}
