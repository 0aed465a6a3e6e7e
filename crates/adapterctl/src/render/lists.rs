//! The tables of `get pipelines|runs|adapters` and `models`.

use adapterci_api::{AdapterInfo, ModelKind, ModelList, PipelineInfo, RunInfo, RunState};

use crate::output::{Paint, Style};
use crate::render::{Cell, short_digest, table, timestamp};

pub fn pipelines(pipelines: &[PipelineInfo], style: Style) -> String {
    if pipelines.is_empty() {
        return "no pipelines".to_string();
    }
    let rows = pipelines
        .iter()
        .map(|pipeline| {
            vec![
                Cell::from(pipeline.name.as_str()),
                Cell::from(pipeline.revision.to_string()),
                Cell::from(pipeline.adapter.as_str()),
                Cell::from(pipeline.dataset_location.as_str()),
                Cell::from(pipeline.base_model.as_str()),
                Cell::from(pipeline.triggers.join(",")),
                Cell::from(timestamp(&pipeline.updated_at)),
            ]
        })
        .collect();
    table(&["name", "revision", "adapter", "dataset", "base model", "triggers", "updated"], rows, style)
}

/// The color of a run state wherever it is shown.
pub fn state_paint(state: RunState) -> Paint {
    match state {
        RunState::Queued | RunState::Running => Paint::Cyan,
        RunState::Succeeded => Paint::Green,
        RunState::Rejected => Paint::Yellow,
        RunState::Failed | RunState::Cancelled => Paint::Red,
    }
}

pub fn runs(runs: &[RunInfo], style: Style) -> String {
    if runs.is_empty() {
        return "no runs".to_string();
    }
    let rows = runs
        .iter()
        .map(|run| {
            let published =
                run.published.as_ref().map(|published| format!("{}@{}", published.adapter, published.version));
            vec![
                Cell::from(run.id.as_str()),
                Cell::from(run.pipeline.as_str()),
                Cell::from(run.pipeline_revision.to_string()),
                Cell::painted(run.state.as_str(), state_paint(run.state)),
                Cell::from(run.stage.as_deref().unwrap_or("-")),
                Cell::from(run.trigger_kind()),
                Cell::from(published.unwrap_or_else(|| "-".to_string())),
                Cell::from(timestamp(&run.created_at)),
            ]
        })
        .collect();
    table(&["id", "pipeline", "revision", "state", "stage", "trigger", "published", "created"], rows, style)
}

pub fn adapters(adapters: &[AdapterInfo], style: Style) -> String {
    if adapters.is_empty() {
        return "no adapters".to_string();
    }
    let rows = adapters
        .iter()
        .map(|adapter| {
            let served = adapter.served_version.map_or_else(|| "-".to_string(), |version| version.to_string());
            let served = match adapter.served_version {
                Some(version) if version != adapter.latest_version => Cell::painted(served, Paint::Yellow),
                _ => Cell::from(served),
            };
            vec![
                Cell::from(adapter.name.as_str()),
                Cell::from(adapter.latest_version.to_string()),
                served,
                Cell::from(short_digest(&adapter.manifest_digest)),
                Cell::from(short_digest(&adapter.base_model_digest)),
                Cell::from(timestamp(&adapter.created_at)),
            ]
        })
        .collect();
    table(&["name", "latest", "served", "manifest", "base model", "created"], rows, style)
}

pub fn models(models: &ModelList, style: Style) -> String {
    if models.data.is_empty() {
        return "no models".to_string();
    }
    let rows = models
        .data
        .iter()
        .map(|model| {
            let details = &model.adapterci;
            vec![
                Cell::from(model.id.as_str()),
                Cell::from(match details.kind {
                    ModelKind::Base => "base",
                    ModelKind::Adapter => "adapter",
                }),
                Cell::from(details.version.map_or_else(|| "-".to_string(), |version| version.to_string())),
                Cell::from(details.manifest_digest.as_deref().map_or_else(|| "-".to_string(), short_digest)),
                Cell::from(short_digest(&details.base_model_digest)),
            ]
        })
        .collect();
    table(&["model", "kind", "version", "manifest", "base model"], rows, style)
}
