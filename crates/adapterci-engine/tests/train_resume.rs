//! Training options on the tiny model: kill -9 during training then resume (the final adapter matches an
//! uninterrupted run), a checkpoint of another job is refused, gradient accumulation equals one large batch,
//! the linear schedule, and early stopping keeping the best adapter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use adapterci_core::training::{NoProgress, ProgressSink, StepProgress, TrainSpec};
use adapterci_engine::LlamaConfig;
use adapterci_engine::dataset::Example;
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::tiny::write_tiny_model;
use adapterci_engine::train::{
    CheckpointSettings, EarlyStopping, Schedule, TrainOptions, TrainReport, TrainingModel, learning_rate_for,
    train_lora_with, validation_loss,
};
use tch::Device;

mod support;

const CHILD_ENV: &str = "ADAPTERCI_TEST_RESUME_CHILD_DIR";
const STEPS: usize = 12;

fn model() -> (Llama, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, 5).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    (Llama::load(&file, &config, Device::Cpu).unwrap(), dir)
}

/// Eight examples of 12 tokens with targets on the last 6 (equal target counts, so batch means compose).
fn examples() -> Vec<Example> {
    (0..8u32)
        .map(|i| Example {
            line: i as usize + 1,
            input_ids: (0..12).map(|j| 3 + (i * 37 + j * 11) % 500).collect(),
            loss_mask: (0..12).map(|j| j >= 6).collect(),
            prompt_len: 6,
            prompt: String::new(),
            expected: String::new(),
            truncated_tokens: 0,
        })
        .collect()
}

fn fresh_lora(llama: &Llama, dropout: f64) -> LoraWeights {
    support::lora(llama, 4, dropout, 3)
}

fn spec(batch_size: usize) -> TrainSpec {
    TrainSpec { steps: STEPS, batch_size, learning_rate: 1e-2, seed: 11, ..TrainSpec::default() }
}

fn train(options: &TrainOptions, batch_size: usize, progress: &dyn ProgressSink) -> (LoraWeights, TrainReport) {
    let (llama, _dir) = model();
    let mut lora = fresh_lora(&llama, 0.1);
    let report = train_lora_with(&llama, &mut lora, &examples(), &spec(batch_size), 2, progress, options).unwrap();
    (lora, report)
}

fn max_diff(a: &LoraWeights, b: &LoraWeights) -> f64 {
    a.trainable_parameters()
        .iter()
        .zip(b.trainable_parameters())
        .map(|(x, y)| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// In the child: after step 6 (checkpoint at 4 written, steps 5-6 not saved) say so and block on stdin until
/// the parent kills the process.
struct BlockAfterStep6;

impl ProgressSink for BlockAfterStep6 {
    fn on_step(&self, progress: &StepProgress) {
        if progress.step == 6 {
            println!("ready-to-be-killed");
            let mut buffer = [0u8; 1];
            let _ = std::io::stdin().read(&mut buffer);
        }
    }
    fn on_message(&self, _: &str) {}
}

fn checkpointing(dir: &std::path::Path) -> TrainOptions {
    TrainOptions {
        checkpoint: Some(CheckpointSettings { dir: dir.to_owned(), every_steps: 4 }),
        ..TrainOptions::default()
    }
}

/// Runs only as the child process of `kill_9_then_resume_matches_an_uninterrupted_run`.
#[test]
fn child_process_trains_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    train(&checkpointing(std::path::Path::new(&dir)), 2, &BlockAfterStep6);
    panic!("the child should have been killed before finishing");
}

#[test]
fn kill_9_then_resume_matches_an_uninterrupted_run() {
    let checkpoints = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_trains_until_killed", "--nocapture"])
        .env(CHILD_ENV, checkpoints.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout.lines().map_while(Result::ok).any(|line| line.contains("ready-to-be-killed"));
    assert!(ready, "the child never reached step 6");
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, like kill -9
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(checkpoints.path().join("checkpoint.safetensors").is_file());

    let (resumed, report) = train(&checkpointing(checkpoints.path()), 2, &NoProgress);
    assert_eq!(report.resumed_from, Some(4), "steps 5 and 6 were after the last checkpoint");
    assert_eq!(report.loss_curve.len(), STEPS);
    let (uninterrupted, reference) = train(&TrainOptions::default(), 2, &NoProgress);
    let difference = max_diff(&resumed, &uninterrupted);
    assert!(difference < 1e-6, "resumed adapter differs from the uninterrupted one by {difference}");
    for ((step, a), (_, b)) in report.loss_curve.iter().zip(&reference.loss_curve) {
        assert!((a - b).abs() < 1e-5, "step {step}: loss {a} vs {b}");
    }
}

#[test]
fn dropout_masks_do_not_shift_when_other_work_in_the_process_draws_random_numbers() {
    let (alone, _) = train(&TrainOptions::default(), 2, &NoProgress);
    // Another thread draws from torch's global generator for as long as the training runs (another training with
    // dropout, a sampler, an initialisation): the training's masks must not depend on it.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (beside, draws) = std::thread::scope(|scope| {
        let drawer = scope.spawn(|| {
            let mut draws = 0usize;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let _ = tch::Tensor::rand([64], (tch::Kind::Float, Device::Cpu));
                draws += 1;
            }
            draws
        });
        let (beside, _) = train(&TrainOptions::default(), 2, &NoProgress);
        done.store(true, std::sync::atomic::Ordering::Release);
        (beside, drawer.join().unwrap())
    });
    assert!(draws > 0);
    let difference = max_diff(&alone, &beside);
    assert_eq!(difference, 0.0, "the training beside other draws differs by {difference}");
}

