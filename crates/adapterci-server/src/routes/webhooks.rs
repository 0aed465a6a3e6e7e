//! Webhook deliveries: `POST /api/v1/webhooks/{name}` with the sender's raw body. Verification and reading are
//! the controller's (`adapterci_controller::webhooks`, no axum there); this handler reads the body under its own
//! small limit and answers 401 for bad credentials, 413 for an oversized body, 404 for a webhook no pipeline
//! names, each refusal logged with the sender's address-independent facts (webhook name, reason).

use adapterci_api::{ErrorCode, WebhookResponse};
use adapterci_controller::webhooks::{MAX_WEBHOOK_BODY_BYTES, WebhookError, WebhookHeaders};
use adapterci_controller::{WebhookFailure, WebhookOutcome};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::convert::run_info;
use crate::{AppError, AppState};

fn headers_of(map: &HeaderMap) -> WebhookHeaders {
    WebhookHeaders::new(
        map.iter().filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))),
    )
}

fn refused(name: &str, error: WebhookError) -> AppError {
    let code = match &error {
        WebhookError::Unauthorized(_) => ErrorCode::Unauthorized,
        WebhookError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        WebhookError::InvalidPayload(_) => ErrorCode::InvalidRequest,
    };
    tracing::warn!(webhook = name, status = code.http_status(), reason = %error, "webhook delivery refused");
    AppError::new(code, error.to_string())
}

pub(super) async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<WebhookResponse>), AppError> {
    // Read at most one byte more than the limit: enough to know the body is too large, never more.
    let bytes = match axum::body::to_bytes(body, MAX_WEBHOOK_BODY_BYTES + 1).await {
        Ok(bytes) if bytes.len() <= MAX_WEBHOOK_BODY_BYTES => bytes,
        _ => return Err(refused(&name, WebhookError::TooLarge { limit: MAX_WEBHOOK_BODY_BYTES })),
    };
    let outcome = state.controller.receive_webhook(&name, &headers_of(&headers), &bytes).await;
    match outcome {
        Ok(WebhookOutcome { delivery_id, duplicate, ignored, runs }) => {
            let status = if runs.is_empty() { StatusCode::OK } else { StatusCode::ACCEPTED };
            let runs = runs.into_iter().map(run_info).collect();
            Ok((status, Json(WebhookResponse { delivery_id, duplicate, ignored, runs })))
        }
        Err(WebhookFailure::Refused(error)) => Err(refused(&name, error)),
        Err(WebhookFailure::UnknownWebhook(_)) => {
            tracing::warn!(webhook = %name, "webhook delivery for a webhook no pipeline names");
            Err(AppError::not_found(format!("no pipeline has a webhook trigger with secret {name:?}")))
        }
        Err(WebhookFailure::Controller(error)) => Err(error.into()),
    }
}
