//! Outbound registry events delivered over real HTTP to a local receiver (an axum server on 127.0.0.1): the
//! body is signed with HMAC-SHA256, failed deliveries are retried with capped exponential backoff (the pauses are
//! recorded, not slept), every attempt lands in the delivery log of a real SQLite store, and `notify` reaches
//! every subscriber. The receiver signals each request on a channel: no test waits on a timer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapterci_controller::webhooks::sign_sha256;
use adapterci_core::events::{EventDeliveryLog, RegistryEvent, RegistryEventKind};
use adapterci_core::ports::SystemClock;
use adapterci_server::events::{
    DeliveryPolicy, EVENT_HEADER, EVENT_ID_HEADER, EventNotifier, EventSubscriber, Pause, SIGNATURE_HEADER,
};
use adapterci_store::SeaStore;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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

struct Setup {
    notifier: Arc<EventNotifier>,
    log: Arc<SeaStore>,
    pauses: Arc<RecordedPauses>,
    _dir: tempfile::TempDir,
}

async fn setup(max_attempts: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SeaStore::connect(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await.unwrap());
    let policy = DeliveryPolicy {
        max_attempts,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(3),
        request_timeout: Duration::from_secs(10),
    };
    let pauses = Arc::new(RecordedPauses::default());
    let notifier = Arc::new(EventNotifier::new(log.clone(), Arc::new(SystemClock), policy).with_pause(pauses.clone()));
    Setup { notifier, log, pauses, _dir: dir }
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
    setup.notifier.notify(event.clone());
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
    adapterci_server::events::PublishEvents(setup.notifier.clone()).gates_failed("run-42", &adapter, &report);
    let got = next(&mut requests).await;
    assert_eq!(got.event, "gate_failed");
    assert_eq!(got.signature, sign_sha256(SECRET, &[&got.body]));
    let event: RegistryEvent = serde_json::from_slice(&got.body).unwrap();
    assert_eq!((event.kind, event.adapter.as_str(), event.version), (RegistryEventKind::GateFailed, "support", 0));
    assert_eq!(event.run_id.as_deref(), Some("run-42"));
    assert_eq!(event.failed_gates, vec!["exact_match 0.5 < 0.8".to_string()], "only the failed gate");
}
