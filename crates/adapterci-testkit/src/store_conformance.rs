//! The conformance suite of the metadata store ports: every implementation (the in-memory fake, `SeaStore` on
//! SQLite and on PostgreSQL) must pass the same cases. Call [`run_conformance`] with a function that makes a
//! fresh, empty store, or call the cases one by one.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use adapterci_core::ports::{MetadataStore, NewAdapterVersion, StoreError, WatchState};
use adapterci_core::run::{NewRun, PublishedRef, RunPatch, RunRecord, RunStage, RunState, Trigger};
use adapterci_core::{AdapterName, Digest, PipelineName};
use chrono::{TimeZone, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::channel_conformance as channels;

/// One case of the suite: it gets a fresh, empty store and panics on a failure.
pub type Case<S> = fn(Arc<S>) -> BoxFuture<'static, ()>;

/// Every case, by name.
pub fn cases<S: MetadataStore + 'static>() -> Vec<(&'static str, Case<S>)> {
    vec![
        ("pipeline_revisions_move_only_when_the_spec_changes", |s| {
            pipeline_revisions_move_only_when_the_spec_changes(s).boxed()
        }),
        ("pipelines_are_listed_by_name", |s| pipelines_are_listed_by_name(s).boxed()),
        ("concurrent_pipeline_changes_get_distinct_revisions", |s| {
            concurrent_pipeline_changes_get_distinct_revisions(s).boxed()
        }),
        ("runs_follow_their_lifecycle", |s| runs_follow_their_lifecycle(s).boxed()),
        ("every_transition_is_checked_against_the_state_machine", |s| {
            every_transition_is_checked_against_the_state_machine(s).boxed()
        }),
        ("racing_state_changes_have_one_winner", |s| racing_state_changes_have_one_winner(s).boxed()),
        ("unknown_runs_are_not_found", |s| unknown_runs_are_not_found(s).boxed()),
        ("runs_are_listed_newest_first", |s| runs_are_listed_newest_first(s).boxed()),
        ("claims_take_the_oldest_queued_run", |s| claims_take_the_oldest_queued_run(s).boxed()),
        ("concurrent_claimers_never_share_a_run", |s| concurrent_claimers_never_share_a_run(s).boxed()),
        ("versions_are_numbered_per_adapter_from_one", |s| versions_are_numbered_per_adapter_from_one(s).boxed()),
        ("recording_a_manifest_again_returns_its_version", |s| {
            recording_a_manifest_again_returns_its_version(s).boxed()
        }),
        ("concurrent_publishers_get_gapless_versions", |s| concurrent_publishers_get_gapless_versions(s).boxed()),
        ("concurrent_publishes_of_one_manifest_share_a_version", |s| {
            concurrent_publishes_of_one_manifest_share_a_version(s).boxed()
        }),
        ("watch_state_round_trips", |s| watch_state_round_trips(s).boxed()),
        ("channels_promote_roll_back_pin_and_deprecate", |s| {
            channels::channels_promote_roll_back_pin_and_deprecate(s).boxed()
        }),
        ("promotion_across_bases_is_refused_unless_allowed", |s| {
            channels::promotion_across_bases_is_refused_unless_allowed(s).boxed()
        }),
        ("tags_name_one_version_for_good", |s| channels::tags_name_one_version_for_good(s).boxed()),
        ("identical_publishes_racing_make_one_version", |s| {
            channels::identical_publishes_racing_make_one_version(s).boxed()
        }),
        ("racing_promotes_leave_a_consistent_channel", |s| {
            channels::racing_promotes_leave_a_consistent_channel(s).boxed()
        }),
    ]
}

