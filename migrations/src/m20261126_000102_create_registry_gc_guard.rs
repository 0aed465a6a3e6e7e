//! Creates `registry_publishes` (publishes in progress and the blob digests they will write) and
//! `registry_sweeps` (at most one row: the garbage-collection sweep running now), which keep the registry's
//! garbage collector and publishers apart.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{integer, string, text, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RegistryPublishes {
    Table,
    Id,
    Digests,
    StartedAt,
}

#[derive(DeriveIden)]
enum RegistrySweeps {
    Table,
    Id,
    StartedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RegistryPublishes::Table)
                    .col(string(RegistryPublishes::Id).primary_key())
                    .col(text(RegistryPublishes::Digests))
                    .col(timestamp_with_time_zone(RegistryPublishes::StartedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RegistrySweeps::Table)
                    // Always 1: the primary key makes a second concurrent sweep a unique-key conflict.
                    .col(integer(RegistrySweeps::Id).primary_key())
                    .col(timestamp_with_time_zone(RegistrySweeps::StartedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RegistrySweeps::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(RegistryPublishes::Table).to_owned()).await
    }
}
