//! `adapters diff A B`: what changed between two versions' manifests (configuration, files, lineage, eval
//! metrics). Both manifests are flattened to `path = value` lines (files keyed by their name, eval samples left
//! out) and compared; numeric metrics also show their change. Pure functions from the manifests to text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::output::{Paint, Style};
use crate::render::{Cell, table};

/// One field that differs: absent on one side when added or removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    /// `b - a` when both are numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

/// What `adapters diff` prints; also its `-o json|yaml` form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionDiff {
    pub a: String,
    pub b: String,
    pub changes: Vec<FieldChange>,
}

/// Fields that differ between every two versions and say nothing about what changed.
fn ignored(path: &str) -> bool {
    path == "created_at" || path.starts_with("eval.samples")
}

fn flatten(value: &Value, path: String, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                flatten(child, join(key), out);
            }
        }
        Value::Array(items) if items.iter().all(|item| item.get("name").and_then(Value::as_str).is_some()) => {
            // Files: keyed by name, so a reordering is no change and a new file shows as one.
            for item in items {
                let name = item["name"].as_str().unwrap_or_default();
                let mut rest = item.clone();
                if let Some(object) = rest.as_object_mut() {
                    object.remove("name");
                }
                flatten(&rest, join(name), out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                flatten(item, format!("{path}[{index}]"), out);
            }
        }
        Value::String(text) => {
            out.insert(path, text.clone());
        }
        Value::Null => {}
        other => {
            out.insert(path, other.to_string());
        }
    }
}

/// The fields of `a` and `b` that differ, in path order.
pub fn diff_manifests(a: &Value, b: &Value) -> Vec<FieldChange> {
    let (mut left, mut right) = (BTreeMap::new(), BTreeMap::new());
    flatten(a, String::new(), &mut left);
    flatten(b, String::new(), &mut right);
    let mut paths: Vec<&String> = left.keys().chain(right.keys()).filter(|path| !ignored(path)).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (a, b) = (left.get(path), right.get(path));
            if a == b {
                return None;
            }
            let number = |text: Option<&String>| text.and_then(|text| text.parse::<f64>().ok());
            let delta = number(a).zip(number(b)).map(|(a, b)| b - a);
            Some(FieldChange { path: path.clone(), a: a.cloned(), b: b.cloned(), delta })
        })
        .collect()
}

/// The table `adapters diff` prints: one row per changed field.
pub fn diff_table(diff: &VersionDiff, style: Style) -> String {
    if diff.changes.is_empty() {
        return format!("{} and {} have the same configuration, files, lineage and metrics", diff.a, diff.b);
    }
    let rows = diff
        .changes
        .iter()
        .map(|change| {
            let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_string());
            let delta = match change.delta {
                Some(delta) if delta > 0.0 => Cell::painted(format!("+{delta:.4}"), Paint::Green),
                Some(delta) if delta < 0.0 => Cell::painted(format!("{delta:.4}"), Paint::Red),
                Some(_) => Cell::from("0"),
                None if change.a.is_none() => Cell::from("added"),
                None if change.b.is_none() => Cell::from("removed"),
                None => Cell::from("changed"),
            };
            vec![Cell::from(change.path.as_str()), Cell::from(shown(&change.a)), Cell::from(shown(&change.b)), delta]
        })
        .collect();
    table(&["field", &diff.a, &diff.b, "change"], rows, style)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(rank: u64, dataset: &str, loss: f64, extra_file: bool) -> Value {
        let mut files =
            vec![json!({"name": "adapter_model.safetensors", "digest": format!("sha256:{rank}"), "size": 10})];
        if extra_file {
            files.insert(0, json!({"name": "README.md", "digest": "sha256:r", "size": 1}));
        }
        json!({
            "schema_version": 1, "name": "support", "created_at": format!("2026-11-26T10:00:0{rank}Z"),
            "adapter": {"rank": rank, "alpha": 8.0},
            "files": files,
            "lineage": {"base_model_digest": "sha256:base", "dataset_digests": [dataset], "initial_adapter": {"kind": "standard_init"}},
            "eval": {"metrics": {"eval_loss": loss}, "gates": {"passed": true, "results": []}, "samples": [{"prompt": rank.to_string()}]}
        })
    }

    type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<f64>);

    #[test]
    fn configuration_dataset_files_and_metrics_changes_are_listed() {
        let changes = diff_manifests(&manifest(4, "sha256:d1", 1.5, false), &manifest(8, "sha256:d2", 1.25, true));
        let summary: Vec<Row<'_>> =
            changes.iter().map(|c| (c.path.as_str(), c.a.as_deref(), c.b.as_deref(), c.delta)).collect();
        assert_eq!(
            summary,
            [
                ("adapter.rank", Some("4"), Some("8"), Some(4.0)),
                ("eval.metrics.eval_loss", Some("1.5"), Some("1.25"), Some(-0.25)),
                ("files.README.md.digest", None, Some("sha256:r"), None),
                ("files.README.md.size", None, Some("1"), None),
                ("files.adapter_model.safetensors.digest", Some("sha256:4"), Some("sha256:8"), None),
                ("lineage.dataset_digests[0]", Some("sha256:d1"), Some("sha256:d2"), None),
            ]
        );
    }

    #[test]
    fn identical_versions_apart_from_time_and_samples_have_no_changes() {
        let (a, mut b) = (manifest(4, "sha256:d", 1.0, false), manifest(4, "sha256:d", 1.0, false));
        b["created_at"] = json!("2027-01-01T00:00:00Z");
        b["eval"]["samples"] = json!([]);
        assert!(diff_manifests(&a, &b).is_empty());
        let diff = VersionDiff { a: "support@1".into(), b: "support@2".into(), changes: Vec::new() };
        assert_eq!(
            diff_table(&diff, Style { color: false }),
            "support@1 and support@2 have the same configuration, files, lineage and metrics"
        );
    }
}
