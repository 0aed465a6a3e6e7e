//! `VersionRetention` on SeaStore: one write transaction per adapter reads its versions and what channels and
//! tags reference, locks the adapter's channel rows (PostgreSQL) so a promote waits, and deletes the versions
//! the policy no longer keeps. The foreign keys from channels and tags to versions are the last guard: a change
//! that slipped past would make the delete fail, not leave a dangling pointer.

use std::collections::HashSet;

use adapterci_core::AdapterName;
use adapterci_core::ports::StoreError;
use adapterci_core::retention::{RetentionPolicy, VersionRetention};
use async_trait::async_trait;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::SeaStore;
use crate::channels::lock_adapter;
use crate::entity::{adapter_channels as channels, adapter_tags as tags, adapter_versions};
use crate::error::{AttemptError, attempt_err, retrying};

/// Like `attempt_err`, and a foreign-key violation is a race too: a channel or tag took a version between the
/// read and the write (a racing promote of a version being pruned); the next attempt sees it.
pub(crate) fn pointer_race(context: &str) -> impl FnOnce(sea_orm::DbErr) -> AttemptError + '_ {
    move |err| {
        if matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) {
            AttemptError::Retry(format!("{context}: {err}"))
        } else {
            attempt_err(context)(err)
        }
    }
}

impl SeaStore {
    async fn try_prune(&self, adapter: &AdapterName, policy: RetentionPolicy) -> Result<Vec<u64>, AttemptError> {
        let context = format!("pruning old versions of adapter {adapter}");
        let txn = self.begin_write().await.map_err(attempt_err(&context))?;
        lock_adapter(&txn, adapter, &context).await?;
        let pointed: Vec<i64> = channels::Entity::find()
            .select_only()
            .column(channels::Column::Version)
            .filter(channels::Column::Adapter.eq(adapter.as_str()))
            .lock_exclusive()
            .into_tuple()
            .all(&txn)
            .await
            .map_err(attempt_err(&context))?;
        let tagged: Vec<i64> = tags::Entity::find()
            .select_only()
            .column(tags::Column::Version)
            .filter(tags::Column::Adapter.eq(adapter.as_str()))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(attempt_err(&context))?;
        let referenced: HashSet<i64> = pointed.into_iter().chain(tagged).collect();
        let newest_first: Vec<i64> = adapter_versions::Entity::find()
            .select_only()
            .column(adapter_versions::Column::Version)
            .filter(adapter_versions::Column::Name.eq(adapter.as_str()))
            .order_by_desc(adapter_versions::Column::Version)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(attempt_err(&context))?;
        let keep = usize::try_from(policy.kept_newest()).unwrap_or(usize::MAX);
        let mut doomed: Vec<i64> =
            newest_first.into_iter().skip(keep).filter(|version| !referenced.contains(version)).collect();
        doomed.sort_unstable();
        if !doomed.is_empty() {
            adapter_versions::Entity::delete_many()
                .filter(adapter_versions::Column::Name.eq(adapter.as_str()))
                .filter(adapter_versions::Column::Version.is_in(doomed.clone()))
                .exec(&txn)
                .await
                .map_err(pointer_race(&context))?;
        }
        txn.commit().await.map_err(attempt_err(&context))?;
        Ok(doomed.into_iter().filter_map(|version| u64::try_from(version).ok()).collect())
    }
}

#[async_trait]
impl VersionRetention for SeaStore {
    async fn prune_versions(&self, adapter: &AdapterName, policy: RetentionPolicy) -> Result<Vec<u64>, StoreError> {
        let pruned =
            retrying(format!("pruning old versions of adapter {adapter}"), || self.try_prune(adapter, policy)).await?;
        if !pruned.is_empty() {
            tracing::info!(%adapter, versions = ?pruned, "pruned versions outside the retention policy");
        }
        Ok(pruned)
    }
}
