//! Rows to domain records and back. Reading never trusts the database: a value this code cannot parse (an
//! unknown state, a malformed digest, a negative revision) is a `StoreError::Backend` that names the table, the
//! row and the column, so a damaged database is diagnosable instead of a panic.

use std::fmt::Display;
use std::str::FromStr;

use adapterci_core::ports::{AdapterVersionRecord, PipelineRecord, StoreError, WatchState};
use adapterci_core::run::{PublishedRef, RunRecord, Trigger};
use adapterci_core::{AdapterName, Digest, PipelineName};
use chrono::{DateTime, SubsecRound, Utc};

use adapterci_core::channels::{ChannelAction, ChannelEvent, ChannelRecord};

use crate::entity::{adapter_channel_events, adapter_channels, adapter_versions, pipelines, runs, watches};

/// Timestamps are kept to the microsecond, PostgreSQL's precision, so every backend returns what it was given.
pub(crate) fn to_stored_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// A count the domain keeps as `u64`, stored as a signed 64-bit integer.
pub(crate) fn to_stored_count(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(format!("{what} {value} does not fit a signed 64-bit database integer")))
}

/// Reads the columns of one row, naming it in every error.
pub(crate) struct RowReader<'a> {
    pub(crate) table: &'static str,
    pub(crate) row: &'a str,
}

impl RowReader<'_> {
    fn bad(&self, column: &str, reason: impl Display) -> StoreError {
        StoreError::Backend(format!(
            "unreadable value in table {}, row {}, column {column}: {reason}",
            self.table, self.row
        ))
    }

    fn parse<T: FromStr>(&self, column: &str, value: &str) -> Result<T, StoreError>
    where
        T::Err: Display,
    {
        value.parse().map_err(|err| self.bad(column, err))
    }

    fn parse_opt<T: FromStr>(&self, column: &str, value: Option<&str>) -> Result<Option<T>, StoreError>
    where
        T::Err: Display,
    {
        value.map(|value| self.parse(column, value)).transpose()
    }

    fn count(&self, column: &str, value: i64) -> Result<u64, StoreError> {
        u64::try_from(value).map_err(|_| self.bad(column, format!("negative number {value}")))
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, column: &str, value: &str) -> Result<T, StoreError> {
        serde_json::from_str(value).map_err(|err| self.bad(column, format!("invalid JSON: {err}")))
    }
}

pub(crate) fn pipeline_record(row: pipelines::Model) -> Result<PipelineRecord, StoreError> {
    let read = RowReader { table: "pipelines", row: &row.name };
    Ok(PipelineRecord {
        name: read.parse("name", &row.name)?,
        revision: read.count("revision", row.revision)?,
        spec_digest: read.parse("spec_digest", &row.spec_digest)?,
        spec_yaml: row.spec_yaml,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn run_record(row: runs::Model) -> Result<RunRecord, StoreError> {
    let read = RowReader { table: "runs", row: &row.id };
    let published =
        match (row.published_adapter.as_deref(), row.published_version, row.published_manifest_digest.as_deref()) {
            (None, None, None) => None,
            (Some(adapter), Some(version), Some(digest)) => Some(PublishedRef {
                adapter: read.parse("published_adapter", adapter)?,
                version: read.count("published_version", version)?,
                manifest_digest: read.parse("published_manifest_digest", digest)?,
            }),
            _ => {
                return Err(read.bad(
                    "published_adapter",
                    "published_adapter, published_version and published_manifest_digest must be all set or all null",
                ));
            }
        };
    Ok(RunRecord {
        pipeline: read.parse::<PipelineName>("pipeline", &row.pipeline)?,
        pipeline_revision: read.count("pipeline_revision", row.pipeline_revision)?,
        state: read.parse("state", &row.state)?,
        stage: read.parse_opt("stage", row.stage.as_deref())?,
        trigger: read.json::<Trigger>("trigger_json", &row.trigger_json)?,
        dataset_digest: read.parse_opt::<Digest>("dataset_digest", row.dataset_digest.as_deref())?,
        report: row.report_json.as_deref().map(|json| read.json("report_json", json)).transpose()?,
        published,
        error: row.error.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        id: row.id,
    })
}

pub(crate) fn watch_state(row: watches::Model) -> Result<WatchState, StoreError> {
    let key = format!("({}, {})", row.pipeline, row.location);
    let read = RowReader { table: "watches", row: &key };
    Ok(WatchState { etag: row.etag, digest: read.parse("digest", &row.digest)?, seen_at: row.seen_at })
}

pub(crate) fn version_record(row: adapter_versions::Model) -> Result<AdapterVersionRecord, StoreError> {
    let key = format!("({}, {})", row.name, row.version);
    let read = RowReader { table: "adapter_versions", row: &key };
    Ok(AdapterVersionRecord {
        name: read.parse::<AdapterName>("name", &row.name)?,
        version: read.count("version", row.version)?,
        manifest_digest: read.parse("manifest_digest", &row.manifest_digest)?,
        base_model_digest: read.parse("base_model_digest", &row.base_model_digest)?,
        run_id: row.run_id,
        created_at: row.created_at,
    })
}

/// An adapter name read from `adapter_versions`.
pub(crate) fn adapter_name(name: &str) -> Result<AdapterName, StoreError> {
    RowReader { table: "adapter_versions", row: name }.parse("name", name)
}

/// The base a stored version is bound to: its recorded binding, else (rows from before channels) its base model.
pub(crate) fn version_binding(row: &adapter_versions::Model) -> Result<Digest, StoreError> {
    let key = format!("({}, {})", row.name, row.version);
    let read = RowReader { table: "adapter_versions", row: &key };
    match row.base_binding.as_deref() {
        Some(binding) => read.parse("base_binding", binding),
        None => read.parse("base_model_digest", &row.base_model_digest),
    }
}

pub(crate) fn channel_record(row: adapter_channels::Model) -> Result<ChannelRecord, StoreError> {
    let key = format!("({}, {})", row.adapter, row.channel);
    let read = RowReader { table: "adapter_channels", row: &key };
    Ok(ChannelRecord {
        adapter: read.parse("adapter", &row.adapter)?,
        channel: read.parse("channel", &row.channel)?,
        version: read.count("version", row.version)?,
        base_binding: read.parse("base_binding", &row.base_binding)?,
        pinned: row.pinned,
        updated_at: row.updated_at,
    })
}

pub(crate) fn channel_event(row: adapter_channel_events::Model) -> Result<ChannelEvent, StoreError> {
    let key = row.id.to_string();
    let read = RowReader { table: "adapter_channel_events", row: &key };
    Ok(ChannelEvent {
        adapter: read.parse("adapter", &row.adapter)?,
        channel: read.parse("channel", &row.channel)?,
        action: ChannelAction::parse(&row.action).ok_or_else(|| read.bad("action", "unknown action"))?,
        from_version: row.from_version.map(|version| read.count("from_version", version)).transpose()?,
        to_version: read.count("to_version", row.to_version)?,
        at: row.at,
    })
}
