//! Durable scheduling of runs: the port the controller schedules through (leases with heartbeats, debounce and
//! supersede at enqueue time, concurrency limits at claim time, retries later), the retry policy, and the
//! webhook delivery log that makes deliveries idempotent.
//!
//! Every decision takes `now` from the caller, so the same store answers the same way under a test's clock.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;
use crate::run::{NewRun, RunRecord};

/// How many runs may hold a lease at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyLimits {
    /// Running runs across every pipeline.
    pub global: usize,
    /// Running runs of one pipeline.
    pub per_pipeline: usize,
}

impl Default for ConcurrencyLimits {
    fn default() -> Self {
        ConcurrencyLimits { global: 2, per_pipeline: 1 }
    }
}

/// A run to queue, with what to do about queued runs of the same pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueRequest {
    pub run: NewRun,
    /// The run does not start before this time (the end of the debounce window; `now` for at once).
    pub not_before: DateTime<Utc>,
    /// Debounce: when a queued run of the pipeline has not come due yet, this request joins it instead of
    /// queueing another: its start moves to `not_before`, but never later than `max_delay` after it was queued.
    /// `None` (manual triggers) always queues a run of its own.
    pub coalesce_max_delay: Option<Duration>,
    /// Supersede: queued runs of the pipeline that are due (waiting for a free slot) are cancelled in favour
    /// of this newer one.
    pub supersede_queued: bool,
}

/// What `enqueue_run` did.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueued {
    /// The run that will carry the request: a new one, or the queued run it joined.
    pub run: RunRecord,
    /// True when the request joined an existing queued run.
    pub coalesced: bool,
    /// Queued runs cancelled in favour of the new one.
    pub superseded: Vec<String>,
}

/// A run claimed by one controller until `lease_expires_at`, unless renewed.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedRun {
    pub run: RunRecord,
    /// 1 for the first execution; each retry and each expired lease adds one.
    pub attempt: u32,
    pub lease_expires_at: DateTime<Utc>,
}

/// The scheduling facts kept beside a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSchedule {
    pub run_id: String,
    pub not_before: DateTime<Utc>,
    /// Executions started so far.
    pub attempts: u32,
    /// Triggers that joined this run after it was queued (debounce).
    pub coalesced_triggers: u32,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Durable scheduling in the metadata store. Every method is atomic: several controllers (replicas, or a
/// restarted one beside a crashed one's leftovers) may call them at once.
#[async_trait]
pub trait RunScheduler: Send + Sync {
    /// Queues a run, joining or superseding queued runs of the same pipeline as `request` says.
    async fn enqueue_run(&self, request: EnqueueRequest, now: DateTime<Utc>) -> Result<Enqueued, StoreError>;

    /// Puts back in the queue every running run whose lease expired before `now` (its holder crashed or
    /// hung), or fails it once it has been started `max_attempts` times. Returns the ids it touched.
    async fn expire_leases(&self, now: DateTime<Utc>, max_attempts: u32) -> Result<Vec<String>, StoreError>;

    /// Claims the oldest queued run that is due at `now` and fits `limits`, leased to `holder` until
    /// `lease_until`; `None` when no run qualifies.
    async fn claim_due_run(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limits: ConcurrencyLimits,
    ) -> Result<Option<ClaimedRun>, StoreError>;

    /// Extends `holder`'s lease on a running run. False when the lease is gone: the run ended (cancelled) or
    /// another controller took it over after an expiry; the holder must then stop and write nothing more.
    async fn renew_lease(&self, run_id: &str, holder: &str, lease_until: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Puts `holder`'s running run back in the queue, due at `not_before` (a retry after a failure).
    async fn retry_later(
        &self,
        run_id: &str,
        holder: &str,
        not_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<RunRecord, StoreError>;

    /// Gives `holder`'s running run back to the queue, due at `now`, without counting the execution it stops
    /// (a graceful shutdown: the run did not fail, its controller is going away): the lease is cleared and
    /// `attempts` goes back to what it was before the claim, so the next claim is the same attempt again.
    /// `reason` is stored as the run's note, as `retry_later`'s is. One conditional write: false, and nothing
    /// changed, when `holder` no longer holds the lease (it expired and another controller took the run) or the
    /// run is no longer running (it finished, was cancelled or was queued again).
    async fn hand_back(&self, run_id: &str, holder: &str, now: DateTime<Utc>, reason: &str)
    -> Result<bool, StoreError>;

    /// The scheduling facts of a run; `None` for an unknown run or one queued without the scheduler.
    async fn run_schedule(&self, run_id: &str) -> Result<Option<RunSchedule>, StoreError>;
}

/// Remembers webhook deliveries so that a redelivery starts nothing.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Records `(source, delivery_id)`; false when it was recorded before.
    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        received_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
}

/// Retries of failed runs: exponential backoff from `initial_backoff`, doubled per attempt, capped at
/// `max_backoff`; at most `max_attempts` executions in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: std::time::Duration::from_secs(30),
            max_backoff: std::time::Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The wait before the next execution after `attempt` (1-based) failed; `None` when no attempt is left.
    pub fn backoff_after(&self, attempt: u32) -> Option<std::time::Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(32);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        Some(self.initial_backoff.saturating_mul(factor).min(self.max_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: RetryPolicy, expect: &[Option<u64>]) {
        let got: Vec<Option<u64>> =
            (1..=expect.len() as u32).map(|attempt| policy.backoff_after(attempt).map(|d| d.as_secs())).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_stops_at_the_attempt_limit() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_backoff: std::time::Duration::from_secs(10),
            max_backoff: std::time::Duration::from_secs(60),
        };
        check(policy, &[Some(10), Some(20), Some(40), Some(60), Some(60), None, None]);
    }

    #[test]
    fn huge_attempt_counts_saturate_instead_of_overflowing() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: std::time::Duration::from_secs(1),
            max_backoff: std::time::Duration::from_secs(5),
        };
        assert_eq!(policy.backoff_after(1000), Some(std::time::Duration::from_secs(5)));
    }
}
