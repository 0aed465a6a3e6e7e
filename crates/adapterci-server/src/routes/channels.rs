//! Registry administration endpoints: channels (list, promote, rollback, pin), deprecation of a version and
//! garbage collection of unreferenced blobs. Each channel change is one transaction of the metadata store.

use adapterci_api::{
    ChannelInfo, DeprecateBody, DeprecateResponse, ErrorCode, EventAttemptInfo, GcBody, GcResponse, PinBody,
    PromoteBody, RollbackBody,
};
use adapterci_core::AdapterName;
use adapterci_core::channels::{ChannelError, ChannelName, ChannelRecord, PromoteRequest, RollbackTarget};
use adapterci_core::events::RegistryEventKind;
use adapterci_core::retention::RetentionPolicy;
use axum::Json;
use axum::extract::{Path, State};

use crate::{AppError, AppState};

impl From<ChannelError> for AppError {
    fn from(error: ChannelError) -> Self {
        let code = match &error {
            ChannelError::NoSuchVersion { .. } | ChannelError::NoSuchChannel { .. } => ErrorCode::NotFound,
            ChannelError::BaseMismatch(_)
            | ChannelError::Pinned { .. }
            | ChannelError::Deprecated { .. }
            | ChannelError::NothingToRollBackTo { .. }
            | ChannelError::TagTaken { .. } => ErrorCode::Conflict,
            ChannelError::Store(store) => return store.clone().into(),
        };
        AppError::new(code, error.to_string())
    }
}

/// Stores the outbound event of a channel change, then sends it to the subscribers in the background: the
/// response is sent once the event is durable (a store failure is logged, the channel change stands).
async fn notify(state: &AppState, kind: RegistryEventKind, record: &ChannelRecord) {
    if let Some(events) = &state.events {
        let mut event = events.event(kind, record.adapter.as_str(), record.version);
        event.channel = Some(record.channel.to_string());
        events.notify(event).await;
    }
}

fn channel_info(record: ChannelRecord) -> ChannelInfo {
    ChannelInfo {
        adapter: record.adapter.to_string(),
        channel: record.channel.to_string(),
        version: record.version,
        base_binding: record.base_binding.to_string(),
        pinned: record.pinned,
        updated_at: record.updated_at,
    }
}

/// The adapter `name`, refused with 400 when invalid and 404 when it has no version.
async fn known_adapter(state: &AppState, name: &str) -> Result<AdapterName, AppError> {
    let adapter = AdapterName::new(name).map_err(|error| AppError::invalid_request(error.to_string()))?;
    if state.controller.ports().store.latest_version(&adapter).await?.is_none() {
        return Err(AppError::not_found(format!("adapter {adapter:?} has no published version")));
    }
    Ok(adapter)
}

fn channel_name(name: &str) -> Result<ChannelName, AppError> {
    ChannelName::new(name).map_err(|error| AppError::invalid_request(format!("channel {name:?}: {error}")))
}

