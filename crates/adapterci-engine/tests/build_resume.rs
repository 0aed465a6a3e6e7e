//! Resumable base-release builds on the tiny model: a rerun reads back the palettized base that an interrupted
//! build kept (and only one of the same inputs), a corrupt cache is reported and built again, and a resumed
//! recovery takes the steps an uninterrupted one takes (its optimizer's state and schedule restored, even after a
//! kill between a checkpoint's files), goes on with the time budget its checkpoint left, and still resumes a
//! checkpoint written before the optimizer's state was kept; a rerun on other training text (another user corpus
//! share, another evaluation split) starts afresh and says why, and a checkpoint of other text is never resumed;
//! the text's digest that names a build's checkpoint folder is the one its recovery records, that of the text it
//! trains on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use adapterci_engine::allocate::{Method, Sensitivity, linear_ops, palettize_op};
use adapterci_engine::calibrate::{TeacherTextSpec, collect_hessians, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoveryProgress, RecoveryReport, RecoverySpec, recover};
use adapterci_engine::release_build::{BuildOptions, BuildReport, build_release, cached_teacher_text, recovery_text};
use adapterci_engine::tiny::write_tiny_model;
use adapterci_engine::train::learning_rate_at;

struct Fixture {
    base: BaseModel,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    fixture_of(21)
}

fn fixture_of(seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, seed).unwrap();
    let base = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    Fixture { base, dir: dir.path().to_path_buf(), _dir: dir }
}

/// Build options on the tiny model keeping their state under `state` (teacher text, palettized base and, when
/// `checkpoints`, the recovery's checkpoints every 2 steps).
fn options(state: &Path, checkpoints: bool) -> BuildOptions {
    BuildOptions {
        method: Method { group_rows: 8, group_rows_2bit: 4, ..Method::default() },
        teacher: TeacherTextSpec { sequences: 20, seq_len: 24, batch: 10, temperature: 1.0, seed: 1 },
        recovery: RecoverySpec {
            steps: 6,
            batch: 2,
            checkpoint_every: if checkpoints { 2 } else { 0 },
            checkpoint_dir: checkpoints.then(|| state.join("checkpoints")),
            calibrated_init: true,
            ..RecoverySpec::default()
        },
        teacher_cache: Some(state.join("teacher-cache")),
        palettized_cache: Some(state.join("palettized")),
        ..BuildOptions::default()
    }
}

/// What one build said, and its report when it was not stopped.
struct Build {
    notes: Vec<String>,
    report: Option<BuildReport>,
}

impl Build {
    /// How many progress notes start with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.notes.iter().filter(|n| n.starts_with(prefix)).count()
    }

    /// Whether this build palettized (rather than read the palettized base back).
    fn palettized(&self) -> bool {
        assert_eq!(self.count("sensitivity:") > 0, self.count("palettizing:") > 0, "{:#?}", self.notes);
        self.count("palettizing:") == 1
    }

    fn notes(&self) -> String {
        self.notes.join("\n")
    }
}

/// `build_release` stopped (as a kill would) when its recovery reports step `stop_at`.
fn build(base: &BaseModel, options: &BuildOptions, corpus: Option<&str>, stop_at: Option<usize>) -> Build {
    build_evaluated(base, options, None, corpus, stop_at)
}

/// [`build`] evaluated on `eval_text` when given.
fn build_evaluated(
    base: &BaseModel,
    options: &BuildOptions,
    eval_text: Option<&str>,
    corpus: Option<&str>,
    stop_at: Option<usize>,
) -> Build {
    let mut notes = Vec::new();
    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        build_release(base, options, eval_text, corpus, &mut |n| notes.push(n.to_string()), &mut |p| {
            if Some(p.step) == stop_at {
                panic!("simulated kill");
            }
        })
        .unwrap()
        .report
    }))
    .ok();
    Build { notes, report }
}

