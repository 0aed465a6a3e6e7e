//! Inbound webhook deliveries, verified and read: Hugging Face Hub, GitHub, S3 event notifications and a
//! generic HMAC form. Pure functions over the headers and the raw body (no HTTP framework): the server hands
//! them what it received, and every refusal is a [`WebhookError`] that says why.
//!
//! Secrets are compared in constant time (an HMAC verification, or a byte-wise fold for shared tokens). Replay
//! protection is twofold: the delivery id is recorded (a redelivery starts nothing), and where the sender signs
//! or states a time (generic HMAC, S3 `eventTime`) it must fall inside a window around now.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use adapterci_pipeline::WebhookFormat;

/// The largest body read; larger deliveries are refused with 413 before any parsing.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1 << 20;
/// How far a signed or stated delivery time may be from now.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::minutes(5);

pub const HEADER_HF_SECRET: &str = "x-webhook-secret";
pub const HEADER_GITHUB_SIGNATURE: &str = "x-hub-signature-256";
pub const HEADER_GITHUB_DELIVERY: &str = "x-github-delivery";
pub const HEADER_GITHUB_EVENT: &str = "x-github-event";
pub const HEADER_AUTHORIZATION: &str = "authorization";
pub const HEADER_SIGNATURE: &str = "x-adapterci-signature";
pub const HEADER_TIMESTAMP: &str = "x-adapterci-timestamp";
pub const HEADER_DELIVERY: &str = "x-adapterci-delivery";

/// Why a delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong credentials, or a time outside the replay window: answered 401.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated but unreadable: answered 400.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// Larger than [`MAX_WEBHOOK_BODY_BYTES`]: answered 413.
    #[error("payload too large: more than {limit} bytes")]
    TooLarge { limit: usize },
}

/// An authenticated delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Unique per delivery: the sender's id, or a digest of what makes the event unique.
    pub id: String,
    /// False when the event does not say that data changed (a GitHub ping, a Hub discussion): nothing runs.
    pub changes_data: bool,
    /// Object keys the event names (S3), to match against dataset locations; empty when it names none.
    pub keys: Vec<String>,
    /// What the event was, for logs and the run's trigger.
    pub summary: String,
}

/// Received headers, by lowercase name.
#[derive(Clone, Debug, Default)]
pub struct WebhookHeaders(Vec<(String, String)>);

impl WebhookHeaders {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        WebhookHeaders(pairs.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.trim())
    }

    fn required(&self, name: &str) -> Result<&str, WebhookError> {
        self.get(name).ok_or_else(|| WebhookError::Unauthorized(format!("missing header {name}")))
    }
}

/// Equality that takes the same time wherever the first difference is (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha256(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("hmac accepts any key"))
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, message), in constant time.
fn verify_sha256_signature(secret: &[u8], message: &[&[u8]], header: &str) -> Result<(), WebhookError> {
    let hex_signature = header
        .strip_prefix("sha256=")
        .ok_or_else(|| WebhookError::Unauthorized("signature must look like sha256=<hex>".to_string()))?;
    let signature = hex::decode(hex_signature)
        .map_err(|_| WebhookError::Unauthorized("signature is not hexadecimal".to_string()))?;
    let mut mac = hmac_sha256(secret);
    for part in message {
        mac.update(part);
    }
    mac.verify_slice(&signature).map_err(|_| WebhookError::Unauthorized("signature mismatch".to_string()))
}