/// Runs every case, each on a fresh store from `make`. The concurrency cases spawn tokio tasks: run this on a
/// multi-threaded runtime to make the races real.
pub async fn run_conformance<S, F, Fut>(make: F)
where
    S: MetadataStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    for (name, case) in cases::<S>() {
        // The name shows in the captured output of a failing test.
        eprintln!("metadata store conformance: {name}");
        case(Arc::new(make().await)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// helpers

const SPEC_A: &str = "version: v1\nname: demo\n";
const SPEC_B: &str = "version: v1\nname: demo\nsteps: 100\n";

fn pipeline(name: &str) -> PipelineName {
    PipelineName::new(name).expect("a valid pipeline name")
}

fn adapter(name: &str) -> AdapterName {
    AdapterName::new(name).expect("a valid adapter name")
}

fn digest(tag: &str) -> Digest {
    Digest::of(tag.as_bytes())
}

fn new_run(pipeline_name: &str) -> NewRun {
    NewRun { pipeline: pipeline(pipeline_name), pipeline_revision: 1, trigger: Trigger::Manual, dataset_digest: None }
}

fn new_version(name: &str, manifest: &str) -> NewAdapterVersion {
    NewAdapterVersion {
        name: adapter(name),
        manifest_digest: digest(manifest),
        base_model_digest: digest("base-model"),
        run_id: Some(format!("run-of-{manifest}")),
    }
}

fn state(next: RunState) -> RunPatch {
    RunPatch { state: Some(next), ..RunPatch::default() }
}

async fn get_run<S: MetadataStore>(store: &S, id: &str) -> RunRecord {
    store.get_run(id).await.expect("get_run").unwrap_or_else(|| panic!("run {id} disappeared"))
}

/// Spawns `count` tasks running `task(store, index)` and collects their results in index order.
async fn in_parallel<S, T, Fut>(store: &Arc<S>, count: usize, task: impl Fn(Arc<S>, usize) -> Fut) -> Vec<T>
where
    S: MetadataStore + 'static,
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..count).map(|index| tokio::spawn(task(store.clone(), index))).collect();
    let mut results = Vec::with_capacity(count);
    for handle in handles {
        results.push(handle.await.expect("a concurrent task panicked"));
    }
    results
}

// ---------------------------------------------------------------------------------------------------------
// pipelines

pub async fn pipeline_revisions_move_only_when_the_spec_changes<S: MetadataStore>(store: Arc<S>) {
    let name = pipeline("demo");
    let first = store.upsert_pipeline(&name, SPEC_A).await.expect("first upsert");
    assert_eq!((first.name.clone(), first.revision, first.spec_yaml.as_str()), (name.clone(), 1, SPEC_A));
    assert_eq!(first.spec_digest, digest(SPEC_A));
    assert_eq!(first.created_at, first.updated_at);

    let same = store.upsert_pipeline(&name, SPEC_A).await.expect("identical upsert");
    assert_eq!(same, first, "an identical spec must leave the record as it was");

    let changed = store.upsert_pipeline(&name, SPEC_B).await.expect("changed upsert");
    assert_eq!((changed.revision, changed.spec_yaml.as_str()), (2, SPEC_B));
    assert_eq!(changed.spec_digest, digest(SPEC_B));
    assert_eq!(changed.created_at, first.created_at);
    assert!(changed.updated_at >= first.updated_at);

    // Going back to an earlier spec is a change too.
    let back = store.upsert_pipeline(&name, SPEC_A).await.expect("revert upsert");
    assert_eq!(back.revision, 3);
    assert_eq!(store.get_pipeline(&name).await.expect("get_pipeline"), Some(back));
    assert_eq!(store.get_pipeline(&pipeline("absent")).await.expect("get_pipeline"), None);
}

pub async fn pipelines_are_listed_by_name<S: MetadataStore>(store: Arc<S>) {
    assert!(store.list_pipelines().await.expect("list_pipelines").is_empty());
    for name in ["zeta", "alpha", "mid"] {
        store.upsert_pipeline(&pipeline(name), SPEC_A).await.expect("upsert");
    }
    let listed = store.list_pipelines().await.expect("list_pipelines");
    let names: Vec<&str> = listed.iter().map(|record| record.name.as_str()).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert!(listed.iter().all(|record| record.revision == 1));
}

