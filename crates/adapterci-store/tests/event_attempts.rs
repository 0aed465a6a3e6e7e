//! The outbound event delivery log on SQLite and a real PostgreSQL: attempts read back per event in order, and
//! the newest first across events; stored events read back unsettled, oldest first, until settled; an event is
//! taken over only once its lease has run out, by exactly one of the notifiers racing for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::events::{
    EventAttempt, EventDeliveryLog, EventLease, PendingEvent, RegistryEvent, RegistryEventKind,
};
use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

fn attempt(event: &str, number: u32, status: Option<u16>, delivered: bool) -> EventAttempt {
    EventAttempt {
        event_id: event.to_string(),
        kind: RegistryEventKind::Promoted,
        endpoint: "http://127.0.0.1:9/hook".to_string(),
        attempt: number,
        status,
        delivered,
        error: (!delivered).then(|| format!("http {status:?}")),
        at: Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, number).unwrap(),
    }
}

fn event(id: &str, minute: u32) -> RegistryEvent {
    RegistryEvent {
        id: id.to_string(),
        kind: RegistryEventKind::Promoted,
        adapter: "support".to_string(),
        version: 3,
        channel: Some("stable".to_string()),
        manifest_digest: None,
        run_id: None,
        failed_gates: vec!["exact_match 0.5 < 0.8".to_string()],
        at: Utc.with_ymd_and_hms(2026, 11, 28, 10, minute, 0).unwrap(),
    }
}

fn endpoints(urls: &[&str]) -> Vec<String> {
    urls.iter().map(|url| url.to_string()).collect()
}

