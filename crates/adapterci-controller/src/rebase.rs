//! The rebase DAG: a base model changed, so first one base release is built from it (through the
//! `BaseReleaseBuilder` port), then every pipeline on that base is retrained on the release. When the
//! release's own gate fails, no pipeline is queued, so nothing is published on a base that did not pass.

use adapterci_core::base_release::{BaseReleaseBuilder, BaseReleaseOutcome, BaseReleaseRequest};
use adapterci_core::run::{RunRecord, Trigger};
use adapterci_core::{Digest, PipelineName};
use adapterci_pipeline::BaseModelRef;

use crate::schedule::Timing;
use crate::{Controller, ControllerError};

/// What a rebase did.
#[derive(Clone, Debug, PartialEq)]
pub struct RebaseOutcome {
    /// The release every retrained adapter binds to; `None` when its gate failed.
    pub release_digest: Option<Digest>,
    /// Why nothing was retrained, when nothing was.
    pub gate_failure: Option<String>,
    /// One run per dependent pipeline.
    pub runs: Vec<RunRecord>,
}

impl Controller {
    /// Pipelines whose base is the catalog model `base_name`.
    pub async fn pipelines_on_base(&self, base_name: &str) -> Result<Vec<PipelineName>, ControllerError> {
        let mut dependents = Vec::new();
        for record in self.ports().store.list_pipelines().await? {
            let Ok(spec) = self.specs.get(&record) else { continue };
            let on_base = match &spec.base {
                BaseModelRef::Named(name) => name == base_name,
                BaseModelRef::Path(_) => {
                    self.ports().base_models.resolve(&spec.base).is_ok_and(|base| base.name == base_name)
                }
            };
            if on_base {
                dependents.push(spec.name.clone());
            }
        }
        Ok(dependents)
    }

    /// Rebases every pipeline on `base_name`, whose catalog entry now has `base_model_digest`: builds one
    /// release, then queues one retrain per dependent pipeline bound to it.
    pub async fn rebase(
        &self,
        base_name: &str,
        base_model_digest: Digest,
        builder: &dyn BaseReleaseBuilder,
    ) -> Result<RebaseOutcome, ControllerError> {
        let dependents = self.pipelines_on_base(base_name).await?;
        let request =
            BaseReleaseRequest { base_model_name: base_name.to_string(), base_model_digest: base_model_digest.clone() };
        let outcome = builder.build(request).await.map_err(|error| ControllerError::BaseModel {
            pipeline: base_name.to_string(),
            reason: error.to_string(),
        })?;
        let release_digest = match outcome {
            BaseReleaseOutcome::Released { release_digest } => release_digest,
            BaseReleaseOutcome::GateFailed { reason } => {
                tracing::warn!(base = base_name, %reason, "base release gate failed: no pipeline is retrained");
                return Ok(RebaseOutcome { release_digest: None, gate_failure: Some(reason), runs: Vec::new() });
            }
        };
        tracing::info!(base = base_name, release = %release_digest, pipelines = dependents.len(), "base release built: rebasing");
        let mut runs = Vec::new();
        for pipeline in dependents {
            let trigger = Trigger::BaseModelChanged {
                base_model_digest: base_model_digest.clone(),
                base_release_digest: release_digest.clone(),
            };
            runs.push(self.enqueue(&pipeline, trigger, Timing::Immediate).await?);
        }
        Ok(RebaseOutcome { release_digest: Some(release_digest), gate_failure: None, runs })
    }
}
