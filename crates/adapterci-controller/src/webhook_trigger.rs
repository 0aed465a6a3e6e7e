//! Webhook deliveries turned into runs: find the pipelines whose `webhook` trigger names the secret, verify
//! the delivery with that secret, drop redeliveries (the delivery log), and queue one debounced run per
//! pipeline whose dataset the event concerns.

use std::collections::HashMap;

use adapterci_core::run::{RunRecord, Trigger};
use adapterci_pipeline::WebhookFormat;
use chrono::Duration;

use crate::schedule::Timing;
use crate::webhooks::{DEFAULT_REPLAY_WINDOW, Delivery, MAX_WEBHOOK_BODY_BYTES, WebhookError, WebhookHeaders};
use crate::{Controller, ControllerError};

/// Why a delivery started nothing.
#[derive(Debug, thiserror::Error)]
pub enum WebhookFailure {
    #[error(transparent)]
    Refused(#[from] WebhookError),
    /// No stored pipeline has a webhook trigger with this secret name.
    #[error("no pipeline has a webhook trigger with secret {0:?}")]
    UnknownWebhook(String),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// What a delivery did.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookOutcome {
    pub delivery_id: String,
    /// The delivery was seen before: nothing was queued again.
    pub duplicate: bool,
    /// Why nothing was queued, when nothing was and it was not a duplicate.
    pub ignored: Option<String>,
    /// The runs that carry the delivery (new ones, or queued runs it joined).
    pub runs: Vec<RunRecord>,
}

/// Webhook secrets by name, set at start-up from the environment.
#[derive(Debug, Default)]
pub(crate) struct WebhookSecrets(std::sync::RwLock<HashMap<String, Vec<u8>>>);

/// Whether a dataset at `location` is concerned by an event on `key` (the object itself, or one under it).
fn concerns(location: &str, key: &str) -> bool {
    location == key || key.strip_prefix(location).is_some_and(|rest| location.ends_with('/') || rest.starts_with('/'))
}

impl Controller {
    /// Sets (or replaces) the value of the webhook secret `name`.
    pub fn set_webhook_secret(&self, name: &str, value: &[u8]) {
        if let Ok(mut secrets) = self.webhook_secrets.0.write() {
            secrets.insert(name.to_string(), value.to_vec());
        }
    }

    fn webhook_secret(&self, name: &str) -> Option<Vec<u8>> {
        self.webhook_secrets.0.read().ok().and_then(|secrets| secrets.get(name).cloned())
    }

    /// Handles one delivery to `/api/v1/webhooks/<name>`; `body` is the raw body as received.
    pub async fn receive_webhook(
        &self,
        name: &str,
        headers: &WebhookHeaders,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookFailure> {
        if body.len() > MAX_WEBHOOK_BODY_BYTES {
            return Err(WebhookError::TooLarge { limit: MAX_WEBHOOK_BODY_BYTES }.into());
        }
        let mut pipelines = Vec::new();
        for record in self.ports().store.list_pipelines().await.map_err(ControllerError::from)? {
            let Ok(spec) = self.specs.get(&record) else { continue };
            let formats: Vec<WebhookFormat> =
                spec.webhooks().filter(|(secret, _)| *secret == name).map(|(_, format)| format).collect();
            if let Some(format) = formats.first() {
                pipelines.push((spec.clone(), *format));
            }
        }
        let Some((_, first_format)) = pipelines.first() else {
            return Err(WebhookFailure::UnknownWebhook(name.to_string()));
        };
        let Some(secret) = self.webhook_secret(name) else {
            tracing::error!(webhook = name, "webhook secret is not configured: delivery refused");
            return Err(WebhookError::Unauthorized(format!("secret {name:?} is not configured on this server")).into());
        };
        let delivery = self.verify_with_any_format(*first_format, &pipelines, &secret, headers, body)?;
        let source = format!("webhook:{name}");
        if !self
            .ports()
            .deliveries
            .record_delivery(&source, &delivery.id, self.now())
            .await
            .map_err(ControllerError::from)?
        {
            tracing::info!(webhook = name, delivery = %delivery.id, "webhook redelivered: nothing queued again");
            return Ok(WebhookOutcome { delivery_id: delivery.id, duplicate: true, ignored: None, runs: Vec::new() });
        }
        if !delivery.changes_data {
            tracing::info!(webhook = name, delivery = %delivery.id, summary = %delivery.summary, "webhook event ignored");
            let ignored = Some(format!("the event does not change data ({})", delivery.summary));
            return Ok(WebhookOutcome { delivery_id: delivery.id, duplicate: false, ignored, runs: Vec::new() });
        }
        let mut runs = Vec::new();
        for (spec, _) in &pipelines {
            let location = &spec.dataset.location;
            if !delivery.keys.is_empty() && !delivery.keys.iter().any(|key| concerns(location, key)) {
                continue;
            }
            let trigger = Trigger::Webhook { source: name.to_string(), delivery_id: delivery.id.clone() };
            runs.push(self.enqueue(&spec.name, trigger, Timing::Debounced).await?);
        }
        tracing::info!(webhook = name, delivery = %delivery.id, summary = %delivery.summary, runs = runs.len(), "webhook accepted");
        let ignored = runs.is_empty().then(|| "the event names no object that a pipeline's dataset is at".to_string());
        Ok(WebhookOutcome { delivery_id: delivery.id, duplicate: false, ignored, runs })
    }

    /// Verifies with the format of the first pipeline, then with any other format pipelines name for the same
    /// secret; the first format's error is the one reported.
    fn verify_with_any_format(
        &self,
        first: WebhookFormat,
        pipelines: &[(std::sync::Arc<adapterci_pipeline::PipelineSpec>, WebhookFormat)],
        secret: &[u8],
        headers: &WebhookHeaders,
        body: &[u8],
    ) -> Result<Delivery, WebhookError> {
        let window: Duration = DEFAULT_REPLAY_WINDOW;
        let now = self.now();
        let first_result = crate::webhooks::verify_delivery(first, secret, headers, body, now, window);
        if first_result.is_ok() {
            return first_result;
        }
        for (_, format) in pipelines.iter().filter(|(_, format)| *format != first) {
            if let Ok(delivery) = crate::webhooks::verify_delivery(*format, secret, headers, body, now, window) {
                return Ok(delivery);
            }
        }
        first_result
    }
}

#[cfg(test)]
mod tests {
    use super::concerns;

    #[test]
    fn keys_concern_the_dataset_at_or_under_them() {
        assert!(concerns("datasets/demo/train.jsonl", "datasets/demo/train.jsonl"));
        assert!(concerns("datasets/demo", "datasets/demo/part-1.jsonl"));
        assert!(!concerns("datasets/demo", "datasets/demo2/part-1.jsonl"));
        assert!(concerns("datasets/demo/", "datasets/demo/part-1.jsonl"));
        assert!(!concerns("datasets/demo/", "datasets/demo2/part-1.jsonl"));
        assert!(!concerns("datasets/demo/train.jsonl", "datasets/demo/train.jsonl.tmp"));
    }
}
