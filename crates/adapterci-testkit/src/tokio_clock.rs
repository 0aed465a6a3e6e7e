//! A `Clock` driven by tokio's clock, so that a test on a paused runtime (`start_paused = true`) moves the
//! controller's wall time and its timers (heartbeats, intervals) together with `tokio::time::advance`.

use adapterci_core::ports::Clock;
use chrono::{DateTime, TimeZone, Utc};
use tokio::time::Instant;

/// Wall time = a fixed start + the tokio time elapsed since this clock was made.
#[derive(Debug)]
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start: Instant,
}

impl TokioClock {
    /// Starts at 2026-01-01T00:00:00Z; must be made inside a tokio runtime.
    pub fn new() -> TokioClock {
        TokioClock {
            start_wall: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default(),
            start: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.start_wall + elapsed
    }
}