/// 2026-11-28 12:00 plus `minutes`.
fn noon_plus(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

/// A lease of `owner` until noon plus `minutes`.
fn lease(owner: &str, minutes: i64) -> EventLease {
    EventLease { owner: owner.to_string(), until: noon_plus(minutes) }
}

fn pending(event: RegistryEvent, urls: &[&str], lease: EventLease) -> PendingEvent {
    PendingEvent { event, endpoints: endpoints(urls), lease: Some(lease) }
}

async fn unsettled_ids(log: &dyn EventDeliveryLog) -> Vec<String> {
    log.unsettled_events().await.unwrap().into_iter().map(|pending| pending.event.id).collect()
}

async fn stored_events_conform(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    assert!(log.unsettled_events().await.unwrap().is_empty());
    // recorded out of order: read back oldest first, whatever the ids say
    log.record_event(&event("later", 2), &endpoints(&["http://b/hook", "http://a/hook"]), &lease("a", 5))
        .await
        .unwrap();
    log.record_event(&event("sooner", 1), &endpoints(&["http://a/hook"]), &lease("b", 6)).await.unwrap();
    let pending_events = log.unsettled_events().await.unwrap();
    assert_eq!(
        pending_events,
        [
            pending(event("sooner", 1), &["http://a/hook"], lease("b", 6)),
            pending(event("later", 2), &["http://b/hook", "http://a/hook"], lease("a", 5)),
        ],
        "the body, the endpoints and the lease read back as recorded, endpoints in their order"
    );
    // recording the same id again (another body, other endpoints, another lease) keeps the first row
    log.record_event(&event("later", 3), &endpoints(&["http://c/hook"]), &lease("c", 9)).await.unwrap();
    let pending_events = log.unsettled_events().await.unwrap();
    assert_eq!(pending_events.len(), 2, "{pending_events:?}");
    assert_eq!(pending_events[1], pending(event("later", 2), &["http://b/hook", "http://a/hook"], lease("a", 5)));

    log.settle_event("sooner").await.unwrap();
    assert_eq!(unsettled_ids(log).await, ["later"]);
    log.settle_event("sooner").await.unwrap();
    log.settle_event("never-recorded").await.unwrap();
    log.record_event(&event("sooner", 1), &endpoints(&["http://a/hook"]), &lease("b", 6)).await.unwrap();
    assert_eq!(unsettled_ids(log).await, ["later"], "recording a settled event again does not reopen it");

    // a damaged row is an error that names the event, not a panic
    store.execute_unprepared("UPDATE registry_events SET body = '{not json' WHERE id = 'later'").await.unwrap();
    let error = log.unsettled_events().await.unwrap_err().to_string();
    assert!(error.contains("registry_events") && error.contains("later") && error.contains("body"), "{error}");
    store
        .execute_unprepared("UPDATE registry_events SET body = '{}', endpoints = '[' WHERE id = 'later'")
        .await
        .unwrap();
    let error = log.unsettled_events().await.unwrap_err().to_string();
    assert!(error.contains("later"), "{error}");
    log.settle_event("later").await.unwrap();
    assert!(log.unsettled_events().await.unwrap().is_empty());
}

/// The lease of `id` as unsettled_events reads it back.
async fn lease_of(log: &dyn EventDeliveryLog, id: &str) -> Option<EventLease> {
    let pending = log.unsettled_events().await.unwrap();
    pending.into_iter().find(|pending| pending.event.id == id).and_then(|pending| pending.lease)
}

async fn leases_conform(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    log.record_event(&event("leased", 0), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    let claim = |owner: &'static str, now: i64| async move {
        log.claim_event("leased", &lease(owner, now + 5), noon_plus(now)).await.unwrap()
    };
    assert!(!claim("b", 0).await, "held by its recorder");
    assert!(!claim("b", 5).await, "held up to the end of its lease, included");
    assert_eq!(lease_of(log, "leased").await, Some(lease("a", 5)), "a refused claim changes nothing");
    assert!(claim("b", 6).await, "taken over once the lease has run out");
    assert_eq!(lease_of(log, "leased").await, Some(lease("b", 11)));
    assert!(!claim("c", 7).await, "held by the new holder");
    assert!(!log.claim_event("never-recorded", &lease("c", 60), noon_plus(50)).await.unwrap());

    // settled: never taken over again, and its lease stays (who finished it)
    log.settle_event("leased").await.unwrap();
    assert!(!claim("c", 60).await);
    let kept = "UPDATE registry_events SET settled = settled WHERE id = 'leased' AND claimed_by = 'b'";
    assert_eq!(store.execute_unprepared(kept).await.unwrap(), 1, "settling keeps the lease");

    // an event stored before leases existed is free
    log.record_event(&event("legacy", 0), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    let unlease = "UPDATE registry_events SET claimed_by = NULL, lease_until = NULL WHERE id = 'legacy'";
    store.execute_unprepared(unlease).await.unwrap();
    assert_eq!(lease_of(log, "legacy").await, None);
    assert!(log.claim_event("legacy", &lease("b", 5), noon_plus(0)).await.unwrap());
    log.settle_event("legacy").await.unwrap();
}

/// Notifiers on their own connections race for one event whose lease ran out: exactly one gets it.
async fn one_of_racing_claims_wins(store: &SeaStore) {
    store.record_event(&event("raced", 0), &endpoints(&["http://a/hook"]), &lease("dead", 1)).await.unwrap();
    let mut racers = tokio::task::JoinSet::new();
    for racer in 0..8 {
        let store = store.clone();
        racers.spawn(async move {
            let lease = EventLease { owner: format!("racer-{racer}"), until: noon_plus(30) };
            store.claim_event("raced", &lease, noon_plus(2)).await.unwrap().then_some(lease.owner)
        });
    }
    let winners: Vec<String> = racers.join_all().await.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let holder = lease_of(store, "raced").await.unwrap();
    assert_eq!(holder, EventLease { owner: winners[0].clone(), until: noon_plus(30) });
    store.settle_event("raced").await.unwrap();
}

async fn conforms(store: SeaStore) {
    stored_events_conform(&store).await;
    leases_conform(&store).await;
    one_of_racing_claims_wins(&store).await;
    let log: &dyn EventDeliveryLog = &store;
    log.record_attempt(attempt("e1", 1, Some(500), false)).await.unwrap();
    log.record_attempt(attempt("e2", 1, None, false)).await.unwrap();
    log.record_attempt(attempt("e1", 2, Some(200), true)).await.unwrap();
    let e1 = log.attempts_of("e1").await.unwrap();
    assert_eq!(e1, [attempt("e1", 1, Some(500), false), attempt("e1", 2, Some(200), true)]);
    let recent: Vec<_> = log.recent_attempts(2).await.unwrap().into_iter().map(|a| (a.event_id, a.attempt)).collect();
    assert_eq!(recent, [("e1".to_string(), 2), ("e2".to_string(), 1)]);
    assert!(log.attempts_of("absent").await.unwrap().is_empty());
    // every kind reads back as itself
    for kind in [
        RegistryEventKind::Published,
        RegistryEventKind::Promoted,
        RegistryEventKind::RolledBack,
        RegistryEventKind::GateFailed,
    ] {
        let event = format!("kind-{}", kind.as_str());
        log.record_attempt(EventAttempt { kind, ..attempt(&event, 1, Some(204), true) }).await.unwrap();
        assert_eq!(log.attempts_of(&event).await.unwrap()[0].kind, kind);
    }
}

#[tokio::test]
async fn sqlite_event_log_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conforms(SeaStore::connect(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_event_log_conforms() {
    if !PostgresServer::available() {
        eprintln!("skipped: PostgreSQL binaries are not installed");
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    conforms(SeaStore::connect(&server.create_database().unwrap()).await.unwrap()).await;
}
