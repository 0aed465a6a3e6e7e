//! `apply -f FILE`: validate the pipeline here, then create or update it on the server.

use adapterci_api::{ApplyOutcome, ApplyPipelineRequest, PipelineInfo};

use crate::cli::ApplyArgs;
use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};

pub async fn apply(context: &Context, args: &ApplyArgs) -> Result<ExitStatus, CliError> {
    let file = args.file.display().to_string();
    let yaml = tokio::fs::read_to_string(&args.file)
        .await
        .map_err(|err| CliError::new(format!("cannot read the pipeline file {file}: {err}")))?;
    // Checking here first gives every problem with its line and column without a server round trip.
    let spec = adapterci_pipeline::parse_pipeline(&yaml, Some(&file)).map_err(|err| {
        let problems: Vec<String> = err.to_string().lines().map(str::to_string).collect();
        let count = problems.len();
        CliError {
            details: problems,
            ..CliError::new(format!(
                "{file} is not a valid pipeline ({count} problem{}); nothing was sent to adapterd",
                if count == 1 { "" } else { "s" }
            ))
        }
    })?;
    let name = spec.name.as_str();
    let before = match context.client.get_pipeline(name).await {
        Ok(detail) => Some(detail.info),
        Err(err) if err.is_not_found() => None,
        Err(err) => return Err(err.into()),
    };
    let request = ApplyPipelineRequest { file: Some(file.clone()), yaml };
    let mut response =
        context.client.apply_pipeline(&request).await.map_err(|err| CliError::from_api(err, Some(&file)))?;
    let outcome = response.outcome.unwrap_or_else(|| outcome_of(before.as_ref(), &response.pipeline));
    response.outcome = Some(outcome);
    context.output.data(&response, |_| {
        format!("pipeline/{} revision {} {}", response.pipeline.name, response.pipeline.revision, outcome.as_str())
    })?;
    Ok(ExitStatus::Success)
}

/// What an apply did, from the pipeline before and after, for servers that do not say.
pub fn outcome_of(before: Option<&PipelineInfo>, after: &PipelineInfo) -> ApplyOutcome {
    match before {
        None => ApplyOutcome::Created,
        Some(before) if before.revision == after.revision && before.spec_digest == after.spec_digest => {
            ApplyOutcome::Unchanged
        }
        Some(_) => ApplyOutcome::Configured,
    }
}