/// The hex SHA-256 of `parts`, as a delivery id for senders that give none.
fn digest_id(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

fn parse_json(body: &[u8]) -> Result<Value, WebhookError> {
    serde_json::from_slice(body).map_err(|error| WebhookError::InvalidPayload(format!("not JSON: {error}")))
}

fn within_window(time: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> Result<(), WebhookError> {
    if (now - time).abs() > window {
        return Err(WebhookError::Unauthorized(format!(
            "delivery time {time} is outside the replay window of {}s around now",
            window.num_seconds()
        )));
    }
    Ok(())
}

/// Verifies and reads one delivery. `body` is the raw body, exactly as received.
pub fn verify_delivery(
    format: WebhookFormat,
    secret: &[u8],
    headers: &WebhookHeaders,
    body: &[u8],
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Delivery, WebhookError> {
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookError::TooLarge { limit: MAX_WEBHOOK_BODY_BYTES });
    }
    match format {
        WebhookFormat::Huggingface => huggingface(secret, headers, body),
        WebhookFormat::Github => github(secret, headers, body),
        WebhookFormat::S3 => s3(secret, headers, body, now, window),
        WebhookFormat::Hmac => generic_hmac(secret, headers, body, now, window),
    }
}

/// Hugging Face Hub: the secret comes back verbatim in `X-Webhook-Secret`. Only `repo.content` events (a push)
/// change data; `updatedRefs` and the head sha make the delivery id, since the Hub sends none.
fn huggingface(secret: &[u8], headers: &WebhookHeaders, body: &[u8]) -> Result<Delivery, WebhookError> {
    let given = headers.required(HEADER_HF_SECRET)?;
    if !constant_time_eq(given.as_bytes(), secret) {
        return Err(WebhookError::Unauthorized("X-Webhook-Secret does not match".to_string()));
    }
    let payload = parse_json(body)?;
    let scope = payload.pointer("/event/scope").and_then(Value::as_str).unwrap_or_default();
    let action = payload.pointer("/event/action").and_then(Value::as_str).unwrap_or_default();
    let repo = payload.pointer("/repo/name").and_then(Value::as_str).unwrap_or_default();
    let head = payload.pointer("/repo/headSha").and_then(Value::as_str).unwrap_or_default();
    let refs: Vec<String> = payload
        .get("updatedRefs")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|entry| {
                    let name = entry.get("ref").and_then(Value::as_str).unwrap_or_default();
                    let new = entry.get("newSha").and_then(Value::as_str).unwrap_or_default();
                    format!("{name}@{new}")
                })
                .collect()
        })
        .unwrap_or_default();
    let changes_data = scope.starts_with("repo.content") && action == "update";
    let joined = refs.join(",");
    Ok(Delivery {
        id: digest_id(&[scope.as_bytes(), repo.as_bytes(), head.as_bytes(), joined.as_bytes()]),
        changes_data,
        keys: Vec::new(),
        summary: format!("huggingface {scope} {action} {repo} {joined}").trim().to_string(),
    })
}

/// GitHub: HMAC-SHA256 over the raw body in `X-Hub-Signature-256`; `X-GitHub-Delivery` is the delivery id.
fn github(secret: &[u8], headers: &WebhookHeaders, body: &[u8]) -> Result<Delivery, WebhookError> {
    verify_sha256_signature(secret, &[body], headers.required(HEADER_GITHUB_SIGNATURE)?)?;
    let id = headers
        .get(HEADER_GITHUB_DELIVERY)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| WebhookError::InvalidPayload(format!("missing header {HEADER_GITHUB_DELIVERY}")))?;
    let event = headers.get(HEADER_GITHUB_EVENT).unwrap_or("push");
    let payload = parse_json(body)?;
    let reference = payload.get("ref").and_then(Value::as_str).unwrap_or_default();
    let repo = payload.pointer("/repository/full_name").and_then(Value::as_str).unwrap_or_default();
    Ok(Delivery {
        id: id.to_string(),
        changes_data: event == "push",
        keys: Vec::new(),
        summary: format!("github {event} {repo} {reference}").trim().to_string(),
    })
}

/// S3 event notifications (AWS, MinIO, SeaweedFS): `Authorization: Bearer <secret>`; object keys arrive
/// URL-encoded (`+` for a space); the bucket, key and sequencer of every record make the delivery id, and each
/// record's `eventTime` must be inside the window.
fn s3(
    secret: &[u8],
    headers: &WebhookHeaders,
    body: &[u8],
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Delivery, WebhookError> {
    let authorization = headers.required(HEADER_AUTHORIZATION)?;
    let token = authorization
        .strip_prefix("Bearer ")
        .ok_or_else(|| WebhookError::Unauthorized("authorization must be `Bearer <secret>`".to_string()))?;
    if !constant_time_eq(token.trim().as_bytes(), secret) {
        return Err(WebhookError::Unauthorized("bearer token does not match".to_string()));
    }
    let payload = parse_json(body)?;
    let records = payload
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::InvalidPayload("expected an object with a Records array".to_string()))?;
    let mut keys = Vec::new();
    let mut identity = Vec::new();
    let mut changes_data = false;
    for (index, record) in records.iter().enumerate() {
        let field = |pointer: &str| record.pointer(pointer).and_then(Value::as_str);
        let name = field("/eventName").unwrap_or_default();
        let raw_key = field("/s3/object/key")
            .ok_or_else(|| WebhookError::InvalidPayload(format!("Records[{index}]: missing s3.object.key")))?;
        let key = url_decode(raw_key).ok_or_else(|| {
            WebhookError::InvalidPayload(format!("Records[{index}]: bad URL encoding in {raw_key:?}"))
        })?;
        if let Some(time) = field("/eventTime") {
            let time = DateTime::parse_from_rfc3339(time)
                .map_err(|error| WebhookError::InvalidPayload(format!("Records[{index}].eventTime: {error}")))?;
            within_window(time.with_timezone(&Utc), now, window)?;
        }
        changes_data |= name.starts_with("ObjectCreated") || name.starts_with("s3:ObjectCreated");
        let bucket = field("/s3/bucket/name").unwrap_or_default();
        let sequencer = field("/s3/object/sequencer").or_else(|| field("/s3/object/eTag")).unwrap_or_default();
        identity.push(format!("{bucket}/{key}@{sequencer}:{name}"));
        keys.push(key);
    }
    let joined = identity.join("\n");
    Ok(Delivery { id: digest_id(&[joined.as_bytes()]), changes_data, summary: format!("s3 {}", keys.join(", ")), keys })
}