pub async fn concurrent_pipeline_changes_get_distinct_revisions<S: MetadataStore + 'static>(store: Arc<S>) {
    let results = in_parallel(&store, 8, |store, index| async move {
        let spec = format!("version: v1\nname: demo\nseed: {index}\n");
        let record = store.upsert_pipeline(&pipeline("demo"), &spec).await.expect("concurrent upsert");
        (record.revision, spec)
    })
    .await;
    let mut revisions: Vec<u64> = results.iter().map(|(revision, _)| *revision).collect();
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=8).collect::<Vec<u64>>(), "each change must get its own revision");
    let stored = store.get_pipeline(&pipeline("demo")).await.expect("get_pipeline").expect("the pipeline exists");
    let last_spec = results.iter().find(|(revision, _)| *revision == 8).map(|(_, spec)| spec.as_str());
    assert_eq!((stored.revision, Some(stored.spec_yaml.as_str())), (8, last_spec));
}

// ---------------------------------------------------------------------------------------------------------
// runs

pub async fn runs_follow_their_lifecycle<S: MetadataStore>(store: Arc<S>) {
    let trigger = Trigger::DatasetChanged { location: "datasets/demo/train.jsonl".into(), digest: digest("data-1") };
    let new = NewRun {
        pipeline: pipeline("demo"),
        pipeline_revision: 3,
        trigger: trigger.clone(),
        dataset_digest: Some(digest("data-1")),
    };
    let created = store.create_run(new).await.expect("create_run");
    assert!(!created.id.is_empty());
    assert_eq!((created.state, created.stage, created.pipeline_revision), (RunState::Queued, None, 3));
    assert_eq!((&created.trigger, &created.dataset_digest), (&trigger, &Some(digest("data-1"))));
    assert_eq!((&created.report, &created.published, &created.error), (&None, &None, &None));
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(get_run(&*store, &created.id).await, created);

    let patch = RunPatch { state: Some(RunState::Running), stage: Some(RunStage::Train), ..RunPatch::default() };
    let running = store.update_run(&created.id, patch).await.expect("start");
    assert_eq!((running.state, running.stage), (RunState::Running, Some(RunStage::Train)));
    assert_eq!((running.created_at, &running.trigger), (created.created_at, &trigger));
    assert!(running.updated_at >= created.updated_at);

    // A patch without a state keeps the state; fields it leaves out keep their values.
    let report = serde_json::json!({"metrics": {"exact_match": 0.92}, "gates": [{"name": "em", "passed": true}]});
    let patch = RunPatch {
        stage: Some(RunStage::Eval),
        dataset_digest: Some(digest("data-2")),
        report: Some(report.clone()),
        ..RunPatch::default()
    };
    let evaluated = store.update_run(&created.id, patch).await.expect("evaluate");
    assert_eq!((evaluated.state, evaluated.stage), (RunState::Running, Some(RunStage::Eval)));
    assert_eq!((&evaluated.dataset_digest, &evaluated.report), (&Some(digest("data-2")), &Some(report.clone())));

    let published = PublishedRef { adapter: adapter("demo"), version: 7, manifest_digest: digest("manifest") };
    let patch = RunPatch {
        state: Some(RunState::Succeeded),
        stage: Some(RunStage::Publish),
        published: Some(published.clone()),
        ..RunPatch::default()
    };
    let succeeded = store.update_run(&created.id, patch).await.expect("succeed");
    assert_eq!((succeeded.state, succeeded.stage), (RunState::Succeeded, Some(RunStage::Publish)));
    assert_eq!((&succeeded.published, &succeeded.report), (&Some(published), &Some(report)));
    assert_eq!(get_run(&*store, &created.id).await, succeeded);

    let failed = store.create_run(new_run("demo")).await.expect("create_run");
    let patch =
        RunPatch { state: Some(RunState::Failed), error: Some("dataset is empty".into()), ..RunPatch::default() };
    let failed = store.update_run(&failed.id, patch).await.expect("fail");
    assert_eq!((failed.state, failed.error.as_deref()), (RunState::Failed, Some("dataset is empty")));
}

