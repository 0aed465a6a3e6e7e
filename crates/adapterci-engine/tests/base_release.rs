//! Base releases on the tiny model: calibration, sensitivity allocation, recovery training that lowers the KL
//! divergence (also with the palettes' tables and scales training beside the adapter), the release file round trip
//! (bits exact), a release that loads and serves like a GGUF, and the refusals: corrupt files, recovery adapters
//! for another release.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use adapterci_core::Digest;
use adapterci_core::training::{BasePrecision, LoraTarget};
use adapterci_engine::allocate::{
    LinearOp, Method, SensitivitySpec, allocate_bits, average_bpw, linear_ops, measure_sensitivities, palettize_op,
};
use adapterci_engine::calibrate::{TeacherTextSpec, chunk_tokens, collect_hessians, compare, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::llama::Llama;
use adapterci_engine::model::BaseModel;
use adapterci_engine::palettize::{PalettizedTensor, Rotation, TrainablePalettes};
use adapterci_engine::recover::{
    RecoverySpec, RecoveryText, calibrated_init, hold_out, preferred_precision, recover, recover_palettized,
    recovery_config,
};
use adapterci_engine::release::{BaseRelease, bind_recovery_adapter, check_recovery_adapter};
use adapterci_engine::release_build::{
    BuildOptions, build_release, cached_teacher_text, calibrate, recovery_precision, recovery_text, release_file,
};
use adapterci_engine::tiny::write_tiny_model;
use tch::Device;

struct Fixture {
    base: BaseModel,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, 21).unwrap();
    let base = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    Fixture { base, dir: dir.path().to_path_buf(), _dir: dir }
}

fn teacher_sequences(base: &BaseModel, count: usize) -> Vec<Vec<u32>> {
    let prompts = prompt_ids(base.tokenizer(), None).unwrap();
    let spec = TeacherTextSpec { sequences: count, seq_len: 24, batch: 8, temperature: 1.0, seed: 3 };
    teacher_text(base.llama(), &prompts, &spec, &mut |_, _| {}).unwrap()
}

/// Palettizes every operation of `teacher` per `bits`; returns the student and the palettized tensors.
fn palettized_student(
    teacher: &Llama,
    bits: &[u8],
    method: Method,
    seqs: &[Vec<u32>],
) -> (Llama, Vec<PalettizedTensor>) {
    let hessians = collect_hessians(teacher, seqs, 4).unwrap();
    let mut student = teacher.shallow_copy();
    let mut parts = Vec::new();
    for (op, &b) in linear_ops(teacher.config()).iter().zip(bits) {
        let p = palettize_op(teacher, Some(&hessians), op, b, method).unwrap();
        student.set_linear_weight(op.layer, op.target, p.dequantize(Device::Cpu)).unwrap();
        parts.push(p);
    }
    (student, parts)
}

fn method() -> Method {
    Method { group_rows: 8, group_rows_2bit: 4, ..Method::default() }
}

#[test]
fn teacher_text_has_the_requested_shape_and_is_seeded() {
    let f = fixture();
    let a = teacher_sequences(&f.base, 10);
    let b = teacher_sequences(&f.base, 10);
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|s| s.len() == 24));
    assert_eq!(a, b, "the same seed writes the same text");
}

/// `build_release` on the tiny model with recovery checkpoints under `root`, stopped (as a kill would) at
/// `stop_at` when given; the recovery's report when it finished.
fn build_with_checkpoints(
    f: &Fixture,
    root: &std::path::Path,
    method: Method,
    rank: usize,
    stop_at: Option<usize>,
) -> Option<adapterci_engine::recover::RecoveryReport> {
    let options = BuildOptions {
        method,
        teacher: TeacherTextSpec { sequences: 20, seq_len: 24, batch: 10, temperature: 1.0, seed: 1 },
        recovery: RecoverySpec {
            rank,
            steps: 6,
            batch: 2,
            checkpoint_every: 2,
            checkpoint_dir: Some(root.to_path_buf()),
            ..RecoverySpec::default()
        },
        ..BuildOptions::default()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build_release(&f.base, &options, None, None, &mut |_| {}, &mut |p| {
            if Some(p.step) == stop_at {
                panic!("simulated kill");
            }
        })
        .unwrap()
        .report
        .recovery
    }))
    .ok()
}

#[test]
fn a_rebuild_resumes_the_recovery_of_the_same_palettization_and_spec_only() {
    let f = fixture();
    let root = f.dir.join("checkpoints");
    assert!(build_with_checkpoints(&f, &root, method(), 4, Some(5)).is_none(), "the first build was stopped");
    let folders = || std::fs::read_dir(&root).unwrap().count();
    assert_eq!(folders(), 1, "one folder for the one palettization");
    let resumed = build_with_checkpoints(&f, &root, method(), 4, None).unwrap();
    assert_eq!(resumed.resumed_from, Some(4), "the rebuild resumes the checkpoint of step 4");
    assert_eq!(resumed.steps, 6);
    // another palettization (other tables) must not resume an adapter trained against the first one
    let other_tables = Method { group_rows: 4, ..method() };
    assert_eq!(build_with_checkpoints(&f, &root, other_tables, 4, None).unwrap().resumed_from, None);
    // nor another spec, which starts afresh instead of stopping at a checkpoint it cannot use
    assert_eq!(build_with_checkpoints(&f, &root, method(), 2, None).unwrap().resumed_from, None);
    assert_eq!(folders(), 3);
}

#[test]
fn teacher_text_written_beside_other_work_in_the_process_is_still_its_seeds_text() {
    let alone = teacher_sequences(&fixture().base, 10);
    // four writers at once, each on its own copy of the model: torch's global generator would interleave their
    // draws; text seeded per call cannot depend on them
    let start = std::sync::Barrier::new(4);
    let texts: Vec<Vec<Vec<u32>>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let f = fixture();
                    start.wait();
                    teacher_sequences(&f.base, 10)
                })
            })
            .collect();
        writers.into_iter().map(|writer| writer.join().unwrap()).collect()
    });
    for text in &texts {
        assert_eq!(text, &alone, "a writer beside three others wrote other text than its seed names");
    }
    let f = fixture();
    let prompts = prompt_ids(f.base.tokenizer(), None).unwrap();
    let other_seed = TeacherTextSpec { sequences: 10, seq_len: 24, batch: 8, temperature: 1.0, seed: 4 };
    let other = teacher_text(f.base.llama(), &prompts, &other_seed, &mut |_, _| {}).unwrap();
    assert_ne!(other, alone, "another seed writes other text");
}

