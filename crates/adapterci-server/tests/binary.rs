//! The `adapterd` binary refuses bad start-up input with a clear error and a non-zero exit, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

fn adapterd(dir: &Path, model: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--model=tiny={}", model.display()))
        .env_remove("ADAPTERCI_DATABASE_URL")
        .output()
        .expect("adapterd runs");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
}

#[test]
fn a_truncated_gguf_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 1).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let (code, stderr) = adapterd(dir.path(), &model);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(stderr.contains(&model.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_model_file_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("absent.gguf");
    let (code, stderr) = adapterd(dir.path(), &model);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("base model \"tiny\""), "{stderr}");
    assert!(stderr.contains("scripts/bootstrap.sh"), "{stderr}");
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("notes.gguf");
    std::fs::write(&model, b"this is not a model").unwrap();
    let (code, stderr) = adapterd(dir.path(), &model);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&model.display().to_string()), "{stderr}");
}

/// adapterd with `--executor kubernetes` and `args`, outside any cluster.
fn adapterd_on_kubernetes(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_adapterd"))
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .args(["--executor", "kubernetes"])
        .args(args)
        .env_remove("ADAPTERCI_DATABASE_URL")
        .env_remove("ADAPTERCI_KUBE_JOB_TEMPLATE")
        .env_remove("ADAPTERCI_KUBE_STAGING_URL")
        .output()
        .expect("adapterd runs");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
}

#[test]
fn the_kubernetes_executor_needs_a_pod_template() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = adapterd_on_kubernetes(dir.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: --executor kubernetes: --kube-job-template FILE"), "{stderr}");
}

#[test]
fn a_pod_template_without_a_container_is_refused_at_start_up_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("job-template.yaml");
    std::fs::write(&template, "spec:\n  serviceAccountName: trainer\n").unwrap();
    let (code, stderr) = adapterd_on_kubernetes(dir.path(), &["--kube-job-template", template.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}: spec.containers:", template.display())), "{stderr}");
    std::fs::write(&template, "spec: [not, a: mapping\n").unwrap();
    let (code, stderr) = adapterd_on_kubernetes(dir.path(), &["--kube-job-template", template.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}: not valid YAML", template.display())), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_memory_registry_cannot_stage_for_pods() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("job-template.yaml");
    std::fs::write(&template, "spec:\n  containers:\n    - { name: trainer, image: adapterd:1 }\n").unwrap();
    let args = ["--kube-job-template", template.to_str().unwrap(), "--registry-url", "memory://"];
    let (code, stderr) = adapterd_on_kubernetes(dir.path(), &args);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("set --kube-staging-url"), "{stderr}");
}
