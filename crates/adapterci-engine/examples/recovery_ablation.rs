//! Recovery variants on one palettized start: does training the palettes' table entries and row scales beside
//! the adapter pay, and does a calibrated start of the adapter (each pair at its operation's best rank-r
//! correction under the calibration statistics) pay? Loads a base release (from `adapterci-base palettize`),
//! writes teacher text with the source model, takes the statistics on a quarter of it (plus as many sequences of
//! `--user-corpus` when given, as `calibrate` does), and for each variant trains a recovery adapter from the
//! same seed on the same text for the same number of steps (or minutes), then scores the served result against
//! the uncompressed model on held-out natural text. Prints a markdown table: perplexity, mean CE, top-1
//! agreement, recovery fraction, steps and seconds; for a calibrated start also its score before any step.
//!
//! ```text
//! cargo run --release -p adapterci-engine --example recovery_ablation -- --release R/base.safetensors \
//!     [--variants frozen,palettes:1e-3,calibrated,calibrated+palettes:1e-3] [--steps 60] [--minutes M] \
//!     [--model M.gguf] [--user-corpus F] [--teacher-seqs 256] [--batch 4] [--lr 1e-3] [--device cpu|cuda] \
//!     [--threads 2] [--eval-text F] [--teacher-cache DIR] [--seed N] [--corpus-share S]
//!     [--precision f32|bf16] [--validation 16] [--validate-every 50]
//! ```
//! `--validation N` holds N sequences of each source out of training and logs their KL to the teacher as it
//! trains (the training batches' KL beside it says how well the recovery transfers).
use std::path::Path;
use std::time::Instant;

