//! `parse_pipeline` on small inline documents: defaults, every accepted form, and problems with their places.

use std::path::PathBuf;
use std::time::Duration;

use adapterci_core::training::{LayerSelection, LoraSpec, LoraTarget, TrainSpec};
use adapterci_pipeline::wire::{PipelineV1, PublishV1, TrainingV1};
use adapterci_pipeline::{
    BaseModelRef, PipelineError, PipelineSpec, TriggerSpec, VersionedPipeline, default_triggers, parse_pipeline,
};

const MINIMAL: &str = "\
version: v1
name: demo
base: {model: smollm2-135m-instruct}
dataset: {location: datasets/demo/train.jsonl}
";

fn parse_ok(source: &str) -> PipelineSpec {
    parse_pipeline(source, Some("p.yaml")).unwrap_or_else(|error| panic!("{error}\nin:\n{source}"))
}

/// Parses `MINIMAL` plus `extra` and expects exactly these problem lines (without the file name).
fn check_problems(extra: &str, expect: &[&str]) {
    let source = format!("{MINIMAL}{extra}");
    let error = parse_pipeline(&source, None).expect_err(&source);
    let lines: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
    assert_eq!(lines, expect, "in:\n{source}");
}

#[test]
fn a_minimal_pipeline_gets_every_default() {
    let spec = parse_ok(MINIMAL);
    assert_eq!(spec.description, None);
    assert_eq!(spec.triggers, default_triggers());
    assert_eq!(spec.lora, LoraSpec::default());
    assert_eq!(spec.train, TrainSpec::default());
    assert!(spec.gates.is_empty());
    assert_eq!((spec.publish.adapter.as_str(), spec.publish.channel.as_str()), ("demo", "stable"));
    assert_eq!(spec.watch_interval(), Some(Duration::from_secs(10)));
    assert!(spec.allows_manual_runs());
}

