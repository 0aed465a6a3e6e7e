//! Acting on a pipeline's promotion policy once a run published a version that passed its gates.
//!
//! Without `publish.promotion`, the version goes to `publish.channel` at once. With it, the version goes to the
//! canary channel at once, and to `publish.channel` when it has served on the canary for `stable_after` without
//! a change there: the canary still points at it, was last moved by a promote (not a rollback), and the version
//! is not deprecated. A newer version on the canary restarts the period. Each move is one channel transaction of
//! the metadata store; promoting a channel to the version it already serves is a no-op, so a run retried after a
//! crash promotes nothing twice.
//!
//! A version trained by a rebase is bound to a new base release: its promotion moves the channel to that base
//! (the rebase is the deliberate base change). Any other version must match the base its channel serves.

use adapterci_core::channels::{ChannelAction, ChannelName, ChannelRecord, PromoteRequest};
use adapterci_core::run::{PublishedRef, RunRecord, Trigger};
use adapterci_pipeline::PipelineSpec;

use crate::{Controller, ControllerError};

fn channel_name(name: &str) -> Result<ChannelName, ControllerError> {
    ChannelName::new(name).map_err(|error| ControllerError::Promotion(format!("channel {name:?}: {error}")))
}

impl Controller {
    /// Promotes what `run` published as the pipeline's policy says (the first step of a canary policy).
    pub(crate) async fn promote_published(
        &self,
        spec: &PipelineSpec,
        run: &RunRecord,
        published: &PublishedRef,
    ) -> Result<ChannelRecord, ControllerError> {
        let channel = match &spec.publish.promotion {
            Some(promotion) => &promotion.canary_channel,
            None => &spec.publish.channel,
        };
        let request = PromoteRequest {
            adapter: published.adapter.clone(),
            channel: channel_name(channel)?,
            version: published.version,
            allow_base_change: matches!(run.trigger, Trigger::BaseModelChanged { .. }),
        };
        let record = self.ports().store.promote(request).await?;
        tracing::info!(run = %run.id, adapter = %published.adapter, version = published.version, channel, "promoted");
        Ok(record)
    }

    /// Promotes every canary whose clean period is over to its pipeline's channel; returns the channels moved.
    pub async fn promote_due_canaries(&self) -> Result<Vec<ChannelRecord>, ControllerError> {
        let store = &self.ports().store;
        let now = self.now();
        let mut moved = Vec::new();
        for record in store.list_pipelines().await? {
            let Ok(spec) = self.specs.get(&record) else { continue };
            let Some(promotion) = &spec.publish.promotion else { continue };
            let adapter = &spec.publish.adapter;
            let canary_name = channel_name(&promotion.canary_channel)?;
            let stable_name = channel_name(&spec.publish.channel)?;
            let Some(canary) = store.get_channel(adapter, &canary_name).await? else { continue };
            let stable = store.get_channel(adapter, &stable_name).await?;
            if stable.as_ref().is_some_and(|stable| stable.version >= canary.version) {
                continue;
            }
            let clean_for = now - canary.updated_at;
            if clean_for < chrono::Duration::from_std(promotion.stable_after).unwrap_or(chrono::Duration::MAX) {
                continue;
            }
            let history = store.channel_history(adapter, &canary_name).await?;
            if history.last().is_none_or(|event| event.action != ChannelAction::Promote) {
                continue;
            }
            if store.deprecated_versions(adapter).await?.contains(&canary.version) {
                continue;
            }
            let request = PromoteRequest {
                adapter: adapter.clone(),
                channel: stable_name,
                version: canary.version,
                // the canary already moved to this version's base
                allow_base_change: true,
            };
            match store.promote(request).await {
                Ok(record) => {
                    tracing::info!(%adapter, version = canary.version, channel = %spec.publish.channel, "canary promoted after its clean period");
                    moved.push(record);
                }
                Err(error) => tracing::warn!(%adapter, version = canary.version, %error, "canary not promoted"),
            }
        }
        Ok(moved)
    }
}
