//! The answer to a webhook delivery (`POST /api/v1/webhooks/{name}`).

use serde::{Deserialize, Serialize};

use crate::RunInfo;

/// What a delivery did: the runs that carry it, or why it started nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookResponse {
    /// The sender's delivery id, or the digest that identifies the event when the sender gives none.
    pub delivery_id: String,
    /// True when this delivery was received before: nothing was queued again.
    #[serde(default)]
    pub duplicate: bool,
    /// Why nothing was queued (the event does not change data, or names no watched dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// The runs queued or joined (debounce) for the delivery.
    #[serde(default)]
    pub runs: Vec<RunInfo>,
}
