//! Outbound registry events: when a version is published or a channel promoted or rolled back, every subscriber's
//! webhook gets a JSON [`RegistryEvent`] signed with HMAC-SHA256 over the body (`X-Adapterci-Signature-256:
//! sha256=<hex>`, the GitHub convention), retried with capped exponential backoff, and every attempt recorded in
//! the store's [`EventDeliveryLog`]. Raising an event ([`EventNotifier::notify`]) returns once it is stored, so
//! the request that caused it is answered after the event is durable; delivery runs on spawned tasks: a slow
//! subscriber never delays that request.
//!
//! Delivery survives a restart: the event is stored with the endpoints it is addressed to (`registry_events`, an
//! outbox) before its first attempt and settled once every endpoint has it or was given up. Replicas share the
//! outbox without delivering one event twice: each notifier has an owner id (one per process) and holds every
//! event it stores or takes over under a lease ([`DeliveryPolicy::lease`]) that outlasts the whole delivery, so a
//! lease only runs out when its process stopped. [`EventNotifier::run_until`] (adapterd's loop) calls
//! [`EventNotifier::resume_pending`] at start and every [`RESUME_INTERVAL`]: it takes over each unsettled event
//! whose lease ran out, in one conditional write that only one notifier can win, and continues it where its
//! recorded attempts stopped. Delivery is at least once: a receiver drops a duplicate by its event id. Settled
//! events older than adapterd's retention are deleted with their attempts ([`EventNotifier::prune`]).
//!
//! A clean shutdown ([`EventNotifier::shut_down`], at the end of `run_until`) does not leave its events waiting for
//! their leases: the notifier stops taking events on, interrupts its deliveries between attempts, waits for them
//! to return, then gives up in one conditional write the leases it still holds, so another replica takes those
//! events over at its next pass.
//!
//! Neither does a crash, given a stable instance id (adapterd's `--instance-id`,
//! [`EventNotifier::with_instance_id`]): the id, unique among live processes, is the notifier's owner id, so the
//! leases a crashed process left behind are its next life's, which takes them back at its first pass
//! ([`EventNotifier::resume_pending`], at start) instead of waiting for them to run out.
//!
//! Only the holder of an event's lease settles it: a notifier whose lease ran out while it delivered, and whose
//! event another took over, is refused and leaves the event to the new holder.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use adapterci_controller::webhooks::sign_sha256;
use adapterci_core::events::{
    EventAttempt, EventDeliveryLog, EventLease, PendingEvent, PrunedEvents, RegistryEvent, RegistryEventKind,
};
use adapterci_core::ports::{AdapterVersionRecord, Clock, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod policy;

pub use policy::{DeliveryPolicy, LEASE_MARGIN, SHUTDOWN_MARGIN};

/// The header carrying the body's HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "X-Adapterci-Signature-256";
/// The header naming the event kind (`published`, `promoted`, `rolled_back`, `gate_failed`).
pub const EVENT_HEADER: &str = "X-Adapterci-Event";
/// The header carrying the event id (the same on every retry).
pub const EVENT_ID_HEADER: &str = "X-Adapterci-Event-Id";
/// How often adapterd looks for unsettled events whose lease ran out: an event a stopped process held is taken
/// over at most this long after its lease ends.
pub const RESUME_INTERVAL: Duration = Duration::from_secs(60);
/// How often adapterd deletes the settled events older than its retention (also once at start).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
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

/// One delivery of an event to one subscriber, from where it stands.
struct Delivery {
    subscriber: EventSubscriber,
    /// How many attempts were already made (recorded) to this endpoint.
    attempts_made: u32,
    /// The rest of the pause after the last of them.
    wait: Duration,
}

/// The events a notifier is delivering now, and whether it is shutting down (then it takes no event on).
#[derive(Debug, Default)]
struct InFlight {
    events: HashSet<String>,
    stopping: bool,
}

/// What [`EventNotifier::claim`] found.
enum Claim {
    /// The event is now this notifier's to deliver.
    Taken,
    /// This notifier is delivering it already.
    Busy,
    /// This notifier is shutting down.
    Stopping,
}

/// How one delivery to one endpoint ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Its attempts ran out.
    GaveUp,
    /// The notifier is shutting down: the endpoint is owed the event still.
    Interrupted,
}

