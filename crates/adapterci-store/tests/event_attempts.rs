//! The outbound event delivery log on SQLite and a real PostgreSQL: attempts read back per event in order, and
//! the newest first across events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::events::{EventAttempt, EventDeliveryLog, RegistryEventKind};
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

async fn conforms(store: SeaStore) {
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