/// The cache's files (release and record per key).
fn cache_files(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(state.join("palettized")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn an_interrupted_build_reads_its_palettized_base_back_and_goes_straight_to_recovery() {
    let f = fixture();
    let state = f.dir.join("state");
    let options = options(&state, true);
    // killed in the recovery's first step: palettized, and kept, before any checkpoint
    let first = build(&f.base, &options, None, Some(1));
    assert!(first.report.is_none() && first.palettized());
    let files = cache_files(&state);
    assert_eq!(files.len(), 2, "the release and its record: {files:?}");

    // restarted: no sensitivities, no palettization; the statistics again only for the calibrated start (no
    // checkpoint yet); killed after the checkpoint of step 4
    let second = build(&f.base, &options, None, Some(5));
    assert!(second.report.is_none() && !second.palettized(), "{}", second.notes());
    assert_eq!(second.count("palettized base: reused from "), 1, "{}", second.notes());
    assert_eq!(second.count("calibration: input statistics"), 1, "{}", second.notes());

    // restarted again: straight to the checkpoint of step 4, not even the statistics
    let third = build(&f.base, &options, None, None);
    let report = third.report.as_ref().unwrap();
    assert!(!third.palettized(), "{}", third.notes());
    assert_eq!(third.count("calibration: input statistics"), 0, "{}", third.notes());
    assert_eq!(report.recovery.resumed_from, Some(4));
    assert_eq!(report.recovery.steps, 6);

    // what was read back is what palettizing gives: the same release, allocation and palettized model
    let fresh = build(&f.base, &BuildOptions { palettized_cache: None, ..options.clone() }, None, None);
    let fresh = fresh.report.unwrap();
    let cached = std::fs::read(files.iter().find(|p| p.extension().unwrap() == "safetensors").unwrap()).unwrap();
    assert_eq!(report.release_digest, adapterci_core::Digest::of(&cached));
    assert_eq!(report.release_digest, fresh.release_digest);
    assert_eq!(report.analysis, fresh.analysis);
    assert_eq!(report.palettized, fresh.palettized);

    // and the recovery, interrupted twice, is the one a build never interrupted trains
    let whole = build(&f.base, &crate::options(&f.dir.join("whole"), false), None, None).report.unwrap();
    assert_eq!(whole.recovery.resumed_from, None);
    assert_same_curve(&report.recovery.kl_curve, &whole.recovery.kl_curve);
    assert_eq!(report.recovery_adapter_digest, whole.recovery_adapter_digest, "the same adapter, as stored");
}

/// `(step, KL)` curves with the same steps and each KL within 1e-6 of the other's (relative).
fn assert_same_curve(got: &[(usize, f64)], want: &[(usize, f64)]) {
    let steps = |curve: &[(usize, f64)]| curve.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(steps(got), steps(want));
    for (&(step, a), &(_, b)) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "step {step}: KL {a} vs {b} uninterrupted");
    }
}

