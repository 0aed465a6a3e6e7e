//! Progress of a running training job: the backend reports through the synchronous `ProgressSink`; a task
//! copies the newest state into the run's report in the metadata store, at most about once a second.

use std::sync::Mutex;

use adapterci_core::run_metrics::StepMetric;
use adapterci_core::training::{ProgressSink, StepProgress};
use tokio::sync::watch;

/// At most this many progress messages are kept in a run's report.
const MAX_MESSAGES: usize = 50;

/// What a run's report shows while it trains.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProgressSnapshot {
    pub latest: Option<StepProgress>,
    pub messages: Vec<String>,
    pub loss_curve: Vec<(usize, f64)>,
}

/// A `ProgressSink` that publishes snapshots on a watch channel.
pub(crate) struct RunProgress {
    state: Mutex<ProgressSnapshot>,
    sender: watch::Sender<u64>,
    /// Steps reported and not yet stored as step metrics.
    unstored: Mutex<Vec<StepMetric>>,
}

impl RunProgress {
    pub fn new() -> (RunProgress, watch::Receiver<u64>) {
        let (sender, receiver) = watch::channel(0);
        (
            RunProgress { state: Mutex::new(ProgressSnapshot::default()), sender, unstored: Mutex::new(Vec::new()) },
            receiver,
        )
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        self.state.lock().map(|state| state.clone()).unwrap_or_default()
    }

    /// The steps reported since the last call.
    pub fn take_steps(&self) -> Vec<StepMetric> {
        self.unstored.lock().map(|mut steps| std::mem::take(&mut *steps)).unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut ProgressSnapshot)) {
        if let Ok(mut state) = self.state.lock() {
            change(&mut state);
        }
        self.sender.send_modify(|generation| *generation += 1);
    }
}

impl ProgressSink for RunProgress {
    fn on_step(&self, progress: &StepProgress) {
        tracing::debug!(step = progress.step, total = progress.total_steps, loss = progress.loss, "training step");
        if let Ok(mut steps) = self.unstored.lock() {
            steps.push(StepMetric::from_progress(progress));
        }
        self.update(|state| {
            state.loss_curve.push((progress.step, progress.loss));
            state.latest = Some(progress.clone());
        });
    }

    fn on_message(&self, message: &str) {
        tracing::info!(message, "training");
        self.update(|state| {
            if state.messages.len() == MAX_MESSAGES {
                state.messages.remove(0);
            }
            state.messages.push(message.to_string());
        });
    }
}
