//! `BlobGuard` on `registry_publishes` and `registry_sweeps`. Registering a publish and starting a sweep are
//! write transactions serialized with each other (`BEGIN IMMEDIATE` on SQLite, one advisory lock on
//! PostgreSQL), so a sweep either sees a publish's registration or the publish sees the sweep and waits.

use adapterci_core::Digest;
use adapterci_core::gc::{BlobGuard, PUBLISH_REGISTRATION_TTL, SWEEP_TTL};
use adapterci_core::ports::StoreError;
use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter, Statement,
};

use crate::SeaStore;
use crate::entity::{registry_publishes as publishes, registry_sweeps as sweeps};
use crate::error::{AttemptError, attempt_err, backend, retrying};

/// The advisory lock that serializes registrations and sweep starts on PostgreSQL ("adgcgrd").
const GC_GUARD_LOCK: i64 = 0x6164_6763_6772_6400;
const SWEEP_ROW: i32 = 1;

async fn lock_guard(txn: &DatabaseTransaction, context: &str) -> Result<(), AttemptError> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        let lock = Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [GC_GUARD_LOCK.into()],
        );
        txn.execute_raw(lock).await.map_err(attempt_err(context))?;
    }
    Ok(())
}

impl SeaStore {
    async fn try_register(&self, digests: &str) -> Result<Option<String>, AttemptError> {
        let context = "registering a publish with the garbage collector";
        let txn = self.begin_write().await.map_err(attempt_err(context))?;
        lock_guard(&txn, context).await?;
        let now = self.now();
        let sweep = sweeps::Entity::find_by_id(SWEEP_ROW).one(&txn).await.map_err(attempt_err(context))?;
        if sweep.is_some_and(|sweep| now - sweep.started_at < SWEEP_TTL) {
            return Ok(None);
        }
        let id = uuid::Uuid::now_v7().to_string();
        let row =
            publishes::ActiveModel { id: Set(id.clone()), digests: Set(digests.to_string()), started_at: Set(now) };
        publishes::Entity::insert(row).exec_without_returning(&txn).await.map_err(attempt_err(context))?;
        txn.commit().await.map_err(attempt_err(context))?;
        Ok(Some(id))
    }

    async fn try_start_sweep(&self) -> Result<Option<Vec<Digest>>, AttemptError> {
        let context = "starting a garbage-collection sweep";
        let txn = self.begin_write().await.map_err(attempt_err(context))?;
        lock_guard(&txn, context).await?;
        let now = self.now();
        if let Some(sweep) = sweeps::Entity::find_by_id(SWEEP_ROW).one(&txn).await.map_err(attempt_err(context))? {
            if now - sweep.started_at < SWEEP_TTL {
                return Ok(None);
            }
            sweeps::Entity::delete_by_id(SWEEP_ROW).exec(&txn).await.map_err(attempt_err(context))?;
        }
        let row = sweeps::ActiveModel { id: Set(SWEEP_ROW), started_at: Set(now) };
        sweeps::Entity::insert(row).exec_without_returning(&txn).await.map_err(attempt_err(context))?;
        publishes::Entity::delete_many()
            .filter(publishes::Column::StartedAt.lt(now - PUBLISH_REGISTRATION_TTL))
            .exec(&txn)
            .await
            .map_err(attempt_err(context))?;
        let rows = publishes::Entity::find().all(&txn).await.map_err(attempt_err(context))?;
        txn.commit().await.map_err(attempt_err(context))?;
        let mut protected = Vec::new();
        for row in rows {
            let digests: Vec<Digest> = serde_json::from_str(&row.digests).map_err(|err| {
                StoreError::Backend(format!("unreadable digests of registry_publishes row {}: {err}", row.id))
            })?;
            protected.extend(digests);
        }
        Ok(Some(protected))
    }
}

#[async_trait]
impl BlobGuard for SeaStore {
    async fn try_begin_publish(&self, digests: &[Digest]) -> Result<Option<String>, StoreError> {
        let digests = serde_json::to_string(digests)
            .map_err(|err| StoreError::Backend(format!("encoding the digests of a publish: {err}")))?;
        retrying("registering a publish", || self.try_register(&digests)).await
    }

    async fn end_publish(&self, id: &str) -> Result<(), StoreError> {
        publishes::Entity::delete_by_id(id.to_string())
            .exec(&self.db)
            .await
            .map_err(backend(format!("ending the publish registration {id}")))?;
        Ok(())
    }

    async fn try_begin_sweep(&self) -> Result<Option<Vec<Digest>>, StoreError> {
        retrying("starting a garbage-collection sweep", || self.try_start_sweep()).await
    }

    async fn end_sweep(&self) -> Result<(), StoreError> {
        sweeps::Entity::delete_by_id(SWEEP_ROW).exec(&self.db).await.map_err(backend("ending the sweep"))?;
        Ok(())
    }
}