/// The patches that bring a fresh run to `target` along allowed transitions.
fn path_to(target: RunState) -> Vec<RunState> {
    match target {
        RunState::Queued => vec![],
        RunState::Running => vec![RunState::Running],
        terminal => vec![RunState::Running, terminal],
    }
}

pub async fn every_transition_is_checked_against_the_state_machine<S: MetadataStore>(store: Arc<S>) {
    for from in RunState::ALL {
        for to in RunState::ALL {
            let run = store.create_run(new_run("demo")).await.expect("create_run");
            for step in path_to(from) {
                store.update_run(&run.id, state(step)).await.expect("an allowed step");
            }
            let before = get_run(&*store, &run.id).await;
            let patch = RunPatch { state: Some(to), error: Some("must not be stored".into()), ..RunPatch::default() };
            let result = store.update_run(&run.id, patch).await;
            match (from.transition(to).is_ok(), result) {
                (true, Ok(after)) => assert_eq!(after.state, to, "{from} -> {to}"),
                (false, Err(StoreError::InvalidTransition(message))) => {
                    assert!(message.contains(&run.id), "{from} -> {to}: the message must name the run: {message}");
                    assert_eq!(
                        get_run(&*store, &run.id).await,
                        before,
                        "{from} -> {to}: a refused patch changed the run"
                    );
                }
                (allowed, result) => {
                    panic!("{from} -> {to}: allowed by the state machine: {allowed}, store said {result:?}")
                }
            }
        }
    }
}

pub async fn racing_state_changes_have_one_winner<S: MetadataStore + 'static>(store: Arc<S>) {
    let mut ids = Vec::new();
    for _ in 0..8 {
        let run = store.create_run(new_run("demo")).await.expect("create_run");
        store.update_run(&run.id, state(RunState::Running)).await.expect("start");
        ids.push(run.id);
    }
    // For each run, a worker finishing it races a person cancelling it.
    let endings = [RunState::Succeeded, RunState::Cancelled];
    let results = in_parallel(&store, ids.len() * 2, |store, index| {
        let (id, ending) = (ids[index / 2].clone(), endings[index % 2]);
        async move {
            let result = store.update_run(&id, state(ending)).await;
            (id, ending, result)
        }
    })
    .await;
    for id in &ids {
        let outcomes: Vec<_> = results.iter().filter(|(run, _, _)| run == id).collect();
        let winners: Vec<RunState> = outcomes.iter().filter(|(_, _, r)| r.is_ok()).map(|(_, end, _)| *end).collect();
        assert_eq!(winners.len(), 1, "run {id}: exactly one ending must win: {outcomes:?}");
        for (_, _, result) in &outcomes {
            assert!(matches!(result, Ok(_) | Err(StoreError::InvalidTransition(_))), "run {id}: {result:?}");
        }
        assert!(endings.contains(&winners[0]));
        assert_eq!(get_run(&*store, id).await.state, winners[0], "run {id}: the stored state is the winner's");
    }
}

pub async fn unknown_runs_are_not_found<S: MetadataStore>(store: Arc<S>) {
    assert_eq!(store.get_run("no-such-run").await.expect("get_run"), None);
    let result = store.update_run("no-such-run", state(RunState::Running)).await;
    assert!(
        matches!(&result, Err(StoreError::NotFound { what }) if what.contains("no-such-run")),
        "update of an unknown run: {result:?}"
    );
}

