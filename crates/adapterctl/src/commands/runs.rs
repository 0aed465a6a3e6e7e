//! `trigger PIPELINE [--wait]` and `runs wait ID`: start a run, follow it to its end, describe it.

use adapterci_api::RunInfo;

use crate::cli::TriggerArgs;
use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::follow::{exit_status_of, follow};
use crate::render::run::run_detail;

pub async fn trigger(context: &Context, args: &TriggerArgs) -> Result<ExitStatus, CliError> {
    let run =
        context.client.trigger_pipeline(&args.pipeline).await.map_err(|err| {
            CliError::from(err).with_not_found_hint("create it first with `adapterctl apply -f FILE`")
        })?;
    if args.wait {
        return follow_and_describe(context, run).await;
    }
    context.output.data(&run, |_| {
        format!("run {} {} (pipeline {} revision {})", run.id, run.state, run.pipeline, run.pipeline_revision)
    })?;
    context.output.note(&format!("follow it with `adapterctl runs wait {}`", run.id));
    Ok(ExitStatus::Success)
}

pub async fn wait(context: &Context, id: &str) -> Result<ExitStatus, CliError> {
    let run = context
        .client
        .get_run(id)
        .await
        .map_err(|err| CliError::from(err).with_not_found_hint("list the runs with `adapterctl get runs`"))?;
    follow_and_describe(context, run).await
}

pub async fn cancel(context: &Context, id: &str) -> Result<ExitStatus, CliError> {
    let run = context
        .client
        .cancel_run(id)
        .await
        .map_err(|err| CliError::from(err).with_not_found_hint("list the runs with `adapterctl get runs`"))?;
    context.output.data(&run, |_| format!("run {} {}", run.id, run.state))?;
    Ok(ExitStatus::Success)
}

async fn follow_and_describe(context: &Context, run: RunInfo) -> Result<ExitStatus, CliError> {
    let run = follow(&context.client, &context.output, run).await?;
    context.output.data(&run, |style| run_detail(&run, style))?;
    let status = exit_status_of(run.state);
    if status == ExitStatus::GateRejected {
        context.output.note(&format!("run {}: a gate rejected the adapter; nothing was published", run.id));
    }
    Ok(status)
}
