//! Retention on SQLite and a real PostgreSQL: the newest versions, versions a channel points at (pinned or not)
//! and tagged versions stay; the rest leave the index; history, rollback and version numbering stay sound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::channels::{ChannelName, ChannelStore, PromoteRequest, RollbackTarget, TagName, VersionIdentity};
use adapterci_core::ports::{AdapterIndex, NewAdapterVersion};
use adapterci_core::retention::{RetentionPolicy, VersionRetention};
use adapterci_core::{AdapterName, Digest};
use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::servers::postgres_or_skip;

fn name() -> AdapterName {
    AdapterName::new("support").unwrap()
}

async fn record(store: &SeaStore, content: &str) -> u64 {
    let version = NewAdapterVersion {
        name: name(),
        manifest_digest: Digest::of(content.as_bytes()),
        base_model_digest: Digest::of(b"base"),
        run_id: None,
    };
    let identity =
        VersionIdentity { content_digest: Digest::of(content.as_bytes()), base_binding: Digest::of(b"base") };
    store.record_version_once(version, identity).await.unwrap().0.version
}

async fn promote(store: &SeaStore, channel: &str, version: u64) {
    let request = PromoteRequest {
        adapter: name(),
        channel: ChannelName::new(channel).unwrap(),
        version,
        allow_base_change: false,
    };
    store.promote(request).await.unwrap();
}

async fn versions(store: &SeaStore) -> Vec<u64> {
    store.list_versions(&name()).await.unwrap().iter().map(|record| record.version).collect()
}

async fn conforms(store: SeaStore) {
    for index in 1..=8 {
        assert_eq!(record(&store, &format!("content {index}")).await, index);
    }
    promote(&store, "stable", 2).await;
    promote(&store, "stable", 3).await;
    promote(&store, "canary", 4).await;
    store.set_pinned(&name(), &ChannelName::new("canary").unwrap(), true).await.unwrap();
    store.tag_version(&name(), 1, &TagName::new("golden").unwrap()).await.unwrap();

    assert!(RetentionPolicy::keep_last(0).is_err(), "the latest version is always kept");
    let policy = RetentionPolicy::keep_last(2).unwrap();
    let pruned = store.prune_versions(&name(), policy).await.unwrap();
    assert_eq!(pruned, [2, 5, 6], "v7-8 newest, v3 stable, v4 pinned canary, v1 tagged: the rest go");
    assert_eq!(versions(&store).await, [1, 3, 4, 7, 8]);
    assert!(store.prune_versions(&name(), policy).await.unwrap().is_empty(), "a second pass changes nothing");

    // The history still names v2; rolling back skips it (it is gone) and finds nothing older to serve.
    let stable = ChannelName::new("stable").unwrap();
    assert_eq!(store.channel_history(&name(), &stable).await.unwrap().len(), 2);
    assert!(store.rollback(&name(), &stable, RollbackTarget::Previous).await.is_err());
    assert_eq!(store.rollback(&name(), &stable, RollbackTarget::Version(1)).await.unwrap().version, 1);
    assert!(store.get_version(&name(), 2).await.unwrap().is_none());
    assert_eq!(record(&store, "content 9").await, 9, "numbers are never reused");
    assert_eq!(store.prune_versions(&name(), RetentionPolicy::keep_last(1).unwrap()).await.unwrap(), [3, 7, 8]);
    assert_eq!(versions(&store).await, [1, 4, 9], "v1 tagged and now on stable, v4 pinned, v9 newest");
}

#[tokio::test]
async fn sqlite_retention_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conforms(SeaStore::connect(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_retention_conforms() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    conforms(SeaStore::connect(&server.create_database().unwrap()).await.unwrap()).await;
}

/// Promotes of old versions to new channels race pruning passes: whatever wins, no channel points at a pruned
/// version, and every promote either succeeded or was refused because its version is gone.
async fn promotes_race_pruning(store: SeaStore) {
    let store = std::sync::Arc::new(store);
    for index in 1..=12 {
        record(&store, &format!("content {index}")).await;
    }
    let policy = RetentionPolicy::keep_last(1).unwrap();
    let mut tasks = Vec::new();
    for version in 1..=8u64 {
        let promoter = store.clone();
        tasks.push(tokio::spawn(async move {
            let channel = ChannelName::new(format!("c{version}")).unwrap();
            let request = PromoteRequest { adapter: name(), channel, version, allow_base_change: false };
            match promoter.promote(request).await {
                Ok(_) => true,
                Err(adapterci_core::channels::ChannelError::NoSuchVersion { .. }) => false,
                Err(other) => panic!("promote of v{version}: {other}"),
            }
        }));
        let pruner = store.clone();
        tasks.push(tokio::spawn(async move {
            pruner.prune_versions(&name(), policy).await.expect("a prune never fails on a race");
            false
        }));
    }
    let mut promoted = 0;
    for task in tasks {
        promoted += usize::from(task.await.unwrap());
    }
    let kept = versions(&store).await;
    let channels = store.list_channels(&name()).await.unwrap();
    assert_eq!(channels.len(), promoted, "every successful promote left its channel");
    for channel in &channels {
        assert!(
            kept.contains(&channel.version),
            "{} points at pruned v{}: kept {kept:?}",
            channel.channel,
            channel.version
        );
    }
    store.prune_versions(&name(), policy).await.unwrap();
    let mut expected: Vec<u64> = channels.iter().map(|channel| channel.version).chain([12]).collect();
    expected.sort_unstable();
    assert_eq!(versions(&store).await, expected, "after a last pass exactly the referenced and the newest stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_promotes_race_pruning() {
    let dir = tempfile::tempdir().unwrap();
    promotes_race_pruning(
        SeaStore::connect(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display())).await.unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_promotes_race_pruning() {
    if !postgres_or_skip(module_path!()) {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("start PostgreSQL");
    promotes_race_pruning(SeaStore::connect(&server.create_database().unwrap()).await.unwrap()).await;
}