pub async fn runs_are_listed_newest_first<S: MetadataStore>(store: Arc<S>) {
    assert!(store.list_runs(None, 10).await.expect("list_runs").is_empty());
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "alpha", "beta", "alpha"] {
        ids.push(store.create_run(new_run(name)).await.expect("create_run").id);
    }
    let check = |listed: Vec<RunRecord>, expect: &[usize]| {
        let listed: Vec<&str> = listed.iter().map(|run| run.id.as_str()).collect();
        let expect: Vec<&str> = expect.iter().map(|&index| ids[index].as_str()).collect();
        assert_eq!(listed, expect);
    };
    check(store.list_runs(None, 10).await.expect("list_runs"), &[4, 3, 2, 1, 0]);
    check(store.list_runs(Some(&pipeline("alpha")), 10).await.expect("list_runs"), &[4, 2, 0]);
    check(store.list_runs(None, 2).await.expect("list_runs"), &[4, 3]);
    check(store.list_runs(Some(&pipeline("beta")), 1).await.expect("list_runs"), &[3]);
    check(store.list_runs(None, 0).await.expect("list_runs"), &[]);
    check(store.list_runs(Some(&pipeline("gamma")), 10).await.expect("list_runs"), &[]);
}

pub async fn claims_take_the_oldest_queued_run<S: MetadataStore>(store: Arc<S>) {
    assert_eq!(store.claim_next_run().await.expect("claim on an empty store"), None);
    let first = store.create_run(new_run("demo")).await.expect("create_run");
    let cancelled = store.create_run(new_run("demo")).await.expect("create_run");
    let third = store.create_run(new_run("demo")).await.expect("create_run");
    store.update_run(&cancelled.id, state(RunState::Cancelled)).await.expect("cancel");

    let claimed = store.claim_next_run().await.expect("claim").expect("a queued run");
    assert_eq!((claimed.id.as_str(), claimed.state), (first.id.as_str(), RunState::Running));
    assert_eq!(get_run(&*store, &first.id).await, claimed);
    let claimed = store.claim_next_run().await.expect("claim").expect("a queued run");
    assert_eq!((claimed.id.as_str(), claimed.state), (third.id.as_str(), RunState::Running));
    assert_eq!(store.claim_next_run().await.expect("claim"), None);
    assert_eq!(get_run(&*store, &cancelled.id).await.state, RunState::Cancelled);
}

pub async fn concurrent_claimers_never_share_a_run<S: MetadataStore + 'static>(store: Arc<S>) {
    let mut created = BTreeSet::new();
    for _ in 0..24 {
        created.insert(store.create_run(new_run("demo")).await.expect("create_run").id);
    }
    let per_claimer = in_parallel(&store, 8, |store, _| async move {
        let mut claimed = Vec::new();
        while let Some(run) = store.claim_next_run().await.expect("concurrent claim") {
            assert_eq!(run.state, RunState::Running);
            claimed.push(run.id);
        }
        claimed
    })
    .await;
    let all: Vec<String> = per_claimer.into_iter().flatten().collect();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a run was claimed twice");
    assert_eq!(unique, created, "every queued run must be claimed exactly once");
    for id in &created {
        assert_eq!(get_run(&*store, id).await.state, RunState::Running);
    }
}

// ---------------------------------------------------------------------------------------------------------
// adapter versions

pub async fn versions_are_numbered_per_adapter_from_one<S: MetadataStore>(store: Arc<S>) {
    assert!(store.list_adapter_names().await.expect("list_adapter_names").is_empty());
    let first = store.record_version(new_version("support", "m1")).await.expect("record");
    let second = store.record_version(new_version("support", "m2")).await.expect("record");
    // The same manifest under another adapter is that adapter's own first version.
    let other = store.record_version(new_version("billing", "m1")).await.expect("record");
    assert_eq!((first.version, second.version, other.version), (1, 2, 1));
    assert_eq!((&second.name, &second.manifest_digest), (&adapter("support"), &digest("m2")));
    assert_eq!((&second.base_model_digest, second.run_id.as_deref()), (&digest("base-model"), Some("run-of-m2")));

    let support = adapter("support");
    assert_eq!(store.get_version(&support, 2).await.expect("get_version"), Some(second.clone()));
    assert_eq!(store.get_version(&support, 3).await.expect("get_version"), None);
    assert_eq!(store.get_version(&support, u64::MAX).await.expect("get_version"), None);
    assert_eq!(store.latest_version(&support).await.expect("latest_version"), Some(second.clone()));
    assert_eq!(store.list_versions(&support).await.expect("list_versions"), [first, second]);
    let names = store.list_adapter_names().await.expect("list_adapter_names");
    assert_eq!(names, [adapter("billing"), adapter("support")]);

    let absent = adapter("absent");
    assert_eq!(store.latest_version(&absent).await.expect("latest_version"), None);
    assert!(store.list_versions(&absent).await.expect("list_versions").is_empty());
}

