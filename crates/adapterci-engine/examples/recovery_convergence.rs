//! Does a task adapter reach its gate faster from the accuracy-recovery adapter than from LoRA's standard
//! initialisation, on a palettized base? Builds a base release of SmolLM2-135M with the product's own
//! `build_release` (sensitivity allocation at 3.5 bpw, GPTQ, recovery adapter), loads it as a base model, then
//! trains the demo task (`pipelines/data/ticket-format`, the settings of `pipelines/ticket-format.yaml`) for
//! several step budgets from each start and evaluates the pipeline's gates (exact_match >= 0.8, eval_loss <= 1.0)
//! on the held-out file. The uncompressed base with standard init is the reference row. Writes
//! `convergence.json`, `convergence.md` and the recovery adapter into `--out`.
//!
//! ```text
//! cargo run --release -p adapterci-engine --example recovery_convergence -- --out target/convergence \
//!     [--model M.gguf | --model tiny] [--device cpu|cuda] [--threads 2] [--teacher-seqs 1024] \
//!     [--teacher-batch 256] [--seq-len 256] [--recovery-minutes 3] [--recovery-batch 32] [--recovery-lr 1e-3] \
//!     [--sens-seqs 16] [--steps 5,10,20,40] [--eval 40] [--work DIR] [--data DIR] [--eval-text F]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use adapterci_core::training::{AdapterConfig, LoraTarget, ProgressSink, StepProgress, TrainSpec};
use adapterci_engine::calibrate::TeacherTextSpec;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::eval::{evaluate, pad_token_id};
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::model::{BaseModel, LoadedAdapter};
use adapterci_engine::recover::RecoverySpec;
use adapterci_engine::release::check_recovery_adapter;
use adapterci_engine::release_build::{BuildOptions, build_release};
use adapterci_engine::train::train_lora;
use anyhow::{Context, bail};
use serde_json::json;

#[path = "support/cli.rs"]
mod cli;
use cli::{Args, log};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The demo pipeline's gates (pipelines/ticket-format.yaml).
const GATE_EXACT_MATCH: f64 = 0.8;
const GATE_EVAL_LOSS: f64 = 1.0;

#[path = "support/data.rs"]
mod data;
use data::load_examples;

