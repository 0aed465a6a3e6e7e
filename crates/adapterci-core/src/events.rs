//! Outbound registry events (a version published, a channel promoted or rolled back) and the port of their
//! delivery log: every event is stored before its first delivery attempt (an outbox, so a restart can resume
//! it) and every attempt to deliver it to a subscriber's webhook is recorded, with its outcome, so an operator
//! can see what was sent, what failed and why.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;

/// What happened in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryEventKind {
    Published,
    Promoted,
    RolledBack,
    /// A run's eval gates failed: nothing was published (`version` is 0, `run_id` and `failed_gates` say which).
    GateFailed,
}

impl RegistryEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryEventKind::Published => "published",
            RegistryEventKind::Promoted => "promoted",
            RegistryEventKind::RolledBack => "rolled_back",
            RegistryEventKind::GateFailed => "gate_failed",
        }
    }
}

/// One event as subscribers receive it (the JSON body of the webhook request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEvent {
    /// Unique per event; the same across retries, so a receiver can drop a duplicate.
    pub id: String,
    pub kind: RegistryEventKind,
    pub adapter: String,
    pub version: u64,
    /// The channel, for promotions and rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The version's manifest digest, for publications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// The run, for gate failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Why each failed gate failed, for gate failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_gates: Vec<String>,
    pub at: DateTime<Utc>,
}

/// One attempt to deliver an event to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventAttempt {
    pub event_id: String,
    pub kind: RegistryEventKind,
    pub endpoint: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The HTTP status the endpoint answered, if it answered.
    pub status: Option<u16>,
    /// Whether this attempt delivered the event (a 2xx answer).
    pub delivered: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Which notifier delivers a stored event, and until when: no other takes the event over before `until`. A
/// notifier is one adapterd process; the lease outlasts a whole delivery by its policy, so it only runs out when
/// the process stopped, and then another (a replica, or the process restarted) takes the event over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLease {
    /// The notifier's owner id: unique among live processes (a fresh uuid per process, or adapterd's
    /// `--instance-id`, which a restarted process keeps).
    pub owner: String,
    pub until: DateTime<Utc>,
}

impl EventLease {
    /// Whether the lease still holds at `now`: until `until` included, after it another may take over.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        now <= self.until
    }
}

/// A stored event that is not settled yet, with the endpoints it is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEvent {
    pub event: RegistryEvent,
    /// In the order they were recorded.
    pub endpoints: Vec<String>,
    /// The notifier that stored it or last took it over; none for an event stored before leases existed.
    pub lease: Option<EventLease>,
}

/// A stored event that cannot be read back (a damaged row): it is left in place, unsettled, for an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableEvent {
    pub id: String,
    /// What could not be read, naming the column.
    pub reason: String,
}

/// The stored events not settled yet: those that read back, and those that do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsettledEvents {
    /// Oldest first.
    pub pending: Vec<PendingEvent>,
    pub unreadable: Vec<UnreadableEvent>,
}

/// What [`EventDeliveryLog::prune_settled`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrunedEvents {
    pub events: u64,
    pub attempts: u64,
}

/// The log of outbound deliveries, and the outbox of the events not yet settled.
#[async_trait]
pub trait EventDeliveryLog: Send + Sync {
    /// Stores `event`, addressed to `endpoints` and held by `lease` (the notifier about to deliver it), before its
    /// first attempt. Recording an id that is already stored changes nothing.
    async fn record_event(
        &self,
        event: &RegistryEvent,
        endpoints: &[String],
        lease: &EventLease,
    ) -> Result<(), StoreError>;
    /// The stored events not settled yet, oldest first. A row that cannot be read is skipped and reported in
    /// [`UnsettledEvents::unreadable`] with its id, so it does not keep the others from being resumed; an error
    /// means none could be read.
    async fn unsettled_events(&self) -> Result<UnsettledEvents, StoreError>;
    /// Takes the unsettled event `event_id` over with `lease` if no lease holds it at `now` (none was taken, or it
    /// ended before `now`), or if the lease that holds it is already `lease.owner`'s, which it renews (a notifier
    /// with a stable instance id taking back what a previous life of that instance held); returns whether it did.
    /// It is one conditional write, so of several notifiers racing for one event exactly one gets it.
    async fn claim_event(&self, event_id: &str, lease: &EventLease, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Gives up the leases `owner` holds on unsettled events, all but those in `keep` (still being delivered): each
    /// is left unclaimed, its lease ended at `now`, so that any notifier takes it over at once. It is one
    /// conditional write on the events still held by `owner`: one that another notifier took over, or that is
    /// settled, is left as it is. Returns how many it released.
    async fn release_events(&self, owner: &str, keep: &[String], now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Marks `event_id` as settled (every endpoint has it or was given up) if `owner` holds it, whether or not the
    /// lease has run out; returns whether the event is now settled under `owner`'s lease. It is one conditional
    /// write: a notifier whose lease ran out while it delivered, and whose event another notifier has since taken
    /// over, is refused (false), and the event stays the new holder's to finish. The lease stays, saying who
    /// finished it. Settling again under the same owner changes nothing and returns true; an id that is not
    /// stored returns false.
    async fn settle_event(&self, event_id: &str, owner: &str) -> Result<bool, StoreError>;
    /// Deletes the settled events created before `older_than` with all their attempts, and the attempts made
    /// before it that belong to no stored event (made before events were stored, or whose event could not be);
    /// returns how many of each. An unsettled event and its attempts stay, however old.
    async fn prune_settled(&self, older_than: DateTime<Utc>) -> Result<PrunedEvents, StoreError>;
    async fn record_attempt(&self, attempt: EventAttempt) -> Result<(), StoreError>;
    /// The attempts for `event_id`, oldest first.
    async fn attempts_of(&self, event_id: &str) -> Result<Vec<EventAttempt>, StoreError>;
    /// The newest `limit` attempts of every event, newest first.
    async fn recent_attempts(&self, limit: u64) -> Result<Vec<EventAttempt>, StoreError>;
}
