//! `get pipelines|runs|adapters` and `models`: lists, as tables or as the API's JSON/YAML.

use adapterci_api::RunListQuery;

use crate::cli::GetRunsArgs;
use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::render::lists;

pub async fn pipelines(context: &Context) -> Result<ExitStatus, CliError> {
    let pipelines = context.client.list_pipelines().await?;
    context.output.data(&pipelines, |style| lists::pipelines(&pipelines, style))?;
    Ok(ExitStatus::Success)
}

pub async fn runs(context: &Context, args: &GetRunsArgs) -> Result<ExitStatus, CliError> {
    let query = RunListQuery { pipeline: args.pipeline.clone(), limit: args.limit };
    let runs =
        context.client.list_runs(&query).await.map_err(|err| {
            CliError::from(err).with_not_found_hint("list the pipelines with `adapterctl get pipelines`")
        })?;
    context.output.data(&runs, |style| lists::runs(&runs, style))?;
    Ok(ExitStatus::Success)
}

pub async fn adapters(context: &Context) -> Result<ExitStatus, CliError> {
    let adapters = context.client.list_adapters().await?;
    context.output.data(&adapters, |style| lists::adapters(&adapters, style))?;
    Ok(ExitStatus::Success)
}

pub async fn models(context: &Context) -> Result<ExitStatus, CliError> {
    let models = context.client.list_models().await?;
    context.output.data(&models, |style| lists::models(&models, style))?;
    Ok(ExitStatus::Success)
}
