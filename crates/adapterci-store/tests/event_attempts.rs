//! The outbound event delivery log on SQLite and a real PostgreSQL: attempts read back per event in order, and
//! the newest first across events; stored events read back unsettled, oldest first, until settled, a damaged row
//! reported by its id without hiding the others; an event is taken over only once its lease has run out, by
//! exactly one of the notifiers racing for it, or at once when its holder released it, and its holder can claim
//! it again (renewing the lease); only the holder settles it, so a notifier whose event was taken over is
//! refused; pruning deletes only settled events older than its cutoff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::events::{
    EventAttempt, EventDeliveryLog, EventLease, PendingEvent, PrunedEvents, RegistryEvent, RegistryEventKind,
    UnsettledEvents,
};
use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::servers::postgres_or_skip;
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
    log.unsettled_events().await.unwrap().pending.into_iter().map(|pending| pending.event.id).collect()
}

async fn stored_events_conform(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    assert!(log.unsettled_events().await.unwrap().pending.is_empty());
    // recorded out of order: read back oldest first, whatever the ids say
    log.record_event(&event("later", 2), &endpoints(&["http://b/hook", "http://a/hook"]), &lease("a", 5))
        .await
        .unwrap();
    log.record_event(&event("sooner", 1), &endpoints(&["http://a/hook"]), &lease("b", 6)).await.unwrap();
    let pending_events = log.unsettled_events().await.unwrap().pending;
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
    let pending_events = log.unsettled_events().await.unwrap().pending;
    assert_eq!(pending_events.len(), 2, "{pending_events:?}");
    assert_eq!(pending_events[1], pending(event("later", 2), &["http://b/hook", "http://a/hook"], lease("a", 5)));

    assert!(log.settle_event("sooner", "b").await.unwrap());
    assert_eq!(unsettled_ids(log).await, ["later"]);
    assert!(log.settle_event("sooner", "b").await.unwrap(), "settling again changes nothing");
    assert!(!log.settle_event("never-recorded", "b").await.unwrap());
    log.record_event(&event("sooner", 1), &endpoints(&["http://a/hook"]), &lease("b", 6)).await.unwrap();
    assert_eq!(unsettled_ids(log).await, ["later"], "recording a settled event again does not reopen it");

    // a damaged row is skipped and reported by its id, naming what is damaged; the other rows still read back
    log.record_event(&event("intact", 4), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    store.execute_unprepared("UPDATE registry_events SET body = '{not json' WHERE id = 'later'").await.unwrap();
    let inserted = "INSERT INTO registry_events (id, kind, body, endpoints, created_at, settled) \
                    VALUES ('inserted', 'published', '{}', '[]', '2026-11-28T09:00:00+00:00', false)";
    store.execute_unprepared(inserted).await.unwrap();
    let unsettled = log.unsettled_events().await.unwrap();
    assert_eq!(unsettled.pending, [pending(event("intact", 4), &["http://a/hook"], lease("a", 5))]);
    let unreadable: Vec<&str> = unsettled.unreadable.iter().map(|row| row.id.as_str()).collect();
    assert_eq!(unreadable, ["inserted", "later"], "oldest first");
    assert!(unsettled.unreadable.iter().all(|row| row.reason.contains("registry_events")), "{unsettled:?}");
    assert!(unsettled.unreadable.iter().all(|row| row.reason.contains(&row.id) && row.reason.contains("body")));
    let body = serde_json::to_string(&event("later", 2)).unwrap();
    let damaged = format!("UPDATE registry_events SET body = '{body}', endpoints = '[' WHERE id = 'later'");
    store.execute_unprepared(&damaged).await.unwrap();
    let unsettled = log.unsettled_events().await.unwrap();
    assert_eq!(unsettled.pending.len(), 1);
    let later = unsettled.unreadable.iter().find(|row| row.id == "later").unwrap();
    assert!(later.reason.contains("endpoints"), "{later:?}");
    // stored before leases existed: no owner to settle it until a notifier takes it over
    assert!(!log.settle_event("inserted", "a").await.unwrap());
    assert!(log.claim_event("inserted", &lease("a", 5), noon_plus(0)).await.unwrap());
    for id in ["later", "inserted", "intact"] {
        assert!(log.settle_event(id, "a").await.unwrap(), "{id}");
    }
    assert_eq!(log.unsettled_events().await.unwrap(), UnsettledEvents::default());
}

/// SQLite keeps timestamps as text, so a damaged one can be written; the row fails to decode at all (not only its
/// JSON), and is still reported alone.
async fn a_damaged_timestamp_is_reported_alone(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    log.record_event(&event("fine", 1), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    log.record_event(&event("bad-time", 2), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    store.execute_unprepared("UPDATE registry_events SET lease_until = 'soon' WHERE id = 'bad-time'").await.unwrap();
    let unsettled = log.unsettled_events().await.unwrap();
    assert_eq!(unsettled.pending, [pending(event("fine", 1), &["http://a/hook"], lease("a", 5))]);
    assert_eq!(unsettled.unreadable.len(), 1, "{unsettled:?}");
    assert_eq!(unsettled.unreadable[0].id, "bad-time");
    assert!(unsettled.unreadable[0].reason.contains("registry_events"), "{unsettled:?}");
}

/// The lease of `id` as unsettled_events reads it back.
async fn lease_of(log: &dyn EventDeliveryLog, id: &str) -> Option<EventLease> {
    let pending = log.unsettled_events().await.unwrap().pending;
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
    assert!(log.settle_event("leased", "b").await.unwrap());
    assert!(!claim("c", 60).await);
    let kept = "UPDATE registry_events SET settled = settled WHERE id = 'leased' AND claimed_by = 'b'";
    assert_eq!(store.execute_unprepared(kept).await.unwrap(), 1, "settling keeps the lease");

    // an event stored before leases existed is free
    log.record_event(&event("legacy", 0), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    let unlease = "UPDATE registry_events SET claimed_by = NULL, lease_until = NULL WHERE id = 'legacy'";
    store.execute_unprepared(unlease).await.unwrap();
    assert_eq!(lease_of(log, "legacy").await, None);
    assert!(log.claim_event("legacy", &lease("b", 5), noon_plus(0)).await.unwrap());
    assert!(log.settle_event("legacy", "b").await.unwrap());

    // the holder claiming its own event again renews the lease, before it runs out (a stable instance id taking
    // back what its previous life held); any other owner is still refused
    log.record_event(&event("renewed", 0), &endpoints(&["http://a/hook"]), &lease("x", 30)).await.unwrap();
    assert!(!log.claim_event("renewed", &lease("y", 40), noon_plus(1)).await.unwrap());
    assert!(log.claim_event("renewed", &lease("x", 40), noon_plus(1)).await.unwrap(), "x takes back its own");
    assert_eq!(lease_of(log, "renewed").await, Some(lease("x", 40)));
    assert!(!log.claim_event("renewed", &lease("y", 50), noon_plus(35)).await.unwrap(), "held till 40 now");
    assert!(log.settle_event("renewed", "x").await.unwrap());
    assert!(!log.claim_event("renewed", &lease("x", 60), noon_plus(41)).await.unwrap(), "settled: not even x");
}

/// Settling is the holder's: a notifier whose lease ran out while it delivered, and whose event another has taken
/// over, is refused and changes nothing; the new holder settles it; settling twice is harmless; a holder whose
/// lease ran out with nobody taking over still settles.
async fn settling_conforms(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    log.record_event(&event("taken", 0), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    assert!(log.claim_event("taken", &lease("b", 16), noon_plus(6)).await.unwrap(), "a's lease ran out");
    assert!(!log.settle_event("taken", "a").await.unwrap(), "a no longer holds it");
    assert_eq!(unsettled_ids(log).await, ["taken"], "a refused settle changes nothing");
    assert_eq!(lease_of(log, "taken").await, Some(lease("b", 16)));
    assert!(log.settle_event("taken", "b").await.unwrap(), "the new holder settles it");
    assert!(log.settle_event("taken", "b").await.unwrap(), "settling twice is harmless");
    assert!(!log.settle_event("taken", "a").await.unwrap(), "still refused once settled");
    let kept = "UPDATE registry_events SET settled = settled WHERE id = 'taken' AND settled AND claimed_by = 'b'";
    assert_eq!(store.execute_unprepared(kept).await.unwrap(), 1, "settled, b's lease kept as history");

    log.record_event(&event("late", 0), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
    assert!(log.settle_event("late", "a").await.unwrap(), "a lease run out that nobody took over is still a's");
    assert!(unsettled_ids(log).await.is_empty());
}

/// A notifier shutting down gives its leases up at once: its unsettled events but those it keeps (still being
/// delivered) are left unclaimed, and another notifier takes them over long before their leases would have run
/// out; another notifier's event, and a settled one, keep their leases.
async fn releases_conform(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    for (id, owner) in [("a-open", "a"), ("a-kept", "a"), ("a-settled", "a"), ("b-open", "b")] {
        log.record_event(&event(id, 0), &endpoints(&["http://a/hook"]), &lease(owner, 30)).await.unwrap();
    }
    assert!(log.settle_event("a-settled", "a").await.unwrap());
    assert!(!log.claim_event("a-open", &lease("c", 32), noon_plus(1)).await.unwrap(), "held by a before");

    let kept = ["a-kept".to_string()];
    assert_eq!(log.release_events("a", &kept, noon_plus(1)).await.unwrap(), 1, "a-open only");
    assert_eq!(lease_of(log, "a-open").await, None, "unclaimed");
    let released = "UPDATE registry_events SET settled = settled \
                    WHERE id = 'a-open' AND claimed_by IS NULL AND lease_until IS NOT NULL";
    assert_eq!(store.execute_unprepared(released).await.unwrap(), 1, "its lease ends when it was released");
    assert_eq!(lease_of(log, "a-kept").await, Some(lease("a", 30)), "kept: still being delivered");
    assert_eq!(lease_of(log, "b-open").await, Some(lease("b", 30)), "another notifier's lease is untouched");
    let settled = "UPDATE registry_events SET settled = settled WHERE id = 'a-settled' AND claimed_by = 'a'";
    assert_eq!(store.execute_unprepared(settled).await.unwrap(), 1, "a settled event keeps its lease");

    assert!(log.claim_event("a-open", &lease("c", 32), noon_plus(2)).await.unwrap(), "taken over at once");
    assert!(!log.claim_event("b-open", &lease("c", 32), noon_plus(2)).await.unwrap());
    assert_eq!(log.release_events("a", &[], noon_plus(3)).await.unwrap(), 1, "a-kept: a-open is c's now");
    assert_eq!(lease_of(log, "a-open").await, Some(lease("c", 32)), "a release never takes another's event");
    assert_eq!(log.release_events("a", &[], noon_plus(3)).await.unwrap(), 0, "nothing left to release");
    assert!(!log.settle_event("a-kept", "a").await.unwrap(), "released: a holds it no more");
    assert!(log.claim_event("a-kept", &lease("c", 32), noon_plus(4)).await.unwrap());
    for (id, owner) in [("a-open", "c"), ("a-kept", "c"), ("b-open", "b")] {
        assert!(log.settle_event(id, owner).await.unwrap(), "{id}");
    }
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
    assert!(store.settle_event("raced", &winners[0]).await.unwrap());
}

/// Whether `id` is stored, settled or not.
async fn is_stored(store: &SeaStore, id: &str) -> bool {
    let touch = format!("UPDATE registry_events SET settled = settled WHERE id = '{id}'");
    store.execute_unprepared(&touch).await.unwrap() == 1
}

/// Pruning on an empty store: only settled events created before the cutoff go, with all their attempts, and the
/// attempts before it that belong to no stored event.
async fn pruning_conforms(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    let day = |day: u32| Utc.with_ymd_and_hms(2026, 11, day, 10, 0, 0).unwrap();
    let cutoff = day(10);
    let stored = |id: &str, at: DateTime<Utc>| RegistryEvent { at, ..event(id, 0) };
    let attempted = |id: &str, number: u32, at: DateTime<Utc>| EventAttempt { at, ..attempt(id, number, None, false) };
    for (id, created, settled) in [
        ("old-settled", day(1), true),
        ("old-unsettled", day(1), false),
        ("settled-at-cutoff", cutoff, true),
        ("new-settled", day(20), true),
    ] {
        log.record_event(&stored(id, created), &endpoints(&["http://a/hook"]), &lease("a", 5)).await.unwrap();
        // attempts made after the cutoff: an event's age, not its attempts', decides
        log.record_attempt(attempted(id, 1, day(20))).await.unwrap();
        if settled {
            assert!(log.settle_event(id, "a").await.unwrap());
        }
    }
    log.record_attempt(attempted("old-settled", 2, day(21))).await.unwrap();
    log.record_attempt(attempted("orphan-old", 1, day(1))).await.unwrap();
    log.record_attempt(attempted("orphan-new", 1, day(20))).await.unwrap();

    let pruned = log.prune_settled(cutoff).await.unwrap();
    assert_eq!(pruned, PrunedEvents { events: 1, attempts: 3 }, "old-settled with its two attempts, orphan-old");
    assert!(!is_stored(store, "old-settled").await);
    assert!(log.attempts_of("old-settled").await.unwrap().is_empty());
    assert!(log.attempts_of("orphan-old").await.unwrap().is_empty());
    for kept in ["old-unsettled", "settled-at-cutoff", "new-settled"] {
        assert!(is_stored(store, kept).await, "{kept}");
        assert_eq!(log.attempts_of(kept).await.unwrap().len(), 1, "{kept}");
    }
    assert_eq!(log.attempts_of("orphan-new").await.unwrap().len(), 1);
    assert_eq!(unsettled_ids(log).await, ["old-unsettled"]);
    assert_eq!(log.prune_settled(cutoff).await.unwrap(), PrunedEvents::default(), "nothing left to prune");
    let pruned = log.prune_settled(day(25)).await.unwrap();
    assert_eq!(pruned, PrunedEvents { events: 2, attempts: 3 }, "the rest of the settled, and orphan-new");
    assert_eq!(unsettled_ids(log).await, ["old-unsettled"], "unsettled, whatever its age");
}

async fn conforms(store: SeaStore) {
    stored_events_conform(&store).await;
    leases_conform(&store).await;
    releases_conform(&store).await;
    settling_conforms(&store).await;
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
    let store = SeaStore::connect(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await.unwrap();
    conforms(store.clone()).await;
    a_damaged_timestamp_is_reported_alone(&store).await;
    let pruned = SeaStore::connect(&format!("sqlite://{}/p.db?mode=rwc", dir.path().display())).await.unwrap();
    pruning_conforms(&pruned).await;
}

#[tokio::test]
async fn postgres_event_log_conforms() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    conforms(SeaStore::connect(&server.create_database().unwrap()).await.unwrap()).await;
    pruning_conforms(&SeaStore::connect(&server.create_database().unwrap()).await.unwrap()).await;
}
