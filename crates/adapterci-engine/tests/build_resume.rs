//! Resumable base-release builds on the tiny model: a resumed recovery goes on with the time budget its
//! checkpoint left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use adapterci_engine::allocate::{Method, linear_ops, palettize_op};
use adapterci_engine::calibrate::{TeacherTextSpec, collect_hessians, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoveryReport, RecoverySpec, recover};
use adapterci_engine::tiny::write_tiny_model;

struct Fixture {
    base: BaseModel,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let seed = 21;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, seed).unwrap();
    let base = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    Fixture { base, dir: dir.path().to_path_buf(), _dir: dir }
}

fn recover_with(f: &Fixture, spec: &RecoverySpec, stop_at: Option<usize>) -> (Option<RecoveryReport>, Vec<f64>) {
    let teacher = f.base.llama();
    let prompts = prompt_ids(f.base.tokenizer(), None).unwrap();
    let spec_text = TeacherTextSpec { sequences: 8, seq_len: 24, batch: 8, temperature: 1.0, seed: 3 };
    let seqs = teacher_text(teacher, &prompts, &spec_text, &mut |_, _| {}).unwrap();
    let hessians = collect_hessians(teacher, &seqs, 4).unwrap();
    let mut student = teacher.shallow_copy();
    for op in linear_ops(teacher.config()) {
        let p = palettize_op(teacher, Some(&hessians), &op, 4, Method { group_rows: 8, ..Method::default() }).unwrap();
        student.set_linear_weight(op.layer, op.target, p.dequantize(tch::Device::Cpu)).unwrap();
    }
    let mut elapsed = Vec::new();
    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recover(teacher, &student, &seqs, spec, &mut |p| {
            elapsed.push(p.elapsed_seconds);
            if Some(p.step) == stop_at {
                panic!("simulated kill");
            }
        })
        .unwrap()
        .1
    }))
    .ok();
    (report, elapsed)
}

#[test]
fn a_resumed_recovery_goes_on_with_the_time_its_checkpoint_recorded() {
    let f = fixture();
    let dir = f.dir.join("ckpt");
    let spec = RecoverySpec {
        steps: 12,
        batch: 2,
        checkpoint_every: 4,
        checkpoint_dir: Some(dir.clone()),
        ..RecoverySpec::default()
    };
    // killed after 9 steps: the checkpoint of step 8 records the time trained so far
    assert!(recover_with(&f, &spec, Some(9)).0.is_none());
    let state_path = dir.join("recovery-checkpoint.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let recorded = state["elapsed_seconds"].as_f64().unwrap();
    assert!(recorded > 0.0 && recorded.is_finite(), "{state}");

    // a checkpoint that says the runs before it spent the budget: the resumed run trains no further
    state["elapsed_seconds"] = 1e6.into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let budget = RecoverySpec { max_seconds: Some(1000.0), ..spec.clone() };
    let (report, elapsed) = recover_with(&f, &budget, None);
    let report = report.unwrap();
    assert_eq!(report.resumed_from, Some(8));
    assert_eq!(report.steps, 8, "the budget was spent before the restart");
    assert!(report.stopped_by_time);
    assert!(report.seconds >= 1e6, "the time counts on from the checkpoint's: {}", report.seconds);
    assert!(elapsed.iter().all(|&s| s >= 1e6), "{elapsed:?}");

    // a checkpoint written before the field: read as no time spent, so the budget is whole again
    state.as_object_mut().unwrap().remove("elapsed_seconds");
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let (report, _) = recover_with(&f, &budget, None);
    let report = report.unwrap();
    assert_eq!((report.resumed_from, report.steps, report.stopped_by_time), (Some(8), 12, false));
}
