//! `RunStore` on the `runs` table. State changes are conditional updates on the state that was read, so two
//! writers racing on one run (two claimers, a worker and a canceller) never both win.

use adapterci_core::PipelineName;
use adapterci_core::ports::{RunStore, StoreError};
use adapterci_core::run::{NewRun, RunPatch, RunRecord, RunState};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::SeaStore;
use crate::convert::{run_record, to_stored_count};
use crate::entity::runs::{ActiveModel, Column, Entity, Model};
use crate::error::{AttemptError, attempt_err, backend, retrying};

/// PostgreSQL reads LIMIT as a signed 64-bit integer.
const MAX_LIMIT: u64 = i64::MAX as u64;

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: format!("run {id}") }
}

/// The column changes that `patch` asks for (state excluded: it is checked separately).
fn patch_columns(patch: &RunPatch) -> Result<Vec<(Column, SimpleExpr)>, StoreError> {
    let mut columns = Vec::new();
    if let Some(stage) = patch.stage {
        columns.push((Column::Stage, Expr::value(stage.as_str())));
    }
    if let Some(digest) = &patch.dataset_digest {
        columns.push((Column::DatasetDigest, Expr::value(digest.to_string())));
    }
    if let Some(report) = &patch.report {
        columns.push((Column::ReportJson, Expr::value(report.to_string())));
    }
    if let Some(published) = &patch.published {
        columns.push((Column::PublishedAdapter, Expr::value(published.adapter.to_string())));
        columns.push((Column::PublishedVersion, Expr::value(to_stored_count("published version", published.version)?)));
        columns.push((Column::PublishedManifestDigest, Expr::value(published.manifest_digest.to_string())));
    }
    if let Some(error) = &patch.error {
        columns.push((Column::Error, Expr::value(error.as_str())));
    }
    Ok(columns)
}

impl SeaStore {
    async fn find_run(&self, id: &str) -> Result<Option<Model>, StoreError> {
        Entity::find_by_id(id).one(&self.db).await.map_err(backend(format!("reading run {id}")))
    }

    /// One attempt at `update_run`: checks the transition from the state just read, then writes only if the
    /// run is still in that state.
    async fn try_update_run(&self, id: &str, patch: &RunPatch) -> Result<RunRecord, AttemptError> {
        let context = format!("updating run {id}");
        let row = self.find_run(id).await?.ok_or_else(|| not_found(id))?;
        let current = run_record(row.clone())?;
        let mut update = Entity::update_many().col_expr(Column::UpdatedAt, Expr::value(self.now()));
        if let Some(next) = patch.state {
            current.state.transition(next).map_err(|err| StoreError::InvalidTransition(format!("run {id}: {err}")))?;
            update = update.col_expr(Column::State, Expr::value(next.as_str()));
        }
        for (column, value) in patch_columns(patch)? {
            update = update.col_expr(column, value);
        }
        let rows = update
            .filter(Column::Id.eq(id))
            .filter(Column::State.eq(row.state.as_str()))
            .exec_with_returning(&self.db)
            .await
            .map_err(attempt_err(&context))?;
        match rows.into_iter().next() {
            Some(row) => Ok(run_record(row)?),
            None => Err(AttemptError::Retry(format!("run {id} changed state while it was being updated"))),
        }
    }

    /// One attempt at `claim_next_run`: another claimer may take the run between the read and the update.
    async fn try_claim_next_run(&self) -> Result<Option<RunRecord>, AttemptError> {
        let context = "claiming the next queued run";
        let oldest = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::State.eq(RunState::Queued.as_str()))
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .into_tuple::<String>()
            .one(&self.db)
            .await
            .map_err(attempt_err(context))?;
        let Some(id) = oldest else {
            return Ok(None);
        };
        let rows = Entity::update_many()
            .col_expr(Column::State, Expr::value(RunState::Running.as_str()))
            .col_expr(Column::UpdatedAt, Expr::value(self.now()))
            .filter(Column::Id.eq(id.as_str()))
            .filter(Column::State.eq(RunState::Queued.as_str()))
            .exec_with_returning(&self.db)
            .await
            .map_err(attempt_err(context))?;
        match rows.into_iter().next() {
            Some(row) => Ok(Some(run_record(row)?)),
            None => Err(AttemptError::Retry(format!("run {id} was claimed by another worker"))),
        }
    }
}

#[async_trait]
impl RunStore for SeaStore {
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError> {
        let now = self.now();
        let record = run.into_queued_record(uuid::Uuid::now_v7().to_string(), now);
        let row = queued_row(&record)?;
        Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
            .map_err(backend(format!("creating a run of pipeline {}", record.pipeline)))?;
        Ok(record)
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.find_run(id).await?.map(run_record).transpose()
    }

    async fn list_runs(&self, pipeline: Option<&PipelineName>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut query = Entity::find();
        if let Some(pipeline) = pipeline {
            query = query.filter(Column::Pipeline.eq(pipeline.as_str()));
        }
        let rows = query
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(u64::try_from(limit).map_or(MAX_LIMIT, |limit| limit.min(MAX_LIMIT)))
            .all(&self.db)
            .await
            .map_err(backend("listing runs"))?;
        rows.into_iter().map(run_record).collect()
    }

    async fn update_run(&self, id: &str, patch: RunPatch) -> Result<RunRecord, StoreError> {
        retrying(format!("updating run {id}"), || self.try_update_run(id, &patch)).await
    }

    async fn claim_next_run(&self) -> Result<Option<RunRecord>, StoreError> {
        retrying("claiming the next queued run", || self.try_claim_next_run()).await
    }
}

/// The row of a newly queued run (`create_run`, and the scheduler's enqueue).
pub(crate) fn queued_row(record: &RunRecord) -> Result<ActiveModel, StoreError> {
    let trigger_json = serde_json::to_string(&record.trigger)
        .map_err(|err| StoreError::Backend(format!("encoding the trigger of a run: {err}")))?;
    Ok(ActiveModel {
        id: Set(record.id.clone()),
        pipeline: Set(record.pipeline.to_string()),
        pipeline_revision: Set(to_stored_count("pipeline revision", record.pipeline_revision)?),
        state: Set(record.state.as_str().to_string()),
        stage: Set(None),
        trigger_json: Set(trigger_json),
        dataset_digest: Set(record.dataset_digest.as_ref().map(ToString::to_string)),
        report_json: Set(None),
        published_adapter: Set(None),
        published_version: Set(None),
        published_manifest_digest: Set(None),
        error: Set(None),
        created_at: Set(record.created_at),
        updated_at: Set(record.updated_at),
    })
}
