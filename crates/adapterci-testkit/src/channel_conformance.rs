//! The channel cases of the metadata store conformance suite (listed in `store_conformance::cases`): promote,
//! rollback to the previous or a named version, pin, deprecate, tags, base binding, the atomic identity check
//! of `record_version_once`, and promotes racing each other.

use std::sync::Arc;

use adapterci_core::channels::{
    ChannelAction, ChannelError, ChannelName, PromoteRequest, RollbackTarget, TagName, VersionIdentity,
};
use adapterci_core::ports::{MetadataStore, NewAdapterVersion};
use adapterci_core::{AdapterName, Digest};

fn adapter(name: &str) -> AdapterName {
    AdapterName::new(name).expect("a valid adapter name")
}

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("a valid channel name")
}

fn identity(content: &str, base: &str) -> VersionIdentity {
    VersionIdentity { content_digest: Digest::of(content.as_bytes()), base_binding: Digest::of(base.as_bytes()) }
}

/// Records a version of `name` whose content is `content`, bound to `base`; returns its number.
async fn record<S: MetadataStore>(store: &S, name: &str, content: &str, base: &str) -> u64 {
    let version = NewAdapterVersion {
        name: adapter(name),
        manifest_digest: Digest::of(format!("manifest of {content}").as_bytes()),
        base_model_digest: Digest::of(b"base model file"),
        run_id: None,
    };
    store.record_version_once(version, identity(content, base)).await.expect("record").0.version
}

fn promote(name: &str, channel_name: &str, version: u64) -> PromoteRequest {
    PromoteRequest { adapter: adapter(name), channel: channel(channel_name), version, allow_base_change: false }
}

async fn served<S: MetadataStore>(store: &S, name: &str, channel_name: &str) -> Option<u64> {
    store.get_channel(&adapter(name), &channel(channel_name)).await.expect("get_channel").map(|record| record.version)
}

pub async fn channels_promote_roll_back_pin_and_deprecate<S: MetadataStore>(store: Arc<S>) {
    let (support, stable) = (adapter("support"), channel("stable"));
    for content in ["one", "two", "three"] {
        record(&*store, "support", content, "base-a").await;
    }
    assert_eq!(served(&*store, "support", "stable").await, None);
    for version in 1..=3 {
        let record = store.promote(promote("support", "stable", version)).await.expect("promote");
        assert_eq!((record.version, record.pinned), (version, false));
        assert_eq!(record.base_binding, Digest::of(b"base-a"));
    }
    let previous = |store: Arc<S>| {
        let (support, stable) = (support.clone(), stable.clone());
        async move { store.rollback(&support, &stable, RollbackTarget::Previous).await }
    };
    assert_eq!(previous(store.clone()).await.expect("rollback").version, 2);
    assert_eq!(previous(store.clone()).await.expect("rollback").version, 1, "rolling back again goes further");
    match previous(store.clone()).await {
        Err(err @ ChannelError::NothingToRollBackTo { current: 1, .. }) => {
            assert!(err.to_string().contains("no earlier version"), "{err}")
        }
        other => panic!("expected nothing to roll back to, got {other:?}"),
    }
    let named = store.rollback(&support, &stable, RollbackTarget::Version(3)).await.expect("rollback to v3");
    assert_eq!(named.version, 3);
    let again = store.promote(promote("support", "stable", 3)).await.expect("promote to the current version");
    assert_eq!((again.version, again.updated_at), (named.version, named.updated_at), "a repeated promote is a no-op");
    let history = store.channel_history(&support, &stable).await.expect("history");
    let moves: Vec<_> = history.iter().map(|event| (event.action, event.from_version, event.to_version)).collect();
    use ChannelAction::{Promote, Rollback};
    assert_eq!(
        moves,
        [
            (Promote, None, 1),
            (Promote, Some(1), 2),
            (Promote, Some(2), 3),
            (Rollback, Some(3), 2),
            (Rollback, Some(2), 1)
        ]
        .into_iter()
        .chain([(Rollback, Some(1), 3)])
        .collect::<Vec<_>>()
    );

    assert!(store.set_pinned(&support, &stable, true).await.expect("pin").pinned);
    match store.promote(promote("support", "stable", 1)).await {
        Err(err @ ChannelError::Pinned { version: 3, .. }) => assert!(err.to_string().contains("pinned"), "{err}"),
        other => panic!("expected a refusal of the pinned channel, got {other:?}"),
    }
    assert!(matches!(previous(store.clone()).await, Err(ChannelError::Pinned { .. })));
    assert_eq!(served(&*store, "support", "stable").await, Some(3), "a refused change changes nothing");
    assert!(!store.set_pinned(&support, &stable, false).await.expect("unpin").pinned);

    store.set_deprecated(&support, 2, true).await.expect("deprecate");
    assert_eq!(store.deprecated_versions(&support).await.expect("deprecated"), [2]);
    assert!(matches!(
        store.promote(promote("support", "stable", 2)).await,
        Err(ChannelError::Deprecated { version: 2, .. })
    ));
    assert_eq!(previous(store.clone()).await.expect("rollback").version, 1, "rollback skips a deprecated version");
    store.set_deprecated(&support, 2, false).await.expect("undeprecate");
    assert!(store.deprecated_versions(&support).await.expect("deprecated").is_empty());

    assert!(matches!(
        store.promote(promote("support", "stable", 9)).await,
        Err(ChannelError::NoSuchVersion { version: 9, .. })
    ));
    assert!(matches!(store.set_deprecated(&support, 9, true).await, Err(ChannelError::NoSuchVersion { .. })));
    assert!(matches!(
        store.rollback(&support, &channel("absent"), RollbackTarget::Previous).await,
        Err(ChannelError::NoSuchChannel { .. })
    ));
    assert!(matches!(
        store.set_pinned(&support, &channel("absent"), true).await,
        Err(ChannelError::NoSuchChannel { .. })
    ));
    store.promote(promote("support", "canary", 2)).await.expect("promote to canary");
    let listed: Vec<_> = store.list_channels(&support).await.expect("list").into_iter().map(|c| c.channel).collect();
    assert_eq!(listed, [channel("canary"), channel("stable")]);
}

