//! Creates `runs` with the indexes behind "newest runs of a pipeline" and "oldest queued run".

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::timestamp_with_time_zone;
use sea_orm_migration::schema::{big_integer, big_integer_null, string, string_null, text, text_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    Pipeline,
    PipelineRevision,
    State,
    Stage,
    TriggerJson,
    DatasetDigest,
    ReportJson,
    PublishedAdapter,
    PublishedVersion,
    PublishedManifestDigest,
    Error,
    CreatedAt,
    UpdatedAt,
}

const PIPELINE_INDEX: &str = "idx_runs_pipeline_created_at";
const STATE_INDEX: &str = "idx_runs_state_created_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(string(Runs::Id).primary_key())
                    .col(string(Runs::Pipeline))
                    .col(big_integer(Runs::PipelineRevision))
                    .col(string(Runs::State))
                    .col(string_null(Runs::Stage))
                    .col(text(Runs::TriggerJson))
                    .col(string_null(Runs::DatasetDigest))
                    .col(text_null(Runs::ReportJson))
                    .col(string_null(Runs::PublishedAdapter))
                    .col(big_integer_null(Runs::PublishedVersion))
                    .col(string_null(Runs::PublishedManifestDigest))
                    .col(text_null(Runs::Error))
                    .col(timestamp_with_time_zone(Runs::CreatedAt))
                    .col(timestamp_with_time_zone(Runs::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(PIPELINE_INDEX)
                    .table(Runs::Table)
                    .col(Runs::Pipeline)
                    .col(Runs::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name(STATE_INDEX).table(Runs::Table).col(Runs::State).col(Runs::CreatedAt).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(STATE_INDEX).table(Runs::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name(PIPELINE_INDEX).table(Runs::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Runs::Table).to_owned()).await
    }
}
