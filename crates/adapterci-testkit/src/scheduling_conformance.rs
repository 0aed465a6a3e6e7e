//! The conformance suite of the scheduling ports (`RunScheduler`, `DeliveryLog`): debounce, supersede,
//! concurrency limits, leases and their expiry, retries, hand-backs at shutdown, and idempotent deliveries. The
//! in-memory fake and `SeaStore` on SQLite and PostgreSQL must pass the same cases. Time is always passed in, so no
//! case sleeps.

use std::future::Future;
use std::sync::Arc;

use adapterci_core::PipelineName;
use adapterci_core::ports::{RunStore, StoreError};
use adapterci_core::run::{NewRun, RunPatch, RunState, Trigger};
use adapterci_core::scheduling::{ConcurrencyLimits, DeliveryLog, EnqueueRequest, RunScheduler};
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

/// The ports under test; usually three views of one store.
#[derive(Clone)]
pub struct Scheduling {
    pub runs: Arc<dyn RunStore>,
    pub scheduler: Arc<dyn RunScheduler>,
    pub deliveries: Arc<dyn DeliveryLog>,
}

/// One case: it gets fresh, empty ports and panics on a failure.
pub type Case = fn(Scheduling) -> BoxFuture<'static, ()>;

/// Every case, by name.
pub fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("a_burst_inside_the_debounce_window_joins_one_run", |s| {
            a_burst_inside_the_debounce_window_joins_one_run(s).boxed()
        }),
        ("requests_without_debounce_queue_their_own_runs", |s| {
            requests_without_debounce_queue_their_own_runs(s).boxed()
        }),
        ("newer_data_supersedes_due_queued_runs_when_asked", |s| {
            newer_data_supersedes_due_queued_runs_when_asked(s).boxed()
        }),
        ("claims_respect_global_and_per_pipeline_limits", |s| claims_respect_global_and_per_pipeline_limits(s).boxed()),
        ("expired_leases_requeue_then_fail_after_the_attempt_limit", |s| {
            expired_leases_requeue_then_fail_after_the_attempt_limit(s).boxed()
        }),
        ("renewed_leases_do_not_expire", |s| renewed_leases_do_not_expire(s).boxed()),
        ("retries_wait_until_their_time", |s| retries_wait_until_their_time(s).boxed()),
        ("a_cancelled_run_loses_its_lease_and_stays_cancelled", |s| {
            a_cancelled_run_loses_its_lease_and_stays_cancelled(s).boxed()
        }),
        ("concurrent_claimers_never_exceed_the_global_limit", |s| {
            concurrent_claimers_never_exceed_the_global_limit(s).boxed()
        }),
        ("a_handed_back_run_is_queued_at_once_without_using_an_attempt", |s| {
            a_handed_back_run_is_queued_at_once_without_using_an_attempt(s).boxed()
        }),
        ("only_the_lease_holder_hands_a_running_run_back", |s| {
            only_the_lease_holder_hands_a_running_run_back(s).boxed()
        }),
        ("ended_runs_are_not_handed_back", |s| ended_runs_are_not_handed_back(s).boxed()),
        ("each_delivery_is_recorded_once", |s| each_delivery_is_recorded_once(s).boxed()),
    ]
}

