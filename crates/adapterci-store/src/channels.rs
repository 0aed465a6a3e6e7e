//! `ChannelStore` on `adapter_channels`, `adapter_channel_events` and `adapter_tags`. Every change is one write
//! transaction: the channel row is locked (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE`
//! already serializes writers), the versions it names are read in the same transaction, and the pointer and its
//! event are written together. A foreign key keeps every pointer on an existing version.

use adapterci_core::channels::{
    BaseMismatch, ChannelAction, ChannelError, ChannelName, ChannelRecord, ChannelStore, PromoteRequest,
    RollbackTarget, TagName, VersionIdentity,
};
use adapterci_core::ports::{AdapterVersionRecord, NewAdapterVersion, StoreError};
use adapterci_core::{AdapterName, Digest};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use crate::SeaStore;
use crate::adapters::record_in;
use crate::convert::{channel_event, channel_record, to_stored_count, version_binding, version_record};
use crate::entity::adapter_versions;
use crate::entity::{adapter_channel_events as events, adapter_channels as channels, adapter_tags as tags};
use crate::error::{AttemptError, attempt_err, backend, retrying};
use crate::retention::pointer_race;

/// A channel change that failed for good, or a race to retry.
enum ChangeError {
    Refused(ChannelError),
    Attempt(AttemptError),
}

impl From<AttemptError> for ChangeError {
    fn from(err: AttemptError) -> Self {
        ChangeError::Attempt(err)
    }
}

impl From<StoreError> for ChangeError {
    fn from(err: StoreError) -> Self {
        ChangeError::Attempt(AttemptError::Fail(err))
    }
}

impl From<ChannelError> for ChangeError {
    fn from(err: ChannelError) -> Self {
        ChangeError::Refused(err)
    }
}

/// Runs `attempt` under the store's retry policy, keeping refusals apart from database failures.
async fn retrying_change<T, F, Fut>(what: String, mut attempt: F) -> Result<T, ChannelError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ChangeError>>,
{
    retrying(what, || {
        let future = attempt();
        async move {
            match future.await {
                Ok(value) => Ok(Ok(value)),
                Err(ChangeError::Refused(err)) => Ok(Err(err)),
                Err(ChangeError::Attempt(err)) => Err(err),
            }
        }
    })
    .await?
}

async fn locked_channel(
    txn: &DatabaseTransaction,
    adapter: &AdapterName,
    channel: &ChannelName,
    context: &str,
) -> Result<Option<channels::Model>, AttemptError> {
    channels::Entity::find_by_id((adapter.to_string(), channel.to_string()))
        .lock_exclusive()
        .one(txn)
        .await
        .map_err(attempt_err(context))
}

async fn version_row(
    txn: &DatabaseTransaction,
    adapter: &AdapterName,
    version: u64,
    context: &str,
) -> Result<adapter_versions::Model, ChangeError> {
    let number = to_stored_count("adapter version", version)?;
    adapter_versions::Entity::find_by_id((adapter.to_string(), number))
        .one(txn)
        .await
        .map_err(attempt_err(context))?
        .ok_or_else(|| ChangeError::Refused(ChannelError::NoSuchVersion { adapter: adapter.clone(), version }))
}

/// Points the channel at `target` (already checked) and records the event.
async fn move_channel(
    txn: &DatabaseTransaction,
    current: Option<&channels::Model>,
    (adapter, channel): (&AdapterName, &ChannelName),
    target: (&adapter_versions::Model, Digest),
    action: ChannelAction,
    now: DateTime<Utc>,
    context: &str,
) -> Result<ChannelRecord, ChangeError> {
    let (version, binding) = target;
    let row = channels::ActiveModel {
        adapter: Set(adapter.to_string()),
        channel: Set(channel.to_string()),
        version: Set(version.version),
        base_binding: Set(binding.to_string()),
        pinned: Set(current.is_some_and(|row| row.pinned)),
        updated_at: Set(now),
    };
    if current.is_some() {
        channels::Entity::update(row.clone()).exec(txn).await.map_err(pointer_race(context))?;
    } else {
        // A concurrent creator of the same channel makes this a unique-key race: retried.
        // A version pruned after it was read makes the foreign key fail: retried, the promote then finds it gone.
        channels::Entity::insert(row.clone()).exec_without_returning(txn).await.map_err(pointer_race(context))?;
    }
    let event = events::ActiveModel {
        adapter: Set(adapter.to_string()),
        channel: Set(channel.to_string()),
        action: Set(action.as_str().to_string()),
        from_version: Set(current.map(|row| row.version)),
        to_version: Set(version.version),
        at: Set(now),
        ..Default::default()
    };
    events::Entity::insert(event).exec_without_returning(txn).await.map_err(attempt_err(context))?;
    let model = channels::Model {
        adapter: adapter.to_string(),
        channel: channel.to_string(),
        version: version.version,
        base_binding: binding.to_string(),
        pinned: current.is_some_and(|row| row.pinned),
        updated_at: now,
    };
    Ok(channel_record(model)?)
}

