//! `PipelineStore` on the `pipelines` table: a revision only moves when the spec's digest changes.

use adapterci_core::ports::{PipelineRecord, PipelineStore, StoreError};
use adapterci_core::{Digest, PipelineName};
use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::SeaStore;
use crate::convert::{pipeline_record, to_stored_count};
use crate::entity::pipelines::{ActiveModel, Column, Entity};
use crate::error::{AttemptError, attempt_err, backend, retrying};

impl SeaStore {
    /// One optimistic attempt: insert the first revision, or bump the revision the row had when read.
    async fn try_upsert_pipeline(
        &self,
        name: &PipelineName,
        spec_yaml: &str,
        spec_digest: &Digest,
    ) -> Result<PipelineRecord, AttemptError> {
        let context = format!("storing pipeline {name}");
        let now = self.now();
        let existing = Entity::find_by_id(name.as_str()).one(&self.db).await.map_err(attempt_err(&context))?;
        let Some(row) = existing else {
            let row = ActiveModel {
                name: Set(name.to_string()),
                revision: Set(1),
                spec_yaml: Set(spec_yaml.to_string()),
                spec_digest: Set(spec_digest.to_string()),
                created_at: Set(now),
                updated_at: Set(now),
            };
            Entity::insert(row).exec_without_returning(&self.db).await.map_err(attempt_err(&context))?;
            return Ok(PipelineRecord {
                name: name.clone(),
                revision: 1,
                spec_yaml: spec_yaml.to_string(),
                spec_digest: spec_digest.clone(),
                created_at: now,
                updated_at: now,
            });
        };
        let current = pipeline_record(row)?;
        if &current.spec_digest == spec_digest {
            return Ok(current);
        }
        let revision = current.revision + 1;
        let updated = Entity::update_many()
            .col_expr(Column::Revision, Expr::value(to_stored_count("pipeline revision", revision)?))
            .col_expr(Column::SpecYaml, Expr::value(spec_yaml))
            .col_expr(Column::SpecDigest, Expr::value(spec_digest.to_string()))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Name.eq(name.as_str()))
            .filter(Column::Revision.eq(to_stored_count("pipeline revision", current.revision)?))
            .exec(&self.db)
            .await
            .map_err(attempt_err(&context))?;
        if updated.rows_affected == 0 {
            return Err(AttemptError::Retry(format!("pipeline {name} changed while it was being stored")));
        }
        Ok(PipelineRecord {
            revision,
            spec_yaml: spec_yaml.to_string(),
            spec_digest: spec_digest.clone(),
            updated_at: now,
            ..current
        })
    }
}

#[async_trait]
impl PipelineStore for SeaStore {
    async fn upsert_pipeline(&self, name: &PipelineName, spec_yaml: &str) -> Result<PipelineRecord, StoreError> {
        let spec_digest = Digest::of(spec_yaml.as_bytes());
        retrying(format!("storing pipeline {name}"), || self.try_upsert_pipeline(name, spec_yaml, &spec_digest)).await
    }

    async fn get_pipeline(&self, name: &PipelineName) -> Result<Option<PipelineRecord>, StoreError> {
        let row = Entity::find_by_id(name.as_str())
            .one(&self.db)
            .await
            .map_err(backend(format!("reading pipeline {name}")))?;
        row.map(pipeline_record).transpose()
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError> {
        let rows =
            Entity::find().order_by_asc(Column::Name).all(&self.db).await.map_err(backend("listing pipelines"))?;
        rows.into_iter().map(pipeline_record).collect()
    }
}
