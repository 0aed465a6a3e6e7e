//! Outbound registry events delivered over real HTTP to a local receiver (an axum server on 127.0.0.1): the
//! body is signed with HMAC-SHA256, failed deliveries are retried with capped exponential backoff (the pauses are
//! recorded, not slept), every attempt lands in the delivery log of a real SQLite store, and `notify` reaches
//! every subscriber. Events are stored before their first attempt: a second notifier on the same SQLite file (a
//! restarted adapterd) resumes what the first left unfinished once its lease has run out, and only that, past a
//! damaged row; two replicas resuming the same events at once on SQLite or PostgreSQL deliver each exactly once;
//! pruning keeps unsettled events and the settled ones inside the retention; a clean shutdown, on SQLite or
//! PostgreSQL, stops its deliveries between attempts and releases its leases, so another notifier takes its events
//! over at once, all but one whose attempt is still under way; a notifier whose event was taken over cannot settle
//! it; adapterd restarted with the same `--instance-id`, on SQLite or PostgreSQL, takes back at start what its
//! crashed life held, which a notifier with another id leaves alone. The receiver signals each request on a
//! channel: no test waits on a timer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapterci_controller::webhooks::sign_sha256;
use adapterci_core::events::{
    EventAttempt, EventDeliveryLog, EventLease, PrunedEvents, RegistryEvent, RegistryEventKind, UnsettledEvents,
};
use adapterci_core::ports::{Clock, StoreError, SystemClock};
use adapterci_server::events::{
    DeliveryPolicy, EVENT_HEADER, EVENT_ID_HEADER, EventNotifier, EventSubscriber, Pause, SIGNATURE_HEADER,
};
use adapterci_store::SeaStore;
use adapterci_testkit::clock::ManualClock;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::servers::postgres_or_skip;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"event secret";

/// One request as the receiver got it.
struct Received {
    event: String,
    event_id: String,
    signature: String,
    body: Vec<u8>,
}

struct Receiver {
    failures_left: AtomicU32,
    requests: mpsc::UnboundedSender<Received>,
}

async fn hook(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let received = Received {
        event: header(EVENT_HEADER),
        event_id: header(EVENT_ID_HEADER),
        signature: header(SIGNATURE_HEADER),
        body: body.to_vec(),
    };
    let failing = receiver.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    receiver.requests.send(received).unwrap();
    if failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::NO_CONTENT }
}

/// A receiver that answers 503 to its first `failures` requests, then 204; its URL and its requests.
async fn receiver(failures: u32) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (sender, requests) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver { failures_left: AtomicU32::new(failures), requests: sender });
    let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, requests)
}

/// Records the pauses the notifier asks for and returns at once.
#[derive(Default)]
struct RecordedPauses(Mutex<Vec<Duration>>);

#[async_trait::async_trait]
impl Pause for RecordedPauses {
    async fn pause(&self, delay: Duration) {
        self.0.lock().unwrap().push(delay);
    }
}

/// Signals each pause, then holds it until the test releases it; never released, the process has stopped for
/// good during the backoff.
struct HeldPause {
    paused: mpsc::UnboundedSender<Duration>,
    release: tokio::sync::Semaphore,
}

impl HeldPause {
    fn new() -> (Arc<HeldPause>, mpsc::UnboundedReceiver<Duration>) {
        let (paused, pauses) = mpsc::unbounded_channel();
        (Arc::new(HeldPause { paused, release: tokio::sync::Semaphore::new(0) }), pauses)
    }
}

#[async_trait::async_trait]
impl Pause for HeldPause {
    async fn pause(&self, delay: Duration) {
        self.paused.send(delay).unwrap();
        self.release.acquire().await.unwrap().forget();
    }
}

async fn next_pause(pauses: &mut mpsc::UnboundedReceiver<Duration>) -> Duration {
    tokio::time::timeout(Duration::from_secs(60), pauses.recv()).await.expect("a pause").unwrap()
}

/// The store with two optional hooks: `settled` hears of every settle asked for (the event, the owner asking, and
/// whether it was settled), and `listed` holds each replica after it lists the unsettled events until every replica
/// has listed them (the replicas then all race for every event).
struct HookedLog {
    store: Arc<SeaStore>,
    settled: Option<mpsc::UnboundedSender<Settle>>,
    listed: Option<Arc<tokio::sync::Barrier>>,
}

#[async_trait::async_trait]
impl EventDeliveryLog for HookedLog {
    async fn record_attempt(&self, attempt: EventAttempt) -> Result<(), StoreError> {
        self.store.record_attempt(attempt).await
    }
    async fn attempts_of(&self, event_id: &str) -> Result<Vec<EventAttempt>, StoreError> {
        self.store.attempts_of(event_id).await
    }
    async fn recent_attempts(&self, limit: u64) -> Result<Vec<EventAttempt>, StoreError> {
        self.store.recent_attempts(limit).await
    }
    async fn record_event(
        &self,
        event: &RegistryEvent,
        endpoints: &[String],
        lease: &EventLease,
    ) -> Result<(), StoreError> {
        self.store.record_event(event, endpoints, lease).await
    }
    async fn unsettled_events(&self) -> Result<UnsettledEvents, StoreError> {
        let pending = self.store.unsettled_events().await;
        if let Some(listed) = &self.listed {
            listed.wait().await;
        }
        pending
    }
    async fn claim_event(&self, event_id: &str, lease: &EventLease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.store.claim_event(event_id, lease, now).await
    }
    async fn release_events(&self, owner: &str, keep: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.store.release_events(owner, keep, now).await
    }
    async fn prune_settled(&self, older_than: DateTime<Utc>) -> Result<PrunedEvents, StoreError> {
        self.store.prune_settled(older_than).await
    }
    async fn settle_event(&self, event_id: &str, owner: &str) -> Result<bool, StoreError> {
        let done = self.store.settle_event(event_id, owner).await?;
        if let Some(settled) = &self.settled {
            settled.send(Settle { event_id: event_id.to_string(), owner: owner.to_string(), done }).unwrap();
        }
        Ok(done)
    }
}

