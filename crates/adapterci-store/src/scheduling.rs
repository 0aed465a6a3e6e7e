//! `RunScheduler` and `DeliveryLog` on the `run_schedules` and `webhook_deliveries` tables.
//!
//! Enqueue, claim and lease expiry each run in one write transaction that first takes the scheduler lock (an
//! advisory lock on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serializes writers), so limits and debounce
//! decisions are made on a state no other scheduler changes meanwhile. Run state changes are still conditional
//! updates on the state that was read, because `update_run` (a cancel, a finishing run) does not take the lock.
//! A hand-back (graceful shutdown) and a retry take the lock too, and change nothing unless the caller still
//! holds the run's lease.

use std::collections::{BTreeMap, HashMap};

use adapterci_core::ports::StoreError;
use adapterci_core::run::{RunRecord, RunState};
use adapterci_core::scheduling::{
    ClaimedRun, ConcurrencyLimits, DeliveryLog, EnqueueRequest, Enqueued, RunSchedule, RunScheduler,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};

use crate::SeaStore;
use crate::convert::{run_record, to_stored_time};
use crate::entity::runs;
use crate::error::{AttemptError, attempt_err, backend, retrying};

/// Serializes the schedulers of several replicas on one PostgreSQL database.
const POSTGRES_SCHEDULER_LOCK: i64 = 0x6164_6170_7363_6864; // "adapschd"
/// Ids per `IN (...)` list, well under SQLite's and PostgreSQL's bind-parameter limits.
const IDS_PER_QUERY: usize = 500;

pub(crate) mod run_schedules {
    //! The `run_schedules` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "run_schedules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        pub pipeline: String,
        pub queued_at: DateTimeUtc,
        pub not_before: DateTimeUtc,
        pub attempts: i64,
        pub coalesced_triggers: i64,
        pub lease_holder: Option<String>,
        pub lease_expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod webhook_deliveries {
    //! The `webhook_deliveries` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub source: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use run_schedules::{
    ActiveModel as ScheduleActive, Column as ScheduleColumn, Entity as Schedules, Model as ScheduleRow,
};

fn count(row: &ScheduleRow, column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| {
        StoreError::Backend(format!(
            "unreadable value in table run_schedules, row {}, column {column}: {value} is not a count",
            row.run_id
        ))
    })
}

fn schedule_record(row: ScheduleRow) -> Result<RunSchedule, StoreError> {
    Ok(RunSchedule {
        attempts: count(&row, "attempts", row.attempts)?,
        coalesced_triggers: count(&row, "coalesced_triggers", row.coalesced_triggers)?,
        run_id: row.run_id,
        not_before: row.not_before,
        lease_holder: row.lease_holder,
        lease_expires_at: row.lease_expires_at,
    })
}