/// The tiny model's operations and their sensitivities on 2 of 8 teacher sequences (statistics on all 8), once
/// per correction rank in `ranks` (`None`: the plain 2-bit sensitivity).
fn measured_sensitivities(f: &Fixture, ranks: &[Option<usize>]) -> (Vec<LinearOp>, Vec<Vec<f64>>) {
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 8);
    let hessians = collect_hessians(teacher, &seqs, 4).unwrap();
    let ops = linear_ops(teacher.config());
    let measured = ranks
        .iter()
        .map(|&rank| {
            let spec = SensitivitySpec { method: method(), correction_rank: rank, batch: 2 };
            measure_sensitivities(teacher, &hessians, &ops, &seqs[..2], spec, &mut |_, _| {}).unwrap()
        })
        .collect();
    (ops, measured)
}

#[test]
fn sensitivity_allocation_meets_the_target_and_beats_the_reverse_order() {
    let f = fixture();
    let (ops, measured) = measured_sensitivities(&f, &[None]);
    let (m, s) = (method(), &measured[0]);
    assert_eq!(s.len(), ops.len());
    assert!(s.iter().all(|v| v.is_finite() && *v >= 0.0), "{s:?}");
    let bits = allocate_bits(&ops, s, m, 3.5).unwrap();
    let achieved = average_bpw(&ops, &bits, m);
    assert!((3.45..=3.5).contains(&achieved), "achieved {achieved}");
    // the allocation's 2-bit set costs less measured sensitivity than the most sensitive choice at the same bits
    let inverted: Vec<f64> = s.iter().map(|v| -v).collect();
    let worst = allocate_bits(&ops, &inverted, m, 3.5).unwrap();
    let cost = |b: &[u8]| b.iter().zip(s).filter(|(b, _)| **b == 2).map(|(_, v)| v).sum::<f64>();
    assert!(cost(&bits) < cost(&worst), "{} vs {}", cost(&bits), cost(&worst));
}

#[test]
fn corrected_sensitivities_measure_what_the_low_rank_correction_leaves() {
    let f = fixture();
    // plain, corrected at rank 4, and corrected at full rank (the tiny model's width)
    let width = f.base.llama().config().hidden_size;
    let (ops, measured) = measured_sensitivities(&f, &[None, Some(4), Some(width)]);
    let (plain, corrected, full) = (&measured[0], &measured[1], &measured[2]);
    assert!(corrected.iter().all(|v| v.is_finite() && *v >= 0.0), "{corrected:?}");
    // a rank-4 correction of each 2-bit error leaves less: lower on (nearly) every operation and in sum
    let lower = plain.iter().zip(corrected).filter(|(p, c)| c < p).count();
    assert!(lower * 10 >= ops.len() * 9, "lower on {lower} of {} operations", ops.len());
    assert!(corrected.iter().sum::<f64>() < 0.8 * plain.iter().sum::<f64>(), "{corrected:?} vs {plain:?}");
    // at full rank the correction restores each operation exactly
    let (most, least) = (full.iter().copied().fold(0.0, f64::max), plain.iter().copied().fold(f64::MAX, f64::min));
    assert!(most < 1e-4 && most < least / 100.0, "full-rank corrections leave {most}, the least plain one is {least}");
}

#[test]
fn recovery_training_lowers_the_kl_divergence_to_the_teacher_with_f32_or_bf16_matmuls() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 16);
    let ops = linear_ops(teacher.config());
    let (student, _) = palettized_student(teacher, &vec![2; ops.len()], method(), &seqs);
    let before = compare(teacher, &student, None, &seqs, 4).unwrap();
    assert!(before.kl_divergence > 0.0);
    let spec = RecoverySpec { steps: 40, batch: 4, learning_rate: 5e-3, ..RecoverySpec::default() };
    let mut seen = 0;
    let (lora, report) = recover(teacher, &student, &seqs, &spec, &mut |_| seen += 1).unwrap();
    assert_eq!(report.steps, 40);
    assert_eq!(seen, 40, "progress after every step");
    assert_eq!(report.base_precision, BasePrecision::F32);
    let bf16_spec = RecoverySpec { base_precision: BasePrecision::Bf16, ..spec };
    let (bf16_lora, bf16_report) = recover(teacher, &student, &seqs, &bf16_spec, &mut |_| {}).unwrap();
    assert_eq!(bf16_report.base_precision, BasePrecision::Bf16);
    // the same first batch from the same (zero) adapter: only the matmuls' rounding differs
    let (first_f32, first_bf16) = (report.kl_curve[0].1, bf16_report.kl_curve[0].1);
    assert!(
        (first_bf16 - first_f32).abs() < 0.05 * first_f32,
        "first-step KL {first_f32} (f32) vs {first_bf16} (bf16)"
    );
    // scored in f32 as served, each adapter lowers the KL, the bf16-trained one as far as the f32-trained one
    let after = compare(teacher, &student, Some(&lora), &seqs, 4).unwrap();
    let after_bf16 = compare(teacher, &student, Some(&bf16_lora), &seqs, 4).unwrap();
    for (name, a) in [("f32", &after), ("bf16", &after_bf16)] {
        assert!(
            a.kl_divergence < 0.8 * before.kl_divergence,
            "KL {} -> {} after {name} recovery",
            before.kl_divergence,
            a.kl_divergence
        );
        assert!(a.top1_agreement >= before.top1_agreement, "{name}");
    }
    assert!(
        after_bf16.kl_divergence < 1.1 * after.kl_divergence,
        "after recovery: KL {} (bf16) vs {} (f32)",
        after_bf16.kl_divergence,
        after.kl_divergence
    );
}

#[test]
fn a_build_recovers_at_the_precision_asked_else_at_the_one_its_device_prefers() {
    let f = fixture();
    for asked in [BasePrecision::F32, BasePrecision::Bf16] {
        assert_eq!(recovery_precision(Some(asked), &f.base), asked);
    }
    assert_eq!(recovery_precision(None, &f.base), preferred_precision(Device::Cpu));
}

