//! Creates `registry_event_attempts`: every attempt to deliver an outbound registry event (published, promoted,
//! rolled back) to a subscriber's webhook, with its HTTP status or error.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    boolean, integer, integer_null, pk_auto, string, string_null, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RegistryEventAttempts {
    Table,
    Id,
    EventId,
    Kind,
    Endpoint,
    Attempt,
    Status,
    Delivered,
    Error,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RegistryEventAttempts::Table)
                    .col(pk_auto(RegistryEventAttempts::Id))
                    .col(string(RegistryEventAttempts::EventId))
                    .col(string(RegistryEventAttempts::Kind))
                    .col(string(RegistryEventAttempts::Endpoint))
                    .col(integer(RegistryEventAttempts::Attempt))
                    .col(integer_null(RegistryEventAttempts::Status))
                    .col(boolean(RegistryEventAttempts::Delivered))
                    .col(string_null(RegistryEventAttempts::Error))
                    .col(timestamp_with_time_zone(RegistryEventAttempts::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_registry_event_attempts_event_id")
                    .table(RegistryEventAttempts::Table)
                    .col(RegistryEventAttempts::EventId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RegistryEventAttempts::Table).to_owned()).await
    }
}
