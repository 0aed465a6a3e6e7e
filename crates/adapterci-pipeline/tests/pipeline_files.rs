//! The committed pipeline files: every example parses, and every invalid fixture fails with exactly the text in
//! its `.expected` file (`UPDATE_EXPECT=1 cargo test -p adapterci-pipeline --test pipeline_files` rewrites them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use adapterci_core::training::{LayerSelection, LoraTarget};
use adapterci_pipeline::{BaseModelRef, PipelineSpec, TriggerSpec, load_pipeline_file, parse_pipeline};

fn pipelines_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines")
}

/// The files in `dir` ending in `.extension`, sorted.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let listing: std::io::Result<Vec<PathBuf>> =
        std::fs::read_dir(dir).and_then(|entries| entries.map(|entry| Ok(entry?.path())).collect());
    let mut files: Vec<PathBuf> = listing
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_pipeline_parses() {
    let files = files_with_extension(&pipelines_dir(), "yaml");
    assert!(!files.is_empty(), "no pipelines/*.yaml found");
    for path in files {
        if let Err(error) = load_pipeline_file(&path) {
            panic!("{} does not parse:\n{error}", path.display());
        }
    }
}

#[test]
fn the_demo_pipeline_says_what_the_demo_needs() {
    let spec: PipelineSpec = load_pipeline_file(&pipelines_dir().join("ticket-format.yaml")).unwrap();
    assert_eq!(spec.name.as_str(), "ticket-format");
    assert_eq!(spec.base, BaseModelRef::Named("smollm2-135m-instruct".to_string()));
    assert_eq!(spec.dataset.location, "datasets/ticket-format/train.jsonl");
    assert_eq!(spec.triggers, [TriggerSpec::DatasetWatch { interval: Duration::from_secs(10) }, TriggerSpec::Manual]);
    assert_eq!(spec.lora.rank, 16);
    assert_eq!(spec.lora.dropout, 0.05);
    assert_eq!(spec.lora.targets, LoraTarget::ALL);
    assert_eq!(spec.lora.layers, LayerSelection::All);
    assert_eq!((spec.train.steps, spec.train.batch_size, spec.train.max_seq_len), (40, 4, 192));
    assert_eq!(spec.train.learning_rate, 2.0e-3);
    let gates: Vec<_> = spec.gates.iter().map(|gate| (gate.metric.as_str(), gate.min, gate.max)).collect();
    assert_eq!(gates, [("exact_match", Some(0.8), None), ("eval_loss", None, Some(1.0))]);
    assert_eq!((spec.publish.adapter.as_str(), spec.publish.channel.as_str()), ("ticket-format", "stable"));
}

#[test]
fn invalid_fixtures_fail_with_the_expected_text() {
    let dir = pipelines_dir().join("invalid");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let fixtures = files_with_extension(&dir, "yaml");
    assert!(fixtures.len() >= 11, "expected the invalid fixtures in {}", dir.display());
    let mut mismatches = Vec::new();
    for fixture in &fixtures {
        let file_name = fixture.file_name().unwrap().to_string_lossy().to_string();
        let source = std::fs::read_to_string(fixture).unwrap();
        let actual = match parse_pipeline(&source, Some(&format!("pipelines/invalid/{file_name}"))) {
            Ok(spec) => format!("unexpectedly valid: {spec:?}"),
            Err(error) => error.to_string(),
        };
        let expected_path = fixture.with_extension("expected");
        if update {
            std::fs::write(&expected_path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end_matches('\n') != actual {
            mismatches.push(format!("--- {file_name}\nexpected:\n{expected}\nactual:\n{actual}\n"));
        }
    }
    for expected in files_with_extension(&dir, "expected") {
        if !expected.with_extension("yaml").exists() {
            mismatches.push(format!("{} has no .yaml fixture", expected.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nhint: if the new text is right, run `UPDATE_EXPECT=1 cargo test -p adapterci-pipeline --test \
         pipeline_files` and review the diff",
        mismatches.join("\n")
    );
}