#[test]
fn recovery_resumes_from_its_checkpoint() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 8);
    let ops = linear_ops(teacher.config());
    let (student, _) = palettized_student(teacher, &vec![4; ops.len()], method(), &seqs);
    let dir = f.dir.join("ckpt");
    let spec = RecoverySpec {
        steps: 12,
        batch: 2,
        checkpoint_every: 4,
        checkpoint_dir: Some(dir.clone()),
        ..RecoverySpec::default()
    };
    // a first run stopped after 9 steps (as a kill would) leaves the checkpoint of step 8
    let short = RecoverySpec { steps: 12, ..spec.clone() };
    let mut stop_after = 0;
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recover(teacher, &student, &seqs, &short, &mut |p| {
            stop_after = p.step;
            if p.step == 9 {
                panic!("simulated kill");
            }
        })
    }));
    assert_eq!(stop_after, 9);
    let (lora, report) = recover(teacher, &student, &seqs, &spec, &mut |_| {}).unwrap();
    assert_eq!(report.resumed_from, Some(8));
    assert_eq!(report.steps, 12);
    assert_eq!(report.kl_curve.len(), 12, "the curve carries the first 8 steps over");
    // and it takes the steps a run never interrupted takes: the checkpoint kept Adam's moments and step count,
    // and the adapter in f32
    let whole = RecoverySpec { checkpoint_every: 0, checkpoint_dir: None, ..spec.clone() };
    let (uninterrupted, uninterrupted_report) = recover(teacher, &student, &seqs, &whole, &mut |_| {}).unwrap();
    assert_same_curve(&report.kl_curve, &uninterrupted_report.kl_curve);
    assert_same_tensors("adapter", &lora.trainable_parameters(), &uninterrupted.trainable_parameters());
    // another spec must not pick up this checkpoint
    let other = RecoverySpec { rank: 8, ..spec };
    let err = recover(teacher, &student, &seqs, &other, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("different recovery spec"), "{err}");
}

/// `(step, KL)` curves with the same steps and each KL within 1e-6 of the other's (relative).
fn assert_same_curve(got: &[(usize, f64)], want: &[(usize, f64)]) {
    let steps = |curve: &[(usize, f64)]| curve.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(steps(got), steps(want));
    for (&(step, a), &(_, b)) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "step {step}: KL {a} vs {b} uninterrupted");
    }
}

/// The same number of tensors, each within 1e-6 of the other's (absolute).
fn assert_same_tensors(what: &str, got: &[tch::Tensor], want: &[tch::Tensor]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (index, (a, b)) in got.iter().zip(want).enumerate() {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{what} tensor {index}: differs by {diff} from the uninterrupted run's");
    }
}

fn release_bytes(f: &Fixture, bits: &[u8]) -> (Vec<u8>, Llama) {
    release_bytes_with(f, bits, method())
}

fn release_bytes_with(f: &Fixture, bits: &[u8], method: Method) -> (Vec<u8>, Llama) {
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 8);
    let (student, parts) = palettized_student(teacher, bits, method, &seqs);
    (release_file(&f.base, &BuildOptions { method, ..BuildOptions::default() }, parts, None).unwrap(), student)
}

#[test]
fn a_release_round_trips_exactly_and_serves_like_its_palettized_model() {
    let f = fixture();
    let ops = linear_ops(f.base.llama().config());
    let bits: Vec<u8> = (0..ops.len()).map(|i| if i % 3 == 0 { 2 } else { 4 }).collect();
    let (bytes, student) = release_bytes(&f, &bits);
    // the same release is the same bytes, so the same digest (the header's metadata is not in a hash map's order)
    assert!(bytes == release_bytes(&f, &bits).0, "a second write of the same release differs");
    let path = f.dir.join("base.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let (release, digest) = BaseRelease::open(&path).unwrap();
    assert_eq!(digest, Digest::of(&bytes));
    assert_eq!(&release.manifest.source_model_digest, f.base.digest());
    let expected_bpw = average_bpw(&ops, &bits, method());
    assert_eq!(release.manifest.linear_bpw, expected_bpw, "bits accounting in the manifest");
    for (op, b) in ops.iter().zip(&bits) {
        let p = release.palettized(&op.name()).unwrap();
        assert_eq!(p.spec.bits, *b);
        // the dequantized weights of the file are exactly the palettized student's
        let diff = (p.dequantize(Device::Cpu) - student.linear_weight(op.layer, op.target)).abs().max();
        assert_eq!(diff.double_value(&[]), 0.0, "{}", op.name());
    }
    // BaseModel loads the release like a GGUF and scores the same logits as the palettized student
    let served = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    assert_eq!(served.digest(), &digest);
    let ids: Vec<u32> = f.base.tokenizer().encode("hello there, world", false);
    let want = {
        let t = tch::Tensor::from_slice(&ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()).unsqueeze(0);
        tch::no_grad(|| student.forward(&t, 0, None, None))
    };
    let got = served.logits(&ids, None).unwrap();
    let want: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(want.squeeze_dim(0)).unwrap();
    let max_diff = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // the release stores norms and the embedding as written (embedding in f16), so allow f16 rounding
    assert!(max_diff < 1e-2, "max logit difference {max_diff}");
}

#[test]
fn corrupt_release_files_are_refused_with_a_reason() {
    let f = fixture();
    let ops = linear_ops(f.base.llama().config());
    let (bytes, _) = release_bytes(&f, &vec![4; ops.len()]);
    let path = f.dir.join("x.safetensors");
    // a flipped bit in the tensor data
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x10;
    let err = BaseRelease::read(&flipped, &path).unwrap_err().to_string();
    assert!(err.contains("payload digest") && err.contains("corrupt"), "{err}");
    // truncated
    let err = BaseRelease::read(&bytes[..bytes.len() / 2], &path).unwrap_err().to_string();
    assert!(err.contains("base release"), "{err}");
    // not a release at all
    let err = BaseRelease::read(b"hello world, this is not a release", &path).unwrap_err().to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
    // BaseModel::load names the file
    std::fs::write(&path, &flipped).unwrap();
    let err = BaseModel::load(&path, DeviceChoice::Cpu).unwrap_err().to_string();
    assert!(err.contains("x.safetensors") && err.contains("corrupt"), "{err}");
}

#[test]
fn a_recovery_adapter_for_another_release_is_refused() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 4);
    let ops = linear_ops(teacher.config());
    let (student, _) = palettized_student(teacher, &vec![4; ops.len()], method(), &seqs);
    let spec = RecoverySpec { steps: 2, batch: 2, ..RecoverySpec::default() };
    let (lora, _) = recover(teacher, &student, &seqs, &spec, &mut |_| {}).unwrap();
    let file = lora.to_safetensors().unwrap();
    let ours = Digest::of(b"release A");
    let other = Digest::of(b"release B");
    let bound = bind_recovery_adapter(&file, &ours).unwrap();
    check_recovery_adapter(&bound, &ours).unwrap();
    let err = check_recovery_adapter(&bound, &other).unwrap_err().to_string();
    assert!(err.contains("trained for base release") && err.contains(&other.to_string()), "{err}");
    let err = check_recovery_adapter(&file, &ours).unwrap_err().to_string();
    assert!(err.contains("names no base release"), "{err}");
    // binding keeps the adapter loadable
    let loaded = f.base.load_adapter(&bound).unwrap();
    assert_eq!(loaded.config().rank, 16);
}

