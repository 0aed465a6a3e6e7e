//! `RunMetricsStore` on the `run_step_metrics` table: one row per (run, step), overwritten when a resumed run
//! records a step again.

use adapterci_core::ports::StoreError;
use adapterci_core::run_metrics::{RunMetricsStore, StepMetric};
use async_trait::async_trait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::SeaStore;
use crate::error::backend;

/// Rows per insert: 6 values each, well under SQLite's and PostgreSQL's bind-parameter limits.
const ROWS_PER_INSERT: usize = 100;

pub(crate) mod run_step_metrics {
    //! The `run_step_metrics` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "run_step_metrics")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub step: i64,
        pub loss: f64,
        pub learning_rate: f64,
        pub tokens: i64,
        pub seconds: f64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use run_step_metrics::{ActiveModel, Column, Entity, Model};

fn stored(value: u64, what: &str, run_id: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Backend(format!("run {run_id}: {what} {value} is too large to store")))
}

fn read(row: Model) -> Result<StepMetric, StoreError> {
    let unreadable = |column: &str, value: i64| {
        StoreError::Backend(format!(
            "unreadable value in table run_step_metrics, run {}, column {column}: {value}",
            row.run_id
        ))
    };
    Ok(StepMetric {
        step: u64::try_from(row.step).map_err(|_| unreadable("step", row.step))?,
        loss: row.loss,
        learning_rate: row.learning_rate,
        tokens: u64::try_from(row.tokens).map_err(|_| unreadable("tokens", row.tokens))?,
        seconds: row.seconds,
    })
}

#[async_trait]
impl RunMetricsStore for SeaStore {
    async fn record_step_metrics(&self, run_id: &str, steps: &[StepMetric]) -> Result<(), StoreError> {
        for chunk in steps.chunks(ROWS_PER_INSERT) {
            let mut rows = Vec::with_capacity(chunk.len());
            for metric in chunk {
                rows.push(ActiveModel {
                    run_id: Set(run_id.to_string()),
                    step: Set(stored(metric.step, "step", run_id)?),
                    loss: Set(metric.loss),
                    learning_rate: Set(metric.learning_rate),
                    tokens: Set(stored(metric.tokens, "tokens", run_id)?),
                    seconds: Set(metric.seconds),
                });
            }
            let upsert = OnConflict::columns([Column::RunId, Column::Step])
                .update_columns([Column::Loss, Column::LearningRate, Column::Tokens, Column::Seconds])
                .to_owned();
            Entity::insert_many(rows)
                .on_conflict(upsert)
                .exec_without_returning(&self.db)
                .await
                .map_err(backend(format!("storing the step metrics of run {run_id}")))?;
        }
        Ok(())
    }

    async fn step_metrics(&self, run_id: &str) -> Result<Vec<StepMetric>, StoreError> {
        let rows = Entity::find()
            .filter(Column::RunId.eq(run_id))
            .order_by_asc(Column::Step)
            .all(&self.db)
            .await
            .map_err(backend(format!("reading the step metrics of run {run_id}")))?;
        rows.into_iter().map(read).collect()
    }
}
