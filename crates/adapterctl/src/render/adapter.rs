//! `describe adapter`: one version's manifest summarised (configuration, lineage, files, eval) and the list of
//! versions with the served one marked.

use adapterci_api::{AdapterVersionInfo, RunReport};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::output::{Paint, Style};
use crate::render::run::report_sections;
use crate::render::{Cell, fields, indent, short_digest, table, timestamp};

/// Everything `describe adapter` shows; also what `-o json|yaml` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterDescription {
    pub name: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_version: Option<u64>,
    /// Newest first.
    pub versions: Vec<AdapterVersionInfo>,
    /// The version's manifest, as the registry stores it.
    pub manifest: Value,
}

pub fn adapter_detail(description: &AdapterDescription, style: Style) -> String {
    let manifest = &description.manifest;
    let this = description.versions.iter().find(|version| version.version == description.version);
    let latest = description.versions.iter().map(|version| version.version).max();
    let mut version_text = description.version.to_string();
    let mut notes = Vec::new();
    if latest == Some(description.version) {
        notes.push("latest".to_string());
    }
    match description.served_version {
        Some(served) if served == description.version => notes.push(style.paint("served", Paint::Green)),
        Some(served) => notes.push(format!("version {served} is served")),
        None => notes.push("not served".to_string()),
    }
    version_text.push_str(&format!(" ({})", notes.join(", ")));
    let mut sections = vec![fields(&[
        ("Adapter", Some(description.name.clone())),
        ("Version", Some(version_text)),
        ("Manifest", this.map(|version| version.manifest_digest.clone())),
        ("Created", this.map(|version| timestamp(&version.created_at))),
        ("Schema", text(&manifest["schema_version"])),
    ])];
    for (title, body) in
        [("Configuration", configuration(&manifest["adapter"])), ("Lineage", lineage(&manifest["lineage"]))]
    {
        if !body.is_empty() {
            sections.push(format!("{title}:\n{}", indent(&body, 2)));
        }
    }
    if let Some(files) = manifest["files"].as_array().filter(|files| !files.is_empty()) {
        let rows = files
            .iter()
            .map(|file| {
                vec![
                    Cell::from(text(&file["name"]).unwrap_or_default()),
                    Cell::from(text(&file["size"]).unwrap_or_default()),
                    Cell::from(text(&file["digest"]).map(|digest| short_digest(&digest)).unwrap_or_default()),
                ]
            })
            .collect();
        sections.push(format!("Files:\n{}", indent(&table(&["name", "bytes", "digest"], rows, style), 2)));
    }
    if !manifest["eval"].is_null() {
        match RunReport::deserialize(&manifest["eval"]) {
            Ok(report) => sections.extend(report_sections(&report, style)),
            Err(err) => sections.push(format!("Eval: cannot read it ({err}); -o json shows it as it is")),
        }
    }
    sections.push(format!("Versions:\n{}", indent(&versions_table(description, style), 2)));
    sections.join("\n\n")
}

fn configuration(adapter: &Value) -> String {
    let targets = adapter["targets"]
        .as_array()
        .map(|targets| targets.iter().filter_map(|target| target.as_str()).collect::<Vec<_>>().join(", "));
    let layers = adapter["layers"].as_array().map(|layers| {
        let numbers: Vec<u64> = layers.iter().filter_map(Value::as_u64).collect();
        format!("{} ({} layers)", ranges(&numbers), numbers.len())
    });
    fields(&[
        ("rank", text(&adapter["rank"])),
        ("alpha", text(&adapter["alpha"])),
        ("targets", targets),
        ("layers", layers),
        ("dtype", text(&adapter["dtype"])),
    ])
}

fn lineage(lineage: &Value) -> String {
    let base = match (text(&lineage["base_model_name"]), text(&lineage["base_model_digest"])) {
        (Some(name), Some(digest)) => Some(format!("{name} ({digest})")),
        (name, digest) => name.or(digest),
    };
    let initial = &lineage["initial_adapter"];
    let initial_text = match initial["kind"].as_str() {
        Some("recovery_adapter") => Some(format!(
            "recovery adapter {} of base release {}",
            text(&initial["adapter"]).map(|digest| short_digest(&digest)).unwrap_or_default(),
            text(&initial["base_release"]).map(|digest| short_digest(&digest)).unwrap_or_default()
        )),
        Some("standard_init") => Some("standard LoRA initialisation".to_string()),
        Some(other) => Some(other.to_string()),
        None => None,
    };
    let datasets = lineage["dataset_digests"]
        .as_array()
        .map(|digests| digests.iter().filter_map(Value::as_str).map(short_digest).collect::<Vec<_>>().join(", "));
    let pipeline = &lineage["pipeline"];
    let pipeline_text = text(&pipeline["name"]).map(|name| {
        let revision = text(&pipeline["revision"]).unwrap_or_else(|| "?".to_string());
        let spec = text(&pipeline["spec_digest"]).map(|digest| format!(", spec {}", short_digest(&digest)));
        format!("{name} revision {revision}{}", spec.unwrap_or_default())
    });
    fields(&[
        ("base model", base),
        ("base release", text(&lineage["base_release_digest"])),
        ("initial adapter", initial_text),
        ("datasets", datasets),
        ("pipeline", pipeline_text),
        ("run", text(&lineage["run_id"])),
        ("code version", text(&lineage["code_version"])),
    ])
}

fn versions_table(description: &AdapterDescription, style: Style) -> String {
    let rows = description
        .versions
        .iter()
        .map(|version| {
            let mut marks = Vec::new();
            if version.version == description.version {
                marks.push("described");
            }
            if Some(version.version) == description.served_version {
                marks.push("served");
            }
            vec![
                Cell::from(version.version.to_string()),
                Cell::from(short_digest(&version.manifest_digest)),
                Cell::from(timestamp(&version.created_at)),
                Cell::from(version.run_id.as_deref().unwrap_or("-")),
                Cell::from(marks.join(", ")),
            ]
        })
        .collect();
    table(&["version", "manifest", "created", "run", ""], rows, style)
}

/// A JSON scalar as text; `None` for null, missing, arrays and objects.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// `[0, 1, 2, 5, 7, 8]` as `0-2, 5, 7-8`.
pub fn ranges(numbers: &[u64]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let start = sorted[index];
        let mut end = start;
        while index + 1 < sorted.len() && sorted[index + 1] == end + 1 {
            index += 1;
            end = sorted[index];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        index += 1;
    }
    if parts.is_empty() { "none".to_string() } else { parts.join(", ") }
}