/// A frozen release format: the committed file (made by this test with `ADAPTERCI_UPDATE_FIXTURES=1`) must keep
/// reading, with the same manifest and the same dequantized weights, and still load as a servable model.
fn frozen_release_still_reads(version: u32, method: Method) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = dir.join(format!("base_release_v{version}.safetensors"));
    let expected_path = dir.join(format!("base_release_v{version}.expected.json"));
    if std::env::var_os("ADAPTERCI_UPDATE_FIXTURES").is_some() {
        let f = fixture();
        let ops = linear_ops(f.base.llama().config());
        let bits: Vec<u8> = (0..ops.len()).map(|i| if i % 2 == 0 { 2 } else { 4 }).collect();
        let (bytes, _) = release_bytes_with(&f, &bits, method);
        std::fs::write(&path, &bytes).unwrap();
        let (release, _) = BaseRelease::open(&path).unwrap();
        let sums: Vec<(String, f64)> = ops
            .iter()
            .map(|op| {
                let w = release.palettized(&op.name()).unwrap().dequantize(Device::Cpu);
                (op.name(), w.abs().sum(tch::Kind::Double).double_value(&[]))
            })
            .collect();
        let expected = serde_json::json!({"linear_bpw": release.manifest.linear_bpw, "abs_sums": sums});
        std::fs::write(&expected_path, serde_json::to_vec_pretty(&expected).unwrap()).unwrap();
    }
    let (release, _) = BaseRelease::open(&path).unwrap();
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
    assert_eq!(release.manifest.format_version, version);
    assert_eq!(release.manifest.method.rotation, method.rotation);
    assert_eq!(release.manifest.linear_bpw, expected["linear_bpw"].as_f64().unwrap());
    for pair in expected["abs_sums"].as_array().unwrap() {
        let name = pair[0].as_str().unwrap();
        let got = release.palettized(name).unwrap().dequantize(Device::Cpu).abs().sum(tch::Kind::Double);
        let (got, want) = (got.double_value(&[]), pair[1].as_f64().unwrap());
        // table lookups are exact; the rotation back is a matmul, whose last bits depend on the CPU's kernels
        let tolerance = if method.rotation.is_some() { 1e-6 * want } else { 0.0 };
        assert!((got - want).abs() <= tolerance, "{name}: {got} vs {want}");
    }
    let model = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    assert!(model.name().contains("base release"));
}

#[test]
fn release_format_v1_fixture_still_reads() {
    frozen_release_still_reads(1, Method { rotation: None, ..method() });
}

/// Version 2 is v1 with rotated operations; its fixture also freezes the matrix a rotation's seed stands for.
#[test]
fn release_format_v2_fixture_still_reads() {
    frozen_release_still_reads(2, Method { rotation: Some(Rotation { seed: 5 }), ..method() });
}