/// Refuses a move of a pinned channel, to a deprecated version, or across bases (unless allowed).
fn check_move(
    current: Option<&channels::Model>,
    adapter: &AdapterName,
    channel: &ChannelName,
    target: &adapter_versions::Model,
    allow_base_change: bool,
) -> Result<Digest, ChangeError> {
    let version = u64::try_from(target.version).unwrap_or_default();
    if let Some(current) = current
        && current.pinned
    {
        let pinned = u64::try_from(current.version).unwrap_or_default();
        return Err(ChannelError::Pinned { adapter: adapter.clone(), channel: channel.clone(), version: pinned }.into());
    }
    if target.deprecated {
        return Err(ChannelError::Deprecated { adapter: adapter.clone(), version }.into());
    }
    let binding = version_binding(target)?;
    if let Some(current) = current
        && !allow_base_change
        && current.base_binding != binding.to_string()
    {
        return Err(ChannelError::BaseMismatch(Box::new(BaseMismatch {
            adapter: adapter.clone(),
            channel: channel.clone(),
            version,
            version_base: binding,
            current: u64::try_from(current.version).unwrap_or_default(),
            channel_base: current.base_binding.parse().map_err(|err| {
                StoreError::Backend(format!("unreadable base_binding of channel {channel} of {adapter}: {err}"))
            })?,
        }))
        .into());
    }
    Ok(binding)
}

impl SeaStore {
    async fn try_promote(&self, request: &PromoteRequest) -> Result<ChannelRecord, ChangeError> {
        let (adapter, channel) = (&request.adapter, &request.channel);
        let context = format!("promoting {adapter} v{} to {channel}", request.version);
        let txn = self.begin_write().await.map_err(attempt_err(&context))?;
        let current = locked_channel(&txn, adapter, channel, &context).await?;
        if let Some(current) = current.as_ref().filter(|row| row.version == request_version(request)) {
            // Already there (a retried promote): nothing changes and no second event is recorded.
            return Ok(channel_record(current.clone())?);
        }
        let target = version_row(&txn, adapter, request.version, &context).await?;
        let binding = check_move(current.as_ref(), adapter, channel, &target, request.allow_base_change)?;
        let record = move_channel(
            &txn,
            current.as_ref(),
            (adapter, channel),
            (&target, binding),
            ChannelAction::Promote,
            self.now(),
            &context,
        )
        .await?;
        crate::failpoint::check("in-promote-transaction");
        txn.commit().await.map_err(attempt_err(&context))?;
        crate::failpoint::check("after-promote");
        Ok(record)
    }

    async fn try_rollback(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        target: RollbackTarget,
    ) -> Result<ChannelRecord, ChangeError> {
        let context = format!("rolling back channel {channel} of {adapter}");
        let txn = self.begin_write().await.map_err(attempt_err(&context))?;
        let Some(current) = locked_channel(&txn, adapter, channel, &context).await? else {
            return Err(ChannelError::NoSuchChannel { adapter: adapter.clone(), channel: channel.clone() }.into());
        };
        let target_row = match target {
            RollbackTarget::Version(version) => version_row(&txn, adapter, version, &context).await?,
            RollbackTarget::Previous => {
                previous_version(&txn, &current, &context).await?.ok_or_else(|| ChannelError::NothingToRollBackTo {
                    adapter: adapter.clone(),
                    channel: channel.clone(),
                    current: u64::try_from(current.version).unwrap_or_default(),
                })?
            }
        };
        let binding = check_move(Some(&current), adapter, channel, &target_row, false)?;
        let record = move_channel(
            &txn,
            Some(&current),
            (adapter, channel),
            (&target_row, binding),
            ChannelAction::Rollback,
            self.now(),
            &context,
        )
        .await?;
        txn.commit().await.map_err(attempt_err(&context))?;
        Ok(record)
    }

    async fn try_set_pinned(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        pinned: bool,
    ) -> Result<ChannelRecord, ChangeError> {
        let context = format!("pinning channel {channel} of {adapter}");
        let txn = self.begin_write().await.map_err(attempt_err(&context))?;
        let Some(mut current) = locked_channel(&txn, adapter, channel, &context).await? else {
            return Err(ChannelError::NoSuchChannel { adapter: adapter.clone(), channel: channel.clone() }.into());
        };
        current.pinned = pinned;
        let row = channels::ActiveModel {
            adapter: Set(current.adapter.clone()),
            channel: Set(current.channel.clone()),
            pinned: Set(pinned),
            ..Default::default()
        };
        channels::Entity::update(row).exec(&txn).await.map_err(attempt_err(&context))?;
        txn.commit().await.map_err(attempt_err(&context))?;
        Ok(channel_record(current)?)
    }

