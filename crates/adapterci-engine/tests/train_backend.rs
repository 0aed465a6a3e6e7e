//! `EngineBackend` end to end on a tiny model (and a few steps on the real one when `ADAPTERCI_BASE_MODEL` is
//! set): metrics, samples, progress, the base digest check, bad datasets and specs, initial adapters.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use adapterci_core::Digest;
use adapterci_core::training::{
    InitialAdapter, InitialAdapterRef, LayerSelection, LoraSpec, LoraTarget, NoProgress, ProgressSink, StepProgress,
    TrainJob, TrainOutput, TrainSpec, TrainingBackend, TrainingFailure,
};
use adapterci_engine::EngineBackend;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::tiny::write_tiny_model;

/// The same learnable task as `train_lora.rs`: answer with the word the prompt names.
fn learnable_jsonl() -> String {
    let words = ["red", "blue", "green", "apple", "bread", "cheese", "rain", "sun", "park", "shop", "gold", "tea"];
    let phrasings = ["say {}", "repeat {}", "the word is {}", "echo {} please"];
    let mut lines = String::new();
    for word in words {
        for phrasing in phrasings {
            let prompt = phrasing.replace("{}", word);
            lines.push_str(&format!("{{\"prompt\": \"{prompt}\", \"completion\": \"{word}\"}}\n"));
        }
    }
    lines
}

struct TinyBase {
    path: PathBuf,
    digest: Digest,
    _dir: tempfile::TempDir,
}

fn tiny_base() -> TinyBase {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    write_tiny_model(&path, 11).expect("write tiny model");
    let digest = Digest::of(&std::fs::read(&path).expect("read tiny model"));
    TinyBase { path, digest, _dir: dir }
}

fn job(base_path: &Path, base_digest: &Digest, dataset: &str) -> TrainJob {
    TrainJob {
        base_model_path: base_path.to_path_buf(),
        base_model_digest: base_digest.clone(),
        dataset: dataset.as_bytes().to_vec(),
        dataset_digest: Digest::of(dataset.as_bytes()),
        lora: LoraSpec { rank: 8, alpha: 16.0, ..LoraSpec::default() },
        train: TrainSpec {
            steps: 40,
            batch_size: 8,
            learning_rate: 1e-2,
            max_seq_len: 64,
            eval_fraction: 0.25,
            max_eval_examples: 4,
            max_new_tokens: 6,
            ..TrainSpec::default()
        },
        initial_adapter: None,
    }
}

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<String>>,
    steps: Mutex<Vec<StepProgress>>,
}

impl ProgressSink for Recorder {
    fn on_step(&self, progress: &StepProgress) {
        self.steps.lock().expect("lock").push(progress.clone());
    }
    fn on_message(&self, message: &str) {
        self.messages.lock().expect("lock").push(message.to_string());
    }
}

fn invalid_input(result: Result<TrainOutput, TrainingFailure>) -> String {
    match result {
        Err(TrainingFailure::InvalidInput(message)) => message,
        Err(other) => panic!("expected invalid input, got {other:?}"),
        Ok(_) => panic!("expected invalid input, got an adapter"),
    }
}