#[test]
fn a_rotated_release_serves_rotated_back_and_a_reader_cannot_take_it_for_v1() {
    let f = fixture();
    let ops = linear_ops(f.base.llama().config());
    let bits: Vec<u8> = (0..ops.len()).map(|i| if i % 3 == 0 { 2 } else { 4 }).collect();
    let rotated = Method { rotation: Some(Rotation { seed: 5 }), ..method() };
    let (bytes, student) = release_bytes_with(&f, &bits, rotated);
    let path = f.dir.join("rotated.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let (release, _) = BaseRelease::open(&path).unwrap();
    assert_eq!(release.manifest.format_version, 2);
    assert_eq!(release.manifest.linear_bpw, average_bpw(&ops, &bits, method()), "a rotation costs no bits");
    for op in &ops {
        let p = release.palettized(&op.name()).unwrap();
        assert_eq!(p.spec.rotation, Some(Rotation { seed: 5 }), "{}", op.name());
        let diff = (p.dequantize(Device::Cpu) - student.linear_weight(op.layer, op.target)).abs().max();
        assert_eq!(diff.double_value(&[]), 0.0, "{}", op.name());
    }
    // an unrotated release is still written as version 1
    let (plain, _) = release_bytes_with(&f, &bits, Method { rotation: None, ..method() });
    assert_eq!(BaseRelease::read(&plain, &path).unwrap().manifest.format_version, 1);
    // the header says 1 (what a v1-only reader checks) while the manifest rotates
    let edit = |bytes: &[u8], from: &[u8], to: &[u8]| -> Vec<u8> {
        let at = bytes.windows(from.len()).position(|w| w == from).expect("the header has it");
        let mut edited = bytes.to_vec();
        edited[at..at + to.len()].copy_from_slice(to);
        edited
    };
    let header_v1 = edit(&bytes, br#""adapterci.format_version":"2""#, br#""adapterci.format_version":"1""#);
    let err = BaseRelease::read(&header_v1, &path).unwrap_err().to_string();
    assert!(err.contains("format_version 2 but adapterci.format_version is 1"), "{err}");
    let both_v1 = edit(&header_v1, br#"\"format_version\":2"#, br#"\"format_version\":1"#);
    let err = BaseRelease::read(&both_v1, &path).unwrap_err().to_string();
    assert!(
        err.contains("is rotated, which format version 1 cannot say") && err.contains("rotated.safetensors"),
        "{err}"
    );
    let future = edit(&bytes, br#""adapterci.format_version":"2""#, br#""adapterci.format_version":"3""#);
    let err = BaseRelease::read(&future, &path).unwrap_err().to_string();
    assert!(err.contains(r#"format version "3" is not supported"#), "{err}");
    // it serves: the release scores the same logits as the palettized student
    let served = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    let ids: Vec<u32> = f.base.tokenizer().encode("hello there, world", false);
    let want = {
        let t = tch::Tensor::from_slice(&ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()).unsqueeze(0);
        tch::no_grad(|| student.forward(&t, 0, None, None))
    };
    let want: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(want.squeeze_dim(0)).unwrap();
    let got = served.logits(&ids, None).unwrap();
    let max_diff = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-2, "max logit difference {max_diff}");
}

#[test]
fn the_user_corpus_makes_up_its_share_of_the_recovery_text() {
    let f = fixture();
    let teacher = teacher_sequences(&f.base, 12);
    let corpus = "The keeper wound the clock on Sundays and wrote the weather in the log. ".repeat(40);
    let none = recovery_text(&f.base, &teacher, None, 16, Some(0.5), 0).unwrap();
    assert_eq!((none.sequences.len(), none.user, none.repeats), (12, 0, 0));
    let once = recovery_text(&f.base, &teacher, Some(&corpus), 16, None, 0).unwrap();
    assert!(once.user > 0);
    assert_eq!((once.sequences.len(), once.repeats), (12 + once.user, 1));
    assert!(once.sequences[12..].iter().all(|s| s.len() == 16));
    // a share of 0.75 of 12 teacher sequences asks for ~36 user sequences: whole repeats of a smaller corpus
    let small = &corpus[..corpus.len() / 10];
    let share = recovery_text(&f.base, &teacher, Some(small), 16, Some(0.75), 0).unwrap();
    assert!(share.user < 36, "{} sequences", share.user);
    let wanted = 36.0 / share.user as f64;
    assert_eq!((share.repeats, share.teacher_repeats), (wanted.round().max(1.0) as usize, 1));
    assert!(share.repeats > 1);
    assert_eq!(share.sequences.len(), 12 + share.user * share.repeats);
    // a corpus larger than its share asks for is used whole, and the teacher's text is repeated to keep its
    // share: at 1/4, three teacher sequences per corpus sequence
    assert!(once.user > 8, "the test corpus must be larger than the share asks for");
    let part = recovery_text(&f.base, &teacher, Some(&corpus), 16, Some(0.25), 0).unwrap();
    let teacher_repeats = (3.0 * once.user as f64 / 12.0).round() as usize;
    assert!(teacher_repeats > 1);
    assert_eq!((part.user, part.repeats, part.teacher_repeats), (once.user, 1, teacher_repeats));
    assert_eq!(part.sequences.len(), 12 * teacher_repeats + once.user);
    assert_eq!(part.sequences[12 * teacher_repeats..], once.sequences[12..], "every corpus sequence, once");
    assert!(part.sequences.chunks(12).take(teacher_repeats).all(|c| c == teacher.as_slice()));
    let corpus_share = once.user as f64 / part.sequences.len() as f64;
    assert!((corpus_share - 0.25).abs() < 0.05, "corpus share {corpus_share}");
    let zero = recovery_text(&f.base, &teacher, Some(&corpus), 16, Some(0.0), 0).unwrap();
    assert_eq!((zero.user, zero.sequences.len()), (0, 12), "a share of 0 trains on the teacher's text alone");
    for bad in [1.0, -0.1, f64::NAN] {
        let err = recovery_text(&f.base, &teacher, Some(&corpus), 16, Some(bad), 0).unwrap_err().to_string();
        assert!(err.contains("user corpus share"), "{err}");
    }
    let err = recovery_text(&f.base, &teacher, Some("too short"), 512, None, 0).unwrap_err().to_string();
    assert!(err.contains("shorter than one 512-token sequence"), "{err}");
}

#[test]
fn validation_sequences_are_held_out_of_each_source_of_the_recovery_text() {
    let f = fixture();
    let teacher = teacher_sequences(&f.base, 40);
    let corpus: String =
        (0..120).map(|i| format!("Entry {i}: the keeper logged wind, rain and {} ships. ", i % 7)).collect();
    let all_user = chunk_tokens(f.base.tokenizer(), &corpus, 24);
    assert!(all_user.len() >= 30, "{} corpus sequences", all_user.len());
    let text = recovery_text(&f.base, &teacher, Some(&corpus), 24, None, 3).unwrap();
    let names: Vec<&str> = text.validation.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["teacher text", "user corpus"]);
    let (held_teacher, held_user) = (&text.validation[0].sequences, &text.validation[1].sequences);
    assert_eq!((held_teacher.len(), held_user.len()), (3, 3));
    // what is held out is not trained on, and nothing else is lost
    assert!(held_teacher.iter().chain(held_user).all(|s| !text.sequences.contains(s)));
    assert_eq!(text.sequences.len(), 37 + all_user.len() - 3);
    assert_eq!(text.user, all_user.len() - 3);
    assert!(held_user.iter().all(|s| all_user.contains(s)) && held_teacher.iter().all(|s| teacher.contains(s)));
    // the share is taken of the teacher text that trains: 0.9 of 37 teacher sequences asks for 333 of the
    // corpus's, repeats of what is left of it after the held-out three
    let share = recovery_text(&f.base, &teacher, Some(&corpus), 24, Some(0.9), 3).unwrap();
    let left = all_user.len() - 3;
    assert_eq!((share.user, share.repeats, share.teacher_repeats), (left, (333.0 / left as f64).round() as usize, 1));
    // a source too small to spare a tenth holds nothing out (and gets no set)
    let small = recovery_text(&f.base, &teacher[..9], None, 24, None, 3).unwrap();
    assert!(small.validation.is_empty());
    assert_eq!(small.sequences.len(), 9);
    assert!(text.describe(24).contains("3 held out of the user corpus"), "{}", text.describe(24));
    assert_eq!(hold_out(teacher.clone(), 0).0, teacher);
}

#[test]
fn recovery_scores_its_held_out_sets_as_it_trains_and_they_improve() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 40);
    let ops = linear_ops(teacher.config());
    let (student, parts) = palettized_student(teacher, &vec![2; ops.len()], method(), &seqs);
    let text = recovery_text(&f.base, &seqs, None, 24, None, 4).unwrap();
    assert_eq!(text.validation[0].sequences.len(), 4);
    let spec = RecoverySpec { steps: 30, batch: 4, learning_rate: 5e-3, validate_every: 10, ..RecoverySpec::default() };
    let mut reported = Vec::new();
    let done = recover_palettized(teacher, &student, &parts, None, &text, &spec, &mut |p| {
        reported.extend(p.validation.iter().map(|v| (p.step, v.step)));
    })
    .unwrap();
    let curve = &done.report.validation;
    // before the first step, every 10 steps, and after the last (30 is both: scored once)
    assert_eq!(curve.iter().map(|p| p.step).collect::<Vec<_>>(), [0, 10, 20, 30]);
    assert!(curve.iter().all(|p| p.set == "teacher text"));
    assert_eq!(reported, [(0, 0), (10, 10), (20, 20), (30, 30)], "progress carries each validation");
    // the start is the palettized base as it is; the end is what the adapter serves
    let start = compare(teacher, &student, None, &text.validation[0].sequences, 4).unwrap();
    assert!((curve[0].kl - start.kl_divergence).abs() < 1e-6 * start.kl_divergence.max(1.0));
    let end = compare(teacher, &done.student, Some(&done.lora), &text.validation[0].sequences, 4).unwrap();
    assert!((curve[3].kl - end.kl_divergence).abs() < 1e-6 * end.kl_divergence.max(1.0));
    assert!(curve[3].kl < 0.9 * curve[0].kl, "held-out KL {} -> {}", curve[0].kl, curve[3].kl);
    assert_eq!(done.report.final_validation().len(), 1);
    // a report keeps its curve, and one written before validation existed still reads
    let json = serde_json::to_value(&done.report).unwrap();
    assert_eq!(json["validation"].as_array().map(Vec::len), Some(4));
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("validation");
    let read: adapterci_engine::recover::RecoveryReport = serde_json::from_value(old).unwrap();
    assert!(read.validation.is_empty());
    // a budget that ends between validations still scores the end
    let short = RecoverySpec { steps: 7, ..spec.clone() };
    let done = recover_palettized(teacher, &student, &parts, None, &text, &short, &mut |_| {}).unwrap();
    assert_eq!(done.report.validation.iter().map(|p| p.step).collect::<Vec<_>>(), [0, 7]);
    // a run killed after a checkpoint resumes with the curve it had: each point once, the same scores
    let dir = f.dir.join("ckpt-validation");
    let spec = RecoverySpec { checkpoint_every: 10, checkpoint_dir: Some(dir), ..spec };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recover_palettized(teacher, &student, &parts, None, &text, &spec, &mut |p| {
            if p.step == 15 {
                panic!("simulated kill");
            }
        })
    }));
    let resumed = recover_palettized(teacher, &student, &parts, None, &text, &spec, &mut |_| {}).unwrap();
    assert_eq!(resumed.report.resumed_from, Some(10));
    let steps: Vec<usize> = resumed.report.validation.iter().map(|p| p.step).collect();
    assert_eq!(steps, [0, 10, 20, 30]);
    assert_eq!(resumed.report.validation[..2], curve[..2], "the points before the checkpoint are the ones scored then");
}

