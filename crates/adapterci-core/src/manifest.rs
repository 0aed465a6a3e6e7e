//! The adapter manifest: the immutable, content-addressed description of one published adapter version, with
//! its files and full lineage. Its digest is the version's identity. The format is frozen (schema_version 1).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::gate::GateReport;
use crate::training::{AdapterConfig, EvalSample, InitialAdapterRef, Metrics};
use crate::{AdapterName, Digest, PipelineName};

/// The manifest format written by this code.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

/// The file name of the adapter weights inside a version.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// One file of an adapter version, stored as a content-addressed blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// The pipeline revision that produced a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRef {
    pub name: PipelineName,
    pub revision: u64,
    pub spec_digest: Digest,
}

/// Where a version came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Digest of the base model file the adapter was trained on (and must be served on).
    pub base_model_digest: Digest,
    pub base_model_name: String,
    /// The base release (palettized base + recovery adapter) when the adapter was trained on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_release_digest: Option<Digest>,
    pub dataset_digests: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub initial_adapter: InitialAdapterRef,
    /// The adapterci version that produced it.
    pub code_version: String,
}

/// The evaluation that admitted the version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub metrics: Metrics,
    pub gates: GateReport,
    #[serde(default)]
    pub samples: Vec<EvalSample>,
}

/// The manifest of one adapter version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterManifest {
    pub schema_version: u32,
    pub name: AdapterName,
    pub created_at: DateTime<Utc>,
    pub adapter: AdapterConfig,
    pub files: Vec<ManifestFile>,
    pub lineage: Lineage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalReport>,
}

impl AdapterManifest {
    /// The file entry named `name`.
    pub fn file(&self, name: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|file| file.name == name)
    }

    /// Canonical bytes (pretty JSON, stable field order): what the manifest digest is computed over.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Serialising plain structs and BTreeMaps cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::training::Metrics;

    /// Manifests are compared after a JSON round trip (the registry refuses one that reads back different), so
    /// every finite metric must parse back to the same bits.
    #[test]
    fn every_finite_metric_survives_a_json_round_trip() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut metrics = Metrics::new();
        while metrics.len() < 20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = f64::from_bits(state);
            if value.is_finite() {
                metrics.insert(format!("m{}", metrics.len()), value);
            }
        }
        for value in [0.1 + 0.2, 1.0 / 3.0, 0.975, 3.877_912_345_678_901, f64::MIN_POSITIVE, f64::MAX] {
            metrics.insert(format!("m{}", metrics.len()), value);
        }
        let text = serde_json::to_string(&metrics).unwrap();
        let read_back: Metrics = serde_json::from_str(&text).unwrap();
        let differing: Vec<_> =
            metrics.iter().filter(|(key, value)| read_back[*key].to_bits() != value.to_bits()).collect();
        assert!(differing.is_empty(), "{} values changed, e.g. {:?}", differing.len(), differing.first());
    }
}
