//! The wire contract of the registry administration types (channels, promote, rollback, gc): each JSON example
//! under `tests/fixtures/` decodes into its type and encodes back to the same JSON.

use std::path::Path;

use adapterci_api::{ChannelInfo, GcResponse, PromoteBody, RollbackBody};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn check<T: DeserializeOwned + Serialize>(name: &str, expect: impl FnOnce(T)) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
    let value: T = serde_json::from_value(json.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
    let encoded = serde_json::to_value(&value).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(encoded, json, "{name}: encoding differs from the fixture");
    expect(value);
}

#[test]
fn channels() {
    check("channels.json", |channels: Vec<ChannelInfo>| {
        assert_eq!((channels[0].channel.as_str(), channels[0].version, channels[0].pinned), ("stable", 3, true));
    });
}

#[test]
fn promote_and_rollback_bodies() {
    check("promote_body.json", |body: PromoteBody| assert!(body.allow_base_change));
    check("rollback_body.json", |body: RollbackBody| assert_eq!(body.version, Some(2)));
    let previous: RollbackBody = serde_json::from_str("{}").unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(previous.version, None, "an empty rollback goes to the previous version");
    let plain: PromoteBody = serde_json::from_str(r#"{"version": 1}"#).unwrap_or_else(|err| panic!("{err}"));
    assert!(!plain.allow_base_change, "a base change is never the default");
}

#[test]
fn gc_response() {
    check("gc_response.json", |report: GcResponse| assert_eq!(report.deleted.len(), 1));
}