/// A settle the store was asked for, and whether it settled the event.
#[derive(Debug, PartialEq, Eq)]
struct Settle {
    event_id: String,
    owner: String,
    done: bool,
}

/// The store with a `settled` hook, and what it hears.
fn settle_hooked(store: Arc<SeaStore>) -> (Arc<HookedLog>, mpsc::UnboundedReceiver<Settle>) {
    let (settled, settles) = mpsc::unbounded_channel();
    (Arc::new(HookedLog { store, settled: Some(settled), listed: None }), settles)
}

async fn next_settle(settles: &mut mpsc::UnboundedReceiver<Settle>) -> Settle {
    tokio::time::timeout(Duration::from_secs(60), settles.recv()).await.expect("a settle").unwrap()
}

/// The lease of a process that stopped a minute ago, its lease run out.
fn stopped_lease() -> EventLease {
    EventLease { owner: "stopped-process".to_string(), until: Utc::now() - TimeDelta::minutes(1) }
}

struct Setup {
    notifier: Arc<EventNotifier>,
    log: Arc<SeaStore>,
    pauses: Arc<RecordedPauses>,
    /// The SQLite file of `log`, for a second notifier (a restarted adapterd).
    database: String,
    _dir: tempfile::TempDir,
}

fn policy(max_attempts: u32) -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(3),
        request_timeout: Duration::from_secs(10),
    }
}

async fn setup(max_attempts: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/m.db?mode=rwc", dir.path().display());
    let log = Arc::new(SeaStore::connect(&database).await.unwrap());
    let pauses = Arc::new(RecordedPauses::default());
    let notifier = Arc::new(
        EventNotifier::new(log.clone(), Arc::new(SystemClock), policy(max_attempts)).with_pause(pauses.clone()),
    );
    Setup { notifier, log, pauses, database, _dir: dir }
}

/// Another adapterd on the same database: a new store connection and a new notifier.
async fn restarted(setup: &Setup, max_attempts: u32, clock: Arc<dyn Clock>) -> (Arc<EventNotifier>, Arc<SeaStore>) {
    let log = Arc::new(SeaStore::connect(&setup.database).await.unwrap());
    let notifier = EventNotifier::new(log.clone(), clock, policy(max_attempts));
    (Arc::new(notifier.with_pause(setup.pauses.clone())), log)
}

fn subscriber(url: &str) -> EventSubscriber {
    EventSubscriber { url: url.to_string(), secret: SECRET.to_vec() }
}

async fn logged(log: &SeaStore, event: &RegistryEvent) -> Vec<(String, u32, Option<u16>, bool)> {
    let attempts = log.attempts_of(&event.id).await.unwrap();
    attempts.into_iter().map(|a| (a.endpoint, a.attempt, a.status, a.delivered)).collect()
}

fn promoted(notifier: &EventNotifier) -> RegistryEvent {
    let mut event = notifier.event(RegistryEventKind::Promoted, "support", 3);
    event.channel = Some("stable".to_string());
    event
}