/// The largest difference between the adapters' f32 tensors.
fn adapter_difference(a: &LoraWeights, b: &LoraWeights) -> f64 {
    let (a, b) = (a.trainable_parameters(), b.trainable_parameters());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(a, b)| (a - b).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn a_corrupt_palettized_cache_is_reported_and_built_again() {
    let f = fixture();
    let state = f.dir.join("state");
    let options = BuildOptions {
        recovery: RecoverySpec { steps: 2, ..options(&state, false).recovery },
        ..options(&state, false)
    };
    assert!(build(&f.base, &options, None, None).palettized());
    let files = cache_files(&state);
    let (record, release) = (&files[0], &files[1]);
    assert!(record.extension().unwrap() == "json" && release.extension().unwrap() == "safetensors");
    let (record_bytes, release_bytes) = (std::fs::read(record).unwrap(), std::fs::read(release).unwrap());
    assert!(!build(&f.base, &options, None, None).palettized(), "intact, it is read back");

    let mut flipped = release_bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let cases: [(&Path, Option<Vec<u8>>, &str); 4] = [
        (release, Some(release_bytes[..release_bytes.len() / 2].to_vec()), "truncated or corrupt"),
        (release, Some(flipped), "truncated or corrupt"),
        (release, None, "reading it"),
        (record, Some(record_bytes[..record_bytes.len() - 10].to_vec()), "record is unreadable"),
    ];
    for (path, bad, why) in cases {
        match bad {
            Some(bytes) => std::fs::write(path, bytes).unwrap(),
            None => std::fs::remove_file(path).unwrap(),
        }
        let again = build(&f.base, &options, None, None);
        let notes = again.notes();
        assert!(notes.contains("palettized base: ignoring the cached") && notes.contains(why), "{why}: {notes}");
        assert!(again.palettized() && again.report.is_some(), "{why}: {notes}");
        assert_eq!(std::fs::read(release).unwrap(), release_bytes, "{why}: the release is written again");
        assert!(!build(&f.base, &options, None, None).palettized(), "{why}: and read back after");
    }
}

#[test]
fn a_palettized_base_is_reused_for_the_same_inputs_only() {
    let f = fixture();
    let state = f.dir.join("state");
    let base_options = options(&state, false);
    let options = BuildOptions { recovery: RecoverySpec { steps: 1, ..base_options.recovery.clone() }, ..base_options };
    assert!(build(&f.base, &options, None, None).palettized());
    // a recovery that trains otherwise starts from the same palettized base
    let recovery = RecoverySpec { steps: 2, learning_rate: 5e-4, ..options.recovery.clone() };
    assert!(!build(&f.base, &BuildOptions { recovery, ..options.clone() }, None, None).palettized());

    let corpus = "Order from Ana Silva: 3 x red cup, ship to Porto. ".repeat(20);
    let others = [
        ("another bits target", BuildOptions { target_bpw: 3.0, ..options.clone() }, None),
        (
            "another method",
            BuildOptions { method: Method { group_rows: 4, ..options.method }, ..options.clone() },
            None,
        ),
        (
            "other calibration text",
            BuildOptions { teacher: TeacherTextSpec { seed: 2, ..options.teacher.clone() }, ..options.clone() },
            None,
        ),
        ("other sensitivities", BuildOptions { sensitivity: Sensitivity::TwoBit, ..options.clone() }, None),
        ("a user corpus", options.clone(), Some(corpus.as_str())),
    ];
    for (what, other, corpus) in &others {
        assert!(build(&f.base, other, *corpus, None).palettized(), "{what} palettizes again");
    }
    let other_model = fixture_of(22);
    assert!(build(&other_model.base, &options, None, None).palettized(), "another source model palettizes again");
    assert_eq!(cache_files(&state).len(), 2 * (2 + others.len()), "a release and a record for each");
    // and each of them is now kept beside the first
    assert!(!build(&f.base, &options, None, None).palettized());
    assert!(!build(&f.base, &others[4].1, others[4].2, None).palettized());
}

/// The text the recoveries of [`recover_with`] train on.
fn recovery_sequences(f: &Fixture) -> Vec<Vec<u32>> {
    let prompts = prompt_ids(f.base.tokenizer(), None).unwrap();
    let spec_text = TeacherTextSpec { sequences: 8, seq_len: 24, batch: 8, temperature: 1.0, seed: 3 };
    teacher_text(f.base.llama(), &prompts, &spec_text, &mut |_, _| {}).unwrap()
}

/// A recovery of the tiny model palettized at 4 bits, stopped (as a kill would) when it reports step `stop_at`:
/// what it trained when it finished, and its progress.
fn recover_with(
    f: &Fixture,
    spec: &RecoverySpec,
    stop_at: Option<usize>,
) -> (Option<(LoraWeights, RecoveryReport)>, Vec<RecoveryProgress>) {
    let teacher = f.base.llama();
    let seqs = recovery_sequences(f);
    let hessians = collect_hessians(teacher, &seqs, 4).unwrap();
    let mut student = teacher.shallow_copy();
    for op in linear_ops(teacher.config()) {
        let p = palettize_op(teacher, Some(&hessians), &op, 4, Method { group_rows: 8, ..Method::default() }).unwrap();
        student.set_linear_weight(op.layer, op.target, p.dequantize(tch::Device::Cpu)).unwrap();
    }
    let mut progress = Vec::new();
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recover(teacher, &student, &seqs, spec, &mut |p| {
            progress.push(p.clone());
            if Some(p.step) == stop_at {
                panic!("simulated kill");
            }
        })
        .unwrap()
    }))
    .ok();
    (done, progress)
}

