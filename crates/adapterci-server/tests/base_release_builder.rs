//! The engine's base-release stage behind the controller's port, on the tiny model: a release bundle is
//! written under its digest, the gate decides, a model the catalog does not name is an error, a build that a
//! restart interrupted resumes from its state, which its end removes (and no other model's), and the state the
//! layout before the models' folders left is removed once, with a log line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use adapterci_core::Digest;
use adapterci_core::base_release::{BaseReleaseBuilder, BaseReleaseOutcome, BaseReleaseRequest};
use adapterci_core::training::BasePrecision;
use adapterci_engine::allocate::Method;
use adapterci_engine::calibrate::TeacherTextSpec;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoverySpec, preferred_precision};
use adapterci_engine::release_build::{BuildOptions, BuildReport, build_release};
use adapterci_engine::tiny::write_tiny_model;
use adapterci_server::base_release::{BUILD_STATE, EngineBaseReleaseBuilder};

fn builder(dir: &std::path::Path, max_ratio: f64) -> (EngineBaseReleaseBuilder, Digest) {
    builder_with(dir, max_ratio, None)
}

fn builder_with(
    dir: &std::path::Path,
    max_ratio: f64,
    precision: Option<BasePrecision>,
) -> (EngineBaseReleaseBuilder, Digest) {
    let model = dir.join("tiny.gguf");
    write_tiny_model(&model, 4).unwrap();
    let digest = Digest::of(&std::fs::read(&model).unwrap());
    let options = BuildOptions {
        method: Method { group_rows: 8, group_rows_2bit: 4, ..Method::default() },
        teacher: TeacherTextSpec { sequences: 20, seq_len: 24, batch: 10, temperature: 1.0, seed: 1 },
        recovery: RecoverySpec { steps: 4, batch: 2, ..RecoverySpec::default() },
        ..BuildOptions::default()
    };
    let builder = EngineBaseReleaseBuilder {
        models: BTreeMap::from([("tiny".to_string(), model)]),
        dir: dir.join("releases"),
        options,
        max_perplexity_ratio: max_ratio,
        device: DeviceChoice::Cpu,
        precision,
    };
    (builder, digest)
}

#[tokio::test]
async fn a_release_is_written_under_its_digest_and_gated() {
    let dir = tempfile::tempdir().unwrap();
    let (open_gate, digest) = builder(dir.path(), 100.0);
    let request = BaseReleaseRequest { base_model_name: "tiny".into(), base_model_digest: digest.clone() };
    let BaseReleaseOutcome::Released { release_digest } = open_gate.build(request.clone()).await.unwrap() else {
        panic!("an open gate must release");
    };
    let bundle = dir.path().join("releases").join(release_digest.hex());
    let release = std::fs::read(bundle.join("base.safetensors")).unwrap();
    assert_eq!(Digest::of(&release), release_digest);
    assert!(bundle.join("recovery.safetensors").is_file() && bundle.join("report.json").is_file());
    // no precision asked for: the recovery ran at the engine's choice for the CPU (bf16 where it has AVX-512 BF16)
    let report: BuildReport = serde_json::from_slice(&std::fs::read(bundle.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.recovery.base_precision, preferred_precision(DeviceChoice::Cpu.resolve().unwrap()));

    // a gate nothing can pass, with the other precision asked for: the same release (the same bytes, so the
    // same bundle), its recovery at the precision asked
    let other = match preferred_precision(DeviceChoice::Cpu.resolve().unwrap()) {
        BasePrecision::F32 => BasePrecision::Bf16,
        _ => BasePrecision::F32,
    };
    let (closed, _) = builder_with(dir.path(), 0.5, Some(other));
    match closed.build(request.clone()).await.unwrap() {
        BaseReleaseOutcome::GateFailed { reason } => assert!(reason.contains("gate: at most 0.500x"), "{reason}"),
        other => panic!("expected a gate failure, got {other:?}"),
    }
    let report: BuildReport = serde_json::from_slice(&std::fs::read(bundle.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.recovery.base_precision, other);
    // unknown model, and a digest the file no longer has
    let err = open_gate
        .build(BaseReleaseRequest { base_model_name: "nope".into(), base_model_digest: digest })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no model named \"nope\""), "{err}");
    let err = open_gate
        .build(BaseReleaseRequest { base_model_name: "tiny".into(), base_model_digest: Digest::of(b"other") })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("now has digest"), "{err}");
}

/// The files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// What adapterd was doing when it stopped: building `name` with the builder's options, killed after the
/// recovery's checkpoint of step 4.
fn interrupted_build(builder: &EngineBaseReleaseBuilder, name: &str) {
    let base = BaseModel::load(&builder.models[name], DeviceChoice::Cpu).unwrap();
    let options = builder.build_options(name, &base);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build_release(&base, &options, None, None, &mut |_| {}, &mut |p| {
            if p.step == 5 {
                panic!("simulated kill");
            }
        })
    }));
    assert!(killed.is_err());
}

