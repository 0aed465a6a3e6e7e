//! Registry administration over real HTTP to a started adapterd on the embedded defaults (SQLite, local files):
//! promote, rollback (previous and named), pin, deprecate and the channel list through `ApiClient`, with the
//! refusals a user meets (unknown adapter, version or channel, a bad channel name, a pinned channel, a deprecated
//! version, a version bound to another base), garbage collection that deletes an orphan blob only, and the
//! outbound events that promotions and rollbacks send to a local receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use adapterci_api::{ApiClient, ApiError, ErrorCode, PromoteBody, RollbackBody};
use adapterci_core::Digest;
use adapterci_core::events::{RegistryEvent, RegistryEventKind};
use adapterci_server::events::{EVENT_HEADER, EventSubscriber};
use adapterci_server::{RunningServer, ServerConfig};
use adapterci_testkit::registry_conformance::publish_request;

async fn start(dir: &Path) -> (RunningServer, PathBuf) {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).expect("tiny model written");
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.tick_ms = 0;
    config.refresh_secs = 0;
    config.no_worker = true;
    let registry_root = PathBuf::from(config.registry_url());
    (adapterci_server::start(config).await.expect("adapterd starts"), registry_root)
}

/// Publishes version after version of `support`; `other_base` binds one to another base model.
async fn publish(server: &RunningServer, seed: u8, other_base: bool) -> u64 {
    let mut request = publish_request("support", &[seed; 64]);
    if other_base {
        request.lineage.base_model_digest = Digest::of(b"another base model");
    }
    server.state.controller.ports().registry.publish(request).await.expect("publish").version
}