/// The recovery spec of the resume tests: 12 steps, a checkpoint every 4 into `dir`.
fn checkpointed(dir: &Path) -> RecoverySpec {
    RecoverySpec {
        steps: 12,
        batch: 2,
        checkpoint_every: 4,
        checkpoint_dir: Some(dir.to_path_buf()),
        ..RecoverySpec::default()
    }
}

/// The adapter and report of `spec`'s recovery run whole, without checkpoints.
fn uninterrupted(f: &Fixture, spec: &RecoverySpec) -> (LoraWeights, RecoveryReport) {
    let whole = RecoverySpec { checkpoint_every: 0, checkpoint_dir: None, ..spec.clone() };
    recover_with(f, &whole, None).0.unwrap()
}

/// The names of the files in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn a_resumed_recovery_takes_the_steps_of_an_uninterrupted_one_even_after_a_kill_between_checkpoint_files() {
    let f = fixture();
    let dir = f.dir.join("ckpt");
    let spec = checkpointed(&dir);
    let (whole_lora, whole_report) = uninterrupted(&f, &spec);

    // killed after step 5, then (resumed from step 4) after step 9: the checkpoint of step 8 is its record, the
    // adapter and its optimizer's state of step 8; step 4's optimizer file went when step 8's record was written
    assert!(recover_with(&f, &spec, Some(5)).0.is_none());
    let adapter_of_step_4 = std::fs::read(dir.join("recovery-checkpoint.safetensors")).unwrap();
    let optimizer_of_step_4 = std::fs::read(dir.join("recovery-optimizer-00000004.safetensors")).unwrap();
    assert!(recover_with(&f, &spec, Some(9)).0.is_none());
    assert_eq!(
        names_in(&dir),
        ["recovery-checkpoint.json", "recovery-checkpoint.safetensors", "recovery-optimizer-00000008.safetensors"]
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("recovery-checkpoint.json")).unwrap()).unwrap();
    assert_eq!((record["step"].as_u64(), record["total_steps"].as_u64()), (Some(8), Some(12)), "{record}");

    // a kill while the next checkpoint is written leaves its adapter file and an optimizer file of another step
    // beside step 8's record: the record's step is what resumes
    std::fs::write(dir.join("recovery-checkpoint.safetensors"), adapter_of_step_4).unwrap();
    std::fs::write(dir.join("recovery-optimizer-00000012.safetensors"), optimizer_of_step_4).unwrap();
    let (resumed, _) = recover_with(&f, &spec, None);
    let (lora, report) = resumed.unwrap();
    assert_eq!((report.resumed_from, report.steps), (Some(8), 12));
    assert_same_curve(&report.kl_curve, &whole_report.kl_curve);
    let difference = adapter_difference(&lora, &whole_lora);
    assert!(difference <= 1e-6, "the resumed adapter differs by {difference} from the uninterrupted one");

    // a record whose optimizer file is gone is refused by name, not resumed with moments it does not have
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(recover_with(&f, &spec, Some(5)).0.is_none());
    std::fs::remove_file(dir.join("recovery-optimizer-00000004.safetensors")).unwrap();
    let teacher = f.base.llama();
    let err = recover(teacher, teacher, &recovery_sequences(&f), &spec, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("recovery-optimizer-00000004.safetensors") && err.contains("optimizer state"), "{err}");
}