/// Sends registry events to the subscribers.
pub struct EventNotifier {
    /// This notifier's owner id in the events' leases: a fresh uuid per notifier, so per process, or the stable
    /// instance id it was given ([`EventNotifier::with_instance_id`]).
    owner: String,
    /// Whether leases held by `owner` may be a previous life's of this instance, to take back at start: set by
    /// [`EventNotifier::with_instance_id`], cleared once a pass has read the outbox.
    take_back_own_leases: AtomicBool,
    subscribers: RwLock<Vec<EventSubscriber>>,
    policy: DeliveryPolicy,
    log: Arc<dyn EventDeliveryLog>,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    http: reqwest::Client,
    /// The events this notifier is delivering now: [`EventNotifier::resume_pending`] skips them, so an event raised
    /// while it runs, or a second call, is never delivered twice by this process; and a shutdown waits for them
    /// (a watch channel, so it can wait for the set to empty) before it releases their leases.
    in_flight: watch::Sender<InFlight>,
    /// Cancelled when a shutdown begins: every delivery stops before its next attempt.
    stop: CancellationToken,
}

impl EventNotifier {
    pub fn new(log: Arc<dyn EventDeliveryLog>, clock: Arc<dyn Clock>, policy: DeliveryPolicy) -> EventNotifier {
        EventNotifier {
            owner: uuid::Uuid::new_v4().to_string(),
            take_back_own_leases: AtomicBool::new(false),
            subscribers: RwLock::new(Vec::new()),
            policy,
            log,
            clock,
            pause: Arc::new(TokioPause),
            http: reqwest::Client::builder().timeout(policy.request_timeout).build().unwrap_or_default(),
            in_flight: watch::Sender::new(InFlight::default()),
            stop: CancellationToken::new(),
        }
    }

