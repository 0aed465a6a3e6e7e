//! `WatchStore` on the `watches` table: one row per (pipeline, location), overwritten on every put.

use adapterci_core::PipelineName;
use adapterci_core::ports::{StoreError, WatchState, WatchStore};
use async_trait::async_trait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait};

use crate::SeaStore;
use crate::convert::{to_stored_time, watch_state};
use crate::entity::watches::{ActiveModel, Column, Entity};
use crate::error::backend;

#[async_trait]
impl WatchStore for SeaStore {
    async fn get_watch(&self, pipeline: &PipelineName, location: &str) -> Result<Option<WatchState>, StoreError> {
        let row = Entity::find_by_id((pipeline.to_string(), location.to_string()))
            .one(&self.db)
            .await
            .map_err(backend(format!("reading the watch of pipeline {pipeline} on {location:?}")))?;
        row.map(watch_state).transpose()
    }

    async fn put_watch(&self, pipeline: &PipelineName, location: &str, state: &WatchState) -> Result<(), StoreError> {
        let row = ActiveModel {
            pipeline: Set(pipeline.to_string()),
            location: Set(location.to_string()),
            etag: Set(state.etag.clone()),
            digest: Set(state.digest.to_string()),
            seen_at: Set(to_stored_time(state.seen_at)),
        };
        let upsert = OnConflict::columns([Column::Pipeline, Column::Location])
            .update_columns([Column::Etag, Column::Digest, Column::SeenAt])
            .to_owned();
        Entity::insert(row)
            .on_conflict(upsert)
            .exec_without_returning(&self.db)
            .await
            .map_err(backend(format!("storing the watch of pipeline {pipeline} on {location:?}")))?;
        Ok(())
    }
}