#[test]
fn the_calibration_statistics_take_in_the_user_corpus() {
    let f = fixture();
    let options = BuildOptions {
        teacher: TeacherTextSpec { sequences: 16, seq_len: 24, batch: 8, temperature: 1.0, seed: 3 },
        ..BuildOptions::default()
    };
    let alone = calibrate(&f.base, &options, None, &mut |_| {}).unwrap();
    // a quarter of the teacher's 16 sequences
    assert_eq!((alone.calibration.len(), alone.hessians.tokens), (4, 4 * 24));
    let corpus = "The keeper wound the clock on Sundays and wrote the weather in the log. ".repeat(40);
    let with = calibrate(&f.base, &options, Some(&corpus), &mut |_| {}).unwrap();
    assert_eq!(with.sequences, alone.sequences, "the teacher's text does not depend on the corpus");
    assert_eq!((with.calibration.len(), with.hessians.tokens), (8, 8 * 24));
    let chunks = chunk_tokens(f.base.tokenizer(), &corpus, 24);
    assert!(with.calibration[4..].iter().all(|s| chunks.contains(s)), "the added sequences come from the corpus");
    let (a, b) = (alone.hessians.get(0, LoraTarget::Q).unwrap(), with.hessians.get(0, LoraTarget::Q).unwrap());
    assert!(!a.allclose(b, 1e-3, 1e-3, false), "the statistics changed");
    let err = calibrate(&f.base, &options, Some("too short"), &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("shorter than one 24-token sequence"), "{err}");
}

#[test]
fn teacher_text_is_kept_per_model_and_spec_and_a_bad_cache_file_is_written_again() {
    let f = fixture();
    let cache = f.dir.join("teacher-cache");
    let spec = TeacherTextSpec { sequences: 6, seq_len: 20, batch: 4, temperature: 1.0, seed: 5 };
    let run = |spec: &TeacherTextSpec| {
        let mut notes = Vec::new();
        let text = cached_teacher_text(&f.base, spec, Some(&cache), &mut |n| notes.push(n.to_string())).unwrap();
        (text, notes.join("\n"))
    };
    let (written, notes) = run(&spec);
    assert!(!notes.contains("from"), "{notes}");
    assert_eq!(written, cached_teacher_text(&f.base, &spec, None, &mut |_| {}).unwrap(), "the same text as uncached");
    let files: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let vocab = f.base.config().vocab_size as u32;

    // the second run reads the file: an edit to it shows up in what it returns
    let json = std::fs::read_to_string(file).unwrap();
    let edited = json.replacen(&format!("[{},", written[0][0]), &format!("[{},", (written[0][0] + 1) % vocab), 1);
    assert_ne!(edited, json);
    std::fs::write(file, &edited).unwrap();
    let (read, notes) = run(&spec);
    assert!(notes.contains("teacher text: 6 sequences from"), "{notes}");
    assert_eq!(read[0][0], (written[0][0] + 1) % vocab);
    assert_eq!(read[1..], written[1..]);

    // another spec is another file
    let other = TeacherTextSpec { seed: 6, ..spec.clone() };
    let (other_text, notes) = run(&other);
    assert!(!notes.contains("from"), "{notes}");
    assert_ne!(other_text, written);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);

    // a truncated file, a file of another spec under this spec's name and out-of-vocabulary ids are noted and
    // written again
    let truncated = json[..json.len() / 2].to_string();
    let foreign = std::fs::read_to_string(
        cache.join(std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).find(|p| p != file).unwrap()),
    )
    .unwrap();
    let out_of_vocab = json.replacen(&format!("[{},", written[0][0]), &format!("[{vocab},"), 1);
    for (bad, why) in [
        (truncated, "not a teacher-text cache"),
        (foreign, "another teacher spec"),
        (out_of_vocab, "outside the model's"),
    ] {
        std::fs::write(file, bad).unwrap();
        let (again, notes) = run(&spec);
        assert!(notes.contains("ignoring") && notes.contains(why), "{notes}");
        assert_eq!(again, written);
        assert_eq!(std::fs::read_to_string(file).unwrap(), json, "the file is written again");
    }
}

#[test]
fn a_release_with_activation_bits_serves_with_quantized_inputs_and_refuses_bad_bits() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 4);
    let ops = linear_ops(teacher.config());
    let (_, parts) = palettized_student(teacher, &vec![4; ops.len()], method(), &seqs);
    let options = |bits| BuildOptions { method: method(), activation_bits: bits, ..BuildOptions::default() };
    let plain = release_file(&f.base, &options(None), parts.clone(), None).unwrap();
    let int8 = release_file(&f.base, &options(Some(8)), parts.clone(), None).unwrap();
    let (plain_path, int8_path) = (f.dir.join("plain.safetensors"), f.dir.join("int8.safetensors"));
    std::fs::write(&plain_path, &plain).unwrap();
    std::fs::write(&int8_path, &int8).unwrap();
    let (release, _) = BaseRelease::open(&int8_path).unwrap();
    assert_eq!(release.manifest.activation_bits, Some(8));
    assert_eq!(BaseRelease::open(&plain_path).unwrap().0.manifest.activation_bits, None);
    let served = BaseModel::load(&int8_path, DeviceChoice::Cpu).unwrap();
    assert_eq!(served.llama().activation_bits(), Some(8));
    let ids: Vec<u32> = f.base.tokenizer().encode("hello there, world", false);
    let quantized = served.logits(&ids, None).unwrap();
    let full = BaseModel::load(&plain_path, DeviceChoice::Cpu).unwrap().logits(&ids, None).unwrap();
    let diff = quantized.iter().flatten().zip(full.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 0.0 && diff.is_finite(), "int8 inputs change the logits a little: {diff}");
    // out of range when writing, and in a file whose manifest was edited
    let err = release_file(&f.base, &options(Some(3)), parts, None).unwrap_err().to_string();
    assert!(err.contains("activation_bits 3 is out of range"), "{err}");
    let needle = b"\\\"activation_bits\\\":8";
    let at = int8.windows(needle.len()).position(|w| w == needle).expect("the manifest names activation_bits");
    let mut edited = int8.clone();
    edited[at + needle.len() - 1] = b'9';
    let err = BaseRelease::read(&edited, &int8_path).unwrap_err().to_string();
    assert!(err.contains("activation_bits 9 is out of range") && err.contains("int8.safetensors"), "{err}");
}