fn main() -> anyhow::Result<()> {
    let args = Args::parse(&[])?;
    let out = PathBuf::from(args.get("out", "target/convergence"));
    let work = PathBuf::from(args.get("work", &out.display().to_string()));
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(&work)?;
    adapterci_engine::device::set_threads(args.num("threads", 2)?);
    let device = match args.get("device", "cpu").as_str() {
        "cuda" => DeviceChoice::Cuda(0),
        "cpu" => DeviceChoice::Cpu,
        other => bail!("--device {other:?}: use cpu or cuda"),
    };
    let mut model_path =
        PathBuf::from(args.get("model", &format!("{ROOT}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")));
    if model_path.as_os_str() == "tiny" {
        model_path = work.join("tiny.gguf");
        adapterci_engine::tiny::write_tiny_model(&model_path, 5)?;
    }
    let eval_path = args.get("eval-text", &format!("{ROOT}/scripts/oracles/data/natural_english.txt"));
    let eval_text = std::fs::read_to_string(&eval_path).with_context(|| format!("reading {eval_path}"))?;
    let step_budgets: Vec<usize> = args
        .get("steps", "5,10,20,40")
        .split(',')
        .map(|s| s.trim().parse().with_context(|| format!("--steps: {s:?} is not a number")))
        .collect::<anyhow::Result<_>>()?;
    let eval_examples: usize = args.num("eval", 40)?;
    let started = Instant::now();

    // 1. the base release, built by the product's own code
    log(&format!("loading {} on {device:?}", model_path.display()));
    let source = BaseModel::load(&model_path, device)?;
    let cuda = source.is_cuda();
    let options = BuildOptions {
        teacher: TeacherTextSpec {
            sequences: args.num("teacher-seqs", 1024)?,
            seq_len: args.num("seq-len", 256)?,
            batch: args.num("teacher-batch", if cuda { 256 } else { 16 })?,
            temperature: 1.0,
            seed: 11,
        },
        sensitivity_sequences: args.num("sens-seqs", if cuda { 16 } else { 2 })?,
        recovery: RecoverySpec {
            steps: 100_000,
            max_seconds: Some(args.num::<f64>("recovery-minutes", 3.0)? * 60.0),
            batch: args.num("recovery-batch", if cuda { 32 } else { 4 })?,
            learning_rate: args.num("recovery-lr", 1e-3)?,
            ..RecoverySpec::default()
        },
        ..BuildOptions::default()
    };
    let mut last_print = Instant::now();
    let built = build_release(&source, &options, Some(&eval_text), None, &mut |m| log(m), &mut |p| {
        if last_print.elapsed().as_secs_f64() > 10.0 || p.step == p.total_steps {
            log(&format!("recovery step {}/{} KL {:.4} ({:.0}s)", p.step, p.total_steps, p.kl, p.elapsed_seconds));
            last_print = Instant::now();
        }
    })?;
    let r = &built.report;
    log(&format!(
        "release {}: {:.3} bpw; perplexity uncompressed {:.2}, palettized {:.2}, recovered {:.2} (fraction {:.3}, {} steps)",
        r.release_digest,
        r.linear_bpw,
        r.uncompressed.perplexity,
        r.palettized.perplexity,
        r.recovered.perplexity,
        r.recovery_fraction,
        r.recovery.steps
    ));
    let release_path = work.join("base.release.safetensors");
    std::fs::write(&release_path, &built.release)?;
    std::fs::write(out.join("recovery_adapter.safetensors"), &built.recovery_adapter)?;
    let palettized = BaseModel::load(&release_path, device)?;
    check_recovery_adapter(&built.recovery_adapter, palettized.digest())?;

    // 2. the demo task from each start, at each step budget
    let data = args.get("data", &format!("{ROOT}/pipelines/data/ticket-format"));
    let spec = TrainSpec {
        batch_size: 4,
        learning_rate: 2e-3,
        weight_decay: 0.0,
        max_seq_len: 192,
        seed: 7,
        max_new_tokens: 32,
        ..TrainSpec::default()
    };
    let config = AdapterConfig {
        rank: 16,
        alpha: 32.0,
        targets: LoraTarget::ALL.to_vec(),
        layers: (0..palettized.config().num_layers).collect(),
        dtype: "f16".to_string(),
    };
    let dropout = 0.05;
    let starts: [(&str, &BaseModel, bool); 3] = [
        ("palettized base, from the recovery adapter", &palettized, true),
        ("palettized base, standard init", &palettized, false),
        ("uncompressed base, standard init (reference)", &source, false),
    ];
    let mut rows = Vec::new();
    let mut steps_to_gate = BTreeMap::new();
    for (label, model, from_recovery) in starts {
        let train = load_examples(&format!("{data}/train.jsonl"), model, spec.max_seq_len)?;
        let holdout = load_examples(&format!("{data}/holdout.jsonl"), model, spec.max_seq_len)?;
        let mut budgets = vec![0];
        budgets.extend(&step_budgets);
        let mut reached = None;
        for &steps in &budgets {
            let t0 = Instant::now();
            let mut lora = if from_recovery {
                let mut lora =
                    LoraWeights::from_safetensors(&built.recovery_adapter, model.config(), model.llama().device())?;
                lora.set_dropout(dropout);
                lora
            } else {
                LoraWeights::init_standard(&config, dropout, model.config(), spec.seed, model.llama().device())?
            };
            let mut curve = Vec::new();
            if steps > 0 {
                let report = train_lora(
                    model.llama(),
                    &mut lora,
                    &train,
                    &TrainSpec { steps, ..spec.clone() },
                    pad_token_id(model),
                    &Quiet,
                )?;
                curve = report.loss_curve;
            }
            lora.set_dropout(0.0);
            let adapter = LoadedAdapter::from_lora(lora);
            let outcome = evaluate(model, Some(&adapter), &holdout, eval_examples, spec.max_new_tokens)?;
            let gate = outcome.exact_match >= GATE_EXACT_MATCH && outcome.loss <= GATE_EVAL_LOSS;
            if gate && reached.is_none() {
                reached = Some(steps);
            }
            log(&format!(
                "{label}: {steps} steps -> exact_match {:.3}, eval_loss {:.4}, gate {} ({:.1}s)",
                outcome.exact_match,
                outcome.loss,
                if gate { "passes" } else { "fails" },
                t0.elapsed().as_secs_f64()
            ));
            rows.push(json!({
                "start": label, "steps": steps, "exact_match": outcome.exact_match, "eval_loss": outcome.loss,
                "gate": gate, "loss_curve": curve,
            }));
        }
        steps_to_gate.insert(label.to_string(), reached);
    }

    let mut md = String::from("| start | steps | held-out exact match | eval loss | gate |\n|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.4} | {} |\n",
            r["start"].as_str().unwrap_or(""),
            r["steps"],
            r["exact_match"].as_f64().unwrap_or(f64::NAN),
            r["eval_loss"].as_f64().unwrap_or(f64::NAN),
            if r["gate"].as_bool() == Some(true) { "passes" } else { "fails" }
        ));
    }
    md.push_str("\nFirst step budget that passes the gate:\n");
    for (label, steps) in &steps_to_gate {
        md.push_str(&format!(
            "- {label}: {}\n",
            steps.map_or("none of the budgets".to_string(), |s| format!("{s} steps"))
        ));
    }
    std::fs::write(out.join("convergence.md"), &md)?;
    std::fs::write(
        out.join("convergence.json"),
        serde_json::to_vec_pretty(&json!({
            "release": built.report, "rows": rows, "steps_to_gate": steps_to_gate,
            "gates": {"exact_match_min": GATE_EXACT_MATCH, "eval_loss_max": GATE_EVAL_LOSS},
            "eval_examples": eval_examples, "device": format!("{device:?}"),
            "seconds": started.elapsed().as_secs_f64(),
        }))?,
    )?;
    println!("{md}");
    log(&format!("done in {:.0}s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Training progress is not printed: each budget's result is.
struct Quiet;

impl ProgressSink for Quiet {
    fn on_step(&self, _: &StepProgress) {}
    fn on_message(&self, _: &str) {}
}
