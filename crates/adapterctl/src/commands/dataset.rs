//! `dataset push FILE --location KEY`: upload a dataset file as it is.

use std::path::Path;

use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::render::fields;

pub async fn push(context: &Context, file: &Path, location: &str) -> Result<ExitStatus, CliError> {
    check_location(location)?;
    let bytes = tokio::fs::read(file)
        .await
        .map_err(|err| CliError::new(format!("cannot read the dataset file {}: {err}", file.display())))?;
    let pushed = context.client.push_dataset(location, bytes).await?;
    context.output.data(&pushed, |_| {
        fields(&[
            ("location", Some(pushed.location.clone())),
            ("digest", Some(pushed.digest.clone())),
            ("size", Some(format!("{} bytes", pushed.size))),
        ])
    })?;
    Ok(ExitStatus::Success)
}

/// The same rule as pipelines' `dataset.location`: a relative key without empty, `.` or `..` segments.
pub fn check_location(location: &str) -> Result<(), CliError> {
    let bad_segment = location.split('/').find(|segment| segment.is_empty() || *segment == "." || *segment == "..");
    match bad_segment {
        None => Ok(()),
        Some(segment) => {
            let what =
                if segment.is_empty() { "an empty segment".to_string() } else { format!("the segment {segment:?}") };
            Err(CliError {
                status: ExitStatus::Usage,
                ..CliError::new(format!("invalid --location {location:?}: it has {what}"))
            }
            .with_hint("a location is a relative key like datasets/support/train.jsonl"))
        }
    }
}