#[test]
fn accepted_forms_become_runtime_values() {
    let spec = parse_ok(
        "version: v1\nname: demo\nbase: {path: models/other.gguf}\ndataset: {location: d/train.jsonl}\n\
         triggers: [{kind: dataset_watch}]\ntraining: {lora: {layers: {last: 8}, targets: [down, q]}}\n\
         publish: {adapter: other-name, channel: canary}\n",
    );
    assert_eq!(spec.base, BaseModelRef::Path(PathBuf::from("models/other.gguf")));
    assert_eq!(spec.triggers, [TriggerSpec::DatasetWatch { interval: Duration::from_secs(10) }]);
    assert!(!spec.allows_manual_runs());
    assert_eq!(spec.lora.layers, LayerSelection::LastN(8));
    assert_eq!(spec.lora.targets, [LoraTarget::Down, LoraTarget::Q]);
    assert_eq!((spec.publish.adapter.as_str(), spec.publish.channel.as_str()), ("other-name", "canary"));

    let spec = parse_ok(&format!("{MINIMAL}training: {{lora: {{layers: {{range: [26, 29]}}}}}}\n"));
    assert_eq!(spec.lora.layers, LayerSelection::List(vec![26, 27, 28, 29]), "a range includes both ends");
    let err = parse_pipeline(&format!("{MINIMAL}training: {{lora: {{layers: {{range: [1, 2], last: 3}}}}}}\n"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("give one of last or range"), "{err}");

    let spec = parse_ok(&format!("{MINIMAL}training: {{lora: {{layers: [3, 1]}}, learning_rate: 1e-3}}\n"));
    assert_eq!(spec.lora.layers, LayerSelection::List(vec![3, 1]));
    assert_eq!(spec.train.learning_rate, 1e-3);
    let spec = parse_ok(&format!("{MINIMAL}triggers: [{{kind: manual}}, {{kind: dataset_watch, interval: 1m30s}}]\n"));
    assert_eq!(spec.watch_interval(), Some(Duration::from_secs(90)));
}

#[test]
fn semantic_problems_point_at_the_value() {
    check_problems(
        "training: {lora: {alpha: 0}}\n",
        &["5:26: training.lora.alpha: must be a number greater than 0, got 0"],
    );
    check_problems("training:\n  max_seq_len: 8\n", &["6:16: training.max_seq_len: must be at least 16, got 8"]);
    check_problems(
        "training: {lora: {targets: []}}\n",
        &["5:28: training.lora.targets: must list at least one of q, k, v, o, gate, up, down"],
    );
    check_problems(
        "training: {lora: {layers: {last: 0}}}\n",
        &["5:34: training.lora.layers.last: must be at least 1, got 0"],
    );
    check_problems(
        "triggers: []\n",
        &["5:11: triggers: must list at least one trigger (leave `triggers` out for the default: dataset_watch every \
         10s and manual)"],
    );
    check_problems(
        "triggers: [{kind: manual}, {kind: manual}]\n",
        &["5:35: triggers[1].kind: duplicate trigger kind `manual`"],
    );
    check_problems(
        "eval: {gates: [{metric: '', min: .nan}]}\n",
        &[
            "5:25: eval.gates[0].metric: must name a metric, like `exact_match` or `eval_loss`",
            "5:34: eval.gates[0].min: must be a finite number",
        ],
    );
}

#[test]
fn structural_problems_come_from_serde_with_their_place() {
    check_problems(
        "colour: blue\n",
        &["5:1: unknown field `colour`, expected one of `version`, `name`, `description`, `base`, `dataset`, \
         `triggers`, `training`, `eval`, `publish`, `resources`"],
    );
    check_problems(
        "training: {lora: {rank: -1}}\n",
        &["5:25: training.lora.rank: invalid type: integer `-1`, expected usize"],
    );
    check_problems(
        "training: {lora: {layers: some}}\n",
        &["5:27: training.lora.layers: invalid value: string \"some\", expected `all`, a list of layer indices such \
         as [0, 5, 6], {last: N} or {range: [FIRST, LAST]}"],
    );
    check_problems("name: again\n", &["5:1: duplicate field `name`"]);
}

#[test]
fn the_version_is_checked_before_anything_else() {
    let error = parse_pipeline("version: 1\nname: Bad Name\nbogus: true\n", Some("v.yaml")).unwrap_err();
    assert_eq!(error.to_string(), "v.yaml:1:10: version: unknown version 1, supported versions: v1");
    let error = parse_pipeline("name: x\n", None).unwrap_err();
    assert_eq!(error.problems()[0].path, "version");
}

#[test]
fn problems_are_sorted_and_printed_one_a_line() {
    let source = "version: v1\npublish: {adapter: 'A'}\nname: demo\nbase: {}\n";
    let error = parse_pipeline(source, Some("x.yaml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "x.yaml:1:1: dataset: missing: the training data, like `dataset: {location: datasets/x/train.jsonl}`\n\
         x.yaml:2:20: publish.adapter: invalid adapter name \"A\": may only hold lowercase ASCII letters, digits, \
         '-', '_' and '.'\n\
         x.yaml:4:7: base: set exactly one of `model` (a model catalog name) and `path` (a GGUF file)"
    );
}

#[test]
fn the_tagged_enum_reads_the_same_pipeline() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/ticket-format.yaml")).unwrap();
    let through_enum: VersionedPipeline = serde_yaml::from_str(&source).unwrap();
    assert_eq!(through_enum.build_and_validate().unwrap(), parse_ok(&source));
}

#[test]
fn pipelines_built_in_code_are_validated_without_positions() {
    let pipeline = VersionedPipeline::V1(PipelineV1 {
        name: Some("demo".to_string()),
        training: Some(TrainingV1 { steps: Some(0), ..TrainingV1::default() }),
        publish: Some(PublishV1 { adapter: None, channel: Some("stable".to_string()), promotion: None }),
        ..PipelineV1::default()
    });
    let error = pipeline.build_and_validate().unwrap_err();
    assert!(matches!(error, PipelineError::Invalid(_)));
    let paths: Vec<&str> = error.problems().iter().map(|problem| problem.path.as_str()).collect();
    assert_eq!(paths, ["base", "dataset", "training.steps"]);
    assert!(error.problems().iter().all(|problem| problem.position.is_none()));
    assert!(error.to_string().starts_with("base: missing"), "{error}");
}

#[test]
fn a_location_ending_in_a_slash_is_a_prefix_and_follows_the_key_rules() {
    let spec = parse_ok(&MINIMAL.replace("datasets/demo/train.jsonl", "datasets/demo/"));
    assert!(spec.dataset.is_prefix());
    assert_eq!(spec.dataset.location, "datasets/demo/");
    assert!(!parse_ok(MINIMAL).dataset.is_prefix());
    for (location, reason) in [("datasets//", "empty or '.' segments"), ("/", "must not be empty"), ("../x/", "'..'")] {
        let source = MINIMAL.replace("datasets/demo/train.jsonl", location);
        let error = parse_pipeline(&source, None).expect_err(location).to_string();
        assert!(error.contains(reason), "{location}: {error}");
    }
}
