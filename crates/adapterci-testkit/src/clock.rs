//! A clock that tests move by hand.

use std::sync::Mutex;

use adapterci_core::ports::Clock;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// A `Clock` that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// Starts at 2026-01-01T00:00:00Z.
    pub fn new() -> ManualClock {
        ManualClock(Mutex::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()))
    }

    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|now| *now).unwrap_or_default()
    }
}
