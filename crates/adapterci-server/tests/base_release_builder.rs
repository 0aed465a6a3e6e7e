//! The engine's base-release stage behind the controller's port, on the tiny model: a release bundle is
//! written under its digest, the gate decides, and a model the catalog does not name is an error.
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

#[tokio::test]
async fn a_build_that_a_restart_interrupted_resumes_its_recovery_then_removes_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (mut builder, digest) = builder(dir.path(), 100.0);
    builder.options.recovery.steps = 6;
    builder.options.recovery.checkpoint_every = 2;
    // the build adapterd was running when it stopped: the builder's options where it keeps its state
    // (BUILD_STATE), killed after step 4's checkpoint
    let state = dir.path().join("releases").join(BUILD_STATE);
    let checkpoints = state.join("checkpoints").join(&digest.hex()[..16]);
    let base = BaseModel::load(&builder.models["tiny"], DeviceChoice::Cpu).unwrap();
    let mut options = builder.options.clone();
    options.recovery.base_precision = preferred_precision(base.llama().device());
    options.teacher_cache = Some(state.join("teacher-cache"));
    options.recovery.checkpoint_dir = Some(checkpoints.clone());
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build_release(&base, &options, None, None, &mut |_| {}, &mut |p| {
            if p.step == 5 {
                panic!("simulated kill");
            }
        })
    }));
    assert!(killed.is_err() && checkpoints.is_dir());

    let request = BaseReleaseRequest { base_model_name: "tiny".into(), base_model_digest: digest };
    let BaseReleaseOutcome::Released { release_digest } = builder.build(request).await.unwrap() else {
        panic!("an open gate must release");
    };
    let bundle = dir.path().join("releases").join(release_digest.hex());
    let report: BuildReport = serde_json::from_slice(&std::fs::read(bundle.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.recovery.resumed_from, Some(4), "the restarted build goes on from step 4");
    assert_eq!(report.recovery.steps, 6);
    assert!(!checkpoints.exists(), "the finished build's checkpoints are removed");
    let cached = std::fs::read_dir(state.join("teacher-cache")).unwrap().count();
    assert_eq!(cached, 1, "the teacher's text was written once and kept");
}
