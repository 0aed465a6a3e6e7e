//! `AdapterIndex` on the `adapter_versions` table. Version numbers are allocated as max + 1 inside a write
//! transaction; the table's unique keys catch the race between two allocators (on PostgreSQL) and the loser
//! retries, so concurrent publishers get unique versions without gaps.

use adapterci_core::AdapterName;
use adapterci_core::channels::VersionIdentity;
use adapterci_core::ports::{AdapterIndex, AdapterVersionRecord, NewAdapterVersion, StoreError};
use async_trait::async_trait;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::SeaStore;
use crate::convert::{adapter_name, to_stored_count, version_record};
use crate::entity::adapter_versions::{ActiveModel, Column, Entity};
use crate::error::{AttemptError, attempt_err, backend, retrying};

impl SeaStore {
    /// One attempt at `record_version`, in one write transaction.
    async fn try_record_version(&self, version: &NewAdapterVersion) -> Result<AdapterVersionRecord, AttemptError> {
        let context = format!("recording a version of adapter {}", version.name);
        let txn = self.begin_write().await.map_err(attempt_err(&context))?;
        let record = record_in(&txn, version, None, self.now(), &context).await?;
        txn.commit().await.map_err(attempt_err(&context))?;
        Ok(record)
    }
}

/// Inserts the next version of `version.name` (or returns the one with the same manifest) inside `txn`.
pub(crate) async fn record_in(
    txn: &DatabaseTransaction,
    version: &NewAdapterVersion,
    identity: Option<&VersionIdentity>,
    now: chrono::DateTime<chrono::Utc>,
    context: &str,
) -> Result<AdapterVersionRecord, AttemptError> {
    let name = version.name.as_str();
    let digest = version.manifest_digest.to_string();
    let existing = Entity::find()
        .filter(Column::Name.eq(name))
        .filter(Column::ManifestDigest.eq(digest.as_str()))
        .one(txn)
        .await
        .map_err(attempt_err(context))?;
    if let Some(row) = existing {
        return Ok(version_record(row)?);
    }
    let highest = Entity::find()
        .select_only()
        .column_as(Column::Version.max(), "highest")
        .filter(Column::Name.eq(name))
        .into_tuple::<Option<i64>>()
        .one(txn)
        .await
        .map_err(attempt_err(context))?
        .flatten();
    let number = match highest {
        None => 1,
        Some(highest) => highest.checked_add(1).ok_or_else(|| {
            StoreError::Backend(format!("adapter {name} has reached the highest version number {highest}"))
        })?,
    };
    let row = ActiveModel {
        name: Set(name.to_string()),
        version: Set(number),
        manifest_digest: Set(digest),
        base_model_digest: Set(version.base_model_digest.to_string()),
        run_id: Set(version.run_id.clone()),
        created_at: Set(now),
        content_digest: Set(identity.map(|identity| identity.content_digest.to_string())),
        base_binding: Set(identity.map(|identity| identity.base_binding.to_string())),
        deprecated: Set(false),
    };
    Entity::insert(row).exec_without_returning(txn).await.map_err(attempt_err(context))?;
    Ok(AdapterVersionRecord {
        name: version.name.clone(),
        version: u64::try_from(number).unwrap_or_default(),
        manifest_digest: version.manifest_digest.clone(),
        base_model_digest: version.base_model_digest.clone(),
        run_id: version.run_id.clone(),
        created_at: now,
    })
}

#[async_trait]
impl AdapterIndex for SeaStore {
    async fn record_version(&self, version: NewAdapterVersion) -> Result<AdapterVersionRecord, StoreError> {
        retrying(format!("recording a version of adapter {}", version.name), || self.try_record_version(&version)).await
    }

    async fn get_version(&self, name: &AdapterName, version: u64) -> Result<Option<AdapterVersionRecord>, StoreError> {
        // A number beyond the stored range cannot exist.
        let Ok(version) = to_stored_count("adapter version", version) else {
            return Ok(None);
        };
        let row = Entity::find_by_id((name.to_string(), version))
            .one(&self.db)
            .await
            .map_err(backend(format!("reading version {version} of adapter {name}")))?;
        row.map(version_record).transpose()
    }

    async fn latest_version(&self, name: &AdapterName) -> Result<Option<AdapterVersionRecord>, StoreError> {
        let row = Entity::find()
            .filter(Column::Name.eq(name.as_str()))
            .order_by_desc(Column::Version)
            .one(&self.db)
            .await
            .map_err(backend(format!("reading the latest version of adapter {name}")))?;
        row.map(version_record).transpose()
    }

    async fn list_versions(&self, name: &AdapterName) -> Result<Vec<AdapterVersionRecord>, StoreError> {
        let rows = Entity::find()
            .filter(Column::Name.eq(name.as_str()))
            .order_by_asc(Column::Version)
            .all(&self.db)
            .await
            .map_err(backend(format!("listing the versions of adapter {name}")))?;
        rows.into_iter().map(version_record).collect()
    }

    async fn list_adapter_names(&self) -> Result<Vec<AdapterName>, StoreError> {
        let names = Entity::find()
            .select_only()
            .column(Column::Name)
            .distinct()
            .order_by_asc(Column::Name)
            .into_tuple::<String>()
            .all(&self.db)
            .await
            .map_err(backend("listing adapters"))?;
        names.iter().map(|name| adapter_name(name)).collect()
    }
}
