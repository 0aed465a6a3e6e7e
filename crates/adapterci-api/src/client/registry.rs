//! [`ApiClient`] methods for channels, deprecation and garbage collection of the registry.

use reqwest::Method;

use super::{ApiClient, Body};
use crate::error::ApiError;
use crate::{
    ChannelInfo, DeprecateBody, DeprecateResponse, EventAttemptInfo, GcBody, GcResponse, PinBody, PromoteBody,
    RollbackBody,
};

impl ApiClient {
    /// `GET /api/v1/adapters/{name}/channels`.
    pub async fn list_channels(&self, adapter: &str) -> Result<Vec<ChannelInfo>, ApiError> {
        self.call(Method::GET, self.url(&["api", "v1", "adapters", adapter, "channels"]), Body::<()>::None).await
    }

    /// `POST /api/v1/adapters/{name}/channels/{channel}/promote`.
    pub async fn promote(&self, adapter: &str, channel: &str, body: &PromoteBody) -> Result<ChannelInfo, ApiError> {
        let url = self.url(&["api", "v1", "adapters", adapter, "channels", channel, "promote"]);
        self.call(Method::POST, url, Body::Json(body)).await
    }

    /// `POST /api/v1/adapters/{name}/channels/{channel}/rollback`.
    pub async fn rollback(&self, adapter: &str, channel: &str, body: &RollbackBody) -> Result<ChannelInfo, ApiError> {
        let url = self.url(&["api", "v1", "adapters", adapter, "channels", channel, "rollback"]);
        self.call(Method::POST, url, Body::Json(body)).await
    }

    /// `POST /api/v1/adapters/{name}/channels/{channel}/pin`.
    pub async fn pin(&self, adapter: &str, channel: &str, pinned: bool) -> Result<ChannelInfo, ApiError> {
        let url = self.url(&["api", "v1", "adapters", adapter, "channels", channel, "pin"]);
        self.call(Method::POST, url, Body::Json(&PinBody { pinned })).await
    }

    /// `POST /api/v1/adapters/{name}/versions/{version}/deprecate`.
    pub async fn deprecate(
        &self,
        adapter: &str,
        version: u64,
        deprecated: bool,
    ) -> Result<DeprecateResponse, ApiError> {
        let version = version.to_string();
        let url = self.url(&["api", "v1", "adapters", adapter, "versions", &version, "deprecate"]);
        self.call(Method::POST, url, Body::Json(&DeprecateBody { deprecated })).await
    }

    /// `GET /api/v1/registry/events?limit=N`: the newest delivery attempts first.
    pub async fn list_event_attempts(&self, limit: u32) -> Result<Vec<EventAttemptInfo>, ApiError> {
        let mut url = self.url(&["api", "v1", "registry", "events"]);
        url.query_pairs_mut().append_pair("limit", &limit.to_string());
        self.call(Method::GET, url, Body::<()>::None).await
    }

    /// `POST /api/v1/registry/gc`.
    pub async fn collect_garbage(&self, grace_secs: u64, keep_last: Option<u64>) -> Result<GcResponse, ApiError> {
        let body = GcBody { grace_secs, keep_last };
        self.call(Method::POST, self.url(&["api", "v1", "registry", "gc"]), Body::Json(&body)).await
    }
}
