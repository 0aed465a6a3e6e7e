//! Repository hygiene: dependency fences between crates and the `//!` header of every Rust file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Workspace package name -> its direct normal dependencies, and every package's normal dependencies by id.
struct Graph {
    names: BTreeMap<String, String>,
    normal_deps: BTreeMap<String, Vec<String>>,
    members: Vec<String>,
}

/// The host's target triple (`rustc -vV`): the graph is resolved for it alone, so `--offline` needs only the
/// packages a build here downloaded, not those of other platforms (a fresh cargo home lacks them).
fn host_triple() -> String {
    let output = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host")
}

fn graph() -> Graph {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host_triple()])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let names = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|package| {
            (package["id"].as_str().unwrap_or("").to_string(), package["name"].as_str().unwrap_or("").to_string())
        })
        .collect();
    let members = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect();
    let normal_deps = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| dep["dep_kinds"].as_array().into_iter().flatten().any(|kind| kind["kind"].is_null()))
                .filter_map(|dep| dep["pkg"].as_str().map(str::to_string))
                .collect();
            (node["id"].as_str().unwrap_or("").to_string(), deps)
        })
        .collect();
    Graph { names, normal_deps, members }
}

impl Graph {
    fn id_of(&self, name: &str) -> String {
        self.members.iter().find(|id| self.names.get(*id).is_some_and(|n| n == name)).cloned().unwrap_or_default()
    }

    fn direct(&self, name: &str) -> BTreeSet<String> {
        let id = self.id_of(name);
        self.normal_deps.get(&id).into_iter().flatten().filter_map(|dep| self.names.get(dep).cloned()).collect()
    }

    fn transitive(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.id_of(name)];
        while let Some(id) = stack.pop() {
            for dep in self.normal_deps.get(&id).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen.into_iter().filter_map(|id| self.names.get(&id).cloned()).collect()
    }

    fn member_names(&self) -> Vec<String> {
        self.members.iter().filter_map(|id| self.names.get(id).cloned()).collect()
    }
}

/// (heavy dependency, crates that may name it directly, crates that must not reach it at all)
const FENCES: &[(&str, &[&str], &[&str])] = &[
    (
        "tch",
        &["adapterci-engine"],
        &[
            "adapterci-core",
            "adapterci-pipeline",
            "adapterci-registry",
            "adapterci-store",
            "adapterci-migrations",
            "adapterci-controller",
            "adapterci-api",
            "adapterctl",
            "adapterci-testkit",
        ],
    ),
    (
        "sea-orm",
        &["adapterci-store", "adapterci-migrations"],
        &[
            "adapterci-core",
            "adapterci-pipeline",
            "adapterci-engine",
            "adapterci-registry",
            "adapterci-controller",
            "adapterci-worker",
            "adapterci-api",
            "adapterctl",
            "adapterci-testkit",
        ],
    ),
    (
        "object_store",
        &["adapterci-registry"],
        &[
            "adapterci-core",
            "adapterci-pipeline",
            "adapterci-engine",
            "adapterci-store",
            "adapterci-controller",
            "adapterci-worker",
            "adapterci-api",
            "adapterctl",
            "adapterci-testkit",
        ],
    ),
    (
        "axum",
        &["adapterci-server"],
        &["adapterci-core", "adapterci-controller", "adapterci-worker", "adapterci-api", "adapterctl"],
    ),
];

#[test]
fn heavy_dependencies_stay_fenced() {
    let graph = graph();
    let mut problems = Vec::new();
    for &(heavy, allowed_direct, forbidden) in FENCES {
        for member in graph.member_names() {
            if graph.direct(&member).contains(heavy) && !allowed_direct.contains(&member.as_str()) {
                problems.push(format!("{member} depends on {heavy} directly (only {allowed_direct:?} may)"));
            }
        }
        for member in forbidden {
            if graph.transitive(member).contains(heavy) {
                problems.push(format!("{member} reaches {heavy} through its normal dependencies"));
            }
        }
    }
    assert!(problems.is_empty(), "dependency fences broken:\n{}", problems.join("\n"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | ".cache" | ".venv" | "data" | "fixtures")
                && !name.starts_with(".venv")
            {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "migrations", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files under {}", files.len(), root.display());
    let missing: Vec<String> = files
        .iter()
        // Files pulled in with include! cannot carry inner doc comments.
        .filter(|path| !path.components().any(|part| part.as_os_str() == "build_support"))
        .filter(|path| std::fs::read_to_string(path).map(|text| !text.starts_with("//!")).unwrap_or(true))
        .map(|path| path.strip_prefix(&root).unwrap_or(path).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` line saying what they are for:\n{}",
        missing.join("\n")
    );
}