/// Runs every case, each on fresh ports from `make`. Run it on a multi-threaded runtime to make races real.
pub async fn run_scheduling_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Scheduling>,
{
    for (name, case) in cases() {
        eprintln!("scheduling conformance: {name}");
        case(make().await).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// helpers

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("a valid time")
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

fn new_run(pipeline: &str) -> NewRun {
    NewRun {
        pipeline: PipelineName::new(pipeline).expect("a valid pipeline name"),
        pipeline_revision: 1,
        trigger: Trigger::Manual,
        dataset_digest: None,
    }
}

/// A request due `delay` seconds after `now`, joining a queued run for up to 60 s when `debounce`.
fn request(pipeline: &str, now: i64, delay: i64, debounce: bool, supersede: bool) -> EnqueueRequest {
    EnqueueRequest {
        run: new_run(pipeline),
        not_before: at(now + delay),
        coalesce_max_delay: debounce.then(|| Duration::seconds(60)),
        supersede_queued: supersede,
    }
}

const ONE_AT_A_TIME: ConcurrencyLimits = ConcurrencyLimits { global: 1, per_pipeline: 1 };
const ROOMY: ConcurrencyLimits = ConcurrencyLimits { global: 100, per_pipeline: 100 };

async fn state_of(ports: &Scheduling, id: &str) -> RunState {
    ports.runs.get_run(id).await.expect("get_run").expect("the run exists").state
}

async fn claim(ports: &Scheduling, holder: &str, now: i64, limits: ConcurrencyLimits) -> Option<(String, u32)> {
    ports
        .scheduler
        .claim_due_run(holder, at(now), at(now + 30), limits)
        .await
        .expect("claim_due_run")
        .map(|claimed| (claimed.run.id, claimed.attempt))
}

// ---------------------------------------------------------------------------------------------------------
// cases

pub async fn a_burst_inside_the_debounce_window_joins_one_run(ports: Scheduling) {
    let first = ports.scheduler.enqueue_run(request("demo", 0, 10, true, true), at(0)).await.expect("enqueue");
    assert!(!first.coalesced);
    for second in 1..20 {
        let joined =
            ports.scheduler.enqueue_run(request("demo", second, 10, true, true), at(second)).await.expect("enqueue");
        assert!(joined.coalesced, "upload {second} must join the queued run");
        assert_eq!(joined.run.id, first.run.id);
        assert!(joined.superseded.is_empty());
    }
    let queued = ports.runs.list_runs(None, 100).await.expect("list_runs");
    assert_eq!(queued.len(), 1, "20 requests inside the window make one run");
    let schedule = ports.scheduler.run_schedule(&first.run.id).await.expect("run_schedule").expect("a schedule");
    assert_eq!(schedule.coalesced_triggers, 19);
    assert_eq!(schedule.not_before, at(29), "the window restarts with each request");
    assert_eq!(claim(&ports, "a", 28, ROOMY).await, None, "not due inside the window");
    assert_eq!(claim(&ports, "a", 29, ROOMY).await, Some((first.run.id.clone(), 1)));

    // A run that keeps being pushed is still started `max_delay` after it was queued.
    let steady = ports.scheduler.enqueue_run(request("steady", 100, 10, true, true), at(100)).await.expect("enqueue");
    for second in (105..200).step_by(5) {
        ports.scheduler.enqueue_run(request("steady", second, 10, true, true), at(second)).await.expect("enqueue");
    }
    let schedule = ports.scheduler.run_schedule(&steady.run.id).await.expect("run_schedule").expect("a schedule");
    assert!(schedule.not_before <= at(160), "pushed past max_delay: {}", schedule.not_before);
}

pub async fn requests_without_debounce_queue_their_own_runs(ports: Scheduling) {
    let a = ports.scheduler.enqueue_run(request("demo", 0, 10, false, false), at(0)).await.expect("enqueue");
    let b = ports.scheduler.enqueue_run(request("demo", 1, 0, false, false), at(1)).await.expect("enqueue");
    assert_ne!(a.run.id, b.run.id);
    assert!(!b.coalesced);
    assert_eq!(state_of(&ports, &a.run.id).await, RunState::Queued);
    assert_eq!(claim(&ports, "a", 1, ROOMY).await.map(|(id, _)| id), Some(b.run.id), "the due one goes first");
}

pub async fn newer_data_supersedes_due_queued_runs_when_asked(ports: Scheduling) {
    let kept = ports.scheduler.enqueue_run(request("keep", 0, 0, true, false), at(0)).await.expect("enqueue");
    let second = ports.scheduler.enqueue_run(request("keep", 5, 0, true, false), at(5)).await.expect("enqueue");
    assert!(second.superseded.is_empty());
    assert_eq!(state_of(&ports, &kept.run.id).await, RunState::Queued, "supersede off: both stay queued");

    let old = ports.scheduler.enqueue_run(request("demo", 0, 0, true, true), at(0)).await.expect("enqueue");
    let new = ports.scheduler.enqueue_run(request("demo", 5, 0, true, true), at(5)).await.expect("enqueue");
    assert!(!new.coalesced, "a due run is not joined");
    assert_eq!(new.superseded, vec![old.run.id.clone()]);
    let old = ports.runs.get_run(&old.run.id).await.expect("get_run").expect("the run exists");
    assert_eq!(old.state, RunState::Cancelled);
    assert!(old.error.as_deref().is_some_and(|error| error.contains("superseded by run")), "{:?}", old.error);
    assert_eq!(state_of(&ports, &new.run.id).await, RunState::Queued);
}

pub async fn claims_respect_global_and_per_pipeline_limits(ports: Scheduling) {
    for (pipeline, now) in [("one", 0), ("one", 1), ("two", 2), ("three", 3)] {
        ports.scheduler.enqueue_run(request(pipeline, now, 0, false, false), at(now)).await.expect("enqueue");
    }
    let limits = ConcurrencyLimits { global: 2, per_pipeline: 1 };
    let first = claim(&ports, "a", 10, limits).await.expect("a first claim");
    let second = claim(&ports, "a", 10, limits).await.expect("a second claim");
    assert_eq!(claim(&ports, "a", 10, limits).await, None, "the global limit is reached");
    let mut running = Vec::new();
    for id in [&first.0, &second.0] {
        running.push(ports.runs.get_run(id).await.expect("get_run").expect("the run exists").pipeline.to_string());
    }
    assert_eq!(running, vec!["one", "two"], "the second run of `one` waits for the first");
    let limits = ConcurrencyLimits { global: 10, per_pipeline: 1 };
    let third = claim(&ports, "a", 10, limits).await.expect("a third claim");
    assert_eq!(ports.runs.get_run(&third.0).await.expect("get_run").expect("exists").pipeline.as_str(), "three");
    assert_eq!(claim(&ports, "a", 10, limits).await, None, "one run of `one` at a time");
}

pub async fn expired_leases_requeue_then_fail_after_the_attempt_limit(ports: Scheduling) {
    let run = ports.scheduler.enqueue_run(request("demo", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    assert_eq!(claim(&ports, "crashed", 0, ONE_AT_A_TIME).await, Some((run.id.clone(), 1)));
    assert!(ports.scheduler.expire_leases(at(29), 2).await.expect("expire").is_empty(), "lease still valid");
    assert_eq!(claim(&ports, "other", 29, ONE_AT_A_TIME).await, None, "a leased run is not claimed again");
    assert_eq!(ports.scheduler.expire_leases(at(31), 2).await.expect("expire"), vec![run.id.clone()]);
    assert_eq!(state_of(&ports, &run.id).await, RunState::Queued);
    assert!(!ports.scheduler.renew_lease(&run.id, "crashed", at(100)).await.expect("renew"), "the lease is gone");
    assert_eq!(claim(&ports, "other", 31, ONE_AT_A_TIME).await, Some((run.id.clone(), 2)));
    assert!(!ports.scheduler.renew_lease(&run.id, "crashed", at(100)).await.expect("renew"), "not the holder");
    assert_eq!(ports.scheduler.expire_leases(at(62), 2).await.expect("expire"), vec![run.id.clone()]);
    let failed = ports.runs.get_run(&run.id).await.expect("get_run").expect("the run exists");
    assert_eq!(failed.state, RunState::Failed, "two expired leases with an attempt limit of two");
    assert!(failed.error.as_deref().is_some_and(|error| error.contains("stopped answering")), "{:?}", failed.error);
    assert!(ports.scheduler.expire_leases(at(1000), 2).await.expect("expire").is_empty());
}

pub async fn renewed_leases_do_not_expire(ports: Scheduling) {
    let run = ports.scheduler.enqueue_run(request("demo", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    claim(&ports, "holder", 0, ONE_AT_A_TIME).await.expect("claimed");
    assert!(ports.scheduler.renew_lease(&run.id, "holder", at(55)).await.expect("renew"));
    assert!(ports.scheduler.expire_leases(at(54), 3).await.expect("expire").is_empty());
    assert_eq!(state_of(&ports, &run.id).await, RunState::Running);
    let schedule = ports.scheduler.run_schedule(&run.id).await.expect("run_schedule").expect("a schedule");
    assert_eq!((schedule.lease_holder.as_deref(), schedule.lease_expires_at), (Some("holder"), Some(at(55))));
}

pub async fn retries_wait_until_their_time(ports: Scheduling) {
    let run = ports.scheduler.enqueue_run(request("demo", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    claim(&ports, "holder", 0, ONE_AT_A_TIME).await.expect("claimed");
    let error = ports.scheduler.retry_later(&run.id, "stranger", at(60), "no").await.expect_err("not the holder");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
    let queued = ports.scheduler.retry_later(&run.id, "holder", at(60), "attempt 1 failed").await.expect("retry_later");
    assert_eq!(queued.state, RunState::Queued);
    assert_eq!(queued.error.as_deref(), Some("attempt 1 failed"));
    assert_eq!(claim(&ports, "holder", 59, ONE_AT_A_TIME).await, None, "backing off");
    assert_eq!(claim(&ports, "holder", 60, ONE_AT_A_TIME).await, Some((run.id.clone(), 2)));
}

pub async fn a_cancelled_run_loses_its_lease_and_stays_cancelled(ports: Scheduling) {
    let run = ports.scheduler.enqueue_run(request("demo", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    claim(&ports, "holder", 0, ONE_AT_A_TIME).await.expect("claimed");
    let cancel = RunPatch { state: Some(RunState::Cancelled), ..RunPatch::default() };
    ports.runs.update_run(&run.id, cancel).await.expect("cancel");
    assert!(!ports.scheduler.renew_lease(&run.id, "holder", at(60)).await.expect("renew"));
    assert!(ports.scheduler.expire_leases(at(100), 3).await.expect("expire").is_empty());
    assert_eq!(state_of(&ports, &run.id).await, RunState::Cancelled);
    assert!(ports.scheduler.retry_later(&run.id, "holder", at(100), "no").await.is_err());
}

pub async fn concurrent_claimers_never_exceed_the_global_limit(ports: Scheduling) {
    for n in 0..8 {
        ports.scheduler.enqueue_run(request(&format!("p{n}"), 0, 0, false, false), at(0)).await.expect("enqueue");
    }
    let limits = ConcurrencyLimits { global: 3, per_pipeline: 1 };
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let scheduler = ports.scheduler.clone();
            tokio::spawn(async move {
                scheduler.claim_due_run(&format!("c{n}"), at(1), at(31), limits).await.expect("claim_due_run")
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        if let Some(run) = task.await.expect("a claimer panicked") {
            claimed.push(run.run.id);
        }
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
}

const HANDED_BACK: &str = "adapterd stopped: handed back";

async fn schedule_of(ports: &Scheduling, id: &str) -> adapterci_core::scheduling::RunSchedule {
    ports.scheduler.run_schedule(id).await.expect("run_schedule").expect("a schedule")
}

pub async fn a_handed_back_run_is_queued_at_once_without_using_an_attempt(ports: Scheduling) {
    let run = ports.scheduler.enqueue_run(request("demo", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    // one failed attempt first, so that the count to come back to is not zero
    claim(&ports, "first", 0, ONE_AT_A_TIME).await.expect("claimed");
    ports.scheduler.retry_later(&run.id, "first", at(10), "attempt 1 failed").await.expect("retry_later");
    let before_claim = schedule_of(&ports, &run.id).await.attempts;
    assert_eq!(before_claim, 1);
    assert_eq!(claim(&ports, "stopping", 10, ONE_AT_A_TIME).await, Some((run.id.clone(), 2)));

    assert!(ports.scheduler.hand_back(&run.id, "stopping", at(20), HANDED_BACK).await.expect("hand_back"));
    let queued = ports.runs.get_run(&run.id).await.expect("get_run").expect("the run exists");
    assert_eq!(queued.state, RunState::Queued);
    assert_eq!(queued.error.as_deref(), Some(HANDED_BACK), "the reason is the run's note");
    let schedule = schedule_of(&ports, &run.id).await;
    assert_eq!(schedule.attempts, before_claim, "the interrupted execution is not counted");
    assert_eq!((schedule.lease_holder, schedule.lease_expires_at), (None, None));
    assert_eq!(schedule.not_before, at(20));
    assert!(!ports.scheduler.renew_lease(&run.id, "stopping", at(100)).await.expect("renew"), "the lease is gone");
    assert!(
        !ports.scheduler.hand_back(&run.id, "stopping", at(20), HANDED_BACK).await.expect("hand_back"),
        "a second hand-back does nothing"
    );
    assert_eq!(schedule_of(&ports, &run.id).await.attempts, before_claim, "not counted back twice");

    // no lease to wait out: another controller takes the run at the same instant, as the same attempt
    assert_eq!(claim(&ports, "next", 20, ONE_AT_A_TIME).await, Some((run.id.clone(), 2)));

    // a run handed back on its first attempt goes back to zero, never below
    let first = ports.scheduler.enqueue_run(request("fresh", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    let roomy = ConcurrencyLimits { global: 10, per_pipeline: 1 };
    assert_eq!(claim(&ports, "stopping", 30, roomy).await, Some((first.id.clone(), 1)));
    for _ in 0..3 {
        assert!(ports.scheduler.hand_back(&first.id, "stopping", at(30), HANDED_BACK).await.expect("hand_back"));
        assert_eq!(schedule_of(&ports, &first.id).await.attempts, 0);
        assert_eq!(claim(&ports, "stopping", 30, roomy).await, Some((first.id.clone(), 1)), "still the first attempt");
    }
}

pub async fn only_the_lease_holder_hands_a_running_run_back(ports: Scheduling) {
    let run = ports.scheduler.enqueue_run(request("demo", 0, 0, false, false), at(0)).await.expect("enqueue").run;
    assert!(
        !ports.scheduler.hand_back(&run.id, "nobody", at(0), HANDED_BACK).await.expect("hand_back"),
        "a queued run is nobody's to hand back"
    );
    claim(&ports, "holder", 0, ONE_AT_A_TIME).await.expect("claimed");
    let held = schedule_of(&ports, &run.id).await;
    assert!(!ports.scheduler.hand_back(&run.id, "stranger", at(5), HANDED_BACK).await.expect("hand_back"));
    assert_eq!(state_of(&ports, &run.id).await, RunState::Running);
    assert_eq!(schedule_of(&ports, &run.id).await, held, "a stranger changes nothing");

    // the holder hung: its lease expired and another controller took the run over
    assert_eq!(ports.scheduler.expire_leases(at(31), 3).await.expect("expire"), vec![run.id.clone()]);
    assert_eq!(claim(&ports, "successor", 31, ONE_AT_A_TIME).await, Some((run.id.clone(), 2)));
    let taken = schedule_of(&ports, &run.id).await;
    assert!(
        !ports.scheduler.hand_back(&run.id, "holder", at(40), HANDED_BACK).await.expect("hand_back"),
        "the old holder's hand-back must not undo the successor's claim"
    );
    assert_eq!(state_of(&ports, &run.id).await, RunState::Running);
    assert_eq!(schedule_of(&ports, &run.id).await, taken);
    assert!(ports.scheduler.renew_lease(&run.id, "successor", at(80)).await.expect("renew"), "the successor keeps it");
}

pub async fn ended_runs_are_not_handed_back(ports: Scheduling) {
    let limits = ConcurrencyLimits { global: 10, per_pipeline: 1 };
    let cancelled = ports.scheduler.enqueue_run(request("cancel", 0, 0, false, false), at(0)).await.expect("enqueue");
    let finished = ports.scheduler.enqueue_run(request("finish", 0, 0, false, false), at(0)).await.expect("enqueue");
    let retried = ports.scheduler.enqueue_run(request("retry", 0, 0, false, false), at(0)).await.expect("enqueue");
    for _ in 0..3 {
        claim(&ports, "holder", 0, limits).await.expect("claimed");
    }
    let cancel = RunPatch { state: Some(RunState::Cancelled), ..RunPatch::default() };
    ports.runs.update_run(&cancelled.run.id, cancel).await.expect("cancel");
    let succeed = RunPatch { state: Some(RunState::Succeeded), ..RunPatch::default() };
    ports.runs.update_run(&finished.run.id, succeed).await.expect("finish");
    ports.scheduler.retry_later(&retried.run.id, "holder", at(60), "attempt 1 failed").await.expect("retry_later");

    for (run, state) in
        [(&cancelled.run, RunState::Cancelled), (&finished.run, RunState::Succeeded), (&retried.run, RunState::Queued)]
    {
        let before = ports.runs.get_run(&run.id).await.expect("get_run").expect("the run exists");
        let schedule = schedule_of(&ports, &run.id).await;
        assert!(
            !ports.scheduler.hand_back(&run.id, "holder", at(10), HANDED_BACK).await.expect("hand_back"),
            "{state} run"
        );
        let after = ports.runs.get_run(&run.id).await.expect("get_run").expect("the run exists");
        assert_eq!((after.state, &after.error), (state, &before.error), "{state} run");
        assert_eq!(schedule_of(&ports, &run.id).await, schedule, "{state} run: schedule untouched");
    }
    assert_eq!(claim(&ports, "other", 59, limits).await, None, "the retry still waits for its time");
}

pub async fn each_delivery_is_recorded_once(ports: Scheduling) {
    assert!(ports.deliveries.record_delivery("github", "d-1", at(0)).await.expect("record"));
    assert!(!ports.deliveries.record_delivery("github", "d-1", at(5)).await.expect("record"), "a redelivery");
    assert!(ports.deliveries.record_delivery("huggingface", "d-1", at(5)).await.expect("record"));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let deliveries = ports.deliveries.clone();
            tokio::spawn(async move { deliveries.record_delivery("s3", "burst", at(9)).await.expect("record") })
        })
        .collect();
    let mut first = 0;
    for task in tasks {
        first += usize::from(task.await.expect("a recorder panicked"));
    }
    assert_eq!(first, 1, "exactly one of eight concurrent deliveries is new");
}
