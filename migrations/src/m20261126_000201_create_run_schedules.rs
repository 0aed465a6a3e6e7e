//! Creates `run_schedules`: when a queued run may start, how often it was started, and who holds its lease.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, string, string_null, timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunSchedules {
    Table,
    RunId,
    Pipeline,
    QueuedAt,
    NotBefore,
    Attempts,
    CoalescedTriggers,
    LeaseHolder,
    LeaseExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunSchedules::Table)
                    .col(string(RunSchedules::RunId).primary_key())
                    .col(string(RunSchedules::Pipeline))
                    .col(timestamp_with_time_zone(RunSchedules::QueuedAt))
                    .col(timestamp_with_time_zone(RunSchedules::NotBefore))
                    .col(big_integer(RunSchedules::Attempts))
                    .col(big_integer(RunSchedules::CoalescedTriggers))
                    .col(string_null(RunSchedules::LeaseHolder))
                    .col(timestamp_with_time_zone_null(RunSchedules::LeaseExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_run_schedules_lease_expires_at")
                    .table(RunSchedules::Table)
                    .col(RunSchedules::LeaseExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RunSchedules::Table).to_owned()).await
    }
}