#[test]
fn a_checkpoint_written_before_the_optimizer_state_was_kept_resumes_with_moments_at_zero() {
    let f = fixture();
    let dir = f.dir.join("ckpt");
    let spec = checkpointed(&dir);
    let (whole_lora, whole_report) = uninterrupted(&f, &spec);
    assert!(recover_with(&f, &spec, Some(9)).0.is_none());
    // what such a checkpoint held: the record without the new fields, the adapter, no optimizer file
    let state_path = dir.join("recovery-checkpoint.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    for field in ["optimizer_state", "total_steps"] {
        assert!(state.as_object_mut().unwrap().remove(field).is_some(), "{field} is written: {state}");
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    std::fs::remove_file(dir.join("recovery-optimizer-00000008.safetensors")).unwrap();

    let (resumed, _) = recover_with(&f, &spec, None);
    let (lora, report) = resumed.unwrap();
    assert_eq!((report.resumed_from, report.steps), (Some(8), 12));
    assert_eq!(report.kl_curve[..8], whole_report.kl_curve[..8], "the curve the checkpoint carried");
    // Adam starts again from zero moments (and the adapter's f16 values): close to the uninterrupted run, not on it
    let difference = adapter_difference(&lora, &whole_lora);
    assert!(difference > 1e-6, "moments at zero must show: the adapters differ by {difference}");
}

#[test]
fn a_resumed_recovery_under_a_time_budget_goes_on_with_its_checkpoints_schedule() {
    let f = fixture();
    let dir = f.dir.join("ckpt");
    // a budget that the 100,000 steps do not fit: the schedule is refitted to the pace after 13 steps
    let spec = RecoverySpec {
        steps: 100_000,
        max_seconds: Some(1e4),
        batch: 2,
        checkpoint_every: 14,
        checkpoint_dir: Some(dir.clone()),
        ..RecoverySpec::default()
    };
    let (done, progress) = recover_with(&f, &spec, Some(15));
    assert!(done.is_none());
    let settled = progress.iter().find(|p| p.step == 14).unwrap().total_steps;
    let provisional = 14 + 130;
    assert_ne!(settled, provisional, "refitted after 13 steps");
    let state_path = dir.join("recovery-checkpoint.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["total_steps"].as_u64(), Some(settled as u64), "{state}");

    // resumed: its first step is on the recorded schedule, not a provisional one; an edited record is followed
    // too, and one written before the field gets the provisional schedule, as then
    let mut first_resumed_step = |total_steps: Option<usize>| {
        match total_steps {
            Some(total) => state["total_steps"] = total.into(),
            None => _ = state.as_object_mut().unwrap().remove("total_steps"),
        }
        std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
        let (done, progress) = recover_with(&f, &spec, Some(15));
        assert!(done.is_none());
        let p = progress.iter().find(|p| p.step == 15).unwrap().clone();
        (p.total_steps, p.learning_rate)
    };
    for (recorded, expected) in [(Some(settled), settled), (Some(50), 50), (None, provisional)] {
        let (total_steps, learning_rate) = first_resumed_step(recorded);
        assert_eq!(total_steps, expected, "recorded {recorded:?}");
        assert_eq!(learning_rate, learning_rate_at(14, expected, spec.learning_rate), "recorded {recorded:?}");
    }
}

#[test]
fn a_resumed_recovery_goes_on_with_the_time_its_checkpoint_recorded() {
    let f = fixture();
    let dir = f.dir.join("ckpt");
    let spec = checkpointed(&dir);
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
    let (done, progress) = recover_with(&f, &budget, None);
    let report = done.unwrap().1;
    assert_eq!(report.resumed_from, Some(8));
    assert_eq!(report.steps, 8, "the budget was spent before the restart");
    assert!(report.stopped_by_time);
    assert!(report.seconds >= 1e6, "the time counts on from the checkpoint's: {}", report.seconds);
    let elapsed: Vec<f64> = progress.iter().map(|p| p.elapsed_seconds).collect();
    assert!(elapsed.iter().all(|&s| s >= 1e6), "{elapsed:?}");

    // a checkpoint written before the field: read as no time spent, so the budget is whole again
    state.as_object_mut().unwrap().remove("elapsed_seconds");
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let (done, _) = recover_with(&f, &budget, None);
    let report = done.unwrap().1;
    assert_eq!((report.resumed_from, report.steps, report.stopped_by_time), (Some(8), 12, false));
}

/// The recovery text's line of a build's notes.
fn recovery_text_note(build: &Build) -> String {
    build.notes.iter().find(|n| n.starts_with("recovery text:")).cloned().unwrap_or_default()
}

#[test]
fn an_interrupted_build_rerun_on_other_training_text_starts_afresh_and_on_the_same_text_resumes() {
    let f = fixture();
    let corpus = "Order from Ana Silva: 3 x red cup, ship to Porto. ".repeat(40);
    let eval_text = "The harbour master logs every ship that comes in and every ship that leaves. ".repeat(60);
    let other_eval_text = "A second evaluation text, about trains and their timetables and stations. ".repeat(60);
    let state = f.dir.join("state");
    let options = BuildOptions { user_corpus_share: Some(0.5), ..options(&state, true) };
    let first = build_evaluated(&f.base, &options, None, Some(&corpus), Some(5));
    assert!(first.report.is_none(), "killed after the checkpoint of step 4");
    let folder_note = first.notes.iter().find_map(|n| n.strip_prefix("recovery checkpoints in "));
    let first_folder = folder_note.and_then(|n| n.split_once(" (")).unwrap().0.to_string();
    // whole builds of each variant, never interrupted, without checkpoints
    let whole = |options: &BuildOptions, eval_text: Option<&str>, name: &str| {
        let options = BuildOptions {
            recovery: RecoverySpec { checkpoint_every: 0, checkpoint_dir: None, ..options.recovery.clone() },
            ..options.clone()
        };
        build_evaluated(&f.base, &options, eval_text, Some(&corpus), None).report.unwrap_or_else(|| panic!("{name}"))
    };
    let reruns = [
        ("another corpus share", BuildOptions { user_corpus_share: Some(0.2), ..options.clone() }, None),
        ("an evaluation text (all the teacher's text trains)", options.clone(), Some(eval_text.as_str())),
    ];
    for (what, other, eval_text) in &reruns {
        let rerun = build_evaluated(&f.base, other, *eval_text, Some(&corpus), None);
        assert_ne!(recovery_text_note(&rerun), recovery_text_note(&first), "{what}: other text");
        let report = rerun.report.as_ref().unwrap();
        assert_eq!(report.recovery.resumed_from, None, "{what}: {}", rerun.notes());
        // the interrupted build's checkpoint is named, with why it is not resumed
        let why = format!(
            "recovery: checkpoint {first_folder} was made on other training text; starting the recovery afresh"
        );
        assert!(rerun.notes.iter().any(|n| n.starts_with(&why)), "{what}: {}", rerun.notes());
        // trained from the start: what a build never interrupted with these inputs trains, to the byte
        let uninterrupted = whole(other, *eval_text, what);
        assert_eq!(report.recovery.kl_curve, uninterrupted.recovery.kl_curve, "{what}");
        assert_eq!(report.recovery_adapter_digest, uninterrupted.recovery_adapter_digest, "{what}");
        assert_eq!(report.release_digest, uninterrupted.release_digest, "{what}");
    }
    // the first inputs again: their checkpoint of step 4 is still there and resumes, to the uninterrupted adapter
    let again = build_evaluated(&f.base, &options, None, Some(&corpus), None);
    let report = again.report.as_ref().unwrap();
    assert_eq!(report.recovery.resumed_from, Some(4), "{}", again.notes());
    assert_eq!(again.count("recovery: checkpoint "), 0, "nothing to explain: {}", again.notes());
    let uninterrupted = whole(&options, None, "the first inputs");
    assert_same_curve(&report.recovery.kl_curve, &uninterrupted.recovery.kl_curve);
    assert_eq!(report.recovery_adapter_digest, uninterrupted.recovery_adapter_digest);

    // what the recovery does not train on does not matter: interrupted with one evaluation text, a rerun with
    // another resumes (the same training split, the same text)
    let evaluated = build_evaluated(&f.base, &options, Some(&eval_text), Some(&corpus), Some(5));
    assert!(evaluated.report.is_none());
    let resumed = build_evaluated(&f.base, &options, Some(&other_eval_text), Some(&corpus), None);
    assert_eq!(resumed.report.as_ref().unwrap().recovery.resumed_from, Some(4), "{}", resumed.notes());
}

#[test]
fn a_builds_checkpoint_folder_is_named_by_the_digest_its_recovery_records_that_of_the_text_it_trains_on() {
    let f = fixture();
    let state = f.dir.join("state");
    let corpus = "Order from Ana Silva: 3 x red cup, ship to Porto. ".repeat(40);
    let options = BuildOptions { user_corpus_share: Some(0.5), ..options(&state, true) };
    assert!(build(&f.base, &options, Some(&corpus), Some(5)).report.is_none(), "killed after step 4's checkpoint");
    let root = state.join("checkpoints");
    let folders = names_in(&root);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let (_, text_key) = folders[0].split_once('-').unwrap();
    let record_path = root.join(&folders[0]).join("recovery-checkpoint.json");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    // the text the build trains on, made afresh: the teacher's text (from its cache) less the tenth held out for
    // the evaluation, mixed with the corpus
    let teacher =
        cached_teacher_text(&f.base, &options.teacher, options.teacher_cache.as_deref(), &mut |_| {}).unwrap();
    let keep = teacher.len() - (teacher.len() / 10).max(1);
    let seq_len = options.teacher.seq_len;
    let (share, held_out) = (options.user_corpus_share, options.recovery.validation_sequences);
    let text = recovery_text(&f.base, &teacher[..keep], Some(&corpus), seq_len, share, held_out).unwrap();
    let digest = text.digest();
    assert_eq!(record["text_digest"].as_str(), Some(digest.to_string().as_str()), "the recovery's record");
    assert_eq!(text_key, &digest.hex()[..16], "the folder's name");
}

#[test]
fn a_build_checkpoint_from_before_the_text_was_recorded_is_not_resumed_and_the_build_says_why() {
    let f = fixture();
    let state = f.dir.join("state");
    let options = options(&state, true);
    assert!(build(&f.base, &options, None, Some(5)).report.is_none());
    // what such a build left: a folder named by the palettized base and spec alone, a record without the text
    let root = state.join("checkpoints");
    let folders = names_in(&root);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let (spec_key, text_key) = folders[0].split_once('-').unwrap();
    assert_eq!((spec_key.len(), text_key.len()), (16, 16), "{folders:?}");
    let old = root.join(spec_key);
    std::fs::rename(root.join(&folders[0]), &old).unwrap();
    let record_path = old.join("recovery-checkpoint.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert!(record.as_object_mut().unwrap().remove("text_digest").is_some(), "{record}");
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

    let rerun = build(&f.base, &options, None, None);
    let report = rerun.report.as_ref().unwrap();
    assert_eq!(report.recovery.resumed_from, None, "{}", rerun.notes());
    let why = format!(
        "recovery: checkpoint {} was written before checkpoints recorded their training text, so it cannot be told \
         to be this text's; starting the recovery afresh",
        old.display()
    );
    assert!(rerun.notes.iter().any(|n| n.starts_with(&why)), "{}", rerun.notes());
    let whole = build(&f.base, &crate::options(&f.dir.join("whole"), false), None, None).report.unwrap();
    assert_eq!(report.recovery_adapter_digest, whole.recovery_adapter_digest);
}

#[test]
fn a_recovery_refuses_a_checkpoint_made_on_other_text_or_whose_text_is_not_recorded() {
    let f = fixture();
    let dir = f.dir.join("ckpt");
    let spec = checkpointed(&dir);
    assert!(recover_with(&f, &spec, Some(5)).0.is_none());
    let teacher = f.base.llama();
    // the same spec on other sequences: refused by name, not resumed
    let err = recover(teacher, teacher, &[vec![1; 24]], &spec, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("recovery-checkpoint.json") && err.contains("other training text"), "{err}");
    // a record without the text's digest (written before the field): its text cannot be told, so refused too
    let record_path = dir.join("recovery-checkpoint.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert!(record.as_object_mut().unwrap().remove("text_digest").is_some(), "{record}");
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let (done, progress) = recover_with(&f, &spec, None);
    assert!(done.is_none() && progress.is_empty(), "not resumed, and not trained over either");
    let err = recover(teacher, teacher, &[vec![1; 24]], &spec, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("before checkpoints recorded their training text"), "{err}");
}
