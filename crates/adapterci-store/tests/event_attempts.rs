//! The outbound event delivery log on SQLite and a real PostgreSQL: attempts read back per event in order, and
//! the newest first across events; stored events read back unsettled, oldest first, until settled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::events::{EventAttempt, EventDeliveryLog, PendingEvent, RegistryEvent, RegistryEventKind};
use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use chrono::{TimeZone, Utc};

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

async fn unsettled_ids(log: &dyn EventDeliveryLog) -> Vec<String> {
    log.unsettled_events().await.unwrap().into_iter().map(|pending| pending.event.id).collect()
}

async fn stored_events_conform(store: &SeaStore) {
    let log: &dyn EventDeliveryLog = store;
    assert!(log.unsettled_events().await.unwrap().is_empty());
    // recorded out of order: read back oldest first, whatever the ids say
    log.record_event(&event("later", 2), &endpoints(&["http://b/hook", "http://a/hook"])).await.unwrap();
    log.record_event(&event("sooner", 1), &endpoints(&["http://a/hook"])).await.unwrap();
    let pending = log.unsettled_events().await.unwrap();
    assert_eq!(
        pending,
        [
            PendingEvent { event: event("sooner", 1), endpoints: endpoints(&["http://a/hook"]) },
            PendingEvent { event: event("later", 2), endpoints: endpoints(&["http://b/hook", "http://a/hook"]) },
        ],
        "the body and the endpoints read back as recorded, endpoints in their order"
    );
    // recording the same id again (another body, other endpoints) keeps the first row
    log.record_event(&event("later", 3), &endpoints(&["http://c/hook"])).await.unwrap();
    let pending = log.unsettled_events().await.unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert_eq!(
        pending[1],
        PendingEvent { event: event("later", 2), endpoints: endpoints(&["http://b/hook", "http://a/hook"]) }
    );

    log.settle_event("sooner").await.unwrap();
    assert_eq!(unsettled_ids(log).await, ["later"]);
    log.settle_event("sooner").await.unwrap();
    log.settle_event("never-recorded").await.unwrap();
    log.record_event(&event("sooner", 1), &endpoints(&["http://a/hook"])).await.unwrap();
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

async fn conforms(store: SeaStore) {
    stored_events_conform(&store).await;
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
