//! Bounded fuzzing of the webhook parsers with proptest: arbitrary bodies and headers, and JSON-shaped bodies
//! with the right credentials, never panic in any format; a valid signature over a mutated body is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_controller::webhooks::{
    DEFAULT_REPLAY_WINDOW, WebhookError, WebhookHeaders, sign_sha256, url_decode, verify_delivery,
};
use adapterci_pipeline::WebhookFormat;
use chrono::{DateTime, Utc};
use proptest::prelude::*;

const FORMATS: [WebhookFormat; 4] =
    [WebhookFormat::Huggingface, WebhookFormat::Github, WebhookFormat::S3, WebhookFormat::Hmac];
const SECRET: &[u8] = b"fuzz-secret";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap()
}

/// Headers that pass authentication for `format` over `body`, so the parsing behind it is reached.
fn authentic_headers(format: WebhookFormat, body: &[u8]) -> WebhookHeaders {
    let timestamp = now().timestamp().to_string();
    let pairs: Vec<(&str, String)> = match format {
        WebhookFormat::Huggingface => vec![("x-webhook-secret", String::from_utf8_lossy(SECRET).to_string())],
        WebhookFormat::Github => {
            vec![("x-hub-signature-256", sign_sha256(SECRET, &[body])), ("x-github-delivery", "d".to_string())]
        }
        WebhookFormat::S3 => vec![("authorization", format!("Bearer {}", String::from_utf8_lossy(SECRET)))],
        WebhookFormat::Hmac => vec![
            ("x-adapterci-signature", sign_sha256(SECRET, &[timestamp.as_bytes(), b".", body])),
            ("x-adapterci-timestamp", timestamp),
            ("x-adapterci-delivery", "d".to_string()),
        ],
    };
    WebhookHeaders::new(pairs.into_iter().map(|(name, value)| (name.to_string(), value)))
}

/// JSON values shaped like the senders' payloads, with wrong types and odd strings mixed in.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9%+:/._ -]{0,24}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2026-05-28T20:26:40Z")),
        Just(serde_json::Value::from("ObjectCreated:Put")),
        Just(serde_json::Value::from("repo.content")),
    ];
    let keys = prop_oneof![
        Just("Records"),
        Just("s3"),
        Just("object"),
        Just("key"),
        Just("bucket"),
        Just("name"),
        Just("eventTime"),
        Just("eventName"),
        Just("event"),
        Just("scope"),
        Just("action"),
        Just("repo"),
        Just("updatedRefs"),
        Just("ref"),
        Just("newSha"),
        Just("keys"),
        Just("repository"),
        Just("full_name"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((keys.clone(), inner), 0..5).prop_map(|pairs| {
                serde_json::Value::Object(pairs.into_iter().map(|(key, value)| (key.to_string(), value)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_deliveries_never_panic(
        format in 0usize..4,
        body in proptest::collection::vec(any::<u8>(), 0..512),
        headers in proptest::collection::vec(("[a-zA-Z0-9-]{1,24}", ".{0,80}"), 0..6),
    ) {
        let headers = WebhookHeaders::new(headers);
        let _ = verify_delivery(FORMATS[format], SECRET, &headers, &body, now(), DEFAULT_REPLAY_WINDOW);
    }

    #[test]
    fn authentic_json_bodies_never_panic(format in 0usize..4, value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        let format = FORMATS[format];
        let result = verify_delivery(format, SECRET, &authentic_headers(format, &body), &body, now(), DEFAULT_REPLAY_WINDOW);
        if let Err(error) = result {
            // Authentic deliveries are refused only for their content or their stated time, never their secret.
            let by_time = error.to_string().contains("replay window");
            prop_assert!(matches!(error, WebhookError::InvalidPayload(_)) || by_time, "{error}");
        }
    }

    #[test]
    fn a_signature_never_covers_another_body(body in ".{1,200}", flip in any::<prop::sample::Index>()) {
        let signed = body.as_bytes().to_vec();
        let mut tampered = signed.clone();
        let at = flip.index(tampered.len());
        tampered[at] ^= 0x01;
        let headers = authentic_headers(WebhookFormat::Github, &signed);
        let result = verify_delivery(WebhookFormat::Github, SECRET, &headers, &tampered, now(), DEFAULT_REPLAY_WINDOW);
        prop_assert_eq!(result.unwrap_err(), WebhookError::Unauthorized("signature mismatch".to_string()));
    }

    #[test]
    fn url_decoding_never_panics(text in ".{0,64}") {
        let _ = url_decode(&text);
    }
}