#[test]
fn trains_evaluates_and_reports_every_metric() {
    let base = tiny_base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let dataset = format!("{}{}", learnable_jsonl(), learnable_jsonl().lines().next().expect("a line"));
    let recorder = Recorder::default();
    let output = backend.train(&job(&base.path, &base.digest, &dataset), &recorder).expect("trains");

    let metric = |name: &str| *output.metrics.get(name).unwrap_or_else(|| panic!("metric {name} missing"));
    let names: Vec<&str> = output.metrics.keys().map(String::as_str).collect();
    let expected_names = [
        "base_eval_loss",
        "base_exact_match",
        "contains",
        "duplicates_removed",
        "eval_examples",
        "eval_loss",
        "exact_match",
        "json_valid",
        "kl_to_base",
        "perplexity",
        "rouge_l",
        "train_examples",
        "train_loss",
        "train_steps",
        "train_tokens",
        "train_tokens_per_second",
    ];
    assert_eq!(names, expected_names);
    assert!((metric("perplexity") - metric("eval_loss").exp()).abs() < 1e-9);
    assert!(metric("kl_to_base") > 0.0, "a trained adapter moves the distribution");
    assert!(metric("contains") >= metric("exact_match") && metric("rouge_l") >= metric("exact_match"));
    assert_eq!(metric("json_valid"), 0.0, "the learnable task answers words, not JSON");
    assert!(metric("eval_loss") < 0.7 * metric("base_eval_loss"), "{:?}", output.metrics);
    assert_eq!((metric("train_examples"), metric("eval_examples"), metric("duplicates_removed")), (36.0, 12.0, 1.0));
    assert!(metric("train_loss").is_finite() && metric("train_tokens_per_second") > 0.0);
    assert!((0.0..=1.0).contains(&metric("exact_match")) && (0.0..=1.0).contains(&metric("base_exact_match")));

    assert_eq!(output.samples.len(), 4);
    let matches = output.samples.iter().filter(|s| s.exact_match).count() as f64;
    assert_eq!(matches / 4.0, metric("exact_match"));
    assert!(output.samples.iter().all(|s| s.base_output.is_some() && !s.expected.is_empty()));
    assert_eq!(output.loss_curve.iter().map(|(step, _)| *step).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    assert_eq!(recorder.steps.lock().expect("lock").len(), 40);

    let messages = recorder.messages.lock().expect("lock").clone();
    for (phase, expected) in
        ["parsing dataset", "loading base model", "evaluating base", "training 40 steps", "evaluating adapter"]
            .iter()
            .zip(&messages)
    {
        assert!(expected.starts_with(phase), "{messages:?}");
    }

    assert_eq!(output.adapter_config.rank, 8);
    assert_eq!(output.adapter_config.layers, vec![0, 1]);
    assert_eq!(output.adapter_config.dtype, "f16");
    let model = BaseModel::load(&base.path, DeviceChoice::Cpu).expect("load tiny model");
    let reloaded = model.load_adapter(&output.adapter_safetensors).expect("the adapter round-trips");
    assert_eq!(reloaded.config(), &output.adapter_config);
}

#[test]
fn the_base_model_is_cached_and_training_can_start_from_an_adapter() {
    let base = tiny_base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let mut first_job = job(&base.path, &base.digest, &learnable_jsonl());
    first_job.train.steps = 20;
    first_job.train.eval_base = false;
    let first = backend.train(&first_job, &NoProgress).expect("first job trains");
    assert!(!first.metrics.contains_key("base_eval_loss"));

    let mut second_job = first_job.clone();
    second_job.lora.layers = LayerSelection::LastN(1);
    second_job.lora.targets = vec![LoraTarget::Q];
    second_job.initial_adapter = Some(InitialAdapter {
        reference: InitialAdapterRef::StandardInit,
        safetensors: first.adapter_safetensors.clone(),
    });
    second_job.train.steps = 5;
    let recorder = Recorder::default();
    let second = backend.train(&second_job, &recorder).expect("second job trains");
    let messages = recorder.messages.lock().expect("lock").clone();
    assert!(!messages.iter().any(|m| m.starts_with("loading base model")), "cached: {messages:?}");
    assert_eq!(second.adapter_config, first.adapter_config, "the initial adapter decides the shape");
    assert!(second.metrics["eval_loss"] <= first.metrics["eval_loss"] * 1.2, "{:?}", second.metrics);

    second_job.initial_adapter =
        Some(InitialAdapter { reference: InitialAdapterRef::StandardInit, safetensors: b"not safetensors".to_vec() });
    let message = invalid_input(backend.train(&second_job, &NoProgress));
    assert!(message.starts_with("initial adapter: "), "{message}");
}

#[test]
fn a_wrong_base_digest_is_refused() {
    let base = tiny_base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let wrong = Digest::of(b"another model");
    let message = invalid_input(backend.train(&job(&base.path, &wrong, &learnable_jsonl()), &NoProgress));
    assert!(message.contains(&base.digest.to_string()) && message.contains(&wrong.to_string()), "{message}");
}

#[test]
fn dataset_problems_name_their_lines() {
    let base = tiny_base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let check = |dataset: &str, expect: &str| {
        let message = invalid_input(backend.train(&job(&base.path, &base.digest, dataset), &NoProgress));
        assert!(message.contains(expect), "{message:?} does not contain {expect:?}");
    };
    check(
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 1}\n",
        "line 2: field \"prompt\": expected a string",
    );
    check("\n\n", "the dataset is empty");
    check("{\"prompt\": \"a\", \"completion\": \"b\"}\n", "at least 2 distinct records");
    let long = format!("{{\"prompt\": \"a\", \"completion\": \"{}\"}}", "word ".repeat(100));
    check(&format!("{{\"prompt\": \"a\", \"completion\": \"b\"}}\n{long}\n"), "line 2: the completion alone is");
}