/// Generic: `X-Adapterci-Signature: sha256=HMAC(secret, "<timestamp>.<body>")` with `X-Adapterci-Timestamp`
/// (Unix seconds, inside the window) and `X-Adapterci-Delivery` (the id). The body may list `keys`.
fn generic_hmac(
    secret: &[u8],
    headers: &WebhookHeaders,
    body: &[u8],
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Delivery, WebhookError> {
    let timestamp = headers.required(HEADER_TIMESTAMP)?;
    verify_sha256_signature(secret, &[timestamp.as_bytes(), b".", body], headers.required(HEADER_SIGNATURE)?)?;
    let seconds: i64 =
        timestamp.parse().map_err(|_| WebhookError::Unauthorized(format!("{HEADER_TIMESTAMP} is not Unix seconds")))?;
    let time = DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| WebhookError::Unauthorized(format!("{HEADER_TIMESTAMP} is out of range")))?;
    within_window(time, now, window)?;
    let id = headers
        .get(HEADER_DELIVERY)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| WebhookError::InvalidPayload(format!("missing header {HEADER_DELIVERY}")))?;
    let keys = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        let payload = parse_json(body)?;
        match payload.get("keys") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(keys)) => keys
                .iter()
                .map(|key| key.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| WebhookError::InvalidPayload("keys must be a list of strings".to_string()))?,
            Some(_) => return Err(WebhookError::InvalidPayload("keys must be a list of strings".to_string())),
        }
    };
    Ok(Delivery { id: id.to_string(), changes_data: true, summary: format!("hmac delivery {id}"), keys })
}

/// Decodes `application/x-www-form-urlencoded` text as S3 writes keys: `+` is a space, `%XX` a byte; `None`
/// for a malformed escape or bytes that are not UTF-8.
pub fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).ok()
}