use adapterci_core::training::BasePrecision;
use adapterci_engine::calibrate::{Agreement, TeacherTextSpec, chunk_tokens, collect_hessians, compare};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoverySpec, calibrated_init, recover_palettized, recovery_config};
use adapterci_engine::release::BaseRelease;
use adapterci_engine::release_build::{cached_teacher_text, calibration_sequences, recovery_text};
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
    let parts = release.linear_parts(Path::new(release_path))?;
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
    let cache = args.values.get("teacher-cache").map(Path::new);
    let sequences = cached_teacher_text(&base, &spec, cache, &mut |note| log(note))?;
    log(&format!("teacher text: {} sequences in {:.0}s", sequences.len(), t0.elapsed().as_secs_f64()));
    let corpus = match args.values.get("user-corpus") {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?),
        None => None,
    };
    // the recovery trains on the teacher's text, plus the user corpus at this share when given (as `recover
    // --corpus-share` does); the statistics take the corpus in either way
    // sequences of each source held out of training and scored as it goes (--validation 0: none)
    let held: usize = args.num("validation", RecoverySpec::default().validation_sequences)?;
    let train = match args.values.get("corpus-share") {
        Some(share) => {
            let share: f64 = share.parse().with_context(|| format!("--corpus-share {share:?}"))?;
            let corpus = corpus.as_deref().context("--corpus-share needs --user-corpus")?;
            recovery_text(&base, &sequences, Some(corpus), 128, Some(share), held)?
        }
        None => recovery_text(&base, &sequences, None, 128, None, held)?,
    };
    log(&train.describe(128));
    let quarter = &sequences[..(sequences.len() / 4).max(1)];
    let calibration = calibration_sequences(&base, quarter, corpus.as_deref(), 128)?;
    let hessians = collect_hessians(teacher, &calibration, batch)?;
    log(&format!("statistics over {} tokens", hessians.tokens));
    let uncompressed = compare(teacher, teacher, None, &eval, batch)?;
    let palettized = compare(teacher, &student, None, &eval, batch)?;
    log(&format!("uncompressed ppl {:.2}, palettized {:.2}", uncompressed.perplexity, palettized.perplexity));
    let fraction = |a: &Agreement| {
        (palettized.cross_entropy - a.cross_entropy) / (palettized.cross_entropy - uncompressed.cross_entropy)
    };
    let line = |label: &str, a: &Agreement, fraction: &str, steps: &str, seconds: &str| {
        println!(
            "| {label} | {:.2} | {:+.1}% | {:.4} | {:.3} | {fraction} | {steps} | {seconds} |",
            a.perplexity,
            (a.perplexity / uncompressed.perplexity - 1.0) * 100.0,
            a.cross_entropy,
            a.top1_agreement
        )
    };
    let minutes: Option<f64> = args.values.get("minutes").map(|v| v.parse()).transpose()?;
    let base_precision = args.named("precision", BasePrecision::F32)?;
    println!("| recovery | perplexity | vs uncompressed | mean CE | top-1 | recovery fraction | steps | seconds |");
    println!("|---|---|---|---|---|---|---|---|");
    line("(none: the palettized base)", &palettized, "", "", "");
    for variant in args.get("variants", "frozen,palettes:1e-3,calibrated,calibrated+palettes:1e-3").split(',') {
        let variant = variant.trim();
        let mut palette_learning_rate = None;
        let mut calibrated = false;
        for part in variant.split('+') {
            match part.split_once(':') {
                None if part == "frozen" => {}
                None if part == "calibrated" => calibrated = true,
                Some(("palettes", r)) => {
                    palette_learning_rate = Some(r.parse::<f64>().with_context(|| format!("--variants: {r:?}"))?)
                }
                _ => bail!("--variants: {part:?} is not frozen, calibrated or palettes:RATE"),
            }
        }
        let recovery = RecoverySpec {
            steps: if minutes.is_some() { 100_000 } else { args.num("steps", 60)? },
            max_seconds: minutes.map(|m| m * 60.0),
            batch: args.num("batch", 4)?,
            learning_rate: args.num("lr", 1e-3)?,
            palette_learning_rate,
            calibrated_init: calibrated,
            base_precision,
            // the order the sequences are drawn in (and a zero start's A)
            seed: args.num("seed", RecoverySpec::default().seed)?,
            validation_sequences: held,
            validate_every: args.num("validate-every", RecoverySpec::default().validate_every)?,
            ..RecoverySpec::default()
        };
        if calibrated {
            let t0 = Instant::now();
            let init = calibrated_init(&recovery_config(&student, &recovery), teacher, &student, &hessians)?;
            let seconds = format!("{:.0}", t0.elapsed().as_secs_f64());
            let a = compare(teacher, &student, Some(&init), &eval, batch)?;
            log(&format!("calibrated start: ppl {:.2} ({seconds}s)", a.perplexity));
            line("calibrated start, before any step", &a, &format!("{:.3}", fraction(&a)), "0", &seconds);
        }
        let t0 = Instant::now();
        // the training batches' mean KL since the last validation, beside the held-out sets'
        let (mut kl_sum, mut kl_steps) = (0.0, 0usize);
        let done = recover_palettized(teacher, &student, &parts, Some(&hessians), &train, &recovery, &mut |p| {
            // the scores before the first step come without a batch KL
            if p.kl.is_finite() {
                (kl_sum, kl_steps) = (kl_sum + p.kl, kl_steps + 1);
            }
            if p.validation.is_empty() {
                return;
            }
            let recent = if kl_steps > 0 { format!("{:.4}", kl_sum / kl_steps as f64) } else { "none yet".into() };
            for point in &p.validation {
                log(&format!(
                    "  step {}: held-out {} KL {:.4} (training batches since the last: {recent})",
                    point.step, point.set, point.kl
                ));
            }
            (kl_sum, kl_steps) = (0.0, 0);
        })?;
        let seconds = t0.elapsed().as_secs_f64();
        let r = compare(teacher, &done.student, Some(&done.lora), &eval, batch)?;
        log(&format!(
            "{variant}: ppl {:.2}, fraction {:.3}, {} steps, KL {:.4} -> {:.4} ({seconds:.0}s)",
            r.perplexity,
            fraction(&r),
            done.report.steps,
            done.report.kl_curve.first().map_or(f64::NAN, |p| p.1),
            done.report.kl_curve.last().map_or(f64::NAN, |p| p.1),
        ));
        let steps = done.report.steps.to_string();
        line(variant, &r, &format!("{:.3}", fraction(&r)), &steps, &format!("{seconds:.0}"));
    }
    Ok(())
}
