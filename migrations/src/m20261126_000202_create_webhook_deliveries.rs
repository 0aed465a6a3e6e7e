//! Creates `webhook_deliveries`: every webhook delivery id seen, so that a redelivery starts nothing.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Source,
    DeliveryId,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(string(WebhookDeliveries::Source))
                    .col(string(WebhookDeliveries::DeliveryId))
                    .col(timestamp_with_time_zone(WebhookDeliveries::ReceivedAt))
                    .primary_key(
                        Index::create()
                            .name("pk_webhook_deliveries")
                            .col(WebhookDeliveries::Source)
                            .col(WebhookDeliveries::DeliveryId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned()).await
    }
}
