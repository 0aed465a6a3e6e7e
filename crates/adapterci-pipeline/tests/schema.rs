//! The committed JSON schema matches the wire structs (`UPDATE_SCHEMA=1` rewrites it).

use std::path::Path;

use adapterci_pipeline::{SCHEMA_PATH_IN_WORKSPACE, pipeline_schema_json};

#[test]
fn committed_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(SCHEMA_PATH_IN_WORKSPACE);
    let generated = pipeline_schema_json();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    let first_difference = committed
        .lines()
        .zip(generated.lines())
        .enumerate()
        .find(|(_, (old, new))| old != new)
        .map(|(index, (old, new))| format!("line {}:\n  committed: {old}\n  generated: {new}", index + 1))
        .unwrap_or_else(|| {
            format!("lengths differ: {} vs {} lines", committed.lines().count(), generated.lines().count())
        });
    panic!(
        "{SCHEMA_PATH_IN_WORKSPACE} is stale; first difference at {first_difference}\nhint: regenerate with \
         `cargo run -p adapterci-pipeline --bin generate-schema` (or `UPDATE_SCHEMA=1 cargo test -p \
         adapterci-pipeline --test schema`) and commit it"
    );
}

#[test]
fn schema_describes_the_v1_format() {
    let schema: serde_json::Value = serde_json::from_str(&pipeline_schema_json()).unwrap();
    let text = schema.to_string();
    for needle in ["\"v1\"", "dataset_watch", "\"rank\"", "\"gates\"", "\"location\"", "\"last\""] {
        assert!(text.contains(needle), "schema lacks {needle}: {text}");
    }
}
