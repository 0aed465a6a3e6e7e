//! `adapterctl runs logs RUN [-f]`: print a run's captured training log (runs trained in child processes);
//! with `--follow`, keep printing what the log gains until the run ends.

use std::io::Write;

use adapterci_api::RunLogsResponse;

use super::Context;
use crate::exit::{CliError, ExitStatus};
use crate::follow::POLL_INTERVAL;

fn write_raw(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::new(format!("cannot write to stdout: {err}")))
        }
        _ => Ok(()),
    }
}

/// The next part of the log; `None` while a followed run has no log yet (queued, or not training yet).
async fn read(context: &Context, id: &str, offset: u64, follow: bool) -> Result<Option<RunLogsResponse>, CliError> {
    match context.client.run_logs(id, offset).await {
        Ok(chunk) => Ok(Some(chunk)),
        Err(err) if follow && err.status() == Some(404) => {
            // the run exists and will train later, or it does not exist / ended without a log: ask
            let run =
                context.client.get_run(id).await.map_err(|err| {
                    CliError::from(err).with_not_found_hint("list the runs with `adapterctl get runs`")
                })?;
            if run.state.is_terminal() { Err(CliError::from(err)) } else { Ok(None) }
        }
        Err(err) => Err(CliError::from(err).with_not_found_hint("list the runs with `adapterctl get runs`")),
    }
}

pub async fn logs(context: &Context, id: &str, follow: bool) -> Result<ExitStatus, CliError> {
    let mut offset = 0;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        if let Some(chunk) = read(context, id, offset, follow).await? {
            write_raw(&chunk.text)?;
            offset = chunk.next_offset;
            if !follow || chunk.complete {
                return Ok(ExitStatus::Success);
            }
        }
        ticker.tick().await;
    }
}