#[test]
fn trainable_palettes_start_at_the_release_and_store_back_exactly() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 4);
    let ops = linear_ops(teacher.config());
    let bits: Vec<u8> = (0..ops.len()).map(|i| if i % 3 == 0 { 2 } else { 4 }).collect();
    // rotated too: the trained weight is served rotated back like the release's
    for method in [method(), Method { rotation: Some(Rotation { seed: 2 }), ..method() }] {
        let (student, parts) = palettized_student(teacher, &bits, method, &seqs);
        let trainable = TrainablePalettes::new(&ops, &parts, Device::Cpu).unwrap();
        assert_eq!(trainable.to_parts().unwrap(), parts, "untrained, the stored form is the release's, bit for bit");
        let mut applied = teacher.shallow_copy();
        trainable.apply(&mut applied).unwrap();
        for op in &ops {
            let diff =
                (applied.linear_weight(op.layer, op.target) - student.linear_weight(op.layer, op.target)).abs().max();
            assert_eq!(diff.double_value(&[]), 0.0, "{} ({})", op.name(), method.label());
            assert!(applied.linear_weight(op.layer, op.target).requires_grad(), "{} trains", op.name());
        }
    }
    let (_, parts) = palettized_student(teacher, &bits, method(), &seqs);
    // refusals: a missing operation, a part of the wrong shape
    let err = TrainablePalettes::new(&ops, &parts[1..], Device::Cpu).unwrap_err().to_string();
    assert!(err.contains(&format!("{} palettized operations for {} linear operations", ops.len() - 1, ops.len())));
    let mut swapped = parts.clone();
    swapped.swap(0, 4); // q and gate differ in shape
    let err = TrainablePalettes::new(&ops, &swapped, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains(&ops[0].name()) && err.contains("palettized"), "{err}");
}

#[test]
fn recovery_that_trains_the_palettes_ends_closer_and_its_release_serves_what_was_scored() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 16);
    let plain = RecoveryText::plain(seqs.clone());
    let ops = linear_ops(teacher.config());
    let bits: Vec<u8> = (0..ops.len()).map(|i| if i % 2 == 0 { 2 } else { 4 }).collect();
    let (student, parts) = palettized_student(teacher, &bits, method(), &seqs);
    let frozen = RecoverySpec { steps: 30, batch: 4, learning_rate: 5e-3, ..RecoverySpec::default() };
    let trained = RecoverySpec { palette_learning_rate: Some(1e-3), ..frozen.clone() };
    let (lora, _) = recover(teacher, &student, &seqs, &frozen, &mut |_| {}).unwrap();
    let lora_only = compare(teacher, &student, Some(&lora), &seqs, 4).unwrap();
    let done = recover_palettized(teacher, &student, &parts, None, &plain, &trained, &mut |_| {}).unwrap();
    let both = compare(teacher, &done.student, Some(&done.lora), &seqs, 4).unwrap();
    assert!(
        both.kl_divergence < lora_only.kl_divergence,
        "KL with trained palettes {} vs adapter alone {}",
        both.kl_divergence,
        lora_only.kl_divergence
    );
    // the same bits, new tables (sorted) and scales
    assert_eq!(done.palettes.len(), parts.len());
    let mut changed = 0;
    for (new, old) in done.palettes.iter().zip(&parts) {
        assert_eq!((new.spec, new.storage_bits()), (old.spec, old.storage_bits()));
        new.validate().unwrap();
        let k = new.spec.entries();
        assert!(new.lut.chunks(k).all(|t| t.windows(2).all(|w| w[0] <= w[1])), "tables stay sorted");
        changed += usize::from(new.lut != old.lut || new.scales != old.scales);
    }
    assert_eq!(changed, parts.len(), "every operation's tables or scales moved");
    // the returned student is the trained palettes, dequantized
    for (op, p) in ops.iter().zip(&done.palettes) {
        let diff = (p.dequantize(Device::Cpu) - done.student.linear_weight(op.layer, op.target)).abs().max();
        assert_eq!(diff.double_value(&[]), 0.0, "{}", op.name());
    }
    // a release written from them serves the scored model (norms and embedding as f16 aside)
    let options = BuildOptions { method: method(), ..BuildOptions::default() };
    let path = f.dir.join("trained.safetensors");
    std::fs::write(&path, release_file(&f.base, &options, done.palettes.clone(), None).unwrap()).unwrap();
    let served = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    let ids: Vec<u32> = f.base.tokenizer().encode("hello there, world", false);
    let want = {
        let t = tch::Tensor::from_slice(&ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>()).unsqueeze(0);
        Vec::<Vec<f32>>::try_from(tch::no_grad(|| done.student.forward(&t, 0, None, None)).squeeze_dim(0)).unwrap()
    };
    let got = served.logits(&ids, None).unwrap();
    let max_diff = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-2, "max logit difference {max_diff}");
    // refusals: recover() cannot train palettes it does not have; a rate must be positive
    let err = recover(teacher, &student, &seqs, &trained, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("recover_palettized"), "{err}");
    for rate in [0.0, -1e-3, f64::NAN] {
        let bad = RecoverySpec { palette_learning_rate: Some(rate), ..frozen.clone() };
        let err =
            recover_palettized(teacher, &student, &parts, None, &plain, &bad, &mut |_| {}).err().unwrap().to_string();
        assert!(err.contains("palette learning rate"), "{err}");
    }
    // without a palette rate the palettes come back as they were
    let same =
        recover_palettized(teacher, &student, &parts, None, &plain, &RecoverySpec { steps: 1, ..frozen }, &mut |_| {});
    assert_eq!(same.unwrap().palettes, parts);
}