#[test]
fn a_checkpoint_of_another_job_is_refused() {
    let checkpoints = tempfile::tempdir().unwrap();
    let (llama, _dir) = model();
    let mut lora = fresh_lora(&llama, 0.0);
    let options = checkpointing(checkpoints.path());
    train_lora_with(&llama, &mut lora, &examples(), &spec(2), 2, &NoProgress, &options).unwrap();
    let mut other = spec(2);
    other.learning_rate = 5e-3;
    let mut lora = fresh_lora(&llama, 0.0);
    let error = train_lora_with(&llama, &mut lora, &examples(), &other, 2, &NoProgress, &options).unwrap_err();
    assert!(error.to_string().contains("is of another job"), "{error}");
    std::fs::write(checkpoints.path().join("checkpoint.safetensors"), b"torn").unwrap();
    let error = train_lora_with(&llama, &mut lora, &examples(), &spec(2), 2, &NoProgress, &options).unwrap_err();
    assert!(error.to_string().contains("checkpoint"), "{error}");
}

#[test]
fn gradient_accumulation_over_two_batches_equals_one_batch_of_twice_the_size() {
    let (llama, _dir) = model();
    let run = |batch_size: usize, accumulation: usize| {
        let mut lora = fresh_lora(&llama, 0.0);
        let options = TrainOptions { gradient_accumulation: accumulation, ..TrainOptions::default() };
        let report =
            train_lora_with(&llama, &mut lora, &examples(), &spec(batch_size), 2, &NoProgress, &options).unwrap();
        (lora, report)
    };
    let (large, large_report) = run(4, 1);
    let (accumulated, accumulated_report) = run(2, 2);
    assert!(max_diff(&large, &accumulated) < 1e-5, "{}", max_diff(&large, &accumulated));
    assert_eq!(large_report.tokens, accumulated_report.tokens);
    let (small, _) = run(2, 1);
    assert!(max_diff(&large, &small) > 1e-3, "without accumulation the runs differ");
}

#[test]
fn the_linear_schedule_warms_up_then_decays_in_a_straight_line() {
    let lr = |step| learning_rate_for(Schedule::Linear, step, 20, 1.0);
    assert_eq!((lr(0), lr(1)), (0.5, 1.0));
    assert!((lr(11) - 0.5).abs() < 1e-12);
    assert!((lr(6) - lr(7) - (lr(15) - lr(16))).abs() < 1e-12, "constant slope");
    assert!(lr(19) > 0.0 && lr(19) < 0.1);
    assert_eq!(learning_rate_for(Schedule::Cosine, 11, 20, 1.0), 0.5);
}

#[test]
fn early_stopping_stops_after_patience_and_keeps_the_best_adapter() {
    let (llama, _dir) = model();
    let validation = examples()[..4].to_vec();
    // A min_delta no loss can beat: only the first evaluation counts as an improvement.
    let stopping = EarlyStopping { validation: validation.clone(), every_steps: 2, patience: 2, min_delta: 1e9 };
    let options = TrainOptions { early_stopping: Some(stopping), ..TrainOptions::default() };
    let mut lora = fresh_lora(&llama, 0.0);
    let report = train_lora_with(&llama, &mut lora, &examples(), &spec(2), 2, &NoProgress, &options).unwrap();
    assert_eq!(report.stopped_early_at, Some(6));
    assert_eq!(report.loss_curve.len(), 6);
    assert_eq!(report.validation_curve.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 4, 6]);
    let model = TrainingModel::new(&llama, Default::default()).unwrap();
    let kept = validation_loss(&model, &lora, &validation, 2, 2, Device::Cpu);
    assert!((kept - report.validation_curve[0].1).abs() < 1e-9, "the adapter of step 2 is kept");
}