    /// Holds leases under `instance_id` instead of a fresh uuid, and takes back at its first pass
    /// ([`EventNotifier::resume_pending`], at start in adapterd) the unsettled events that id still holds: a process
    /// that crashed with the same id left them, so they go out at once instead of once their leases run out.
    ///
    /// The id must be unique among the live processes sharing the store: two live notifiers with one id would
    /// each take the other's events as their own and deliver them both. One process that restarts under the same
    /// id (one replica, its old process stopped before the new one starts) is what it is for.
    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> EventNotifier {
        self.owner = instance_id.into();
        self.take_back_own_leases = AtomicBool::new(true);
        self
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

    /// The owner id this notifier holds its events' leases under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// A lease for this notifier from `now`, as long as [`DeliveryPolicy::lease`].
    fn lease_from(&self, now: DateTime<Utc>) -> EventLease {
        let length = chrono::Duration::from_std(self.policy.lease()).unwrap_or(chrono::Duration::MAX);
        EventLease {
            owner: self.owner.clone(),
            until: now.checked_add_signed(length).unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
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

    /// Stores `event`, addressed to every subscriber, and returns once it is stored; it is then delivered to each
    /// subscriber on spawned tasks and settled once they are done. Awaiting this before answering the request that
    /// raised the event means a crash after the answer cannot lose the event: the next start resumes it.
    ///
    /// A store that cannot record the event is logged, not returned: the registry change that raised it already
    /// happened, so failing the caller's request would misreport it; the event is still delivered from memory, and
    /// only a restart before it is delivered loses it. Storing runs on its own task, so a caller dropped while it
    /// waits (a client that hung up) still has its event stored and delivered.
    ///
    /// Once [`EventNotifier::shut_down`] has begun, the event is stored under a lease that has already ended and is
    /// not delivered: another notifier (a replica, or this process restarted) takes it over at its next pass.
    pub async fn notify(self: &Arc<Self>, event: RegistryEvent) {
        let subscribers = self.subscribers();
        if subscribers.is_empty() {
            return;
        }
        let deliver = match self.claim(&event.id) {
            Claim::Taken => true,
            Claim::Busy => return,
            Claim::Stopping => false,
        };
        let notifier = self.clone();
        let (stored_sender, stored_signal) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let endpoints: Vec<String> = subscribers.iter().map(|subscriber| subscriber.url.clone()).collect();
            let now = notifier.clock.now();
            let lease = if deliver {
                notifier.lease_from(now)
            } else {
                EventLease { owner: notifier.owner.clone(), until: now }
            };
            let stored = match notifier.log.record_event(&event, &endpoints, &lease).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, event = %event.id, "could not store a registry event: a restart before it is delivered loses it");
                    false
                }
            };
            let _ = stored_sender.send(());
            if !deliver {
                tracing::info!(event = %event.id, "shutting down: a registry event raised now is left to another process");
                return;
            }
            let deliveries = subscribers
                .into_iter()
                .map(|subscriber| Delivery { subscriber, attempts_made: 0, wait: Duration::ZERO })
                .collect();
            notifier.deliver_and_settle(event, deliveries, stored).await;
        });
        // an error here is a storing task that panicked: there is nothing more to wait for
        let _ = stored_signal.await;
    }

    /// adapterd's upkeep of the outbox until `shutdown` turns true: [`EventNotifier::resume_pending`] at once and
    /// every [`RESUME_INTERVAL`], each pass on its own task so that a long delivery never delays the next (an event
    /// this notifier is delivering is skipped, and one another holds is left to it); and, given a `retention`,
    /// [`EventNotifier::prune`] at once and every [`PRUNE_INTERVAL`]. Then [`EventNotifier::shut_down`], within
    /// the policy's [`DeliveryPolicy::shutdown_grace`], before it returns.
    pub async fn run_until(self: Arc<Self>, retention: Option<Duration>, mut shutdown: watch::Receiver<bool>) {
        let mut resume = tokio::time::interval(RESUME_INTERVAL);
        resume.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = resume.tick() => {
                    let notifier = self.clone();
                    tokio::spawn(async move { notifier.resume_pending().await });
                }
                _ = prune.tick(), if retention.is_some() => {
                    if let Some(retention) = retention {
                        self.prune(retention).await;
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.shut_down(self.policy.shutdown_grace()).await;
                        return;
                    }
                }
            }
        }
    }

    /// Stops this notifier for a clean shutdown and gives up the leases it holds, so that another notifier takes
    /// its unfinished events over at its next pass instead of once their leases run out. From now on it takes no
    /// event on (one raised is stored under an ended lease, see [`EventNotifier::notify`]); every delivery stops
    /// before its next attempt, a pause cut short (an attempt already sent ends and is recorded). Once they have
    /// all returned, or after `grace`, it releases in one conditional write the leases it holds on unsettled
    /// events, all but those whose delivery still runs: those keep their lease, as after a crash, so that no
    /// event is taken over while this process may still send or settle it. An event settled meanwhile, or taken
    /// over by another notifier, is left as it is. Returns how many events it released, or `None` when the store
    /// failed (logged: the leases then run out).
    pub async fn shut_down(&self, grace: Duration) -> Option<u64> {
        self.in_flight.send_modify(|in_flight| in_flight.stopping = true);
        self.stop.cancel();
        let mut in_flight = self.in_flight.subscribe();
        let drained = async { in_flight.wait_for(|in_flight| in_flight.events.is_empty()).await.is_ok() };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(?grace, "registry event deliveries still running at shutdown keep their leases");
        }
        let still_delivering: Vec<String> = self.in_flight.borrow().events.iter().cloned().collect();
        match self.log.release_events(&self.owner, &still_delivering, self.clock.now()).await {
            Ok(released) => {
                if released > 0 {
                    tracing::info!(released, "released the unfinished registry events to another process");
                }
                Some(released)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot release the registry events held at shutdown: their leases run out instead");
                None
            }
        }
    }

    /// Deletes the settled events created more than `retention` ago, with their attempts (and older attempts of no
    /// stored event); unsettled events stay. Returns what was deleted, or `None` when the store failed (logged).
    pub async fn prune(&self, retention: Duration) -> Option<PrunedEvents> {
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let Some(older_than) = self.clock.now().checked_sub_signed(retention) else {
            return Some(PrunedEvents::default()); // a retention reaching before the first instant keeps everything
        };
        match self.log.prune_settled(older_than).await {
            Ok(pruned) => {
                if pruned != PrunedEvents::default() {
                    tracing::info!(events = pruned.events, attempts = pruned.attempts, %older_than, "pruned settled registry events");
                }
                Some(pruned)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot prune the settled registry events: they are kept until the next try");
                None
            }
        }
    }

    /// Takes over every stored event that is not settled and that no lease holds (the process delivering it
    /// stopped, or it was stored before leases existed), continues them, and returns how many deliveries it
    /// resumed, once they have all finished. Of several notifiers resuming at once, each event goes to exactly
    /// one. A stored event that cannot be read is logged with its id and skipped. An endpoint that has the event,
    /// or whose attempts ran out, is skipped; one that is no longer a subscriber is given up. Each endpoint's
    /// attempt numbering and backoff continue from its recorded attempts, signed with the current subscriber's
    /// secret.
    ///
    /// On a notifier with a stable instance id ([`EventNotifier::with_instance_id`]), the first pass that reads the
    /// outbox also takes back the events whose lease that id still holds, but for those this notifier is delivering
    /// itself: a previous life of this instance left them, so they are resumed at once.
    pub async fn resume_pending(self: &Arc<Self>) -> usize {
        let unsettled = match self.log.unsettled_events().await {
            Ok(unsettled) => unsettled,
            Err(error) => {
                tracing::warn!(%error, "cannot read the unsettled registry events: none is resumed");
                return 0;
            }
        };
        // Taking back is safe against this notifier's own deliveries: each event passes `claim` (the set of events in
        // flight, under its lock) before its lease is written, so one being delivered here is skipped as busy.
        let take_back = self.take_back_own_leases.swap(false, Ordering::SeqCst);
        let mut taken_back = 0_usize;
        for unreadable in &unsettled.unreadable {
            tracing::warn!(event = %unreadable.id, reason = %unreadable.reason, "a stored registry event cannot be read: it is skipped, the others are resumed");
        }
        let subscribers = self.subscribers();
        let (mut events, mut resumed) = (JoinSet::new(), 0);
        for PendingEvent { event, endpoints, lease } in unsettled.pending {
            let now = self.clock.now();
            let own = take_back && lease.as_ref().is_some_and(|lease| lease.owner == self.owner);
            if !own && lease.is_some_and(|lease| lease.holds_at(now)) {
                continue;
            }
            match self.claim(&event.id) {
                Claim::Taken => {}
                Claim::Busy => continue,
                Claim::Stopping => break,
            }
            match self.log.claim_event(&event.id, &self.lease_from(now), now).await {
                Ok(true) => {}
                Ok(false) => {
                    // another notifier took it over first
                    self.done_with(&event.id);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, event = %event.id, "cannot take over a registry event: it is not resumed");
                    self.done_with(&event.id);
                    continue;
                }
            }
            // read once the event is ours: no other notifier adds attempts to it any more
            let deliveries = match self.deliveries_to_resume(&event, &endpoints, &subscribers).await {
                Ok(deliveries) => deliveries,
                Err(error) => {
                    tracing::warn!(%error, event = %event.id, "cannot read the attempts of a registry event: it is not resumed");
                    self.done_with(&event.id);
                    continue;
                }
            };
            resumed += deliveries.len();
            taken_back += usize::from(own);
            let notifier = self.clone();
            events.spawn(async move { notifier.deliver_and_settle(event, deliveries, true).await });
        }
        if taken_back > 0 {
            tracing::info!(taken_back, instance = %self.owner, "took back the registry events a previous run of this instance held, without waiting for their leases");
        }
        if resumed > 0 {
            tracing::info!(resumed, "resuming registry event deliveries that a stopped process left unfinished");
        }
        while events.join_next().await.is_some() {}
        resumed
    }

    /// Where each endpoint of a stored `event` stands, from its recorded attempts: the deliveries still owed.
    async fn deliveries_to_resume(
        &self,
        event: &RegistryEvent,
        endpoints: &[String],
        subscribers: &[EventSubscriber],
    ) -> Result<Vec<Delivery>, StoreError> {
        let attempts = self.log.attempts_of(&event.id).await?;
        let mut seen = HashSet::new();
        let mut deliveries = Vec::new();
        for endpoint in endpoints.iter().filter(|endpoint| seen.insert(endpoint.as_str())) {
            let tried: Vec<&EventAttempt> = attempts.iter().filter(|a| &a.endpoint == endpoint).collect();
            let last = tried.iter().max_by_key(|a| a.attempt);
            let attempts_made = last.map_or(0, |a| a.attempt);
            if tried.iter().any(|a| a.delivered) || attempts_made >= self.policy.max_attempts {
                continue;
            }
            let Some(subscriber) = subscribers.iter().find(|s| &s.url == endpoint) else {
                tracing::warn!(%endpoint, event = %event.id, "the endpoint is no longer a subscriber: its event is given up");
                continue;
            };
            let wait =
                last.map_or(Duration::ZERO, |a| self.policy.remaining_delay_after(a.attempt, a.at, self.clock.now()));
            deliveries.push(Delivery { subscriber: subscriber.clone(), attempts_made, wait });
        }
        Ok(deliveries)
    }

    /// Runs `deliveries` of `event` on spawned tasks and settles the event once each has delivered or given up;
    /// one interrupted by a shutdown leaves it unsettled, for the notifier that takes it over. An event that is not
    /// `stored` (its store write failed) has nothing to settle.
    async fn deliver_and_settle(self: Arc<Self>, event: RegistryEvent, deliveries: Vec<Delivery>, stored: bool) {
        let mut tasks = JoinSet::new();
        for delivery in deliveries {
            let (notifier, event) = (self.clone(), event.clone());
            tasks.spawn(async move {
                if !notifier.pause_unless_stopped(delivery.wait).await {
                    return Outcome::Interrupted;
                }
                notifier.attempt_delivery(&delivery.subscriber, &event, delivery.attempts_made).await
            });
        }
        let mut finished = true;
        while let Some(outcome) = tasks.join_next().await {
            match outcome {
                Ok(Outcome::Delivered | Outcome::GaveUp) => {}
                Ok(Outcome::Interrupted) => finished = false,
                Err(error) => {
                    tracing::error!(%error, event = %event.id, "an event delivery task failed: the event stays unsettled");
                    finished = false;
                }
            }
        }
        if finished && stored {
            self.settle(&event.id).await;
        }
        self.done_with(&event.id);
    }

    /// Settles `event_id` if this notifier still holds its lease. Refused, the event was taken over by another
    /// notifier after this one's lease ran out (this process stalled longer than the lease): the endpoints may get
    /// it twice, and the new holder settles it.
    async fn settle(&self, event_id: &str) {
        match self.log.settle_event(event_id, &self.owner).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event = %event_id, owner = %self.owner, "settle refused: this notifier's lease on the registry event ran out while it delivered and another notifier took the event over; that notifier finishes and settles it, and endpoints may receive it twice");
            }
            Err(error) => {
                tracing::warn!(%error, event = %event_id, "could not settle a delivered registry event: a restart resends it");
            }
        }
    }

    /// Marks `event_id` as being delivered by this notifier, unless it already is or the notifier is shutting
    /// down. The shutdown flag sits beside the set, under one lock: a claim either comes before the shutdown began,
    /// and the shutdown waits for its delivery, or it is refused.
    fn claim(&self, event_id: &str) -> Claim {
        let mut claim = Claim::Busy;
        self.in_flight.send_if_modified(|in_flight| {
            if in_flight.stopping {
                claim = Claim::Stopping;
                return false;
            }
            let taken = in_flight.events.insert(event_id.to_string());
            if taken {
                claim = Claim::Taken;
            }
            taken
        });
        claim
    }

    /// Ends this notifier's delivery of `event_id` (the event is settled, or left for another to take over).
    fn done_with(&self, event_id: &str) {
        self.in_flight.send_if_modified(|in_flight| in_flight.events.remove(event_id));
    }

    /// Takes a pause of `delay`, cut short by a shutdown; returns false when it was (the delivery must stop).
    async fn pause_unless_stopped(&self, delay: Duration) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        if delay.is_zero() {
            return true;
        }
        tokio::select! {
            () = self.pause.pause(delay) => true,
            () = self.stop.cancelled() => false,
        }
    }

    /// Delivers `event` to `subscriber`, retrying until it is accepted (2xx) or the attempts run out; records
    /// every attempt. Returns whether it was delivered.
    pub async fn deliver(&self, subscriber: &EventSubscriber, event: &RegistryEvent) -> bool {
        self.deliver_after(subscriber, event, 0).await
    }

    /// [`EventNotifier::deliver`] for an endpoint that already had `attempts_made` attempts: the next is numbered
    /// `attempts_made + 1`, and none is made if the attempts have run out.
    pub async fn deliver_after(&self, subscriber: &EventSubscriber, event: &RegistryEvent, attempts_made: u32) -> bool {
        self.attempt_delivery(subscriber, event, attempts_made).await == Outcome::Delivered
    }

    /// [`EventNotifier::deliver_after`], saying how it ended: once a shutdown has begun, no further attempt is made
    /// and a pause between attempts is cut short.
    async fn attempt_delivery(
        &self,
        subscriber: &EventSubscriber,
        event: &RegistryEvent,
        attempts_made: u32,
    ) -> Outcome {
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot encode a registry event");
                return Outcome::GaveUp;
            }
        };
        let signature = sign_sha256(&subscriber.secret, &[&body]);
        for attempt in attempts_made.saturating_add(1)..=self.policy.max_attempts.max(1) {
            if self.stop.is_cancelled() {
                return Outcome::Interrupted;
            }
            // An attempt under way is not cut short: it ends (within the request timeout) and is recorded, so the
            // notifier that takes the event over knows whether the endpoint has it.
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
                return Outcome::Delivered;
            }
            tracing::warn!(endpoint = %subscriber.url, event = %event.id, attempt, error = ?error, "event delivery failed");
            if attempt < self.policy.max_attempts && !self.pause_unless_stopped(self.policy.delay_after(attempt)).await
            {
                return Outcome::Interrupted;
            }
        }
        Outcome::GaveUp
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
/// run whose gates fail; the runner goes on once the event is stored.
pub struct PublishEvents(pub Arc<EventNotifier>);

#[async_trait]
impl adapterci_controller::PublishListener for PublishEvents {
    async fn published(&self, version: &AdapterVersionRecord) {
        let mut event = self.0.event(RegistryEventKind::Published, version.name.as_str(), version.version);
        event.manifest_digest = Some(version.manifest_digest.to_string());
        self.0.notify(event).await;
    }

    async fn gates_failed(
        &self,
        run_id: &str,
        adapter: &adapterci_core::AdapterName,
        gates: &adapterci_core::gate::GateReport,
    ) {
        let mut event = self.0.event(RegistryEventKind::GateFailed, adapter.as_str(), 0);
        event.run_id = Some(run_id.to_string());
        event.failed_gates = gates.results.iter().filter(|g| !g.passed).map(|g| g.reason.clone()).collect();
        self.0.notify(event).await;
    }
}
