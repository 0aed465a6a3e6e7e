//! The base-release port: given a base model (its name and content digest), produce the base release that
//! adapters are retrained on (palettized weights plus accuracy-recovery adapter, built and gated by the engine's
//! base-release stage), or say that the release's own gate failed. The controller drives it in the rebase DAG:
//! one release first, then every dependent pipeline retrained on it, and nothing at all when the gate fails.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Digest;

/// File name of a release's weights inside its directory (`<releases dir>/<release digest hex>/`).
pub const RELEASE_WEIGHTS_FILE: &str = "base.safetensors";
/// File name of a release's recovery adapter inside its directory.
pub const RELEASE_RECOVERY_FILE: &str = "recovery.safetensors";

/// The weights file of release `digest` below `releases_dir`.
pub fn release_weights_path(releases_dir: &std::path::Path, digest: &Digest) -> std::path::PathBuf {
    releases_dir.join(digest.hex()).join(RELEASE_WEIGHTS_FILE)
}

/// The base model a release is built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseReleaseRequest {
    pub base_model_name: String,
    pub base_model_digest: Digest,
}

/// How building a release ended, when nothing broke.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaseReleaseOutcome {
    /// The release passed its gate; adapters bind to `release_digest`.
    Released { release_digest: Digest },
    /// The release's own gate failed: no adapter may be retrained on it.
    GateFailed { reason: String },
}

/// Building a release failed (not a gate decision).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("base release of {base_model_name}: {reason}")]
pub struct BaseReleaseError {
    pub base_model_name: String,
    pub reason: String,
}

/// A place base releases are fetched from by an inference worker that lacks one (a serving replica): adapterd wires
/// the registry's `ReleaseStore`; tests wire the same.
#[async_trait]
pub trait ReleaseSource: Send + Sync + std::fmt::Debug {
    /// Puts the files of release `release` into `releases_dir/<release digest hex>/`, each checked against its
    /// digest before it takes its name, and returns the path of its weights. An error names the release and where
    /// it was looked for.
    async fn fetch_release(
        &self,
        release: &Digest,
        releases_dir: &std::path::Path,
    ) -> Result<std::path::PathBuf, crate::ports::RegistryError>;
}

/// Builds base releases (the engine's base-release stage; a fake in controller tests).
#[async_trait]
pub trait BaseReleaseBuilder: Send + Sync {
    async fn build(&self, request: BaseReleaseRequest) -> Result<BaseReleaseOutcome, BaseReleaseError>;
}