    async fn try_record_once(
        &self,
        version: &NewAdapterVersion,
        identity: &VersionIdentity,
    ) -> Result<(AdapterVersionRecord, bool), AttemptError> {
        let context = format!("recording a version of adapter {}", version.name);
        let txn = self.begin_write().await.map_err(attempt_err(&context))?;
        lock_adapter(&txn, &version.name, &context).await?;
        let latest = adapter_versions::Entity::find()
            .filter(adapter_versions::Column::Name.eq(version.name.as_str()))
            .order_by_desc(adapter_versions::Column::Version)
            .one(&txn)
            .await
            .map_err(attempt_err(&context))?;
        if let Some(latest) = latest
            && latest.content_digest.as_deref() == Some(identity.content_digest.to_string().as_str())
        {
            return Ok((version_record(latest)?, false));
        }
        let record = record_in(&txn, version, Some(identity), self.now(), &context).await?;
        crate::failpoint::check("in-record-transaction");
        txn.commit().await.map_err(attempt_err(&context))?;
        Ok((record, true))
    }
}

/// The version a promote asks for, as stored (beyond `i64` it matches no row).
fn request_version(request: &PromoteRequest) -> i64 {
    i64::try_from(request.version).unwrap_or(-1)
}

/// Serializes the version allocators of one adapter on PostgreSQL until `txn` ends. Under READ COMMITTED each
/// statement sees the newest commits, so without it a racer could check "is the latest the same?" before a
/// twin's commit and compute the next number after it, adding a duplicate. SQLite's `BEGIN IMMEDIATE` already
/// serializes every writer.
pub(crate) async fn lock_adapter(
    txn: &DatabaseTransaction,
    adapter: &AdapterName,
    context: &str,
) -> Result<(), AttemptError> {
    if txn.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let lock = Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        [format!("adapterci adapter {adapter}").into()],
    );
    txn.execute_raw(lock).await.map_err(attempt_err(context))?;
    Ok(())
}

