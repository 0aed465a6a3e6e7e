//! Creates `adapter_versions`, the index of published versions. Its two unique rules are what make version
//! allocation safe: (name, version) keeps numbers unique, (name, manifest_digest) makes re-publishing idempotent.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string, string_null, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AdapterVersions {
    Table,
    Name,
    Version,
    ManifestDigest,
    BaseModelDigest,
    RunId,
    CreatedAt,
}

const DIGEST_INDEX: &str = "ux_adapter_versions_name_manifest_digest";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AdapterVersions::Table)
                    .col(string(AdapterVersions::Name))
                    .col(big_integer(AdapterVersions::Version))
                    .col(string(AdapterVersions::ManifestDigest))
                    .col(string(AdapterVersions::BaseModelDigest))
                    .col(string_null(AdapterVersions::RunId))
                    .col(timestamp_with_time_zone(AdapterVersions::CreatedAt))
                    // The primary key is the UNIQUE (name, version) rule.
                    .primary_key(
                        Index::create()
                            .name("pk_adapter_versions")
                            .col(AdapterVersions::Name)
                            .col(AdapterVersions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(DIGEST_INDEX)
                    .table(AdapterVersions::Table)
                    .col(AdapterVersions::Name)
                    .col(AdapterVersions::ManifestDigest)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(DIGEST_INDEX).table(AdapterVersions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AdapterVersions::Table).to_owned()).await
    }
}
