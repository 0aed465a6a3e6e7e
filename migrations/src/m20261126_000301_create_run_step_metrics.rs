//! Creates `run_step_metrics`: one row per optimizer step of a training run (loss, learning rate, tokens,
//! seconds), keyed by run and step so that a resumed run replaying a step replaces its row.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, double, string};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunStepMetrics {
    Table,
    RunId,
    Step,
    Loss,
    LearningRate,
    Tokens,
    Seconds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunStepMetrics::Table)
                    .col(string(RunStepMetrics::RunId))
                    .col(big_integer(RunStepMetrics::Step))
                    .col(double(RunStepMetrics::Loss))
                    .col(double(RunStepMetrics::LearningRate))
                    .col(big_integer(RunStepMetrics::Tokens))
                    .col(double(RunStepMetrics::Seconds))
                    .primary_key(
                        Index::create()
                            .name("pk_run_step_metrics")
                            .col(RunStepMetrics::RunId)
                            .col(RunStepMetrics::Step),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RunStepMetrics::Table).to_owned()).await
    }
}
