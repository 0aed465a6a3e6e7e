//! Conversions from domain records to wire types.

use adapterci_api::{AdapterVersionInfo, PipelineInfo, PublishedInfo, RunInfo, RunState as WireRunState};
use adapterci_core::ports::{AdapterVersionRecord, PipelineRecord};
use adapterci_core::run::{RunRecord, RunState};
use adapterci_pipeline::{BaseModelRef, TriggerSpec};

pub(crate) fn pipeline_info(record: &PipelineRecord) -> PipelineInfo {
    // Stored pipelines were validated when applied; one that no longer parses is still listed.
    let spec = adapterci_pipeline::parse_pipeline(&record.spec_yaml, None).ok();
    PipelineInfo {
        name: record.name.to_string(),
        revision: record.revision,
        spec_digest: record.spec_digest.to_string(),
        adapter: spec.as_ref().map(|spec| spec.publish.adapter.to_string()).unwrap_or_default(),
        dataset_location: spec.as_ref().map(|spec| spec.dataset.location.clone()).unwrap_or_default(),
        base_model: spec
            .as_ref()
            .map(|spec| match &spec.base {
                BaseModelRef::Named(name) => name.clone(),
                BaseModelRef::Path(path) => path.display().to_string(),
            })
            .unwrap_or_default(),
        triggers: spec
            .map(|spec| {
                spec.triggers
                    .iter()
                    .map(|trigger| match trigger {
                        TriggerSpec::DatasetWatch { interval } => {
                            format!("dataset_watch({})", adapterci_pipeline::format_duration(*interval))
                        }
                        TriggerSpec::Manual => "manual".to_string(),
                        TriggerSpec::Webhook { secret, format } => format!("webhook({secret}, {})", format.as_str()),
                        TriggerSpec::Cron { schedule } => format!("cron({schedule})"),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

pub(crate) fn run_info(record: RunRecord) -> RunInfo {
    RunInfo {
        state: run_state(record.state),
        stage: record.stage.map(|stage| stage.to_string()),
        trigger: serde_json::to_value(&record.trigger).unwrap_or(serde_json::Value::Null),
        dataset_digest: record.dataset_digest.map(|digest| digest.to_string()),
        published: record.published.map(|published| PublishedInfo {
            adapter: published.adapter.to_string(),
            version: published.version,
            manifest_digest: published.manifest_digest.to_string(),
        }),
        id: record.id,
        pipeline: record.pipeline.to_string(),
        pipeline_revision: record.pipeline_revision,
        created_at: record.created_at,
        updated_at: record.updated_at,
        error: record.error,
        report: record.report,
    }
}

fn run_state(state: RunState) -> WireRunState {
    match state {
        RunState::Queued => WireRunState::Queued,
        RunState::Running => WireRunState::Running,
        RunState::Succeeded => WireRunState::Succeeded,
        RunState::Rejected => WireRunState::Rejected,
        RunState::Failed => WireRunState::Failed,
        RunState::Cancelled => WireRunState::Cancelled,
    }
}

pub(crate) fn version_info(record: &AdapterVersionRecord) -> AdapterVersionInfo {
    AdapterVersionInfo {
        name: record.name.to_string(),
        version: record.version,
        manifest_digest: record.manifest_digest.to_string(),
        base_model_digest: record.base_model_digest.to_string(),
        run_id: record.run_id.clone(),
        created_at: record.created_at,
    }
}
