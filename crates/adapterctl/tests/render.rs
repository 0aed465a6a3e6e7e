//! Snapshots of the people's views, rendered from the API's wire fixtures (`crates/adapterci-api/tests/fixtures`)
//! without color. Timestamps and digests are filtered so that the snapshots show layout, not data.

use adapterci_api::{AdapterInfo, AdapterVersionInfo, ModelList, PipelineInfo, RunInfo};
use adapterctl::output::{Style, render_error};
use adapterctl::render::adapter::{AdapterDescription, adapter_detail};
use adapterctl::render::{lists, run::run_detail};
use serde::de::DeserializeOwned;
use serde_json::json;

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/../adapterci-api/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// Snapshots `text` with timestamps and digests replaced by placeholders of the same width, so that the
/// snapshot keeps the columns aligned as they were.
fn check(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "YYYY-MM-DD hh:mm:ss UTC");
    settings.add_filter(r"sha256:[0-9a-f]{64}", format!("sha256:{}", "x".repeat(64)));
    settings.add_filter(r"sha256:[0-9a-f]{12}\b", "sha256:xxxxxxxxxxxx");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn pipelines_table() {
    let mut pipelines: Vec<PipelineInfo> = fixture("pipelines.json");
    let mut second = pipelines[0].clone();
    (second.name, second.revision, second.triggers) = ("summarize".into(), 12, vec!["webhook".into(), "manual".into()]);
    pipelines.push(second);
    check("pipelines", &lists::pipelines(&pipelines, Style::PLAIN));
    assert_eq!(lists::pipelines(&[], Style::PLAIN), "no pipelines");
}

#[test]
fn runs_table() {
    let runs: Vec<RunInfo> = ["run_queued.json", "run_running.json", "run_succeeded.json", "run_failed.json"]
        .into_iter()
        .map(fixture)
        .collect();
    check("runs", &lists::runs(&runs, Style::PLAIN));
}

#[test]
fn adapters_and_models_tables() {
    let adapters: Vec<AdapterInfo> = fixture("adapters.json");
    check("adapters", &lists::adapters(&adapters, Style::PLAIN));
    let models: ModelList = fixture("models.json");
    check("models", &lists::models(&models, Style::PLAIN));
}

#[test]
fn describe_a_succeeded_run() {
    check("run_succeeded", &run_detail(&fixture("run_succeeded.json"), Style::PLAIN));
}

#[test]
fn describe_a_running_run() {
    check("run_running", &run_detail(&fixture("run_running.json"), Style::PLAIN));
}

#[test]
fn describe_a_rejected_run_marks_the_failed_gate() {
    let mut run: RunInfo = fixture("run_succeeded.json");
    run.state = adapterci_api::RunState::Rejected;
    run.stage = Some("eval".into());
    run.published = None;
    let report = run.report.as_mut().unwrap();
    report["gates"]["passed"] = json!(false);
    report["gates"]["results"][1] = json!({
        "metric": "eval_loss", "value": 1.5, "min": null, "max": 1.0, "passed": false,
        "reason": "eval_loss = 1.5000 above the maximum 1 (<= 1)"
    });
    report["samples"][0]["exact_match"] = json!(false);
    report["samples"][0]["adapter_output"] = json!("SELECT *\nFROM users;");
    let text = run_detail(&run, Style::PLAIN);
    check("run_rejected", &text);
    assert!(text.contains("Gates:     FAILED") || text.contains("Gates: FAILED"), "{text}");
}

#[test]
fn describe_a_failed_run_and_an_unreadable_report() {
    check("run_failed", &run_detail(&fixture("run_failed.json"), Style::PLAIN));
    let mut run: RunInfo = fixture("run_failed.json");
    run.report = Some(json!({"gates": "yes"}));
    let text = run_detail(&run, Style::PLAIN);
    assert!(text.contains("Report: cannot read it"), "{text}");
}

fn manifest() -> serde_json::Value {
    json!({
        "schema_version": 1,
        "name": "sql-adapter",
        "created_at": "2026-11-26T10:05:00Z",
        "adapter": {"rank": 16, "alpha": 32.0, "targets": ["q", "k", "v", "o"], "layers": [0, 1, 2, 3, 10, 28, 29], "dtype": "f16"},
        "files": [{"name": "adapter_model.safetensors", "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "size": 1843200}],
        "lineage": {
            "base_model_digest": "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "base_model_name": "smollm2-135m-instruct",
            "dataset_digests": ["sha256:486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"],
            "pipeline": {"name": "sql", "revision": 1, "spec_digest": "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
            "run_id": "0192f3a4-5b6c-7d8e-9f00-112233445566",
            "initial_adapter": {"kind": "standard_init"},
            "code_version": "0.1.0"
        },
        "eval": {
            "metrics": {"exact_match": 0.9},
            "gates": {"passed": true, "results": [{"metric": "exact_match", "value": 0.9, "min": 0.8, "max": null, "passed": true, "reason": "exact_match = 0.9000 within >= 0.8"}]},
            "samples": []
        }
    })
}

#[test]
fn describe_an_adapter_version() {
    let versions: Vec<AdapterVersionInfo> = fixture("adapter_versions.json");
    let description = AdapterDescription {
        name: "sql-adapter".into(),
        version: 3,
        served_version: Some(1),
        versions,
        manifest: manifest(),
    };
    check("adapter", &adapter_detail(&description, Style::PLAIN));
}

#[test]
fn describe_an_adapter_with_a_sparse_manifest() {
    let versions: Vec<AdapterVersionInfo> = fixture("adapter_versions.json");
    let description = AdapterDescription {
        name: "sql-adapter".into(),
        version: 1,
        served_version: None,
        versions,
        manifest: json!({}),
    };
    check("adapter_sparse", &adapter_detail(&description, Style::PLAIN));
}

#[test]
fn errors_with_details_and_hints() {
    let err = adapterctl::exit::CliError {
        details: vec!["p.yaml:4:3: train.steps: must be at least 1".into()],
        ..adapterctl::exit::CliError::new("p.yaml is not a valid pipeline (1 problem)")
    }
    .with_hint("see pipelines/README.md");
    check("error", &render_error(&err, Style::PLAIN));
    let colored = render_error(&err, Style { color: true });
    assert!(colored.starts_with("\x1b[1;31merror\x1b[0m: "), "{colored:?}");
}