#[test]
fn recovery_with_trained_palettes_resumes_them_from_its_checkpoint() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 8);
    let plain = RecoveryText::plain(seqs.clone());
    let ops = linear_ops(teacher.config());
    let (student, parts) = palettized_student(teacher, &vec![4; ops.len()], method(), &seqs);
    let dir = f.dir.join("ckpt-palettes");
    let spec = RecoverySpec {
        steps: 12,
        batch: 2,
        checkpoint_every: 4,
        checkpoint_dir: Some(dir.clone()),
        palette_learning_rate: Some(1e-3),
        ..RecoverySpec::default()
    };
    let kill_at = |step: usize| {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            recover_palettized(teacher, &student, &parts, None, &plain, &spec, &mut |p| {
                if p.step == step {
                    panic!("simulated kill");
                }
            })
        }));
    };
    kill_at(9);
    // the checkpoint of step 8 holds trained tables: a resumed run starts from them
    let saved = tch::Tensor::read_safetensors(dir.join("recovery-palettes.safetensors")).unwrap();
    let lut = &saved.iter().find(|(n, _)| *n == format!("{}.lut", ops[0].name())).unwrap().1;
    let start = TrainablePalettes::new(&ops, &parts, Device::Cpu).unwrap().state();
    assert!(!lut.allclose(&start[0].1, 0.0, 0.0, false), "the checkpoint carries the trained tables");
    let done = recover_palettized(teacher, &student, &parts, None, &plain, &spec, &mut |_| {}).unwrap();
    assert_eq!(done.report.resumed_from, Some(8));
    assert_eq!(done.report.steps, 12);
    // with the palettes' own optimizer state: the adapter and the palettes of a run never interrupted
    let whole = RecoverySpec { checkpoint_every: 0, checkpoint_dir: None, ..spec.clone() };
    let want = recover_palettized(teacher, &student, &parts, None, &plain, &whole, &mut |_| {}).unwrap();
    assert_same_curve(&done.report.kl_curve, &want.report.kl_curve);
    assert_same_tensors("adapter", &done.lora.trainable_parameters(), &want.lora.trainable_parameters());
    let weights = |model: &Llama| {
        ops.iter().map(|op| model.linear_weight(op.layer, op.target).shallow_clone()).collect::<Vec<_>>()
    };
    assert_same_tensors("palettized weight", &weights(&done.student), &weights(&want.student));
    // a checkpoint without its palettes is refused by name, not silently restarted
    std::fs::remove_dir_all(&dir).unwrap();
    kill_at(5);
    std::fs::remove_file(dir.join("recovery-palettes.safetensors")).unwrap();
    let err =
        recover_palettized(teacher, &student, &parts, None, &plain, &spec, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("recovery-palettes.safetensors") && err.contains("palette checkpoint"), "{err}");
}

#[test]
fn a_calibrated_start_corrects_part_of_the_palettization_error_before_any_step() {
    let f = fixture();
    let teacher = f.base.llama();
    let seqs = teacher_sequences(&f.base, 16);
    let plain = RecoveryText::plain(seqs.clone());
    let ops = linear_ops(teacher.config());
    let (student, parts) = palettized_student(teacher, &vec![2; ops.len()], method(), &seqs);
    let hessians = collect_hessians(teacher, &seqs, 4).unwrap();
    let spec = RecoverySpec { steps: 1, batch: 4, calibrated_init: true, ..RecoverySpec::default() };
    let config = recovery_config(&student, &spec);
    let init = calibrated_init(&config, teacher, &student, &hessians).unwrap();
    // every pair is a rank-16 correction that lowers its operation's output error on the calibration inputs
    for op in &ops {
        let (a, b) = init.get(op.layer, op.target).unwrap();
        assert_eq!((a.size(), b.size()), (vec![16, op.cols as i64], vec![op.rows as i64, 16]));
        let h = hessians.get(op.layer, op.target).unwrap();
        let error = teacher.linear_weight(op.layer, op.target) - student.linear_weight(op.layer, op.target);
        let output_error = |e: &tch::Tensor| (e.matmul(h) * e).sum(tch::Kind::Double).double_value(&[]);
        let corrected = &error - b.matmul(a) * init.scale();
        let (before, after) = (output_error(&error), output_error(&corrected));
        assert!(after < 0.9 * before, "{}: output error {before} -> {after}", op.name());
    }
    // A's rows and B's columns start at equal norms, whatever the statistics' scale (twice the text: twice XᵀX)
    let doubled: Vec<Vec<u32>> = seqs.iter().chain(&seqs).cloned().collect();
    let twice = calibrated_init(&config, teacher, &student, &collect_hessians(teacher, &doubled, 4).unwrap()).unwrap();
    for op in &ops {
        let (a, b) = init.get(op.layer, op.target).unwrap();
        let rows = a.norm_scalaropt_dim(2, [1].as_slice(), false);
        let cols = b.norm_scalaropt_dim(2, [0].as_slice(), false);
        assert!(rows.allclose(&cols, 1e-4, 1e-6, false), "{}: {rows} vs {cols}", op.name());
        // (each component's sign is the SVD's choice: compare the norms and the product)
        let (a2, b2) = twice.get(op.layer, op.target).unwrap();
        let rows2 = a2.norm_scalaropt_dim(2, [1].as_slice(), false);
        assert!(rows.allclose(&rows2, 1e-3, 1e-6, false), "{}: {rows} vs {rows2}", op.name());
        assert!(b.matmul(a).allclose(&b2.matmul(a2), 1e-3, 1e-6, false), "{}", op.name());
    }
    let before = compare(teacher, &student, None, &seqs, 4).unwrap();
    let started = compare(teacher, &student, Some(&init), &seqs, 4).unwrap();
    assert!(
        started.kl_divergence < 0.9 * before.kl_divergence,
        "KL {} -> {} from the start alone",
        before.kl_divergence,
        started.kl_divergence
    );
    // the recovery starts there: its first batch's KL is below a standard start's
    let first_kl = |spec: &RecoverySpec| {
        let done = recover_palettized(
            teacher,
            &student,
            &parts,
            Some(&hessians),
            &RecoveryText::plain(seqs.clone()),
            spec,
            &mut |_| {},
        )
        .unwrap();
        done.report.kl_curve[0].1
    };
    let standard = RecoverySpec { calibrated_init: false, ..spec.clone() };
    assert!(first_kl(&spec) < first_kl(&standard), "{} vs {}", first_kl(&spec), first_kl(&standard));
    // without the statistics it is refused by name
    let err = recover(teacher, &student, &seqs, &spec, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("calibration statistics"), "{err}");
    let err = recover_palettized(teacher, &student, &parts, None, &plain, &spec, &mut |_| {}).err().unwrap();
    assert!(err.to_string().contains("calibration statistics"), "{err}");
}
