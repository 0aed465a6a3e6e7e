//! `runs metrics ID [--svg FILE]`: a run's per-step training metrics as a table (or JSON), and its loss curve
//! as an SVG image.

use std::path::Path;

use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::render::loss_curve::{loss_curve_svg, metrics_table};

pub async fn metrics(context: &Context, id: &str, svg: Option<&Path>) -> Result<ExitStatus, CliError> {
    let metrics = context
        .client
        .run_metrics(id)
        .await
        .map_err(|err| CliError::from(err).with_not_found_hint("list the runs with `adapterctl get runs`"))?;
    if let Some(path) = svg {
        let points: Vec<(u64, f64)> =
            metrics.steps.iter().filter_map(|step| step.loss.map(|loss| (step.step, loss))).collect();
        let image = loss_curve_svg(&format!("run {id}: training loss"), &points);
        tokio::fs::write(path, image)
            .await
            .map_err(|err| CliError::new(format!("cannot write the loss curve to {}: {err}", path.display())))?;
        context.output.note(&format!("wrote the loss curve of {} steps to {}", points.len(), path.display()));
    }
    context.output.data(&metrics, |style| metrics_table(&metrics, style))?;
    Ok(ExitStatus::Success)
}
