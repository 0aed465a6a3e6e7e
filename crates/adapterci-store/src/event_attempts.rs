//! `EventDeliveryLog` on `registry_event_attempts` (one row per attempt to deliver an outbound registry event)
//! and `registry_events` (the outbox: one row per event, stored before its first attempt, leased to the notifier
//! delivering it, settled when done).

use adapterci_core::events::{
    EventAttempt, EventDeliveryLog, EventLease, PendingEvent, PrunedEvents, RegistryEvent, RegistryEventKind,
    UnreadableEvent, UnsettledEvents,
};
use adapterci_core::ports::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::SeaStore;
use crate::convert::{RowReader, to_stored_time};
use crate::error::{AttemptError, attempt_err, backend, retrying};

pub(crate) mod attempts {
    //! The `registry_event_attempts` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "registry_event_attempts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub event_id: String,
        pub kind: String,
        pub endpoint: String,
        pub attempt: i32,
        pub status: Option<i32>,
        pub delivered: bool,
        pub error: Option<String>,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod events {
    //! The `registry_events` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "registry_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        /// The event as subscribers receive it (JSON).
        pub body: String,
        /// The endpoints it is addressed to (a JSON array of URLs).
        pub endpoints: String,
        pub created_at: DateTimeUtc,
        pub settled: bool,
        /// The owner id of the notifier that stored the event or last took it over.
        pub claimed_by: Option<String>,
        /// Until when that notifier holds it.
        pub lease_until: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn kind_of(text: &str) -> Result<RegistryEventKind, StoreError> {
    match text {
        "published" => Ok(RegistryEventKind::Published),
        "promoted" => Ok(RegistryEventKind::Promoted),
        "rolled_back" => Ok(RegistryEventKind::RolledBack),
        "gate_failed" => Ok(RegistryEventKind::GateFailed),
        other => Err(StoreError::Backend(format!("unknown event kind {other:?} in registry_event_attempts"))),
    }
}

fn attempt_of(row: attempts::Model) -> Result<EventAttempt, StoreError> {
    Ok(EventAttempt {
        event_id: row.event_id,
        kind: kind_of(&row.kind)?,
        endpoint: row.endpoint,
        attempt: u32::try_from(row.attempt).unwrap_or_default(),
        status: row.status.and_then(|status| u16::try_from(status).ok()),
        delivered: row.delivered,
        error: row.error,
        at: row.at,
    })
}

fn pending_event(row: events::Model) -> Result<PendingEvent, StoreError> {
    let read = RowReader { table: "registry_events", row: &row.id };
    let lease = match (row.claimed_by, row.lease_until) {
        (Some(owner), Some(until)) => Some(EventLease { owner, until }),
        _ => None,
    };
    Ok(PendingEvent { event: read.json("body", &row.body)?, endpoints: read.json("endpoints", &row.endpoints)?, lease })
}

/// The unsettled events, oldest first.
fn unsettled() -> sea_orm::Select<events::Entity> {
    events::Entity::find()
        .filter(events::Column::Settled.eq(false))
        .order_by_asc(events::Column::CreatedAt)
        .order_by_asc(events::Column::Id)
}

/// A stored row of one unsettled event, by id, or why it cannot be read.
type StoredEvent = (String, Result<events::Model, StoreError>);

/// How many events one statement of a prune deletes: far below every backend's limit on bound parameters.
const PRUNE_BATCH: usize = 500;

impl SeaStore {
    /// One try of [`EventDeliveryLog::prune_settled`], in one write transaction.
    async fn try_prune_settled_events(&self, older_than: DateTime<Utc>) -> Result<PrunedEvents, AttemptError> {
        let fail = |error| attempt_err("pruning settled registry events")(error);
        let older_than = to_stored_time(older_than);
        let txn = self.begin_write().await.map_err(fail)?;
        let ids: Vec<String> = events::Entity::find()
            .select_only()
            .column(events::Column::Id)
            .filter(events::Column::Settled.eq(true))
            .filter(events::Column::CreatedAt.lt(older_than))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(fail)?;
        let mut pruned = PrunedEvents::default();
        for batch in ids.chunks(PRUNE_BATCH) {
            let batch = batch.iter().map(String::as_str);
            let attempts = attempts::Entity::delete_many()
                .filter(attempts::Column::EventId.is_in(batch.clone()))
                .exec(&txn)
                .await
                .map_err(fail)?;
            let events = events::Entity::delete_many().filter(events::Column::Id.is_in(batch)).exec(&txn).await;
            pruned.attempts += attempts.rows_affected;
            pruned.events += events.map_err(fail)?.rows_affected;
        }
        let stored_events = Query::select().column(events::Column::Id).from(events::Entity).to_owned();
        let orphans = attempts::Entity::delete_many()
            .filter(attempts::Column::At.lt(older_than))
            .filter(attempts::Column::EventId.not_in_subquery(stored_events))
            .exec(&txn)
            .await
            .map_err(fail)?;
        pruned.attempts += orphans.rows_affected;
        txn.commit().await.map_err(fail)?;
        Ok(pruned)
    }

    /// The unsettled rows read one at a time, each that fails to decode kept as its error.
    async fn unsettled_rows_one_by_one(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let ids: Vec<String> = unsettled()
            .select_only()
            .column(events::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(backend("reading the ids of the unsettled registry events"))?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let row = match events::Entity::find_by_id(id.as_str()).one(&self.db).await {
                Ok(Some(row)) => Ok(row),
                Ok(None) => continue, // pruned since
                Err(error) => {
                    Err(StoreError::Backend(format!("unreadable row in table registry_events, row {id}: {error}")))
                }
            };
            rows.push((id, row));
        }
        Ok(rows)
    }
}

#[async_trait]
impl EventDeliveryLog for SeaStore {
    async fn record_event(
        &self,
        event: &RegistryEvent,
        endpoints: &[String],
        lease: &EventLease,
    ) -> Result<(), StoreError> {
        let context = format!("recording event {}", event.id);
        let encode = |what: &str, error: serde_json::Error| StoreError::Backend(format!("{context}: {what}: {error}"));
        let row = events::ActiveModel {
            id: Set(event.id.clone()),
            kind: Set(event.kind.as_str().to_string()),
            body: Set(serde_json::to_string(event).map_err(|error| encode("encoding the event", error))?),
            endpoints: Set(serde_json::to_string(endpoints).map_err(|error| encode("encoding its endpoints", error))?),
            created_at: Set(to_stored_time(event.at)),
            settled: Set(false),
            claimed_by: Set(Some(lease.owner.clone())),
            lease_until: Set(Some(to_stored_time(lease.until))),
        };
        // The same event recorded again (a retried call) keeps its first row, settled or not.
        events::Entity::insert(row)
            .on_conflict(OnConflict::column(events::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&self.db)
            .await
            .map_err(backend(context))?;
        Ok(())
    }

    async fn unsettled_events(&self) -> Result<UnsettledEvents, StoreError> {
        let rows = match unsettled().all(&self.db).await {
            Ok(rows) => rows.into_iter().map(|row| (row.id.clone(), Ok(row))).collect(),
            // A column that does not decode (a damaged timestamp) fails the whole query: read the rows one by one,
            // so that only the damaged one is left out.
            Err(error) => {
                tracing::debug!(%error, "the unsettled registry events do not read at once, reading them one by one");
                self.unsettled_rows_one_by_one().await?
            }
        };
        let mut unsettled = UnsettledEvents::default();
        for (id, row) in rows {
            match row.and_then(pending_event) {
                Ok(pending) => unsettled.pending.push(pending),
                Err(error) => unsettled.unreadable.push(UnreadableEvent { id, reason: error.to_string() }),
            }
        }
        Ok(unsettled)
    }

    async fn claim_event(&self, event_id: &str, lease: &EventLease, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let context = format!("taking over event {event_id}");
        let (until, now) = (to_stored_time(lease.until), to_stored_time(now));
        // One conditional UPDATE: a single statement is atomic on SQLite (one writer at a time) and on PostgreSQL
        // (a concurrent update of the row waits for the first to commit, then re-checks this condition against
        // the new lease and finds it held), so of notifiers racing for the event exactly one sees a row affected.
        // A lease already held by the same owner is renewed: owner ids are unique among live notifiers, so that
        // lease was left by a previous life of the same instance (a stable `--instance-id`).
        let claim = || async {
            let result = events::Entity::update_many()
                .col_expr(events::Column::ClaimedBy, Expr::value(lease.owner.as_str()))
                .col_expr(events::Column::LeaseUntil, Expr::value(until))
                .filter(events::Column::Id.eq(event_id))
                .filter(events::Column::Settled.eq(false))
                .filter(
                    Condition::any()
                        .add(events::Column::ClaimedBy.is_null())
                        .add(events::Column::LeaseUntil.is_null())
                        .add(events::Column::LeaseUntil.lt(now))
                        .add(events::Column::ClaimedBy.eq(lease.owner.as_str())),
                )
                .exec(&self.db)
                .await
                .map_err(attempt_err(&context))?;
            Ok::<_, AttemptError>(result.rows_affected == 1)
        };
        retrying(&context, claim).await
    }

    async fn release_events(&self, owner: &str, keep: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let context = format!("releasing the registry events held by {owner}");
        let now = to_stored_time(now);
        // One conditional UPDATE, like the claim: a row another notifier took over in the meantime no longer
        // matches `claimed_by = owner` (PostgreSQL re-checks the condition against a concurrent claim once it
        // commits), and a settled one keeps its lease as history.
        let release = || async {
            let mut release = events::Entity::update_many()
                .col_expr(events::Column::ClaimedBy, Expr::value(Option::<String>::None))
                .col_expr(events::Column::LeaseUntil, Expr::value(now))
                .filter(events::Column::ClaimedBy.eq(owner))
                .filter(events::Column::Settled.eq(false));
            if !keep.is_empty() {
                release = release.filter(events::Column::Id.is_not_in(keep.iter().map(String::as_str)));
            }
            let result = release.exec(&self.db).await.map_err(attempt_err(&context))?;
            Ok::<_, AttemptError>(result.rows_affected)
        };
        retrying(&context, release).await
    }

    async fn settle_event(&self, event_id: &str, owner: &str) -> Result<bool, StoreError> {
        let context = format!("settling event {event_id} as {owner}");
        // One conditional UPDATE, like the claim: a notifier whose event was taken over no longer matches
        // `claimed_by = owner` (PostgreSQL re-checks the condition against a concurrent claim once it commits). A
        // settled event is never claimed or released, so settling it again under its owner matches the same row
        // and changes nothing: a retry after a lost answer still sees true.
        let settle = || async {
            let result = events::Entity::update_many()
                .col_expr(events::Column::Settled, Expr::value(true))
                .filter(events::Column::Id.eq(event_id))
                .filter(events::Column::ClaimedBy.eq(owner))
                .exec(&self.db)
                .await
                .map_err(attempt_err(&context))?;
            Ok::<_, AttemptError>(result.rows_affected == 1)
        };
        retrying(&context, settle).await
    }

    async fn prune_settled(&self, older_than: DateTime<Utc>) -> Result<PrunedEvents, StoreError> {
        retrying("pruning settled registry events", || self.try_prune_settled_events(older_than)).await
    }

    async fn record_attempt(&self, attempt: EventAttempt) -> Result<(), StoreError> {
        let context = format!("recording delivery attempt {} of event {}", attempt.attempt, attempt.event_id);
        let row = attempts::ActiveModel {
            event_id: Set(attempt.event_id),
            kind: Set(attempt.kind.as_str().to_string()),
            endpoint: Set(attempt.endpoint),
            attempt: Set(i32::try_from(attempt.attempt).unwrap_or(i32::MAX)),
            status: Set(attempt.status.map(i32::from)),
            delivered: Set(attempt.delivered),
            error: Set(attempt.error),
            at: Set(to_stored_time(attempt.at)),
            ..Default::default()
        };
        attempts::Entity::insert(row).exec_without_returning(&self.db).await.map_err(backend(context))?;
        Ok(())
    }

    async fn attempts_of(&self, event_id: &str) -> Result<Vec<EventAttempt>, StoreError> {
        let rows = attempts::Entity::find()
            .filter(attempts::Column::EventId.eq(event_id))
            .order_by_asc(attempts::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend(format!("reading the delivery attempts of event {event_id}")))?;
        rows.into_iter().map(attempt_of).collect()
    }

    async fn recent_attempts(&self, limit: u64) -> Result<Vec<EventAttempt>, StoreError> {
        let rows = attempts::Entity::find()
            .order_by_desc(attempts::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(backend("reading recent event delivery attempts"))?;
        rows.into_iter().map(attempt_of).collect()
    }
}