fn version_number(version: &str) -> Result<u64, AppError> {
    version
        .parse()
        .ok()
        .filter(|number| *number > 0)
        .ok_or_else(|| AppError::invalid_request(format!("version {version:?} is not a positive integer")))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ChannelInfo>>, AppError> {
    let adapter = known_adapter(&state, &name).await?;
    let channels = state.controller.ports().store.list_channels(&adapter).await?;
    Ok(Json(channels.into_iter().map(channel_info).collect()))
}

pub(super) async fn promote(
    State(state): State<AppState>,
    Path((name, channel)): Path<(String, String)>,
    Json(body): Json<PromoteBody>,
) -> Result<Json<ChannelInfo>, AppError> {
    let adapter = known_adapter(&state, &name).await?;
    let channel = channel_name(&channel)?;
    let request = PromoteRequest { adapter, channel, version: body.version, allow_base_change: body.allow_base_change };
    let record = state.controller.ports().store.promote(request).await?;
    tracing::info!(adapter = %record.adapter, channel = %record.channel, version = record.version, "promoted");
    notify(&state, RegistryEventKind::Promoted, &record).await;
    Ok(Json(channel_info(record)))
}

pub(super) async fn rollback(
    State(state): State<AppState>,
    Path((name, channel)): Path<(String, String)>,
    Json(body): Json<RollbackBody>,
) -> Result<Json<ChannelInfo>, AppError> {
    let adapter = known_adapter(&state, &name).await?;
    let channel = channel_name(&channel)?;
    let target = body.version.map_or(RollbackTarget::Previous, RollbackTarget::Version);
    let record = state.controller.ports().store.rollback(&adapter, &channel, target).await?;
    tracing::info!(adapter = %record.adapter, channel = %record.channel, version = record.version, "rolled back");
    notify(&state, RegistryEventKind::RolledBack, &record).await;
    Ok(Json(channel_info(record)))
}

pub(super) async fn pin(
    State(state): State<AppState>,
    Path((name, channel)): Path<(String, String)>,
    Json(body): Json<PinBody>,
) -> Result<Json<ChannelInfo>, AppError> {
    let adapter = known_adapter(&state, &name).await?;
    let channel = channel_name(&channel)?;
    let record = state.controller.ports().store.set_pinned(&adapter, &channel, body.pinned).await?;
    Ok(Json(channel_info(record)))
}

pub(super) async fn deprecate(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Json(body): Json<DeprecateBody>,
) -> Result<Json<DeprecateResponse>, AppError> {
    let adapter = known_adapter(&state, &name).await?;
    let version = version_number(&version)?;
    state.controller.ports().store.set_deprecated(&adapter, version, body.deprecated).await?;
    Ok(Json(DeprecateResponse { adapter: adapter.to_string(), version, deprecated: body.deprecated }))
}

/// `?limit=N` of `GET /api/v1/registry/events`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct EventsQuery {
    limit: Option<u32>,
}

/// The most attempts one listing returns.
const MAX_EVENT_ATTEMPTS: u32 = 1000;

pub(super) async fn event_attempts(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Result<Json<Vec<EventAttemptInfo>>, AppError> {
    let Some(events) = state.events.as_ref() else {
        return Ok(Json(Vec::new()));
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_EVENT_ATTEMPTS);
    let attempts = events.log().recent_attempts(u64::from(limit)).await?;
    Ok(Json(
        attempts
            .into_iter()
            .map(|attempt| EventAttemptInfo {
                event_id: attempt.event_id,
                kind: attempt.kind.as_str().to_string(),
                endpoint: attempt.endpoint,
                attempt: attempt.attempt,
                status: attempt.status,
                delivered: attempt.delivered,
                error: attempt.error,
                at: attempt.at,
            })
            .collect(),
    ))
}

pub(super) async fn collect_garbage(
    State(state): State<AppState>,
    Json(body): Json<GcBody>,
) -> Result<Json<GcResponse>, AppError> {
    let Some(registry) = state.registry.as_ref() else {
        return Err(AppError::new(ErrorCode::Unavailable, "this adapterd has no object-store registry to collect"));
    };
    let grace = i64::try_from(body.grace_secs)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| AppError::invalid_request(format!("grace_secs {} is too large", body.grace_secs)))?;
    let policy = body
        .keep_last
        .map(RetentionPolicy::keep_last)
        .transpose()
        .map_err(|reason| AppError::invalid_request(format!("keep_last: {reason}")))?;
    let report = registry.collect_garbage_with_retention(policy, grace).await.map_err(|error| match error {
        adapterci_core::ports::RegistryError::InvalidRequest { .. } => {
            AppError::new(ErrorCode::Conflict, error.to_string())
        }
        other => other.into(),
    })?;
    let pruned: Vec<String> = report
        .pruned
        .iter()
        .flat_map(|(adapter, versions)| versions.iter().map(move |version| format!("{adapter}@{version}")))
        .collect();
    let gc = report.gc;
    tracing::info!(
        scanned = gc.scanned,
        deleted = gc.deleted.len(),
        pruned = pruned.len(),
        "registry garbage collected"
    );
    Ok(Json(GcResponse {
        scanned: gc.scanned,
        referenced: gc.referenced,
        kept_young: gc.kept_young,
        deleted: gc.deleted.iter().map(ToString::to_string).collect(),
        pruned,
    }))
}