/// The newest version the channel served before, older than its current one, not deprecated, on its base.
async fn previous_version(
    txn: &DatabaseTransaction,
    current: &channels::Model,
    context: &str,
) -> Result<Option<adapter_versions::Model>, ChangeError> {
    let served: Vec<i64> = events::Entity::find()
        .select_only()
        .column(events::Column::ToVersion)
        .filter(events::Column::Adapter.eq(current.adapter.as_str()))
        .filter(events::Column::Channel.eq(current.channel.as_str()))
        .filter(events::Column::ToVersion.lt(current.version))
        .order_by_desc(events::Column::Id)
        .into_tuple()
        .all(txn)
        .await
        .map_err(attempt_err(context))?;
    for version in served {
        let row = adapter_versions::Entity::find_by_id((current.adapter.clone(), version))
            .one(txn)
            .await
            .map_err(attempt_err(context))?;
        if let Some(row) = row
            && !row.deprecated
            && version_binding(&row)?.to_string() == current.base_binding
        {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

#[async_trait]
impl ChannelStore for SeaStore {
    async fn promote(&self, request: PromoteRequest) -> Result<ChannelRecord, ChannelError> {
        let what = format!("promoting {} v{} to {}", request.adapter, request.version, request.channel);
        retrying_change(what, || self.try_promote(&request)).await
    }

    async fn rollback(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        target: RollbackTarget,
    ) -> Result<ChannelRecord, ChannelError> {
        let what = format!("rolling back channel {channel} of {adapter}");
        retrying_change(what, || self.try_rollback(adapter, channel, target)).await
    }

    async fn set_pinned(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
        pinned: bool,
    ) -> Result<ChannelRecord, ChannelError> {
        let what = format!("pinning channel {channel} of {adapter}");
        retrying_change(what, || self.try_set_pinned(adapter, channel, pinned)).await
    }

    async fn get_channel(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let row = channels::Entity::find_by_id((adapter.to_string(), channel.to_string()))
            .one(&self.db)
            .await
            .map_err(backend(format!("reading channel {channel} of {adapter}")))?;
        row.map(channel_record).transpose()
    }

    async fn list_channels(&self, adapter: &AdapterName) -> Result<Vec<ChannelRecord>, StoreError> {
        let rows = channels::Entity::find()
            .filter(channels::Column::Adapter.eq(adapter.as_str()))
            .order_by_asc(channels::Column::Channel)
            .all(&self.db)
            .await
            .map_err(backend(format!("listing the channels of {adapter}")))?;
        rows.into_iter().map(channel_record).collect()
    }

    async fn channel_history(
        &self,
        adapter: &AdapterName,
        channel: &ChannelName,
    ) -> Result<Vec<adapterci_core::channels::ChannelEvent>, StoreError> {
        let rows = events::Entity::find()
            .filter(events::Column::Adapter.eq(adapter.as_str()))
            .filter(events::Column::Channel.eq(channel.as_str()))
            .order_by_asc(events::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend(format!("reading the history of channel {channel} of {adapter}")))?;
        rows.into_iter().map(channel_event).collect()
    }

    async fn set_deprecated(&self, adapter: &AdapterName, version: u64, deprecated: bool) -> Result<(), ChannelError> {
        let number = to_stored_count("adapter version", version)?;
        let result = adapter_versions::Entity::update_many()
            .col_expr(adapter_versions::Column::Deprecated, deprecated.into())
            .filter(adapter_versions::Column::Name.eq(adapter.as_str()))
            .filter(adapter_versions::Column::Version.eq(number))
            .exec(&self.db)
            .await
            .map_err(backend(format!("deprecating {adapter} v{version}")))?;
        if result.rows_affected == 0 {
            return Err(ChannelError::NoSuchVersion { adapter: adapter.clone(), version });
        }
        Ok(())
    }

    async fn deprecated_versions(&self, adapter: &AdapterName) -> Result<Vec<u64>, StoreError> {
        let numbers: Vec<i64> = adapter_versions::Entity::find()
            .select_only()
            .column(adapter_versions::Column::Version)
            .filter(adapter_versions::Column::Name.eq(adapter.as_str()))
            .filter(adapter_versions::Column::Deprecated.eq(true))
            .order_by_asc(adapter_versions::Column::Version)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(backend(format!("listing the deprecated versions of {adapter}")))?;
        Ok(numbers.into_iter().filter_map(|number| u64::try_from(number).ok()).collect())
    }

    async fn tag_version(&self, adapter: &AdapterName, version: u64, tag: &TagName) -> Result<(), ChannelError> {
        let context = format!("tagging {adapter} v{version} as {tag}");
        let number = to_stored_count("adapter version", version)?;
        if self.get_version_row(adapter, number, &context).await?.is_none() {
            return Err(ChannelError::NoSuchVersion { adapter: adapter.clone(), version });
        }
        let row =
            tags::ActiveModel { adapter: Set(adapter.to_string()), tag: Set(tag.to_string()), version: Set(number) };
        // An existing tag is left as it is; what it names is checked below.
        tags::Entity::insert(row)
            .on_conflict(OnConflict::columns([tags::Column::Adapter, tags::Column::Tag]).do_nothing().to_owned())
            .exec_without_returning(&self.db)
            .await
            .map_err(backend(&context))?;
        match self.resolve_tag(adapter, tag).await? {
            Some(existing) if existing == version => Ok(()),
            Some(existing) => Err(ChannelError::TagTaken { adapter: adapter.clone(), tag: tag.clone(), existing }),
            None => Err(ChannelError::Store(StoreError::Backend(format!("{context}: the tag vanished")))),
        }
    }

    async fn resolve_tag(&self, adapter: &AdapterName, tag: &TagName) -> Result<Option<u64>, StoreError> {
        let row = tags::Entity::find_by_id((adapter.to_string(), tag.to_string()))
            .one(&self.db)
            .await
            .map_err(backend(format!("reading tag {tag} of {adapter}")))?;
        Ok(row.and_then(|row| u64::try_from(row.version).ok()))
    }

    async fn list_tags(&self, adapter: &AdapterName) -> Result<Vec<(TagName, u64)>, StoreError> {
        let rows = tags::Entity::find()
            .filter(tags::Column::Adapter.eq(adapter.as_str()))
            .order_by_asc(tags::Column::Tag)
            .all(&self.db)
            .await
            .map_err(backend(format!("listing the tags of {adapter}")))?;
        rows.into_iter()
            .map(|row| {
                let tag = TagName::new(row.tag.as_str())
                    .map_err(|err| StoreError::Backend(format!("unreadable tag in adapter_tags: {err}")))?;
                Ok((tag, u64::try_from(row.version).unwrap_or_default()))
            })
            .collect()
    }

    async fn record_version_once(
        &self,
        version: NewAdapterVersion,
        identity: VersionIdentity,
    ) -> Result<(AdapterVersionRecord, bool), StoreError> {
        let what = format!("recording a version of adapter {}", version.name);
        retrying(what, || self.try_record_once(&version, &identity)).await
    }
}

impl SeaStore {
    async fn get_version_row(
        &self,
        adapter: &AdapterName,
        number: i64,
        context: &str,
    ) -> Result<Option<adapter_versions::Model>, StoreError> {
        adapter_versions::Entity::find_by_id((adapter.to_string(), number))
            .one(&self.db)
            .await
            .map_err(backend(context))
    }
}
