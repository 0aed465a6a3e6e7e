//! Creates `pipelines`: one row per pipeline name, holding the applied YAML and its revision.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string, text, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pipelines {
    Table,
    Name,
    Revision,
    SpecYaml,
    SpecDigest,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Pipelines::Table)
                    .col(string(Pipelines::Name).primary_key())
                    .col(big_integer(Pipelines::Revision))
                    .col(text(Pipelines::SpecYaml))
                    .col(string(Pipelines::SpecDigest))
                    .col(timestamp_with_time_zone(Pipelines::CreatedAt))
                    .col(timestamp_with_time_zone(Pipelines::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Pipelines::Table).to_owned()).await
    }
}
