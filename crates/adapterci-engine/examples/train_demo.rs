//! Trains a LoRA adapter on the ticket-format demo task with the real base model and prints base vs adapter
//! exact match on the held-out file, training tokens/s and wall times.
//!
//! The defaults are a measured recipe: r16 on all seven linear modules of every layer, 40 steps of batch 4 at
//! lr 2e-3 reached 0.975 held-out exact match (base model: 0) in about 80 s of training on 1 CPU thread. On a
//! 2-core machine that other work shares, `--threads 1` is faster than 2 (OpenMP threads spin while waiting
//! for a busy core).
//!
//! ```text
//! cargo run --release -p adapterci-engine --example train_demo -- \
//!     [--model PATH] [--steps 40] [--batch 4] [--lr 2e-3] [--rank 16] [--alpha 32] \
//!     [--targets q,k,v,o,gate,up,down] [--last-layers 30] [--threads 2] [--eval 40] [--no-base]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use adapterci_core::training::{AdapterConfig, LoraTarget, ProgressSink, StepProgress, TrainSpec};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::eval::{EvalOutcome, evaluate, pad_token_id};
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::model::{BaseModel, LoadedAdapter};
use adapterci_engine::train::train_lora;
use anyhow::{Context, bail};

const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/data/ticket-format");
const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");

#[derive(Debug)]
struct Args {
    model: PathBuf,
    spec: TrainSpec,
    rank: usize,
    alpha: f64,
    targets: Vec<LoraTarget>,
    last_layers: Option<usize>,
    threads: i32,
    eval_examples: usize,
    eval_base: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        model: std::env::var_os("ADAPTERCI_BASE_MODEL").map_or_else(|| PathBuf::from(DEFAULT_MODEL), PathBuf::from),
        spec: TrainSpec {
            steps: 40,
            batch_size: 4,
            learning_rate: 2e-3,
            max_seq_len: 128,
            max_new_tokens: 24,
            seed: 42,
            ..TrainSpec::default()
        },
        rank: 16,
        alpha: 32.0,
        targets: LoraTarget::ALL.to_vec(),
        last_layers: None,
        threads: 2,
        eval_examples: 40,
        eval_base: true,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        if flag == "--no-base" {
            args.eval_base = false;
            continue;
        }
        let value = raw.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<f64>().with_context(|| format!("{flag}: {value:?} is not a number"));
        match flag.as_str() {
            "--model" => args.model = PathBuf::from(&value),
            "--steps" => args.spec.steps = number()? as usize,
            "--batch" => args.spec.batch_size = number()? as usize,
            "--lr" => args.spec.learning_rate = number()?,
            "--seed" => args.spec.seed = number()? as u64,
            "--rank" => args.rank = number()? as usize,
            "--alpha" => args.alpha = number()?,
            "--last-layers" => args.last_layers = Some(number()? as usize),
            "--threads" => args.threads = number()? as i32,
            "--eval" => args.eval_examples = number()? as usize,
            "--targets" => args.targets = parse_targets(&value)?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn parse_targets(list: &str) -> anyhow::Result<Vec<LoraTarget>> {
    list.split(',')
        .map(|name| {
            LoraTarget::ALL.into_iter().find(|t| t.as_str() == name).with_context(|| format!("unknown target {name}"))
        })
        .collect()
}

/// Prints every tenth step.
struct PrintEveryTenSteps;

impl ProgressSink for PrintEveryTenSteps {
    fn on_step(&self, p: &StepProgress) {
        if p.step.is_multiple_of(10) || p.step == 1 || p.step == p.total_steps {
            eprintln!(
                "step {:>4}/{}  loss {:.4}  lr {:.2e}  {:.0} tok/s",
                p.step, p.total_steps, p.loss, p.learning_rate, p.tokens_per_second
            );
        }
    }
    fn on_message(&self, message: &str) {
        eprintln!("{message}");
    }
}

fn report(label: &str, outcome: &EvalOutcome, seconds: f64) {
    println!(
        "{label:<8} eval_loss {:.4}  exact_match {:.3}  ({} generated in {seconds:.1} s)",
        outcome.loss,
        outcome.exact_match,
        outcome.outputs.len()
    );
}

#[path = "support/data.rs"]
mod data;
use data::load_examples;

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tch::set_num_threads(args.threads);
    let started = Instant::now();
    let model = BaseModel::load(&args.model, DeviceChoice::Cpu)?;
    eprintln!("loaded {} in {:.1} s", args.model.display(), started.elapsed().as_secs_f64());
    let train = load_examples(&format!("{DATA_DIR}/train.jsonl"), &model, args.spec.max_seq_len)?;
    let holdout = load_examples(&format!("{DATA_DIR}/holdout.jsonl"), &model, args.spec.max_seq_len)?;
    let num_layers = model.config().num_layers;
    let layers: Vec<usize> =
        (num_layers - args.last_layers.unwrap_or(num_layers).min(num_layers)..num_layers).collect();
    let config = AdapterConfig {
        rank: args.rank,
        alpha: args.alpha,
        targets: args.targets.clone(),
        layers,
        dtype: "f16".to_string(),
    };
    let device = model.llama().device();
    let mut lora = LoraWeights::init_standard(&config, 0.0, model.config(), args.spec.seed, device)?;
    let (max_eval, max_new) = (args.eval_examples, args.spec.max_new_tokens);
    if args.eval_base {
        let timer = Instant::now();
        let base = evaluate(&model, None, &holdout, max_eval, max_new)?;
        report("base", &base, timer.elapsed().as_secs_f64());
        println!("  base sample: {:?} -> {:?}", holdout[0].prompt, base.outputs.first());
    }
    let training = train_lora(model.llama(), &mut lora, &train, &args.spec, pad_token_id(&model), &PrintEveryTenSteps)?;
    let adapter = LoadedAdapter::from_lora(lora);
    let timer = Instant::now();
    let tuned = evaluate(&model, Some(&adapter), &holdout, max_eval, max_new)?;
    report("adapter", &tuned, timer.elapsed().as_secs_f64());
    for (example, output) in holdout.iter().zip(&tuned.outputs).filter(|(e, o)| e.expected != o.trim()).take(5) {
        println!("  miss: expected {:?}, got {:?}", example.expected, output);
    }
    println!(
        "settings: steps {} batch {} lr {} rank {} alpha {} targets {} layers {} threads {}",
        args.spec.steps,
        args.spec.batch_size,
        args.spec.learning_rate,
        args.rank,
        args.alpha,
        args.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","),
        args.last_layers.map_or("all".to_string(), |n| format!("last {n}")),
        args.threads
    );
    println!(
        "training: {} tokens in {:.1} s = {:.0} tok/s; final loss (last 10) {:.4}; total wall {:.1} s",
        training.tokens,
        training.seconds,
        training.tokens_per_second,
        training.final_loss(10),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
