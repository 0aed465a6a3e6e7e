//! `adapters lineage`: a version's lineage as a tree, from the manifests the registry stores (plain JSON, so
//! adapterctl needs no registry crate). Pure functions from the manifests to text.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::render::short_digest;

/// One earlier version of the adapter, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentVersion {
    pub version: u64,
    pub manifest_digest: String,
    /// Its dataset digests, to see where the data changed along the chain.
    pub dataset_digests: Vec<String>,
}

/// What `adapters lineage` prints; also its `-o json|yaml` form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineageView {
    pub adapter: String,
    pub version: u64,
    pub manifest_digest: String,
    /// The manifest's `lineage` object as stored.
    pub lineage: Value,
    /// The version's eval metrics, if it was evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Earlier versions, newest first.
    pub parents: Vec<ParentVersion>,
}

/// A node of the printed tree.
struct Node {
    label: String,
    children: Vec<Node>,
}

impl Node {
    fn leaf(label: impl Into<String>) -> Node {
        Node { label: label.into(), children: Vec::new() }
    }

    fn with(label: impl Into<String>, children: Vec<Node>) -> Node {
        Node { label: label.into(), children }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn digest(value: &Value) -> String {
    text(value).map_or_else(|| "-".to_string(), |digest| short_digest(&digest))
}

/// The dataset digests of a manifest's lineage.
pub fn dataset_digests(lineage: &Value) -> Vec<String> {
    lineage["dataset_digests"].as_array().map(|list| list.iter().filter_map(text).collect()).unwrap_or_default()
}

/// Base model → base release → recovery adapter (the chain the version's weights start from).
fn base_node(lineage: &Value) -> Node {
    let model = format!(
        "base model {} {}",
        text(&lineage["base_model_name"]).unwrap_or_else(|| "?".to_string()),
        digest(&lineage["base_model_digest"])
    );
    let initial = &lineage["initial_adapter"];
    // `{"kind": "recovery_adapter", "base_release": ..., "adapter": ...}` or `{"kind": "standard_init"}`.
    let initial_node = match initial["kind"].as_str() {
        Some("recovery_adapter") => {
            Node::leaf(format!("recovery adapter {} (the initial weights)", digest(&initial["adapter"])))
        }
        Some("standard_init") | None => Node::leaf("initial weights: standard LoRA init"),
        Some(other) => Node::leaf(format!("initial weights: {other}")),
    };
    match text(&lineage["base_release_digest"]) {
        Some(release) => {
            Node::with(model, vec![Node::with(format!("base release {}", short_digest(&release)), vec![initial_node])])
        }
        None => Node::with(model, vec![initial_node]),
    }
}

fn parents_node(view: &LineageView) -> Node {
    let own = dataset_digests(&view.lineage);
    let mut children = Vec::new();
    let mut newer = own;
    for parent in &view.parents {
        let note = if parent.dataset_digests == newer { "same datasets" } else { "other datasets" };
        children.push(Node::leaf(format!(
            "{}@{} {} ({note})",
            view.adapter,
            parent.version,
            short_digest(&parent.manifest_digest)
        )));
        newer = parent.dataset_digests.clone();
    }
    if children.is_empty() {
        return Node::leaf("parent versions: none (the first version)");
    }
    // Each parent is the child of the one after it: print the chain nested, newest first.
    let mut chain: Option<Node> = None;
    for mut node in children.into_iter().rev() {
        if let Some(deeper) = chain.take() {
            node.children.push(deeper);
        }
        chain = Some(node);
    }
    Node::with("parent versions", chain.into_iter().collect())
}

/// The tree `adapters lineage` prints.
pub fn lineage_tree(view: &LineageView) -> String {
    let lineage = &view.lineage;
    let mut children = vec![base_node(lineage), parents_node(view)];
    let datasets: Vec<Node> = dataset_digests(lineage).iter().map(|d| Node::leaf(short_digest(d))).collect();
    children.push(if datasets.is_empty() { Node::leaf("datasets: none") } else { Node::with("datasets", datasets) });
    let pipeline = &lineage["pipeline"];
    if let Some(name) = text(&pipeline["name"]) {
        children.push(Node::leaf(format!(
            "pipeline {name} revision {} (spec {})",
            text(&pipeline["revision"]).unwrap_or_else(|| "?".to_string()),
            digest(&pipeline["spec_digest"])
        )));
    }
    if let Some(run) = text(&lineage["run_id"]) {
        children.push(Node::leaf(format!("run {run}")));
    }
    if let Some(code) = text(&lineage["code_version"]) {
        children.push(Node::leaf(format!("code version {code}")));
    }
    if let Some(metrics) = view.metrics.as_ref().and_then(Value::as_object).filter(|m| !m.is_empty()) {
        let listed: Vec<String> = metrics.iter().map(|(name, value)| format!("{name} {value}")).collect();
        children.push(Node::leaf(format!("eval: {}", listed.join(", "))));
    }
    let root =
        Node::with(format!("{}@{} {}", view.adapter, view.version, short_digest(&view.manifest_digest)), children);
    let mut lines = vec![root.label.clone()];
    draw(&root.children, "", &mut lines);
    lines.join("\n")
}

fn draw(nodes: &[Node], prefix: &str, lines: &mut Vec<String>) {
    for (index, node) in nodes.iter().enumerate() {
        let last = index + 1 == nodes.len();
        lines.push(format!("{prefix}{}{}", if last { "└── " } else { "├── " }, node.label));
        draw(&node.children, &format!("{prefix}{}", if last { "    " } else { "│   " }), lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn view(lineage: Value, parents: Vec<ParentVersion>) -> LineageView {
        LineageView {
            adapter: "support".to_string(),
            version: 3,
            manifest_digest: D3.to_string(),
            lineage,
            metrics: Some(json!({"exact_match": 0.5})),
            parents,
        }
    }

    fn parent(version: u64, datasets: &[&str]) -> ParentVersion {
        ParentVersion {
            version,
            manifest_digest: D2.to_string(),
            dataset_digests: datasets.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_version_on_a_base_release_prints_release_recovery_parents_and_datasets() {
        let lineage = json!({
            "base_model_digest": D1, "base_model_name": "tiny", "base_release_digest": D2,
            "dataset_digests": [D3],
            "pipeline": {"name": "support", "revision": 2, "spec_digest": D1},
            "run_id": "run-1", "initial_adapter": {"kind": "recovery_adapter", "base_release": D2, "adapter": D1},
            "code_version": "0.1.0"
        });
        let tree = lineage_tree(&view(lineage, vec![parent(2, &[D3]), parent(1, &[D1])]));
        let expected = "\
support@3 sha256:333333333333
├── base model tiny sha256:111111111111
│   └── base release sha256:222222222222
│       └── recovery adapter sha256:111111111111 (the initial weights)
├── parent versions
│   └── support@2 sha256:222222222222 (same datasets)
│       └── support@1 sha256:222222222222 (other datasets)
├── datasets
│   └── sha256:333333333333
├── pipeline support revision 2 (spec sha256:111111111111)
├── run run-1
├── code version 0.1.0
└── eval: exact_match 0.5";
        assert_eq!(tree, expected, "\n{tree}");
    }

    #[test]
    fn a_first_version_from_standard_init_says_so() {
        let lineage = json!({
            "base_model_digest": D1, "base_model_name": "tiny", "dataset_digests": [],
            "initial_adapter": {"kind": "standard_init"}, "code_version": "0.1.0"
        });
        let tree = lineage_tree(&view(lineage, Vec::new()));
        assert!(tree.contains("└── initial weights: standard LoRA init"), "{tree}");
        assert!(tree.contains("parent versions: none (the first version)"), "{tree}");
        assert!(tree.contains("datasets: none"), "{tree}");
        assert!(!tree.contains("base release"), "{tree}");
    }
}
