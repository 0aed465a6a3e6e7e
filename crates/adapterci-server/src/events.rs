//! Outbound registry events: when a version is published or a channel promoted or rolled back, every subscriber's
//! webhook gets a JSON [`RegistryEvent`] signed with HMAC-SHA256 over the body (`X-Adapterci-Signature-256:
//! sha256=<hex>`, the GitHub convention), retried with capped exponential backoff, and every attempt recorded in
//! the store's [`EventDeliveryLog`]. Delivery runs on spawned tasks: a slow subscriber never delays the request
//! that caused the event.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use adapterci_controller::webhooks::sign_sha256;
use adapterci_core::events::{EventAttempt, EventDeliveryLog, RegistryEvent, RegistryEventKind};
use adapterci_core::ports::{AdapterVersionRecord, Clock};
use async_trait::async_trait;

/// The header carrying the body's HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "X-Adapterci-Signature-256";
/// The header naming the event kind (`published`, `promoted`, `rolled_back`, `gate_failed`).
pub const EVENT_HEADER: &str = "X-Adapterci-Event";
/// The header carrying the event id (the same on every retry).
pub const EVENT_ID_HEADER: &str = "X-Adapterci-Event-Id";

/// One webhook that receives every event.
#[derive(Clone)]
pub struct EventSubscriber {
    pub url: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for EventSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSubscriber").field("url", &self.url).finish_non_exhaustive()
    }
}

/// How hard a delivery tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    /// The pause after the first failure; each later pause doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 6,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl DeliveryPolicy {
    /// The pause after failed attempt `attempt` (1-based): `first_delay * 2^(attempt-1)`, capped.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Waits between attempts: the tokio timer in adapterd; tests record the pauses instead of taking them.
#[async_trait]
pub trait Pause: Send + Sync {
    async fn pause(&self, delay: Duration);
}

/// [`Pause`] on the tokio timer.
pub struct TokioPause;

#[async_trait]
impl Pause for TokioPause {
    async fn pause(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// Sends registry events to the subscribers.
pub struct EventNotifier {
    subscribers: RwLock<Vec<EventSubscriber>>,
    policy: DeliveryPolicy,
    log: Arc<dyn EventDeliveryLog>,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    http: reqwest::Client,
}

impl EventNotifier {
    pub fn new(log: Arc<dyn EventDeliveryLog>, clock: Arc<dyn Clock>, policy: DeliveryPolicy) -> EventNotifier {
        EventNotifier {
            subscribers: RwLock::new(Vec::new()),
            policy,
            log,
            clock,
            pause: Arc::new(TokioPause),
            http: reqwest::Client::builder().timeout(policy.request_timeout).build().unwrap_or_default(),
        }
    }

    /// Takes the pauses between attempts from `pause`.
    pub fn with_pause(mut self, pause: Arc<dyn Pause>) -> EventNotifier {
        self.pause = pause;
        self
    }

    /// Where every delivery attempt is recorded.
    pub fn log(&self) -> &Arc<dyn EventDeliveryLog> {
        &self.log
    }

    pub fn add_subscriber(&self, subscriber: EventSubscriber) {
        if let Ok(mut subscribers) = self.subscribers.write() {
            subscribers.push(subscriber);
        }
    }

    fn subscribers(&self) -> Vec<EventSubscriber> {
        self.subscribers.read().map(|subscribers| subscribers.clone()).unwrap_or_default()
    }

    /// A new event of `kind`, stamped now with a fresh id.
    pub fn event(&self, kind: RegistryEventKind, adapter: &str, version: u64) -> RegistryEvent {
        RegistryEvent {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            adapter: adapter.to_string(),
            version,
            channel: None,
            manifest_digest: None,
            run_id: None,
            failed_gates: Vec::new(),
            at: self.clock.now(),
        }
    }

    /// Delivers `event` to every subscriber on spawned tasks and returns at once.
    pub fn notify(self: &Arc<Self>, event: RegistryEvent) {
        for subscriber in self.subscribers() {
            let (notifier, event) = (self.clone(), event.clone());
            tokio::spawn(async move { notifier.deliver(&subscriber, &event).await });
        }
    }

    /// Delivers `event` to `subscriber`, retrying until it is accepted (2xx) or the attempts run out; records
    /// every attempt. Returns whether it was delivered.
    pub async fn deliver(&self, subscriber: &EventSubscriber, event: &RegistryEvent) -> bool {
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot encode a registry event");
                return false;
            }
        };
        let signature = sign_sha256(&subscriber.secret, &[&body]);
        for attempt in 1..=self.policy.max_attempts.max(1) {
            let (status, error) = self.send_once(subscriber, event, &body, &signature).await;
            let delivered = error.is_none();
            let record = EventAttempt {
                event_id: event.id.clone(),
                kind: event.kind,
                endpoint: subscriber.url.clone(),
                attempt,
                status,
                delivered,
                error: error.clone(),
                at: self.clock.now(),
            };
            if let Err(error) = self.log.record_attempt(record).await {
                tracing::warn!(%error, event = %event.id, "could not record an event delivery attempt");
            }
            if delivered {
                return true;
            }
            tracing::warn!(endpoint = %subscriber.url, event = %event.id, attempt, error = ?error, "event delivery failed");
            if attempt < self.policy.max_attempts {
                self.pause.pause(self.policy.delay_after(attempt)).await;
            }
        }
        false
    }