/// Signs a body the way [`verify_delivery`] checks it, for clients and tests: the `sha256=<hex>` value.
pub fn sign_sha256(secret: &[u8], message: &[&[u8]]) -> String {
    let mut mac = hmac_sha256(secret);
    for part in message {
        mac.update(part);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default()
    }

    fn headers(pairs: &[(&str, &str)]) -> WebhookHeaders {
        WebhookHeaders::new(pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())))
    }

    fn check(format: WebhookFormat, pairs: &[(&str, &str)], body: &str) -> Result<Delivery, WebhookError> {
        verify_delivery(format, SECRET, &headers(pairs), body.as_bytes(), now(), DEFAULT_REPLAY_WINDOW)
    }

    const HF_PUSH: &str = r#"{"event":{"action":"update","scope":"repo.content"},
        "repo":{"type":"dataset","name":"acme/tickets","headSha":"abc"},
        "updatedRefs":[{"ref":"refs/heads/main","oldSha":"111","newSha":"abc"}],"webhook":{"id":"w1","version":3}}"#;

    #[test]
    fn huggingface_secret_and_events() {
        let delivery = check(WebhookFormat::Huggingface, &[("X-Webhook-Secret", "s3cret")], HF_PUSH).unwrap();
        assert!(delivery.changes_data);
        assert!(delivery.summary.contains("acme/tickets refs/heads/main@abc"), "{}", delivery.summary);
        let again = check(WebhookFormat::Huggingface, &[("x-webhook-secret", "s3cret")], HF_PUSH).unwrap();
        assert_eq!(again.id, delivery.id, "the same event has the same id");
        let error = check(WebhookFormat::Huggingface, &[("X-Webhook-Secret", "s3cres")], HF_PUSH).unwrap_err();
        assert_eq!(error, WebhookError::Unauthorized("X-Webhook-Secret does not match".to_string()));
        let error = check(WebhookFormat::Huggingface, &[], HF_PUSH).unwrap_err();
        assert!(matches!(error, WebhookError::Unauthorized(_)), "{error}");
        let discussion = HF_PUSH.replace("repo.content", "discussion");
        let delivery = check(WebhookFormat::Huggingface, &[("X-Webhook-Secret", "s3cret")], &discussion).unwrap();
        assert!(!delivery.changes_data);
    }

    #[test]
    fn github_signature_over_the_raw_body() {
        let body = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/data"}}"#;
        let signature = sign_sha256(SECRET, &[body.as_bytes()]);
        let good =
            [("X-Hub-Signature-256", signature.as_str()), ("X-GitHub-Delivery", "d-1"), ("X-GitHub-Event", "push")];
        let delivery = check(WebhookFormat::Github, &good, body).unwrap();
        assert_eq!((delivery.id.as_str(), delivery.changes_data), ("d-1", true));
        let error = check(WebhookFormat::Github, &good, &body.replace("main", "evil")).unwrap_err();
        assert_eq!(error, WebhookError::Unauthorized("signature mismatch".to_string()));
        let ping =
            [("X-Hub-Signature-256", signature.as_str()), ("X-GitHub-Delivery", "d-2"), ("X-GitHub-Event", "ping")];
        assert!(!check(WebhookFormat::Github, &ping, body).unwrap().changes_data);
        let error = check(WebhookFormat::Github, &[("X-Hub-Signature-256", "sha1=00")], body).unwrap_err();
        assert!(matches!(error, WebhookError::Unauthorized(_)), "{error}");
    }

    #[test]
    fn s3_records_with_url_encoded_keys_inside_the_window() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-05-28T20:26:40Z",
            "s3":{"bucket":{"name":"data"},"object":{"key":"datasets/demo/train+v2%2B.jsonl","sequencer":"0A1"}}}]}"#;
        let auth = [("Authorization", "Bearer s3cret")];
        let delivery = check(WebhookFormat::S3, &auth, body).unwrap();
        assert_eq!(delivery.keys, vec!["datasets/demo/train v2+.jsonl".to_string()]);
        assert!(delivery.changes_data);
        let error =
            check(WebhookFormat::S3, &auth, &body.replace("2026-05-28T20:26:40Z", "2026-05-28T19:00:00Z")).unwrap_err();
        assert!(error.to_string().contains("replay window"), "{error}");
        let error = check(WebhookFormat::S3, &[("Authorization", "Bearer nope")], body).unwrap_err();
        assert!(matches!(error, WebhookError::Unauthorized(_)), "{error}");
        let error = check(WebhookFormat::S3, &auth, r#"{"Records":[{"s3":{}}]}"#).unwrap_err();
        assert_eq!(error, WebhookError::InvalidPayload("Records[0]: missing s3.object.key".to_string()));
    }

    #[test]
    fn generic_hmac_signs_the_timestamp_too() {
        let body = r#"{"keys":["datasets/demo/train.jsonl"]}"#;
        let timestamp = now().timestamp().to_string();
        let signature = sign_sha256(SECRET, &[timestamp.as_bytes(), b".", body.as_bytes()]);
        let pairs = [
            ("X-Adapterci-Timestamp", timestamp.as_str()),
            ("X-Adapterci-Signature", signature.as_str()),
            ("X-Adapterci-Delivery", "7"),
        ];
        let delivery = check(WebhookFormat::Hmac, &pairs, body).unwrap();
        assert_eq!(delivery.keys, vec!["datasets/demo/train.jsonl".to_string()]);
        let old = (now().timestamp() - 600).to_string();
        let old_signature = sign_sha256(SECRET, &[old.as_bytes(), b".", body.as_bytes()]);
        let replayed = [
            ("X-Adapterci-Timestamp", old.as_str()),
            ("X-Adapterci-Signature", old_signature.as_str()),
            ("X-Adapterci-Delivery", "7"),
        ];
        assert!(check(WebhookFormat::Hmac, &replayed, body).unwrap_err().to_string().contains("replay window"));
        let moved = [("X-Adapterci-Timestamp", old.as_str()), ("X-Adapterci-Signature", signature.as_str())];
        assert_eq!(
            check(WebhookFormat::Hmac, &moved, body).unwrap_err(),
            WebhookError::Unauthorized("signature mismatch".into())
        );
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let body = "x".repeat(MAX_WEBHOOK_BODY_BYTES + 1);
        let error = check(WebhookFormat::Github, &[], &body).unwrap_err();
        assert_eq!(error, WebhookError::TooLarge { limit: MAX_WEBHOOK_BODY_BYTES });
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a+b%20c%2Fd").as_deref(), Some("a b c/d"));
        assert_eq!(url_decode("bad%2"), None);
        assert_eq!(url_decode("bad%zz"), None);
        assert_eq!(url_decode("%ff"), None, "not UTF-8");
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
    }
}
