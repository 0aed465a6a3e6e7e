//! Creates `registry_events`: the outbox of outbound registry events. An event is stored, with the endpoints it
//! is addressed to, before its first delivery attempt and settled once every endpoint has it or was given up,
//! so adapterd can resume the deliveries a restart interrupted.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{boolean, string, text, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RegistryEvents {
    Table,
    Id,
    Kind,
    Body,
    Endpoints,
    CreatedAt,
    Settled,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RegistryEvents::Table)
                    .col(string(RegistryEvents::Id).primary_key())
                    .col(string(RegistryEvents::Kind))
                    .col(text(RegistryEvents::Body))
                    .col(text(RegistryEvents::Endpoints))
                    .col(timestamp_with_time_zone(RegistryEvents::CreatedAt))
                    .col(boolean(RegistryEvents::Settled).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_registry_events_settled")
                    .table(RegistryEvents::Table)
                    .col(RegistryEvents::Settled)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RegistryEvents::Table).to_owned()).await
    }
}
