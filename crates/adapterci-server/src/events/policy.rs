//! How hard a registry event delivery tries ([`DeliveryPolicy`]: attempts, capped exponential backoff, request
//! timeout), and the lengths derived from it: the lease a notifier holds an event under, and how long a clean
//! shutdown waits for the deliveries under way.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What a lease adds to the longest delivery its policy allows, for the store writes between attempts.
pub const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// What a clean shutdown waits for the deliveries under way beyond one request timeout, for the store writes that
/// record their last attempt ([`DeliveryPolicy::shutdown_grace`]).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// How hard a delivery tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    /// The pause after the first failure; each later pause doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 6,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl DeliveryPolicy {
    /// The pause after failed attempt `attempt` (1-based): `first_delay * 2^(attempt-1)`, capped.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// How long a notifier holds an event it stores or takes over: the longest its delivery can take by this
    /// policy (what is left of a resumed backoff, then every attempt's request timeout and every pause between
    /// attempts; the endpoints run in parallel) plus [`LEASE_MARGIN`]. A lease this long needs no renewal: it runs
    /// out only when the process holding it stopped, and then another takes the event over.
    pub fn lease(&self) -> Duration {
        let attempts = self.max_attempts.max(1);
        let mut pauses = Duration::ZERO;
        for attempt in 1..attempts {
            let delay = self.delay_after(attempt);
            if delay == self.max_delay {
                // capped from here on: the rest of the pauses are all max_delay
                pauses = pauses.saturating_add(delay.saturating_mul(attempts - attempt));
                break;
            }
            pauses = pauses.saturating_add(delay);
        }
        self.max_delay
            .saturating_add(pauses)
            .saturating_add(self.request_timeout.saturating_mul(attempts))
            .saturating_add(LEASE_MARGIN)
    }

    /// How long a clean shutdown waits for the deliveries under way to return: they stop before their next attempt,
    /// so one request timeout for an attempt already sent, plus [`SHUTDOWN_MARGIN`] to record it. An event whose
    /// delivery is still running after that keeps its lease, as after a crash.
    pub fn shutdown_grace(&self) -> Duration {
        self.request_timeout.saturating_add(SHUTDOWN_MARGIN)
    }

    /// What is left at `now` of the pause after failed attempt `attempt`, made at `attempted_at`: a delivery
    /// resumed after a restart keeps the endpoint's backoff instead of retrying at once.
    pub fn remaining_delay_after(&self, attempt: u32, attempted_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        let elapsed = (now - attempted_at).to_std().unwrap_or_default();
        self.delay_after(attempt).saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = DeliveryPolicy {
            max_attempts: 8,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (1..=6).map(|attempt| policy.delay_after(attempt).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.delay_after(u32::MAX), Duration::from_secs(10), "no overflow");
    }

    #[test]
    fn a_lease_outlasts_the_longest_delivery_of_its_policy() {
        // the rest of a resumed pause (60) + five pauses (1 + 2 + 4 + 8 + 16) + six request timeouts + the margin
        assert_eq!(DeliveryPolicy::default().lease(), Duration::from_secs(60 + 31 + 60 + 60));
        let capped = DeliveryPolicy {
            max_attempts: 8,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(capped.lease(), Duration::from_secs(10 + (1 + 2 + 4 + 8 + 10 + 10 + 10) + 8 + 60));
        let endless = DeliveryPolicy { max_attempts: u32::MAX, ..capped };
        assert!(endless.lease() > capped.lease(), "no overflow, no loop over every attempt");
    }

    #[test]
    fn a_shutdown_waits_for_one_request_and_its_record_far_less_than_a_lease() {
        let policy = DeliveryPolicy::default();
        assert_eq!(policy.shutdown_grace(), Duration::from_secs(10 + 5));
        assert!(policy.shutdown_grace() < policy.lease());
    }

    #[test]
    fn a_resumed_delivery_waits_only_for_what_is_left_of_its_backoff() {
        use chrono::TimeZone;
        let policy = DeliveryPolicy { first_delay: Duration::from_secs(4), ..DeliveryPolicy::default() };
        let attempted_at = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        let check = |attempt: u32, seconds_later: i64, expect: u64| {
            let now = attempted_at + chrono::TimeDelta::seconds(seconds_later);
            assert_eq!(policy.remaining_delay_after(attempt, attempted_at, now), Duration::from_secs(expect));
        };
        check(1, 0, 4);
        check(1, 3, 1);
        check(2, 3, 5);
        check(1, 60, 0);
        check(1, -30, 4); // a clock that went back waits the whole pause, no more
    }
}