pub async fn promotion_across_bases_is_refused_unless_allowed<S: MetadataStore>(store: Arc<S>) {
    let v1 = record(&*store, "support", "one", "base-a").await;
    let v2 = record(&*store, "support", "two", "base-b").await;
    store.promote(promote("support", "stable", v1)).await.expect("promote v1");
    match store.promote(promote("support", "stable", v2)).await {
        Err(err @ ChannelError::BaseMismatch(_)) => {
            let message = err.to_string();
            for expected in [Digest::of(b"base-a").to_string(), Digest::of(b"base-b").to_string()] {
                assert!(message.contains(&expected), "the refusal names both bases: {message}");
            }
            assert!(message.contains("--allow-base-change"), "the refusal says how to proceed: {message}");
        }
        other => panic!("expected a base mismatch, got {other:?}"),
    }
    assert_eq!(served(&*store, "support", "stable").await, Some(v1));
    // A new channel takes any base; a deliberate move changes the channel's base.
    assert_eq!(
        store.promote(promote("support", "canary", v2)).await.expect("canary").base_binding,
        Digest::of(b"base-b")
    );
    let moved = store.promote(PromoteRequest { allow_base_change: true, ..promote("support", "stable", v2) }).await;
    assert_eq!(moved.expect("allowed move").base_binding, Digest::of(b"base-b"));
    // Rolling back never crosses bases either.
    assert!(matches!(
        store.rollback(&adapter("support"), &channel("stable"), RollbackTarget::Version(v1)).await,
        Err(ChannelError::BaseMismatch(_))
    ));
    assert!(matches!(
        store.rollback(&adapter("support"), &channel("stable"), RollbackTarget::Previous).await,
        Err(ChannelError::NothingToRollBackTo { .. })
    ));
}

pub async fn tags_name_one_version_for_good<S: MetadataStore>(store: Arc<S>) {
    let support = adapter("support");
    let gold = TagName::new("gold").expect("tag");
    record(&*store, "support", "one", "base").await;
    record(&*store, "support", "two", "base").await;
    assert_eq!(store.resolve_tag(&support, &gold).await.expect("resolve"), None);
    store.tag_version(&support, 1, &gold).await.expect("tag");
    store.tag_version(&support, 1, &gold).await.expect("the same tag again is a no-op");
    match store.tag_version(&support, 2, &gold).await {
        Err(err @ ChannelError::TagTaken { existing: 1, .. }) => assert!(err.to_string().contains("v1"), "{err}"),
        other => panic!("expected the tag to be taken, got {other:?}"),
    }
    assert!(matches!(store.tag_version(&support, 7, &gold).await, Err(ChannelError::NoSuchVersion { .. })));
    let beta = TagName::new("beta").expect("tag");
    store.tag_version(&support, 2, &beta).await.expect("tag");
    assert_eq!(store.resolve_tag(&support, &gold).await.expect("resolve"), Some(1));
    assert_eq!(store.list_tags(&support).await.expect("list"), [(beta, 2), (gold, 1)]);
}

pub async fn identical_publishes_racing_make_one_version<S: MetadataStore + 'static>(store: Arc<S>) {
    let tasks: Vec<_> = (0..8)
        .map(|index| {
            let store = store.clone();
            tokio::spawn(async move {
                // Each racer's manifest differs (its time), its identity does not.
                let version = NewAdapterVersion {
                    name: adapter("support"),
                    manifest_digest: Digest::of(format!("manifest at time {index}").as_bytes()),
                    base_model_digest: Digest::of(b"base model file"),
                    run_id: None,
                };
                store.record_version_once(version, identity("same", "base")).await.expect("record")
            })
        })
        .collect();
    let mut added = 0;
    for task in tasks {
        let (record, was_added) = task.await.expect("a racing task panicked");
        assert_eq!(record.version, 1);
        added += usize::from(was_added);
    }
    assert_eq!(added, 1, "exactly one racer adds the version");
    assert_eq!(store.list_versions(&adapter("support")).await.expect("list").len(), 1);
    assert_eq!(record(&*store, "support", "other", "base").await, 2);
    // Only the latest version counts as "the same": re-publishing old content is a new version (a roll-forward).
    assert_eq!(record(&*store, "support", "same", "base").await, 3);
}

pub async fn racing_promotes_leave_a_consistent_channel<S: MetadataStore + 'static>(store: Arc<S>) {
    for index in 0..16 {
        record(&*store, "support", &format!("content {index}"), "base").await;
    }
    let tasks: Vec<_> = (1..=16)
        .map(|version| {
            let store = store.clone();
            tokio::spawn(async move { store.promote(promote("support", "stable", version)).await.expect("promote") })
        })
        .collect();
    for task in tasks {
        task.await.expect("a promoting task panicked");
    }
    let history = store.channel_history(&adapter("support"), &channel("stable")).await.expect("history");
    assert_eq!(history.len(), 16, "every promote is recorded once");
    // Each change starts where the one before it ended: no promote saw a half-made or stale pointer.
    assert_eq!(history[0].from_version, None);
    for pair in history.windows(2) {
        assert_eq!(pair[1].from_version, Some(pair[0].to_version), "{history:?}");
    }
    let last = history.last().map(|event| event.to_version);
    assert_eq!(served(&*store, "support", "stable").await, last, "the pointer is the last recorded change");
}
