//! Does training the palettes' table entries and row scales together with the recovery adapter pay? Loads a
//! base release (from `adapterci-base palettize`), writes teacher text with the source model, and for each
//! palette learning rate (`none`: the base frozen, as before) trains a recovery adapter from the same seed on the
//! same text for the same number of steps (or minutes), then scores the served result against the uncompressed
//! model on held-out natural text. Prints a markdown table: perplexity, mean CE, top-1 agreement, recovery
//! fraction, steps and seconds.
//!
//! ```text
//! cargo run --release -p adapterci-engine --example palette_training -- --release R/base.safetensors \
//!     [--model M.gguf] [--palette-lrs none,1e-4,1e-3] [--steps 60] [--minutes M] [--teacher-seqs 256] \
//!     [--batch 4] [--lr 1e-3] [--device cpu|cuda] [--threads 2] [--eval-text F]
//! ```
use std::path::Path;
use std::time::Instant;

use adapterci_engine::allocate::linear_ops;
use adapterci_engine::calibrate::{TeacherTextSpec, chunk_tokens, compare, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoverySpec, recover_palettized};
use adapterci_engine::release::BaseRelease;
use anyhow::{Context, bail};
use tch::Device;

#[path = "support/cli.rs"]
mod cli;
use cli::{Args, log};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn main() -> anyhow::Result<()> {
    let args = Args::parse(&[])?;
    adapterci_engine::device::set_threads(args.num("threads", 2)?);
    let device = match args.get("device", "cpu").as_str() {
        "cuda" => DeviceChoice::Cuda(0),
        "cpu" => DeviceChoice::Cpu,
        other => bail!("--device {other:?}: use cpu or cuda"),
    };
    let model = args.get("model", &format!("{ROOT}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let base = BaseModel::load(Path::new(&model), device)?;
    let teacher = base.llama();
    let release_path = args.values.get("release").context("--release R/base.safetensors is required")?;
    let (release, _) = BaseRelease::open(Path::new(release_path))?;
    let student = release.to_llama(teacher.device(), Path::new(release_path))?;
    let ops = linear_ops(teacher.config());
    let parts = ops
        .iter()
        .map(|op| release.palettized(&op.name()).cloned().with_context(|| format!("{} is not palettized", op.name())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let eval_path = args.get("eval-text", &format!("{ROOT}/scripts/oracles/data/natural_english.txt"));
    let eval_text = std::fs::read_to_string(&eval_path).with_context(|| format!("reading {eval_path}"))?;
    let eval = chunk_tokens(base.tokenizer(), &eval_text, 256);
    let batch = if teacher.device() == Device::Cpu { 2 } else { 12 };

    let t0 = Instant::now();
    let spec = TeacherTextSpec {
        sequences: args.num("teacher-seqs", 256)?,
        seq_len: 128,
        batch: 16,
        temperature: 1.0,
        seed: 11,
    };
    let sequences = teacher_text(teacher, &prompt_ids(base.tokenizer(), None)?, &spec, &mut |_, _| {})?;
    log(&format!("teacher text: {} sequences in {:.0}s", sequences.len(), t0.elapsed().as_secs_f64()));
    let uncompressed = compare(teacher, teacher, None, &eval, batch)?;
    let palettized = compare(teacher, &student, None, &eval, batch)?;
    log(&format!("uncompressed ppl {:.2}, palettized {:.2}", uncompressed.perplexity, palettized.perplexity));
    let minutes: Option<f64> = args.values.get("minutes").map(|v| v.parse()).transpose()?;
    println!(
        "| palette learning rate | perplexity | vs uncompressed | mean CE | top-1 | recovery fraction | steps | seconds |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| (no recovery) | {:.2} | {:+.1}% | {:.4} | {:.3} | | | |",
        palettized.perplexity,
        (palettized.perplexity / uncompressed.perplexity - 1.0) * 100.0,
        palettized.cross_entropy,
        palettized.top1_agreement
    );
    for rate in args.get("palette-lrs", "none,1e-4,1e-3").split(',') {
        let palette_learning_rate = match rate.trim() {
            "none" => None,
            r => Some(r.parse::<f64>().with_context(|| format!("--palette-lrs: {r:?}"))?),
        };
        let recovery = RecoverySpec {
            steps: if minutes.is_some() { 100_000 } else { args.num("steps", 60)? },
            max_seconds: minutes.map(|m| m * 60.0),
            batch: args.num("batch", 4)?,
            learning_rate: args.num("lr", 1e-3)?,
            palette_learning_rate,
            ..RecoverySpec::default()
        };
        let t0 = Instant::now();
        let done = recover_palettized(teacher, &student, &parts, &sequences, &recovery, &mut |_| {})?;
        let seconds = t0.elapsed().as_secs_f64();
        let r = compare(teacher, &done.student, Some(&done.lora), &eval, batch)?;
        let fraction =
            (palettized.cross_entropy - r.cross_entropy) / (palettized.cross_entropy - uncompressed.cross_entropy);
        log(&format!(
            "palette lr {rate}: ppl {:.2}, fraction {fraction:.3}, {} steps, KL {:.4} -> {:.4} ({seconds:.0}s)",
            r.perplexity,
            done.report.steps,
            done.report.kl_curve.first().map_or(f64::NAN, |p| p.1),
            done.report.kl_curve.last().map_or(f64::NAN, |p| p.1),
        ));
        println!(
            "| {rate} | {:.2} | {:+.1}% | {:.4} | {:.3} | {fraction:.3} | {} | {seconds:.0} |",
            r.perplexity,
            (r.perplexity / uncompressed.perplexity - 1.0) * 100.0,
            r.cross_entropy,
            r.top1_agreement,
            done.report.steps
        );
    }
    Ok(())
}
