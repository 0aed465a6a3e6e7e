//! Dataset watches: poll each pipeline's dataset location when its interval is due and queue a run when the
//! content changed. The ETag skips reading unchanged objects; the content digest decides, so touching a file
//! without changing it starts nothing.

use adapterci_core::ports::WatchState;
use adapterci_core::run::{RunRecord, Trigger};
use adapterci_core::{Digest, PipelineName};
use adapterci_pipeline::{CronSchedule, PipelineSpec};
use chrono::Duration as ChronoDuration;
use chrono::{DateTime, Utc};

use crate::dataset::{dataset_version, read_dataset};
use crate::schedule::Timing;
use crate::{Controller, ControllerError};

impl Controller {
    /// Polls every due dataset watch; returns the runs it queued.
    pub async fn poll_watches(&self) -> Result<Vec<RunRecord>, ControllerError> {
        let mut queued = Vec::new();
        let records = self.ports().store.list_pipelines().await?;
        self.specs.retain(&records);
        for record in &records {
            let spec = match self.specs.get(record) {
                Ok(spec) => spec,
                Err(error) => {
                    tracing::warn!(pipeline = %record.name, %error, "stored pipeline does not parse: not watched");
                    continue;
                }
            };
            if let Some(schedule) = spec.cron()
                && let Some(due) = self.cron_due(&spec.name, schedule)
            {
                let trigger = Trigger::Schedule { schedule: schedule.to_string(), due };
                match self.enqueue(&spec.name, trigger, Timing::Immediate).await {
                    Ok(run) => queued.push(run),
                    Err(error) => tracing::warn!(pipeline = %spec.name, %error, "scheduled run not queued"),
                }
            }
            if !self.watch_due(&spec) {
                continue;
            }
            match self.poll_one(&spec, Timing::Debounced).await {
                Ok(Some(run)) => queued.push(run),
                Ok(None) => {}
                Err(error) => tracing::warn!(pipeline = %spec.name, %error, "dataset watch failed"),
            }
        }
        Ok(queued)
    }

    /// Checks `pipeline`'s dataset now, whatever its interval (for a webhook that says the data changed, or a
    /// test); queues a run, due at once, when the content changed.
    pub async fn poll_now(&self, pipeline: &PipelineName) -> Result<Option<RunRecord>, ControllerError> {
        let (_, spec) = self.load_spec(pipeline).await?;
        if let Ok(mut last_polled) = self.last_polled.lock() {
            last_polled.insert(spec.name.clone(), self.ports().clock.now());
        }
        self.poll_one(&spec, Timing::Immediate).await
    }

    /// The firing time when `schedule` came due since the last check (the first check only starts the clock).
    fn cron_due(&self, pipeline: &PipelineName, schedule: &CronSchedule) -> Option<DateTime<Utc>> {
        let now = self.ports().clock.now();
        let mut checked = self.cron_checked.lock().ok()?;
        let since = checked.insert(pipeline.clone(), now)?;
        schedule.next_after(since).filter(|due| *due <= now)
    }

    fn watch_due(&self, spec: &PipelineSpec) -> bool {
        let Some(interval) = spec.watch_interval() else {
            return false;
        };
        let now = self.ports().clock.now();
        let Ok(mut last_polled) = self.last_polled.lock() else {
            return false;
        };
        let due = match last_polled.get(&spec.name) {
            None => true,
            Some(last) => now - *last >= ChronoDuration::from_std(interval).unwrap_or(ChronoDuration::MAX),
        };
        if due {
            last_polled.insert(spec.name.clone(), now);
        }
        due
    }

    async fn poll_one(&self, spec: &PipelineSpec, timing: Timing) -> Result<Option<RunRecord>, ControllerError> {
        let ports = self.ports();
        let location = &spec.dataset.location;
        let Some(stat) = dataset_version(ports.datasets.as_ref(), location).await? else {
            tracing::debug!(pipeline = %spec.name, location, "dataset not there yet");
            return Ok(None);
        };
        let previous = ports.store.get_watch(&spec.name, location).await?;
        if let (Some(previous), Some(etag)) = (&previous, &stat.etag)
            && previous.etag.as_ref() == Some(etag)
        {
            return Ok(None);
        }
        let bytes = read_dataset(ports.datasets.as_ref(), location).await?;
        let digest = Digest::of(&bytes);
        let changed = previous.as_ref().is_none_or(|previous| previous.digest != digest);
        let state = WatchState { etag: stat.etag.clone(), digest: digest.clone(), seen_at: ports.clock.now() };
        let run = if changed {
            tracing::info!(pipeline = %spec.name, location, %digest, "dataset changed");
            // Queue first, remember second: a crash in between re-queues the change instead of losing it.
            let trigger = Trigger::DatasetChanged { location: location.clone(), digest };
            Some(self.enqueue(&spec.name, trigger, timing).await?)
        } else {
            tracing::debug!(pipeline = %spec.name, location, "dataset touched but unchanged");
            None
        };
        ports.store.put_watch(&spec.name, location, &state).await?;
        Ok(run)
    }
}