pub async fn recording_a_manifest_again_returns_its_version<S: MetadataStore>(store: Arc<S>) {
    let first = store.record_version(new_version("support", "m1")).await.expect("record");
    let second = store.record_version(new_version("support", "m2")).await.expect("record");
    let again = NewAdapterVersion { run_id: Some("another-run".into()), ..new_version("support", "m1") };
    assert_eq!(store.record_version(again).await.expect("re-record"), first);
    let support = adapter("support");
    assert_eq!(store.list_versions(&support).await.expect("list_versions"), [first, second.clone()]);
    assert_eq!(store.latest_version(&support).await.expect("latest_version"), Some(second));
}

pub async fn concurrent_publishers_get_gapless_versions<S: MetadataStore + 'static>(store: Arc<S>) {
    let records = in_parallel(&store, 16, |store, index| async move {
        store.record_version(new_version("support", &format!("manifest-{index}"))).await.expect("concurrent record")
    })
    .await;
    let mut versions: Vec<u64> = records.iter().map(|record| record.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>(), "versions must be unique and without gaps");
    let listed = store.list_versions(&adapter("support")).await.expect("list_versions");
    assert_eq!(listed.iter().map(|record| record.version).collect::<Vec<u64>>(), versions);
    for record in &records {
        assert_eq!(listed.get(record.version as usize - 1), Some(record), "the returned record must be the stored one");
    }
}

pub async fn concurrent_publishes_of_one_manifest_share_a_version<S: MetadataStore + 'static>(store: Arc<S>) {
    let records = in_parallel(&store, 8, |store, _| async move {
        store.record_version(new_version("support", "same-manifest")).await.expect("concurrent record")
    })
    .await;
    assert!(records.iter().all(|record| record.version == 1), "{records:?}");
    assert!(records.windows(2).all(|pair| pair[0] == pair[1]), "every caller must get the same record");
    assert_eq!(store.list_versions(&adapter("support")).await.expect("list_versions").len(), 1);
}

// ---------------------------------------------------------------------------------------------------------
// watches

pub async fn watch_state_round_trips<S: MetadataStore>(store: Arc<S>) {
    let demo = pipeline("demo");
    let location = "datasets/demo/train.jsonl";
    assert_eq!(store.get_watch(&demo, location).await.expect("get_watch"), None);

    // Stores keep microseconds: the nanoseconds of this time are dropped.
    let seen_at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 0).single().expect("a valid time")
        + chrono::Duration::nanoseconds(123_456_789);
    let first = WatchState { etag: Some("\"etag-1\"".into()), digest: digest("data-1"), seen_at };
    store.put_watch(&demo, location, &first).await.expect("put_watch");
    let expected = WatchState { seen_at: seen_at - chrono::Duration::nanoseconds(789), ..first.clone() };
    assert_eq!(store.get_watch(&demo, location).await.expect("get_watch"), Some(expected));

    let later = seen_at - chrono::Duration::nanoseconds(789) + chrono::Duration::seconds(60);
    let second = WatchState { etag: None, digest: digest("data-2"), seen_at: later };
    store.put_watch(&demo, location, &second).await.expect("put_watch overwrite");
    assert_eq!(store.get_watch(&demo, location).await.expect("get_watch"), Some(second.clone()));

    assert_eq!(store.get_watch(&demo, "datasets/demo/eval.jsonl").await.expect("get_watch"), None);
    let other = pipeline("other");
    assert_eq!(store.get_watch(&other, location).await.expect("get_watch"), None);
    store.put_watch(&other, location, &first).await.expect("put_watch");
    assert_eq!(store.get_watch(&demo, location).await.expect("get_watch"), Some(second));
}
