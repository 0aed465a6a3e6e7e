//! Creates `watches`: what a pipeline's watcher last saw at each dataset location.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string, string_null, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Watches {
    Table,
    Pipeline,
    Location,
    Etag,
    Digest,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Watches::Table)
                    .col(string(Watches::Pipeline))
                    .col(string(Watches::Location))
                    .col(string_null(Watches::Etag))
                    .col(string(Watches::Digest))
                    .col(timestamp_with_time_zone(Watches::SeenAt))
                    .primary_key(Index::create().name("pk_watches").col(Watches::Pipeline).col(Watches::Location))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Watches::Table).to_owned()).await
    }
}