async fn next(requests: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(60), requests.recv()).await.expect("a request arrives").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_with_backoff_until_it_accepts_and_every_attempt_is_logged() {
    let setup = setup(5).await;
    let (url, mut requests) = receiver(2).await;
    let subscriber = EventSubscriber { url: url.clone(), secret: SECRET.to_vec() };
    let event = promoted(&setup.notifier);
    assert!(setup.notifier.deliver(&subscriber, &event).await, "delivered on the third attempt");

    for _ in 0..3 {
        let received = next(&mut requests).await;
        assert_eq!((received.event.as_str(), received.event_id.as_str()), ("promoted", event.id.as_str()));
        assert_eq!(received.signature, sign_sha256(SECRET, &[&received.body]), "signed over the exact body");
        assert_ne!(received.signature, sign_sha256(b"another secret", &[&received.body]));
        let decoded: RegistryEvent = serde_json::from_slice(&received.body).unwrap();
        assert_eq!(decoded, event);
    }
    assert!(requests.try_recv().is_err(), "nothing is sent after the endpoint accepted");
    assert_eq!(*setup.pauses.0.lock().unwrap(), [Duration::from_secs(1), Duration::from_secs(2)]);
    let attempts = setup.log.attempts_of(&event.id).await.unwrap();
    let logged: Vec<_> = attempts.iter().map(|a| (a.attempt, a.status, a.delivered)).collect();
    assert_eq!(logged, [(1, Some(503), false), (2, Some(503), false), (3, Some(204), true)]);
    assert!(attempts[0].error.as_deref().unwrap().contains("http 503"), "{attempts:?}");
    assert!(attempts.iter().all(|a| a.endpoint == url && a.kind == RegistryEventKind::Promoted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_accepts_gets_the_capped_number_of_attempts() {
    let setup = setup(5).await;
    let (url, mut requests) = receiver(u32::MAX).await;
    let event = promoted(&setup.notifier);
    assert!(!setup.notifier.deliver(&EventSubscriber { url, secret: SECRET.to_vec() }, &event).await);
    for _ in 0..5 {
        next(&mut requests).await;
    }
    assert!(requests.try_recv().is_err(), "five attempts, no more");
    let pauses: Vec<u64> = setup.pauses.0.lock().unwrap().iter().map(Duration::as_secs).collect();
    assert_eq!(pauses, [1, 2, 3, 3], "doubling, capped at max_delay, none after the last attempt");
    let attempts = setup.log.attempts_of(&event.id).await.unwrap();
    assert_eq!(attempts.len(), 5);
    assert!(attempts.iter().all(|a| !a.delivered && a.status == Some(503)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_logged_with_its_error() {
    let setup = setup(2).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let event = setup.notifier.event(RegistryEventKind::Published, "support", 1);
    assert!(!setup.notifier.deliver(&EventSubscriber { url, secret: SECRET.to_vec() }, &event).await);
    let attempts = setup.log.attempts_of(&event.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.status.is_none() && a.error.as_deref().is_some_and(|e| !e.is_empty())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reaches_every_subscriber_in_the_background() {
    let setup = setup(3).await;
    let (first, mut first_requests) = receiver(0).await;
    let (second, mut second_requests) = receiver(1).await;
    setup.notifier.add_subscriber(EventSubscriber { url: first, secret: SECRET.to_vec() });
    setup.notifier.add_subscriber(EventSubscriber { url: second, secret: b"second".to_vec() });
    let event = setup.notifier.event(RegistryEventKind::Published, "support", 7);
    setup.notifier.notify(event.clone()).await;
    let got = next(&mut first_requests).await;
    assert_eq!(got.signature, sign_sha256(SECRET, &[&got.body]));
    next(&mut second_requests).await; // refused once
    let retried = next(&mut second_requests).await;
    assert_eq!(retried.signature, sign_sha256(b"second", &[&retried.body]), "each subscriber has its own secret");
    assert_eq!(retried.event_id, event.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_gates_fail_sends_a_signed_gate_failed_event_naming_the_run_and_the_failed_gates() {
    use adapterci_controller::PublishListener;
    use adapterci_core::gate::{GateReport, GateResult};
    let setup = setup(3).await;
    let (url, mut requests) = receiver(0).await;
    setup.notifier.add_subscriber(EventSubscriber { url, secret: SECRET.to_vec() });
    let gate = |metric: &str, passed: bool| GateResult {
        metric: metric.to_string(),
        value: Some(0.5),
        min: Some(0.8),
        max: None,
        passed,
        reason: format!("{metric} 0.5 {} 0.8", if passed { ">=" } else { "<" }),
    };
    let report = GateReport { passed: false, results: vec![gate("exact_match", false), gate("eval_loss", true)] };
    let adapter = adapterci_core::AdapterName::new("support").unwrap();
    adapterci_server::events::PublishEvents(setup.notifier.clone()).gates_failed("run-42", &adapter, &report).await;
    let got = next(&mut requests).await;
    assert_eq!(got.event, "gate_failed");
    assert_eq!(got.signature, sign_sha256(SECRET, &[&got.body]));
    let event: RegistryEvent = serde_json::from_slice(&got.body).unwrap();
    assert_eq!((event.kind, event.adapter.as_str(), event.version), (RegistryEventKind::GateFailed, "support", 0));
    assert_eq!(event.run_id.as_deref(), Some("run-42"));
    assert_eq!(event.failed_gates, vec!["exact_match 0.5 < 0.8".to_string()], "only the failed gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_stores_the_event_for_its_subscribers_and_settles_it_once_each_has_it() {
    let setup = setup(3).await;
    let (log, mut settled) = settle_hooked(setup.log.clone());
    let (pause, mut pauses) = HeldPause::new();
    let clock = Arc::new(ManualClock::new());
    let notifier = Arc::new(EventNotifier::new(log, clock.clone(), policy(3)).with_pause(pause.clone()));
    let (first, mut first_requests) = receiver(0).await;
    let (second, mut second_requests) = receiver(1).await;
    notifier.add_subscriber(subscriber(&first));
    notifier.add_subscriber(subscriber(&second));
    let event = notifier.event(RegistryEventKind::Published, "support", 7);
    notifier.notify(event.clone()).await;
    // stored when notify returns (the event cannot be settled yet: the second subscriber refuses its first attempt
    // and its retry waits in a pause that only the test releases)
    let pending = setup.log.unsettled_events().await.unwrap().pending;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((&pending[0].event, &pending[0].endpoints), (&event, &vec![first.clone(), second.clone()]));
    let until = clock.now() + TimeDelta::from_std(policy(3).lease()).unwrap();
    let lease = EventLease { owner: notifier.owner().to_string(), until };
    assert_eq!(pending[0].lease, Some(lease), "held by the notifier that stored it, for its policy's lease");
    next(&mut first_requests).await;
    next(&mut second_requests).await; // refused: the retry waits in the held pause
    next_pause(&mut pauses).await;
    assert!(settled.try_recv().is_err(), "not settled while a subscriber waits for its retry");
    pause.release.add_permits(1);
    next(&mut second_requests).await;
    let settle = next_settle(&mut settled).await;
    assert_eq!(settle, Settle { event_id: event.id.clone(), owner: notifier.owner().to_string(), done: true });
    assert!(setup.log.unsettled_events().await.unwrap().pending.is_empty());
    let mut attempts = logged(&setup.log, &event).await;
    attempts.sort();
    let mut expected =
        vec![(first, 1, Some(204), true), (second.clone(), 1, Some(503), false), (second, 2, Some(204), true)];
    expected.sort();
    assert_eq!(attempts, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_an_event_that_was_waiting_for_a_retry_once_its_lease_has_run_out() {
    let setup = setup(3).await;
    let (url, mut requests) = receiver(1).await;
    let clock = Arc::new(ManualClock::new());
    // adapterd A stops for good in the pause after the first failed attempt
    let (never_released, mut pauses) = HeldPause::new();
    let first_run =
        Arc::new(EventNotifier::new(setup.log.clone(), clock.clone(), policy(3)).with_pause(never_released));
    first_run.add_subscriber(subscriber(&url));
    let event = promoted(&first_run);
    first_run.notify(event.clone()).await;
    assert_eq!(next(&mut requests).await.event_id, event.id);
    assert_eq!(next_pause(&mut pauses).await, Duration::from_secs(1), "attempt 1 is recorded, A waits to retry");
    drop(first_run); // its delivery task stays parked in the pause for the rest of the test, like a dead process

    // adapterd B, on the same database file, with the same subscriber
    let (second_run, log) = restarted(&setup, 3, clock.clone()).await;
    second_run.add_subscriber(subscriber(&url));
    assert_eq!(second_run.resume_pending().await, 0, "A's lease still holds the event");
    clock.advance(TimeDelta::from_std(policy(3).lease()).unwrap() + TimeDelta::seconds(1));
    assert_eq!(second_run.resume_pending().await, 1, "taken over once A's lease has run out");
    let again = next(&mut requests).await;
    assert_eq!(again.event_id, event.id, "the same event, so the receiver can drop a duplicate");
    assert_eq!(again.signature, sign_sha256(SECRET, &[&again.body]));
    assert_eq!(serde_json::from_slice::<RegistryEvent>(&again.body).unwrap(), event);
    assert!(requests.try_recv().is_err(), "delivered once, no more");
    assert_eq!(logged(&log, &event).await, [(url.clone(), 1, Some(503), false), (url, 2, Some(204), true)]);
    assert!(log.unsettled_events().await.unwrap().pending.is_empty());
    let pauses = setup.pauses.0.lock().unwrap().clone();
    assert!(pauses.is_empty(), "the backoff ended before the lease did: {pauses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resends_nothing_to_an_endpoint_that_has_the_event_and_sends_to_one_never_tried() {
    let setup = setup(3).await;
    let (delivered, mut delivered_requests) = receiver(0).await;
    let (untried, mut untried_requests) = receiver(0).await;
    let event = promoted(&setup.notifier);
    // the first run stored the event for both, delivered it to one and stopped before trying the other; its lease
    // has run out
    setup.log.record_event(&event, &[delivered.clone(), untried.clone()], &stopped_lease()).await.unwrap();
    assert!(setup.notifier.deliver(&subscriber(&delivered), &event).await);
    next(&mut delivered_requests).await;

    let (second_run, log) = restarted(&setup, 3, Arc::new(SystemClock)).await;
    second_run.add_subscriber(subscriber(&delivered));
    second_run.add_subscriber(subscriber(&untried));
    assert_eq!(second_run.resume_pending().await, 1);
    assert_eq!(next(&mut untried_requests).await.event_id, event.id);
    assert!(delivered_requests.try_recv().is_err(), "not resent where it was delivered");
    assert_eq!(logged(&log, &event).await, [(delivered, 1, Some(204), true), (untried, 1, Some(204), true)]);
    assert!(log.unsettled_events().await.unwrap().pending.is_empty());
    assert_eq!(second_run.resume_pending().await, 0, "a settled event is not resumed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resends_nothing_when_the_attempts_ran_out_or_the_endpoint_is_no_longer_subscribed() {
    let setup = setup(2).await;
    let (refusing, mut refusing_requests) = receiver(u32::MAX).await;
    let (unsubscribed, mut unsubscribed_requests) = receiver(0).await;
    let event = promoted(&setup.notifier);
    setup.log.record_event(&event, &[refusing.clone(), unsubscribed.clone()], &stopped_lease()).await.unwrap();
    assert!(!setup.notifier.deliver(&subscriber(&refusing), &event).await);
    next(&mut refusing_requests).await;
    next(&mut refusing_requests).await;

    let (second_run, log) = restarted(&setup, 2, Arc::new(SystemClock)).await;
    second_run.add_subscriber(subscriber(&refusing));
    assert_eq!(second_run.resume_pending().await, 0);
    assert!(refusing_requests.try_recv().is_err(), "its two attempts were used up");
    assert!(unsubscribed_requests.try_recv().is_err(), "given up: no longer a subscriber");
    let attempts = logged(&log, &event).await;
    assert_eq!(attempts, [(refusing.clone(), 1, Some(503), false), (refusing, 2, Some(503), false)]);
    assert!(log.unsettled_events().await.unwrap().pending.is_empty(), "settled: nothing is left to do");
}

/// adapterd A stalls in the pause after a refused attempt for longer than its lease; B takes the event over,
/// delivers it and settles it. When A wakes up it sends its retry (at least once: the receiver drops it by id) but
/// its settle is refused, and the event stays B's, settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_whose_event_was_taken_over_cannot_settle_it_and_the_new_holder_does() {
    let setup = setup(3).await;
    let (url, mut requests) = receiver(1).await;
    let clock = Arc::new(ManualClock::new());
    let (stalled_log, mut stalled_settles) = settle_hooked(setup.log.clone());
    let (stall, mut pauses) = HeldPause::new();
    let stalled = Arc::new(EventNotifier::new(stalled_log, clock.clone(), policy(3)).with_pause(stall.clone()));
    stalled.add_subscriber(subscriber(&url));
    let event = promoted(&stalled);
    stalled.notify(event.clone()).await;
    assert_eq!(next(&mut requests).await.event_id, event.id);
    next_pause(&mut pauses).await; // attempt 1 refused: A waits to retry, and stays stalled past its lease

    clock.advance(TimeDelta::from_std(policy(3).lease()).unwrap() + TimeDelta::seconds(1));
    let (taker_log, mut taker_settles) = settle_hooked(Arc::new(SeaStore::connect(&setup.database).await.unwrap()));
    let taker = Arc::new(EventNotifier::new(taker_log, clock, policy(3)).with_pause(setup.pauses.clone()));
    taker.add_subscriber(subscriber(&url));
    assert_eq!(taker.resume_pending().await, 1, "taken over once A's lease has run out");
    assert_eq!(next(&mut requests).await.event_id, event.id);
    let settled_by_taker = Settle { event_id: event.id.clone(), owner: taker.owner().to_string(), done: true };
    assert_eq!(next_settle(&mut taker_settles).await, settled_by_taker, "the new holder settles it");

    stall.release.add_permits(1);
    assert_eq!(next(&mut requests).await.event_id, event.id, "A's retry was already due");
    let refused = Settle { event_id: event.id.clone(), owner: stalled.owner().to_string(), done: false };
    assert_eq!(next_settle(&mut stalled_settles).await, refused, "A no longer holds the event");
    assert!(setup.log.unsettled_events().await.unwrap().pending.is_empty(), "settled by B");
    let taker_holds = format!(
        "UPDATE registry_events SET settled = settled WHERE id = '{}' AND settled AND claimed_by = '{}'",
        event.id,
        taker.owner()
    );
    assert_eq!(setup.log.execute_unprepared(&taker_holds).await.unwrap(), 1, "B's lease stays, as who finished it");
    assert!(setup.log.settle_event(&event.id, taker.owner()).await.unwrap(), "settling twice is harmless");
    assert!(requests.try_recv().is_err());
}

/// The instance id of the adapterd that crashes in [`a_restarted_instance_takes_back_at_once_what_it_held`].
const INSTANCE: &str = "adapterci/adapterd";

/// adapterd with instance id X crashes in the pause after a refused attempt, its event leased for as long as a
/// delivery can take. Long before that lease runs out, a notifier with another id (stable or not) leaves the event
/// alone; adapterd restarted with id X takes it back on its start-up pass and delivers it at once, leaving alone an
/// event it raised itself in the meantime and is still delivering.
async fn a_restarted_instance_takes_back_at_once_what_it_held(database: &str) {
    let store = Arc::new(SeaStore::connect(database).await.unwrap());
    let (url, mut requests) = receiver(1).await;
    let clock = Arc::new(ManualClock::new());
    let (never_released, mut pauses) = HeldPause::new();
    let crashed = EventNotifier::new(store.clone(), clock.clone(), policy(3)).with_instance_id(INSTANCE);
    let crashed = Arc::new(crashed.with_pause(never_released));
    assert_eq!(crashed.owner(), INSTANCE, "the instance id is the owner id");
    crashed.add_subscriber(subscriber(&url));
    let event = promoted(&crashed);
    crashed.notify(event.clone()).await;
    assert_eq!(next(&mut requests).await.event_id, event.id);
    next_pause(&mut pauses).await; // attempt 1 refused and recorded: the process dies while it waits to retry
    drop(crashed);
    let held = EventLease {
        owner: INSTANCE.to_string(),
        until: clock.now() + TimeDelta::from_std(policy(3).lease()).unwrap(),
    };
    assert_eq!(leases(&store).await, BTreeMap::from([(event.id.clone(), Some(held.clone()))]));

    clock.advance(TimeDelta::seconds(1));
    for other in [Some("adapterci/other"), None] {
        let notifier =
            EventNotifier::new(Arc::new(SeaStore::connect(database).await.unwrap()), clock.clone(), policy(3));
        let notifier = Arc::new(match other {
            Some(id) => notifier.with_instance_id(id),
            None => notifier,
        });
        notifier.add_subscriber(subscriber(&url));
        assert_eq!(notifier.resume_pending().await, 0, "{other:?}: the lease of {INSTANCE} still holds");
    }
    assert!(requests.try_recv().is_err(), "nothing sent by another id");
    assert_eq!(leases(&store).await, BTreeMap::from([(event.id.clone(), Some(held))]), "left as it was");

    let (restarted_log, mut settles) = settle_hooked(Arc::new(SeaStore::connect(database).await.unwrap()));
    let (own_pause, mut own_pauses) = HeldPause::new();
    let restarted = EventNotifier::new(restarted_log, clock.clone(), policy(3)).with_instance_id(INSTANCE);
    let restarted = Arc::new(restarted.with_pause(own_pause));
    // an event the new process raises before its start-up pass, still being delivered (waiting to retry) then
    let (busy_url, mut busy_requests) = receiver(1).await;
    restarted.add_subscriber(subscriber(&busy_url));
    let busy = promoted(&restarted);
    restarted.notify(busy.clone()).await;
    assert_eq!(next(&mut busy_requests).await.event_id, busy.id);
    next_pause(&mut own_pauses).await;
    restarted.add_subscriber(subscriber(&url));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let upkeep = tokio::spawn(restarted.clone().run_until(None, stopped));
    let again = next(&mut requests).await;
    assert_eq!(again.event_id, event.id, "taken back at start, hours before its lease runs out");
    let settled = Settle { event_id: event.id.clone(), owner: INSTANCE.to_string(), done: true };
    assert_eq!(next_settle(&mut settles).await, settled);
    assert_eq!(logged(&store, &event).await, [(url.clone(), 1, Some(503), false), (url, 2, Some(204), true)]);
    assert!(busy_requests.try_recv().is_err(), "its own event in flight is not taken back a second time");
    let pending = store.unsettled_events().await.unwrap().pending;
    assert_eq!(pending.iter().map(|p| p.event.id.as_str()).collect::<Vec<_>>(), [busy.id.as_str()]);
    stop.send(true).unwrap();
    upkeep.await.unwrap();
    assert!(requests.try_recv().is_err() && busy_requests.try_recv().is_err(), "each sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_on_sqlite_takes_back_at_once_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    a_restarted_instance_takes_back_at_once_what_it_held(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_on_postgres_takes_back_at_once_what_it_held() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    a_restarted_instance_takes_back_at_once_what_it_held(&server.create_database().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_stored_event_is_skipped_and_the_others_are_resumed() {
    let setup = setup(3).await;
    let (url, mut requests) = receiver(0).await;
    let (damaged, intact) = (stored_event(1), stored_event(2));
    for event in [&damaged, &intact] {
        setup.log.record_event(event, std::slice::from_ref(&url), &stopped_lease()).await.unwrap();
    }
    let sql = format!("UPDATE registry_events SET body = '{{not json' WHERE id = '{}'", damaged.id);
    setup.log.execute_unprepared(&sql).await.unwrap();

    let (second_run, log) = restarted(&setup, 3, Arc::new(SystemClock)).await;
    second_run.add_subscriber(subscriber(&url));
    assert_eq!(second_run.resume_pending().await, 1);
    assert_eq!(next(&mut requests).await.event_id, intact.id);
    assert!(requests.try_recv().is_err(), "nothing is sent for the damaged event");
    let unsettled = log.unsettled_events().await.unwrap();
    assert!(unsettled.pending.is_empty(), "{unsettled:?}");
    let unreadable: Vec<&str> = unsettled.unreadable.iter().map(|row| row.id.as_str()).collect();
    assert_eq!(unreadable, [damaged.id.as_str()], "left in place for an operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_the_settled_events_older_than_the_retention() {
    let setup = setup(3).await;
    let clock = Arc::new(ManualClock::new());
    let notifier = EventNotifier::new(setup.log.clone(), clock.clone(), policy(3));
    let to = [subscriber("http://127.0.0.1:9/hook").url];
    let (old, stale) = (promoted(&notifier), promoted(&notifier));
    for event in [&old, &stale] {
        setup.log.record_event(event, &to, &stopped_lease()).await.unwrap();
    }
    assert!(setup.log.settle_event(&old.id, &stopped_lease().owner).await.unwrap());
    clock.advance(TimeDelta::days(20));
    let recent = promoted(&notifier);
    setup.log.record_event(&recent, &to, &stopped_lease()).await.unwrap();
    assert!(setup.log.settle_event(&recent.id, &stopped_lease().owner).await.unwrap());
    clock.advance(TimeDelta::days(15));

    let month = Duration::from_secs(30 * 86_400);
    assert_eq!(notifier.prune(month).await, Some(PrunedEvents { events: 1, attempts: 0 }), "the old settled one");
    assert_eq!(notifier.prune(month).await, Some(PrunedEvents::default()));
    let unsettled = setup.log.unsettled_events().await.unwrap().pending;
    assert_eq!(unsettled.iter().map(|p| p.event.id.as_str()).collect::<Vec<_>>(), [stale.id.as_str()]);
    assert_eq!(notifier.prune(Duration::MAX).await, Some(PrunedEvents::default()), "kept for ever");
    let one_day = Duration::from_secs(86_400);
    assert_eq!(notifier.prune(one_day).await, Some(PrunedEvents { events: 1, attempts: 0 }), "the recent one");
}

/// The event numbered `number`, as a stopped process stored it ten minutes ago.
fn stored_event(number: u32) -> RegistryEvent {
    RegistryEvent {
        id: format!("event-{number}"),
        kind: RegistryEventKind::Published,
        adapter: "support".to_string(),
        version: u64::from(number),
        channel: None,
        manifest_digest: None,
        run_id: None,
        failed_gates: Vec::new(),
        at: Utc::now() - TimeDelta::minutes(10),
    }
}

/// The event ids of the next `count` requests, sorted.
async fn next_ids(requests: &mut mpsc::UnboundedReceiver<Received>, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(next(requests).await.event_id);
    }
    ids.sort();
    ids
}

/// Two adapterd replicas on the database at `database` resume at once the events a stopped process left (each
/// lists all of them before either takes one): every endpoint gets every event exactly once, each attempt is
/// recorded once, and an event a live process holds is left to it.
async fn two_replicas_resume_each_event_exactly_once(database: &str) {
    const EVENTS: u32 = 6;
    let store = SeaStore::connect(database).await.unwrap();
    let (first, mut first_requests) = receiver(0).await;
    let (second, mut second_requests) = receiver(0).await;
    let both = [first.clone(), second.clone()];
    for number in 0..EVENTS {
        store.record_event(&stored_event(number), &both, &stopped_lease()).await.unwrap();
    }
    // whole seconds: the store keeps microseconds
    let until = Utc::now().trunc_subsecs(0) + TimeDelta::hours(1);
    let live = EventLease { owner: "live-process".to_string(), until };
    store.record_event(&stored_event(EVENTS), &both, &live).await.unwrap();

    let listed = Arc::new(tokio::sync::Barrier::new(2));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let log = HookedLog {
            store: Arc::new(SeaStore::connect(database).await.unwrap()),
            settled: None,
            listed: Some(listed.clone()),
        };
        let notifier = EventNotifier::new(Arc::new(log), Arc::new(SystemClock), policy(3));
        let notifier = Arc::new(notifier.with_pause(Arc::new(RecordedPauses::default())));
        notifier.add_subscriber(subscriber(&first));
        notifier.add_subscriber(subscriber(&second));
        replicas.push(notifier);
    }
    assert_ne!(replicas[0].owner(), replicas[1].owner(), "an owner id per notifier");
    let resuming: Vec<_> = replicas
        .iter()
        .map(|replica| {
            let replica = replica.clone();
            tokio::spawn(async move { replica.resume_pending().await })
        })
        .collect();
    let mut resumed = Vec::new();
    for replica in resuming {
        resumed.push(replica.await.unwrap());
    }
    assert_eq!(resumed.iter().sum::<usize>(), 2 * EVENTS as usize, "each delivery resumed by one replica: {resumed:?}");

    // resume_pending returned once its deliveries finished: every request has arrived
    let mut expected: Vec<String> = (0..EVENTS).map(|number| format!("event-{number}")).collect();
    expected.sort();
    assert_eq!(next_ids(&mut first_requests, EVENTS as usize).await, expected);
    assert_eq!(next_ids(&mut second_requests, EVENTS as usize).await, expected);
    assert!(first_requests.try_recv().is_err() && second_requests.try_recv().is_err(), "no event sent twice");
    for number in 0..EVENTS {
        let mut attempts = logged(&store, &stored_event(number)).await;
        attempts.sort();
        let mut once = vec![(first.clone(), 1, Some(204), true), (second.clone(), 1, Some(204), true)];
        once.sort();
        assert_eq!(attempts, once, "one attempt per endpoint");
    }
    let pending = store.unsettled_events().await.unwrap().pending;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((pending[0].event.id.as_str(), pending[0].lease.as_ref()), ("event-6", Some(&live)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_sqlite_resume_each_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    two_replicas_resume_each_event_exactly_once(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_resume_each_event_exactly_once() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    two_replicas_resume_each_event_exactly_once(&server.create_database().unwrap()).await;
}

/// The lease of every unsettled event, by id.
async fn leases(store: &SeaStore) -> BTreeMap<String, Option<EventLease>> {
    store.unsettled_events().await.unwrap().pending.into_iter().map(|p| (p.event.id, p.lease)).collect()
}

/// adapterd A shuts down cleanly (its `run_until` loop told to stop) while it holds three events on the database at
/// `database`: one it is delivering, waiting to retry after a refused attempt in a pause that only the shutdown
/// ends; one stored under its lease that it is not delivering; and one a live replica holds. A's pause is cut
/// short and no further attempt made; its two leases are released, the replica's is not; B, on the same clock (not
/// a second later, hours before A's leases would have run out), takes both over at once and finishes them.
async fn a_clean_shutdown_hands_its_events_over_at_once(database: &str) {
    let store = Arc::new(SeaStore::connect(database).await.unwrap());
    let (url, mut requests) = receiver(1).await;
    let clock = Arc::new(ManualClock::new());
    let (never_released, mut pauses) = HeldPause::new();
    let first = Arc::new(EventNotifier::new(store.clone(), clock.clone(), policy(3)).with_pause(never_released));
    first.add_subscriber(subscriber(&url));
    let delivering = promoted(&first);
    first.notify(delivering.clone()).await;
    assert_eq!(next(&mut requests).await.event_id, delivering.id);
    next_pause(&mut pauses).await; // attempt 1 refused and recorded: A waits to retry
    let idle = stored_event(1);
    let first_lease = EventLease { owner: first.owner().to_string(), until: clock.now() + TimeDelta::hours(1) };
    store.record_event(&idle, std::slice::from_ref(&url), &first_lease).await.unwrap();
    let live = EventLease { owner: "live-replica".to_string(), until: clock.now() + TimeDelta::hours(1) };
    store.record_event(&stored_event(2), std::slice::from_ref(&url), &live).await.unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let upkeep = tokio::spawn(first.clone().run_until(None, stopped));
    stop.send(true).unwrap();
    upkeep.await.unwrap();
    assert!(requests.try_recv().is_err(), "no attempt after the shutdown began");
    assert_eq!(logged(&store, &delivering).await, [(url.clone(), 1, Some(503), false)]);
    let expected = [(delivering.id.clone(), None), (idle.id.clone(), None), (stored_event(2).id, Some(live.clone()))];
    assert_eq!(leases(&store).await, BTreeMap::from(expected), "A's two events released, the replica's kept");

    let second = EventNotifier::new(Arc::new(SeaStore::connect(database).await.unwrap()), clock, policy(3));
    let second = Arc::new(second.with_pause(Arc::new(RecordedPauses::default())));
    second.add_subscriber(subscriber(&url));
    assert_eq!(second.resume_pending().await, 2, "both taken over without waiting for A's leases");
    let mut ids = vec![delivering.id.clone(), idle.id.clone()];
    ids.sort();
    assert_eq!(next_ids(&mut requests, 2).await, ids);
    assert!(requests.try_recv().is_err(), "each sent once");
    assert_eq!(logged(&store, &delivering).await, [(url.clone(), 1, Some(503), false), (url, 2, Some(204), true)]);
    let pending = store.unsettled_events().await.unwrap().pending;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].lease.as_ref(), Some(&live), "the replica's event is left to it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_on_sqlite_hands_its_events_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    a_clean_shutdown_hands_its_events_over_at_once(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_on_postgres_hands_its_events_over_at_once() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    a_clean_shutdown_hands_its_events_over_at_once(&server.create_database().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_raised_during_a_shutdown_is_stored_for_another_process_and_not_sent() {
    let setup = setup(3).await;
    let (url, mut requests) = receiver(0).await;
    let clock = Arc::new(ManualClock::new());
    let first = Arc::new(EventNotifier::new(setup.log.clone(), clock.clone(), policy(3)));
    first.add_subscriber(subscriber(&url));
    assert_eq!(first.shut_down(Duration::from_secs(60)).await, Some(0), "nothing held");
    let late = promoted(&first);
    first.notify(late.clone()).await;
    assert!(logged(&setup.log, &late).await.is_empty(), "not sent by the stopping process");
    let pending = setup.log.unsettled_events().await.unwrap().pending;
    assert_eq!(pending.len(), 1, "stored: {pending:?}");
    assert_eq!(pending[0].lease, Some(EventLease { owner: first.owner().to_string(), until: clock.now() }), "ended");

    let (second, log) = restarted(&setup, 3, clock.clone()).await;
    second.add_subscriber(subscriber(&url));
    clock.advance(TimeDelta::seconds(1));
    assert_eq!(second.resume_pending().await, 1, "taken over at the next pass");
    assert_eq!(next(&mut requests).await.event_id, late.id);
    assert!(requests.try_recv().is_err(), "sent once");
    assert!(log.unsettled_events().await.unwrap().pending.is_empty());
}

/// A delivery whose attempt is still under way when the grace runs out (its endpoint never answers) keeps its
/// event's lease, so no other notifier sends it while this process still may; the process's other events are
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_attempt_outlasts_the_shutdown_grace_keeps_its_lease() {
    let setup = setup(3).await;
    let (reached, mut reaching) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let reached = reached.clone();
            async move {
                reached.send(()).unwrap();
                std::future::pending::<StatusCode>().await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let clock = Arc::new(ManualClock::new());
    // a request timeout no test run reaches: the attempt is under way for as long as the test runs
    let patient = DeliveryPolicy { request_timeout: Duration::from_secs(3600), ..policy(3) };
    let first = Arc::new(EventNotifier::new(setup.log.clone(), clock.clone(), patient));
    first.add_subscriber(subscriber(&url));
    let hanging = promoted(&first);
    first.notify(hanging.clone()).await;
    tokio::time::timeout(Duration::from_secs(60), reaching.recv()).await.expect("the attempt is sent").unwrap();
    let idle = stored_event(1);
    let first_lease = EventLease { owner: first.owner().to_string(), until: clock.now() + TimeDelta::hours(1) };
    setup.log.record_event(&idle, std::slice::from_ref(&url), &first_lease).await.unwrap();

    // no grace: the attempt under way is still running
    assert_eq!(first.shut_down(Duration::ZERO).await, Some(1), "the idle event only");
    let until = clock.now() + TimeDelta::from_std(patient.lease()).unwrap();
    let held = EventLease { owner: first.owner().to_string(), until };
    assert_eq!(leases(&setup.log).await, BTreeMap::from([(hanging.id.clone(), Some(held)), (idle.id.clone(), None)]));
}