impl SeaStore {
    /// A write transaction holding the scheduler lock.
    async fn begin_scheduling(&self) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.begin_write().await?;
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            let lock = Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [POSTGRES_SCHEDULER_LOCK.into()],
            );
            txn.execute_raw(lock).await?;
        }
        Ok(txn)
    }

    async fn schedules_of(txn: &DatabaseTransaction, ids: &[String]) -> Result<HashMap<String, ScheduleRow>, DbErr> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            for row in Schedules::find().filter(ScheduleColumn::RunId.is_in(chunk.iter().cloned())).all(txn).await? {
                found.insert(row.run_id.clone(), row);
            }
        }
        Ok(found)
    }

    /// Moves run `id` from `from` to `to` if it is still in `from`; the changed row, or `None` after a race.
    async fn move_run(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        from: RunState,
        to: RunState,
        error: Option<Option<String>>,
    ) -> Result<Option<runs::Model>, DbErr> {
        let mut update = runs::Entity::update_many()
            .col_expr(runs::Column::State, Expr::value(to.as_str()))
            .col_expr(runs::Column::UpdatedAt, Expr::value(self.now()));
        if to == RunState::Queued {
            update = update.col_expr(runs::Column::Stage, Expr::value(Option::<String>::None));
        }
        if let Some(error) = error {
            update = update.col_expr(runs::Column::Error, Expr::value(error));
        }
        let rows = update
            .filter(runs::Column::Id.eq(id))
            .filter(runs::Column::State.eq(from.as_str()))
            .exec_with_returning(txn)
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn try_enqueue(&self, request: &EnqueueRequest, now: DateTime<Utc>) -> Result<Enqueued, AttemptError> {
        let context = format!("queueing a run of pipeline {}", request.run.pipeline);
        let fail = |err| attempt_err(&context)(err);
        let now = to_stored_time(now);
        let not_before = to_stored_time(request.not_before);
        let txn = self.begin_scheduling().await.map_err(fail)?;
        let queued = runs::Entity::find()
            .filter(runs::Column::Pipeline.eq(request.run.pipeline.as_str()))
            .filter(runs::Column::State.eq(RunState::Queued.as_str()))
            .order_by_asc(runs::Column::CreatedAt)
            .order_by_asc(runs::Column::Id)
            .all(&txn)
            .await
            .map_err(fail)?;
        let ids: Vec<String> = queued.iter().map(|row| row.id.clone()).collect();
        let schedules = Self::schedules_of(&txn, &ids).await.map_err(fail)?;

        if let Some(max_delay) = request.coalesce_max_delay {
            for row in &queued {
                let Some(schedule) = schedules.get(&row.id) else { continue };
                if schedule.not_before <= now {
                    continue;
                }
                let latest = to_stored_time(schedule.queued_at + max_delay);
                let moved = Ord::min(Ord::max(not_before, schedule.not_before), latest);
                Schedules::update_many()
                    .col_expr(ScheduleColumn::NotBefore, Expr::value(moved))
                    .col_expr(ScheduleColumn::CoalescedTriggers, Expr::col(ScheduleColumn::CoalescedTriggers).add(1))
                    .filter(ScheduleColumn::RunId.eq(row.id.as_str()))
                    .exec(&txn)
                    .await
                    .map_err(fail)?;
                txn.commit().await.map_err(fail)?;
                return Ok(Enqueued { run: run_record(row.clone())?, coalesced: true, superseded: Vec::new() });
            }
        }

        let record = request.run.clone().into_queued_record(uuid::Uuid::now_v7().to_string(), self.now());
        let mut superseded = Vec::new();
        if request.supersede_queued {
            let reason = format!("superseded by run {} (newer data)", record.id);
            for row in &queued {
                if self
                    .move_run(&txn, &row.id, RunState::Queued, RunState::Cancelled, Some(Some(reason.clone())))
                    .await
                    .map_err(fail)?
                    .is_some()
                {
                    superseded.push(row.id.clone());
                }
            }
        }
        let row = crate::runs::queued_row(&record)?;
        runs::Entity::insert(row).exec_without_returning(&txn).await.map_err(fail)?;
        let schedule = ScheduleActive {
            run_id: Set(record.id.clone()),
            pipeline: Set(record.pipeline.to_string()),
            queued_at: Set(now),
            not_before: Set(not_before),
            attempts: Set(0),
            coalesced_triggers: Set(0),
            lease_holder: Set(None),
            lease_expires_at: Set(None),
        };
        Schedules::insert(schedule).exec_without_returning(&txn).await.map_err(fail)?;
        txn.commit().await.map_err(fail)?;
        Ok(Enqueued { run: record, coalesced: false, superseded })
    }

    async fn try_expire(&self, now: DateTime<Utc>, max_attempts: u32) -> Result<Vec<String>, AttemptError> {
        let fail = |err| attempt_err("expiring run leases")(err);
        let now = to_stored_time(now);
        let txn = self.begin_scheduling().await.map_err(fail)?;
        let expired = Schedules::find().filter(ScheduleColumn::LeaseExpiresAt.lt(now)).all(&txn).await.map_err(fail)?;
        let mut touched = Vec::new();
        for schedule in expired {
            let attempts = count(&schedule, "attempts", schedule.attempts)?;
            let moved = if attempts >= max_attempts {
                let reason = format!(
                    "the controller running it stopped answering {attempts} times (lease held by {} expired)",
                    schedule.lease_holder.as_deref().unwrap_or("nobody")
                );
                self.move_run(&txn, &schedule.run_id, RunState::Running, RunState::Failed, Some(Some(reason)))
                    .await
                    .map_err(fail)?
            } else {
                self.move_run(&txn, &schedule.run_id, RunState::Running, RunState::Queued, None).await.map_err(fail)?
            };
            if moved.is_some() {
                tracing::warn!(run = %schedule.run_id, holder = ?schedule.lease_holder, "run lease expired");
                touched.push(schedule.run_id.clone());
            }
            Schedules::update_many()
                .col_expr(ScheduleColumn::LeaseHolder, Expr::value(Option::<String>::None))
                .col_expr(ScheduleColumn::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(ScheduleColumn::NotBefore, Expr::value(now))
                .filter(ScheduleColumn::RunId.eq(schedule.run_id.as_str()))
                .exec(&txn)
                .await
                .map_err(fail)?;
        }
        txn.commit().await.map_err(fail)?;
        Ok(touched)
    }

    async fn try_claim(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limits: ConcurrencyLimits,
    ) -> Result<Option<ClaimedRun>, AttemptError> {
        let fail = |err| attempt_err("claiming a due run")(err);
        let now = to_stored_time(now);
        let lease_until = to_stored_time(lease_until);
        let txn = self.begin_scheduling().await.map_err(fail)?;
        let running: Vec<String> = runs::Entity::find()
            .select_only()
            .column(runs::Column::Pipeline)
            .filter(runs::Column::State.eq(RunState::Running.as_str()))
            .into_tuple::<String>()
            .all(&txn)
            .await
            .map_err(fail)?;
        if running.len() >= limits.global {
            return Ok(None);
        }
        let mut running_per_pipeline: BTreeMap<String, usize> = BTreeMap::new();
        for pipeline in running {
            *running_per_pipeline.entry(pipeline).or_default() += 1;
        }
        let queued: Vec<(String, String)> = runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .column(runs::Column::Pipeline)
            .filter(runs::Column::State.eq(RunState::Queued.as_str()))
            .order_by_asc(runs::Column::CreatedAt)
            .order_by_asc(runs::Column::Id)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(fail)?;
        let ids: Vec<String> = queued.iter().map(|(id, _)| id.clone()).collect();
        let schedules = Self::schedules_of(&txn, &ids).await.map_err(fail)?;
        for (id, pipeline) in queued {
            let schedule = schedules.get(&id);
            if schedule.is_some_and(|schedule| schedule.not_before > now)
                || running_per_pipeline.get(&pipeline).copied().unwrap_or(0) >= limits.per_pipeline
            {
                continue;
            }
            let Some(row) =
                self.move_run(&txn, &id, RunState::Queued, RunState::Running, Some(None)).await.map_err(fail)?
            else {
                continue;
            };
            let attempts = match schedule {
                Some(schedule) => count(schedule, "attempts", schedule.attempts)? + 1,
                None => 1,
            };
            let active = ScheduleActive {
                run_id: Set(id.clone()),
                pipeline: Set(pipeline.clone()),
                queued_at: Set(schedule.map_or(now, |schedule| schedule.queued_at)),
                not_before: Set(schedule.map_or(now, |schedule| schedule.not_before)),
                attempts: Set(i64::from(attempts)),
                coalesced_triggers: Set(schedule.map_or(0, |schedule| schedule.coalesced_triggers)),
                lease_holder: Set(Some(holder.to_string())),
                lease_expires_at: Set(Some(lease_until)),
            };
            if schedule.is_some() {
                Schedules::update(active).exec(&txn).await.map_err(fail)?;
            } else {
                Schedules::insert(active).exec_without_returning(&txn).await.map_err(fail)?;
            }
            txn.commit().await.map_err(fail)?;
            return Ok(Some(ClaimedRun { run: run_record(row)?, attempt: attempts, lease_expires_at: lease_until }));
        }
        Ok(None)
    }

    async fn try_retry_later(
        &self,
        run_id: &str,
        holder: &str,
        not_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<RunRecord, AttemptError> {
        let context = format!("re-queueing run {run_id}");
        let fail = |err| attempt_err(&context)(err);
        let txn = self.begin_scheduling().await.map_err(fail)?;
        let held = Schedules::find_by_id(run_id).one(&txn).await.map_err(fail)?;
        if held.as_ref().and_then(|schedule| schedule.lease_holder.as_deref()) != Some(holder) {
            return Err(StoreError::Conflict { what: format!("run {run_id} is not leased to {holder}") }.into());
        }
        let Some(row) = self
            .move_run(&txn, run_id, RunState::Running, RunState::Queued, Some(Some(reason.to_string())))
            .await
            .map_err(fail)?
        else {
            return Err(StoreError::Conflict { what: format!("run {run_id} is no longer running") }.into());
        };
        Schedules::update_many()
            .col_expr(ScheduleColumn::NotBefore, Expr::value(to_stored_time(not_before)))
            .col_expr(ScheduleColumn::LeaseHolder, Expr::value(Option::<String>::None))
            .col_expr(ScheduleColumn::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(ScheduleColumn::RunId.eq(run_id))
            .exec(&txn)
            .await
            .map_err(fail)?;
        txn.commit().await.map_err(fail)?;
        Ok(run_record(row)?)
    }

    /// Under the scheduler lock the lease cannot change hands between the read and the writes (claims, expiry
    /// and retries take the lock; `renew_lease` only extends the holder's own lease), so checking the holder
    /// once is enough; the run's state is still moved conditionally, since a cancel does not take the lock.
    /// When the cancel wins, the transaction is dropped (rolled back) and nothing changed.
    async fn try_hand_back(
        &self,
        run_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool, AttemptError> {
        let context = format!("handing run {run_id} back to the queue");
        let fail = |err| attempt_err(&context)(err);
        let txn = self.begin_scheduling().await.map_err(fail)?;
        let Some(held) = Schedules::find_by_id(run_id).one(&txn).await.map_err(fail)? else {
            return Ok(false);
        };
        if held.lease_holder.as_deref() != Some(holder) {
            return Ok(false);
        }
        // the claim that gave `holder` this lease counted one more attempt: take it back
        let attempts_before_claim = count(&held, "attempts", held.attempts)?.saturating_sub(1);
        if self
            .move_run(&txn, run_id, RunState::Running, RunState::Queued, Some(Some(reason.to_string())))
            .await
            .map_err(fail)?
            .is_none()
        {
            return Ok(false);
        }
        Schedules::update_many()
            .col_expr(ScheduleColumn::NotBefore, Expr::value(to_stored_time(now)))
            .col_expr(ScheduleColumn::Attempts, Expr::value(i64::from(attempts_before_claim)))
            .col_expr(ScheduleColumn::LeaseHolder, Expr::value(Option::<String>::None))
            .col_expr(ScheduleColumn::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(ScheduleColumn::RunId.eq(run_id))
            .filter(ScheduleColumn::LeaseHolder.eq(holder))
            .exec(&txn)
            .await
            .map_err(fail)?;
        txn.commit().await.map_err(fail)?;
        Ok(true)
    }
}

#[async_trait]
impl RunScheduler for SeaStore {
    async fn enqueue_run(&self, request: EnqueueRequest, now: DateTime<Utc>) -> Result<Enqueued, StoreError> {
        retrying(format!("queueing a run of pipeline {}", request.run.pipeline), || self.try_enqueue(&request, now))
            .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>, max_attempts: u32) -> Result<Vec<String>, StoreError> {
        retrying("expiring run leases", || self.try_expire(now, max_attempts)).await
    }

    async fn claim_due_run(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limits: ConcurrencyLimits,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        retrying("claiming a due run", || self.try_claim(holder, now, lease_until, limits)).await
    }

    async fn renew_lease(&self, run_id: &str, holder: &str, lease_until: DateTime<Utc>) -> Result<bool, StoreError> {
        let context = format!("renewing the lease of run {run_id}");
        let result = Schedules::update_many()
            .col_expr(ScheduleColumn::LeaseExpiresAt, Expr::value(to_stored_time(lease_until)))
            .filter(ScheduleColumn::RunId.eq(run_id))
            .filter(ScheduleColumn::LeaseHolder.eq(holder))
            .exec(&self.db)
            .await
            .map_err(backend(&context))?;
        if result.rows_affected == 0 {
            return Ok(false);
        }
        let state = runs::Entity::find_by_id(run_id)
            .select_only()
            .column(runs::Column::State)
            .into_tuple::<String>()
            .one(&self.db)
            .await
            .map_err(backend(&context))?;
        Ok(state.as_deref() == Some(RunState::Running.as_str()))
    }

    async fn retry_later(
        &self,
        run_id: &str,
        holder: &str,
        not_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<RunRecord, StoreError> {
        retrying(format!("re-queueing run {run_id}"), || self.try_retry_later(run_id, holder, not_before, reason)).await
    }

    async fn hand_back(
        &self,
        run_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        retrying(format!("handing run {run_id} back to the queue"), || self.try_hand_back(run_id, holder, now, reason))
            .await
    }

    async fn run_schedule(&self, run_id: &str) -> Result<Option<RunSchedule>, StoreError> {
        let row = Schedules::find_by_id(run_id)
            .one(&self.db)
            .await
            .map_err(backend(format!("reading the schedule of run {run_id}")))?;
        row.map(schedule_record).transpose()
    }
}

#[async_trait]
impl DeliveryLog for SeaStore {
    async fn record_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        received_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = webhook_deliveries::ActiveModel {
            source: Set(source.to_string()),
            delivery_id: Set(delivery_id.to_string()),
            received_at: Set(to_stored_time(received_at)),
        };
        match webhook_deliveries::Entity::insert(row).exec_without_returning(&self.db).await {
            Ok(_) => Ok(true),
            Err(err) => match backend(format!("recording webhook delivery {source}/{delivery_id}"))(err) {
                StoreError::Conflict { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}
