//! Waiting for a condition in end-to-end tests that drive real processes and servers: poll until the check gives
//! a value, failing the test with what it waited for when the deadline passes. The deadline only bounds a
//! failing test; a passing one returns as soon as its condition holds (no sleep decides an outcome).

use std::time::{Duration, Instant};

/// How long a condition may take before the test fails (generous: the 2-core CI machine is slow and shared).
pub const DEADLINE: Duration = Duration::from_secs(300);
/// How often the condition is checked.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it gives a value; panics naming `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