/// The status and message of a refused call.
fn refusal<T: std::fmt::Debug>(result: Result<T, ApiError>) -> (ErrorCode, String) {
    match result {
        Err(ApiError::Http { error, .. }) => (error.code, error.message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn promote_body(version: u64) -> PromoteBody {
    PromoteBody { version, allow_base_change: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_promoted_rolled_back_pinned_and_refused_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    for seed in 1..=3 {
        publish(&server, seed, false).await;
    }
    assert_eq!(publish(&server, 4, true).await, 4);

    for version in [1, 2, 3] {
        let info = client.promote("support", "stable", &promote_body(version)).await.expect("promote");
        assert_eq!((info.channel.as_str(), info.version, info.pinned), ("stable", version, false));
    }
    let (code, message) = refusal(client.promote("support", "stable", &promote_body(4)).await);
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    assert!(message.contains("bound to base") && message.contains("--allow-base-change"), "{message}");

    let rolled = client.rollback("support", "stable", &RollbackBody::default()).await.expect("rollback");
    assert_eq!(rolled.version, 2, "rollback goes to the version served before");
    let named = client.rollback("support", "stable", &RollbackBody { version: Some(3) }).await.expect("rollback");
    assert_eq!(named.version, 3);

    assert!(client.pin("support", "stable", true).await.expect("pin").pinned);
    let (code, message) = refusal(client.promote("support", "stable", &promote_body(1)).await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("pinned to v3"), "{message}");
    assert!(!client.pin("support", "stable", false).await.expect("unpin").pinned);

    let deprecated = client.deprecate("support", 1, true).await.expect("deprecate");
    assert!(deprecated.deprecated);
    let (code, message) = refusal(client.promote("support", "stable", &promote_body(1)).await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("v1 is deprecated"), "{message}");

    client.promote("support", "canary", &promote_body(2)).await.expect("promote to canary");
    let channels = client.list_channels("support").await.expect("channels");
    let listed: Vec<_> = channels.iter().map(|c| (c.channel.as_str(), c.version)).collect();
    assert_eq!(listed, [("canary", 2), ("stable", 3)]);

    // What a user gets wrong is named, with the right status.
    let check = |(code, message): (ErrorCode, String), expect_code: ErrorCode, expect: &str| {
        assert_eq!(code, expect_code, "{message}");
        assert!(message.contains(expect), "expected {expect:?} in {message:?}");
    };
    check(
        refusal(client.promote("absent", "stable", &promote_body(1)).await),
        ErrorCode::NotFound,
        "adapter \"absent\" has no published version",
    );
    check(
        refusal(client.promote("support", "stable", &promote_body(9)).await),
        ErrorCode::NotFound,
        "adapter support has no version 9",
    );
    check(
        refusal(client.rollback("support", "nightly", &RollbackBody::default()).await),
        ErrorCode::NotFound,
        "adapter support has no channel nightly",
    );
    check(refusal(client.pin("support", "../stable", true).await), ErrorCode::InvalidRequest, "channel \"../stable\"");
    check(refusal(client.deprecate("support", 7, true).await), ErrorCode::NotFound, "has no version 7");
    check(refusal(client.list_channels("Bad Name").await), ErrorCode::InvalidRequest, "Bad Name");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_over_http_deletes_the_orphan_and_with_retention_the_pruned_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, registry_root) = start(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    for seed in 1..=3 {
        publish(&server, seed, false).await;
    }
    client.promote("support", "stable", &promote_body(1)).await.unwrap();
    let orphan = Digest::of(b"left by a publish that crashed");
    let registry = server.state.registry.clone().expect("adapterd has its registry");
    let orphan_path = registry_root.join(registry.blob_location(&orphan).as_ref());
    std::fs::write(&orphan_path, b"left by a publish that crashed").unwrap();

    let young = client.collect_garbage(3600, None).await.expect("gc");
    assert_eq!((young.kept_young, young.deleted.len()), (1, 0), "a young orphan is kept: {young:?}");
    let swept = client.collect_garbage(0, None).await.expect("gc");
    assert_eq!(swept.deleted, [orphan.to_string()]);
    assert_eq!(swept.referenced, swept.scanned - 1, "{swept:?}");
    assert!(!orphan_path.exists());

    let (code, message) = refusal(client.collect_garbage(0, Some(0)).await);
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("keep_last must be at least 1"), "{message}");
    let retained = client.collect_garbage(0, Some(1)).await.expect("gc with retention");
    assert_eq!(retained.pruned, ["support@2"], "v3 is the newest, v1 is on stable: {retained:?}");
    assert_eq!(retained.deleted.len(), 2, "v2's weights and manifest: {retained:?}");
    let registry = &server.state.controller.ports().registry;
    let name = adapterci_testkit::registry_conformance::adapter_name("support");
    for version in [1, 3] {
        for file in &registry.get(&name, version).await.unwrap().expect("kept").manifest.files {
            registry.fetch_blob(&file.digest).await.expect("the blobs of kept versions survive");
        }
    }
    assert!(registry.get(&name, 2).await.unwrap().is_none());
    server.shutdown().await;
}

/// A local receiver answering 204 to every request; each request's event header and body arrive on the channel.
async fn event_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    use axum::http::HeaderMap;
    let (sender, requests) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let kind = headers.get(EVENT_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                sender.send((kind, body.to_vec())).unwrap();
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_over_http_send_signed_events_to_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    let (url, mut requests) = event_receiver().await;
    let events = server.state.events.clone().expect("adapterd has an event notifier");
    events.add_subscriber(EventSubscriber { url, secret: b"s".to_vec() });
    publish(&server, 1, false).await;
    publish(&server, 2, false).await;

    client.promote("support", "stable", &promote_body(1)).await.unwrap();
    client.promote("support", "stable", &promote_body(2)).await.unwrap();
    client.rollback("support", "stable", &RollbackBody::default()).await.unwrap();
    let mut received = Vec::new();
    for _ in 0..3 {
        let request = tokio::time::timeout(std::time::Duration::from_secs(60), requests.recv()).await;
        let (kind, body) = request.expect("an event arrives").unwrap();
        let event: RegistryEvent = serde_json::from_slice(&body).unwrap();
        assert_eq!((event.adapter.as_str(), event.channel.as_deref()), ("support", Some("stable")));
        received.push((kind, event.kind, event.version));
    }
    // Deliveries run in the background, so their order is not fixed.
    let mut kinds: Vec<_> = received.iter().map(|(header, kind, version)| (header.as_str(), *kind, *version)).collect();
    kinds.sort_by_key(|(header, _, version)| (*version, *header));
    assert_eq!(
        kinds,
        [
            ("promoted", RegistryEventKind::Promoted, 1),
            ("rolled_back", RegistryEventKind::RolledBack, 1),
            ("promoted", RegistryEventKind::Promoted, 2)
        ]
    );
    // Each attempt is logged once the receiver has answered: poll the log (a bounded number of requests).
    let mut logged = Vec::new();
    for _ in 0..10_000 {
        logged = client.list_event_attempts(10).await.unwrap();
        if logged.len() == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(logged.len(), 3, "{logged:?}");
    assert!(logged.iter().all(|a| a.delivered && a.status == Some(204) && a.attempt == 1), "{logged:?}");
    let mut kinds: Vec<_> = logged.iter().map(|a| a.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["promoted", "promoted", "rolled_back"]);
    server.shutdown().await;
}