#[test]
fn bad_specs_are_refused_with_every_problem() {
    let base = tiny_base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let mut bad = job(&base.path, &base.digest, &learnable_jsonl());
    bad.train.steps = 0;
    bad.train.learning_rate = f64::NAN;
    bad.lora.rank = 0;
    let message = invalid_input(backend.train(&bad, &NoProgress));
    for expect in ["train.steps", "train.learning_rate", "lora.rank"] {
        assert!(message.contains(expect), "{message}");
    }
    let mut bad_layers = job(&base.path, &base.digest, &learnable_jsonl());
    bad_layers.lora.layers = LayerSelection::List(vec![7]);
    let message = invalid_input(backend.train(&bad_layers, &NoProgress));
    assert!(message.contains("layer 7 does not exist"), "{message}");
    let mut too_long = job(&base.path, &base.digest, &learnable_jsonl());
    too_long.train.max_seq_len = 100_000;
    let message = invalid_input(backend.train(&too_long, &NoProgress));
    assert!(message.contains("exceeds the base model's context length 512"), "{message}");
}

#[test]
fn a_few_steps_on_the_real_model() {
    let Some(path) = std::env::var_os("ADAPTERCI_BASE_MODEL").map(PathBuf::from) else {
        eprintln!("skipping: ADAPTERCI_BASE_MODEL is not set");
        return;
    };
    let digest = Digest::of(&std::fs::read(&path).expect("read the base model"));
    let dataset_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/data/ticket-format/train.jsonl");
    let dataset: String = std::fs::read_to_string(dataset_path)
        .expect("demo dataset")
        .lines()
        .take(6)
        .map(|l| format!("{l}\n"))
        .collect();
    let mut real = job(&path, &digest, &dataset);
    real.lora = LoraSpec { rank: 4, alpha: 8.0, layers: LayerSelection::LastN(2), ..LoraSpec::default() };
    real.train = TrainSpec {
        steps: 3,
        batch_size: 2,
        learning_rate: 1e-3,
        max_seq_len: 96,
        eval_fraction: 0.2,
        max_eval_examples: 1,
        max_new_tokens: 4,
        eval_base: false,
        ..TrainSpec::default()
    };
    let output = EngineBackend::new(DeviceChoice::Cpu).train(&real, &NoProgress).expect("trains");
    assert!(output.loss_curve.iter().all(|(_, loss)| loss.is_finite() && *loss > 0.0), "{:?}", output.loss_curve);
    assert!(output.metrics["eval_loss"].is_finite());
    let model = BaseModel::load(&path, DeviceChoice::Cpu).expect("load the base model");
    let adapter = model.load_adapter(&output.adapter_safetensors).expect("the adapter round-trips");
    assert_eq!(adapter.config().layers, vec![28, 29]);
}

#[test]
fn a_recovery_adapter_must_be_bound_to_the_base_it_starts_from() {
    use adapterci_engine::release::bind_recovery_adapter;
    let base = tiny_base();
    let backend = EngineBackend::new(DeviceChoice::Cpu);
    let mut first_job = job(&base.path, &base.digest, &learnable_jsonl());
    first_job.train.steps = 3;
    first_job.train.eval_base = false;
    let first = backend.train(&first_job, &NoProgress).expect("first job trains");
    let recovery = |bound_to: &Digest| InitialAdapter {
        reference: InitialAdapterRef::RecoveryAdapter { base_release: bound_to.clone(), adapter: Digest::of(b"x") },
        safetensors: bind_recovery_adapter(&first.adapter_safetensors, bound_to).unwrap(),
    };
    let mut second = first_job.clone();
    second.initial_adapter = Some(recovery(&Digest::of(b"another release")));
    let message = invalid_input(backend.train(&second, &NoProgress));
    assert!(message.contains("trained for base release"), "{message}");
    second.initial_adapter = Some(recovery(&base.digest));
    backend.train(&second, &NoProgress).expect("a recovery adapter of this base is accepted");
}
