//! Adds a lease to `registry_events`: the notifier (one per adapterd process) that stored or took over an
//! unsettled event holds it until `lease_until`, so replicas on one database never deliver the same event at once,
//! and one that stopped mid-delivery is taken over once its lease has run out. Both stay after settling: they say
//! which process finished the event.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string_null, timestamp_with_time_zone_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RegistryEvents {
    Table,
    ClaimedBy,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE. Rows stored before this migration have no lease: any notifier
        // may take them over.
        for column in
            [string_null(RegistryEvents::ClaimedBy), timestamp_with_time_zone_null(RegistryEvents::LeaseUntil)]
        {
            let mut column = column;
            manager.alter_table(Table::alter().table(RegistryEvents::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [RegistryEvents::LeaseUntil, RegistryEvents::ClaimedBy] {
            manager.alter_table(Table::alter().table(RegistryEvents::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