    /// One POST: the status if the endpoint answered, and the error unless it answered 2xx.
    async fn send_once(
        &self,
        subscriber: &EventSubscriber,
        event: &RegistryEvent,
        body: &[u8],
        signature: &str,
    ) -> (Option<u16>, Option<String>) {
        let request = self
            .http
            .post(&subscriber.url)
            .header("content-type", "application/json")
            .header(EVENT_HEADER, event.kind.as_str())
            .header(EVENT_ID_HEADER, &event.id)
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec());
        match request.send().await {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
            Ok(response) => {
                let status = response.status().as_u16();
                (Some(status), Some(format!("the endpoint answered http {status}")))
            }
            Err(error) => {
                let mut reason = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    reason = cause.to_string();
                    source = cause.source();
                }
                (None, Some(reason))
            }
        }
    }
}

/// The subscribers adapterd starts with: the URLs in [`crate::env_vars::ADAPTERCI_EVENT_WEBHOOK_URLS`] (comma
/// separated), all signed with [`crate::env_vars::ADAPTERCI_EVENT_WEBHOOK_SECRET`].
pub fn subscribers_from_env() -> Vec<EventSubscriber> {
    let Ok(urls) = std::env::var(crate::env_vars::ADAPTERCI_EVENT_WEBHOOK_URLS) else { return Vec::new() };
    let secret = std::env::var(crate::env_vars::ADAPTERCI_EVENT_WEBHOOK_SECRET).unwrap_or_default();
    if secret.is_empty() {
        tracing::warn!("event webhooks are configured without a secret: their signatures prove nothing");
    }
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| EventSubscriber { url: url.to_string(), secret: secret.as_bytes().to_vec() })
        .collect()
}

/// Sends a `published` event for every version the controller publishes, and a `gate_failed` event for every
/// run whose gates fail.
pub struct PublishEvents(pub Arc<EventNotifier>);

impl adapterci_controller::PublishListener for PublishEvents {
    fn published(&self, version: &AdapterVersionRecord) {
        let mut event = self.0.event(RegistryEventKind::Published, version.name.as_str(), version.version);
        event.manifest_digest = Some(version.manifest_digest.to_string());
        self.0.notify(event);
    }

    fn gates_failed(
        &self,
        run_id: &str,
        adapter: &adapterci_core::AdapterName,
        gates: &adapterci_core::gate::GateReport,
    ) {
        let mut event = self.0.event(RegistryEventKind::GateFailed, adapter.as_str(), 0);
        event.run_id = Some(run_id.to_string());
        event.failed_gates = gates.results.iter().filter(|g| !g.passed).map(|g| g.reason.clone()).collect();
        self.0.notify(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = DeliveryPolicy {
            max_attempts: 8,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (1..=6).map(|attempt| policy.delay_after(attempt).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.delay_after(u32::MAX), Duration::from_secs(10), "no overflow");
    }
}