#[tokio::test]
async fn an_interrupted_build_resumes_then_removes_its_own_state_and_no_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let (mut builder, digest) = builder(dir.path(), 100.0);
    builder.options.recovery.steps = 6;
    builder.options.recovery.checkpoint_every = 2;
    let other = dir.path().join("other.gguf");
    write_tiny_model(&other, 5).unwrap();
    let other_digest = Digest::of(&std::fs::read(&other).unwrap());
    builder.models.insert("other".into(), other);
    let (tiny_state, other_state) = (builder.state_dir("tiny"), builder.state_dir("other"));
    assert!(tiny_state.starts_with(dir.path().join("releases").join(BUILD_STATE)));
    interrupted_build(&builder, "tiny");
    interrupted_build(&builder, "other");
    let other_files = files_under(&other_state);
    for kept in ["teacher-cache", "palettized", "checkpoints"] {
        let under = |state: &std::path::Path| files_under(&state.join(kept)).len();
        assert!(under(&tiny_state) > 0 && under(&other_state) > 0, "{kept}: {other_files:?}");
    }
    // and what an earlier build of tiny left (another source digest, another spec) beside its state
    let stale = tiny_state.join("checkpoints").join("0123456789abcdef");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("recovery-checkpoint.json"), b"{}").unwrap();

    let request = BaseReleaseRequest { base_model_name: "tiny".into(), base_model_digest: digest };
    let BaseReleaseOutcome::Released { release_digest } = builder.build(request).await.unwrap() else {
        panic!("an open gate must release");
    };
    let report = |release_digest: &Digest| -> BuildReport {
        let bundle = dir.path().join("releases").join(release_digest.hex());
        serde_json::from_slice(&std::fs::read(bundle.join("report.json")).unwrap()).unwrap()
    };
    let tiny_report = report(&release_digest);
    assert_eq!(tiny_report.recovery.resumed_from, Some(4), "the restarted build goes on from step 4");
    assert_eq!(tiny_report.recovery.steps, 6);
    assert!(!tiny_state.exists(), "the finished build's state is removed, the stale part too");
    assert_eq!(files_under(&other_state), other_files, "the other model's state is untouched");

    // which the other model's build then resumes from, and removes
    let request = BaseReleaseRequest { base_model_name: "other".into(), base_model_digest: other_digest };
    let BaseReleaseOutcome::Released { release_digest } = builder.build(request).await.unwrap() else {
        panic!("an open gate must release");
    };
    assert_eq!(report(&release_digest).recovery.resumed_from, Some(4));
    assert!(!other_state.exists());
    assert_eq!(files_under(&dir.path().join("releases").join(BUILD_STATE)), Vec::<std::path::PathBuf>::new());
}

#[test]
fn every_model_name_has_a_state_folder_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (builder, _) = builder(dir.path(), 100.0);
    let names = ["tiny", "a/b", "a_b", "a b", "..", "", "é", &"x".repeat(300), &format!("{}y", "x".repeat(299))];
    let folders: std::collections::BTreeSet<_> = names.iter().map(|name| builder.state_dir(name)).collect();
    assert_eq!(folders.len(), names.len(), "{folders:#?}");
    let models = dir.path().join("releases").join(BUILD_STATE).join("models");
    for folder in &folders {
        assert_eq!(folder.parent().unwrap(), models, "one folder directly under .build/models: {folder:?}");
        let name = folder.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= 57 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
    assert!(builder.state_dir("tiny").file_name().unwrap().to_str().unwrap().starts_with("tiny-"));
}

/// A writer for the logs of a test, read back after.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `run` returns, and what it logged.
fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let value = tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (value, text)
}

#[test]
fn the_previous_layouts_build_state_is_removed_once_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let (builder, _) = builder(dir.path(), 100.0);
    let build_state = dir.path().join("releases").join(BUILD_STATE);
    // what builds left before the models' folders: the teacher's text, each source digest's checkpoints
    let legacy = [build_state.join("teacher-cache"), build_state.join("checkpoints")];
    let left =
        [legacy[0].join("teacher-0123.json"), legacy[1].join("0123456789abcdef").join("recovery-checkpoint.json")];
    // and a model's state of this layout, an interrupted build that a restart resumes
    let kept = builder.state_dir("tiny").join("checkpoints").join("fedcba9876543210").join("recovery-checkpoint.json");
    for file in left.iter().chain([&kept]) {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"{}").unwrap();
    }

    let (removed, logs) = logged(|| builder.remove_legacy_state());
    assert_eq!(removed, legacy);
    assert!(legacy.iter().all(|dir| !dir.exists()), "{legacy:?}");
    assert!(kept.is_file(), "this layout's state stays");
    for dir in &legacy {
        let line = logs.lines().find(|line| line.contains(&dir.display().to_string()));
        assert!(line.is_some_and(|line| line.contains("removed the previous layout's build state")), "{logs}");
    }
    // once: the next start finds nothing to remove, and says nothing
    let (removed, logs) = logged(|| builder.remove_legacy_state());
    assert!(removed.is_empty() && logs.is_empty(), "{removed:?} {logs}");
    assert!(kept.is_file());
}
