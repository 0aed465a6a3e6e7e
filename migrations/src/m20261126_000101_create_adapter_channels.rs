//! Channels, tags and deprecation of adapter versions: three columns on `adapter_versions` (the identity that
//! makes a retried publish idempotent inside one transaction, the base a version is bound to, a deprecation
//! mark) and three tables: `adapter_channels` (pointers, each naming an existing version through a foreign
//! key), `adapter_channel_events` (every change, the audit log and the source of "previous") and `adapter_tags`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::timestamp_with_time_zone;
use sea_orm_migration::schema::{big_integer, big_integer_null, boolean, pk_auto, string, string_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AdapterVersions {
    Table,
    Name,
    Version,
    ContentDigest,
    BaseBinding,
    Deprecated,
}

#[derive(DeriveIden)]
enum AdapterChannels {
    Table,
    Adapter,
    Channel,
    Version,
    BaseBinding,
    Pinned,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AdapterChannelEvents {
    Table,
    Id,
    Adapter,
    Channel,
    Action,
    FromVersion,
    ToVersion,
    At,
}

#[derive(DeriveIden)]
enum AdapterTags {
    Table,
    Adapter,
    Tag,
    Version,
}

const EVENTS_INDEX: &str = "ix_adapter_channel_events_adapter_channel_id";
const CONTENT_INDEX: &str = "ix_adapter_versions_name_content_digest";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        for column in [
            string_null(AdapterVersions::ContentDigest),
            string_null(AdapterVersions::BaseBinding),
            boolean(AdapterVersions::Deprecated).default(false).take(),
        ] {
            let mut column = column;
            manager
                .alter_table(Table::alter().table(AdapterVersions::Table).add_column(&mut column).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(CONTENT_INDEX)
                    .table(AdapterVersions::Table)
                    .col(AdapterVersions::Name)
                    .col(AdapterVersions::ContentDigest)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdapterChannels::Table)
                    .col(string(AdapterChannels::Adapter))
                    .col(string(AdapterChannels::Channel))
                    .col(big_integer(AdapterChannels::Version))
                    .col(string(AdapterChannels::BaseBinding))
                    .col(boolean(AdapterChannels::Pinned))
                    .col(timestamp_with_time_zone(AdapterChannels::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .name("pk_adapter_channels")
                            .col(AdapterChannels::Adapter)
                            .col(AdapterChannels::Channel),
                    )
                    // A channel can only name a version that exists: no dangling pointer, even by hand.
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_adapter_channels_version")
                            .from(AdapterChannels::Table, (AdapterChannels::Adapter, AdapterChannels::Version))
                            .to(AdapterVersions::Table, (AdapterVersions::Name, AdapterVersions::Version)),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdapterChannelEvents::Table)
                    .col(pk_auto(AdapterChannelEvents::Id))
                    .col(string(AdapterChannelEvents::Adapter))
                    .col(string(AdapterChannelEvents::Channel))
                    .col(string(AdapterChannelEvents::Action))
                    .col(big_integer_null(AdapterChannelEvents::FromVersion))
                    .col(big_integer(AdapterChannelEvents::ToVersion))
                    .col(timestamp_with_time_zone(AdapterChannelEvents::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(EVENTS_INDEX)
                    .table(AdapterChannelEvents::Table)
                    .col(AdapterChannelEvents::Adapter)
                    .col(AdapterChannelEvents::Channel)
                    .col(AdapterChannelEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdapterTags::Table)
                    .col(string(AdapterTags::Adapter))
                    .col(string(AdapterTags::Tag))
                    .col(big_integer(AdapterTags::Version))
                    .primary_key(
                        Index::create().name("pk_adapter_tags").col(AdapterTags::Adapter).col(AdapterTags::Tag),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_adapter_tags_version")
                            .from(AdapterTags::Table, (AdapterTags::Adapter, AdapterTags::Version))
                            .to(AdapterVersions::Table, (AdapterVersions::Name, AdapterVersions::Version)),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AdapterTags::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name(EVENTS_INDEX).table(AdapterChannelEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AdapterChannelEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AdapterChannels::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name(CONTENT_INDEX).table(AdapterVersions::Table).to_owned()).await?;
        for column in [AdapterVersions::Deprecated, AdapterVersions::BaseBinding, AdapterVersions::ContentDigest] {
            manager.alter_table(Table::alter().table(AdapterVersions::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
