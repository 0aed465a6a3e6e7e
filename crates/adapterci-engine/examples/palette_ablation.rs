//! Ablation of the palettization method at a fixed bit allocation: the sensitive 2/4 mix (sensitivities
//! measured once with the default method) palettized with each method variant, scored against the uncompressed
//! model on held-out natural text (perplexity, mean CE, top-1 agreement; no recovery adapter). The variants:
//! GPTQ onto k-means tables; plus least-squares refitting of tables and row scales; plus calibration statistics
//! over the user corpus beside the teacher text.
//!
//! ```text
//! zcat scripts/bench/data/public_domain_prose.txt.gz > /tmp/prose.txt
//! cargo run --release -p adapterci-engine --example palette_ablation -- --user-corpus /tmp/prose.txt \
//!     [--teacher-seqs 256] [--seq-len 128] [--calib-seqs 64] [--sens-seqs 2] [--refit-rounds 3] [--device cpu|cuda]
//!     [--only 0,2,5] [--recovery-minutes M [--recover 0,5] --recovery-batch 4 --recovery-lr 1e-3]
//! ```
//! With `--recovery-minutes`, each variant also gets a recovery adapter trained on the teacher text for that
//! long (same seed, same text, the step budget fitted to the time), scored the same way: does a better
//! palettization stay better after recovery?
//! ```text
//! ```
use std::time::Instant;

use adapterci_engine::allocate::{
    Method, allocate_bits, average_bpw, linear_ops, palettize_op, palettize_sequential, sensitivities_of,
};
use adapterci_engine::calibrate::{TeacherTextSpec, chunk_tokens, collect_hessians, compare, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoverySpec, recover};
use adapterci_engine::release_build::calibration_sequences;
use anyhow::Context;
use tch::Device;

#[path = "support/cli.rs"]
mod cli;
use cli::{Args, log};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn main() -> anyhow::Result<()> {
    let args = Args::parse(&[])?;
    let threads: usize = args.num("threads", 2)?;
    adapterci_engine::device::set_threads(threads);
    let device = match args.get("device", "cpu").as_str() {
        "cuda" => DeviceChoice::Cuda(0),
        _ => DeviceChoice::Cpu,
    };
    let model = args.get("model", &format!("{ROOT}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let base = BaseModel::load(std::path::Path::new(&model), device)?;
    let teacher = base.llama();
    let seq_len: usize = args.num("seq-len", 128)?;
    let batch = if teacher.device() == Device::Cpu { 2 } else { 12 };
    let eval_path = args.get("eval-text", &format!("{ROOT}/scripts/oracles/data/natural_english.txt"));
    let eval_text = std::fs::read_to_string(&eval_path).with_context(|| format!("reading {eval_path}"))?;
    let eval = chunk_tokens(base.tokenizer(), &eval_text, 256);

    let t0 = Instant::now();
    let spec = TeacherTextSpec {
        sequences: args.num("teacher-seqs", 256)?,
        seq_len,
        batch: args.num("teacher-batch", 16)?,
        temperature: 1.0,
        seed: 11,
    };
    let sequences = teacher_text(teacher, &prompt_ids(base.tokenizer(), None)?, &spec, &mut |_, _| {})?;
    log(&format!("teacher text: {} x {seq_len} tokens in {:.0}s", sequences.len(), t0.elapsed().as_secs_f64()));
    let calib_count: usize = args.num("calib-seqs", (sequences.len() / 4).clamp(1, 256))?;
    let calib = &sequences[..calib_count.min(sequences.len())];
    let teacher_h = collect_hessians(teacher, calib, batch)?;
    let mixed: Option<Vec<Vec<u32>>> = match args.values.get("user-corpus") {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            let mixed = calibration_sequences(&base, calib, Some(&text), seq_len)?;
            log(&format!(
                "user corpus: {} sequences beside {} teacher sequences",
                mixed.len() - calib.len(),
                calib.len()
            ));
            Some(mixed)
        }
        None => None,
    };
    let user_h = match &mixed {
        Some(seqs) => Some(collect_hessians(teacher, seqs, batch)?),
        None => None,
    };
    // the control for the user corpus: as many statistics tokens, all teacher text
    let doubled = &sequences[..(2 * calib.len()).min(sequences.len())];
    let doubled_h = collect_hessians(teacher, doubled, batch)?;
    let ops = linear_ops(teacher.config());
    let default = Method::default();
    let refit: usize = args.num("refit-rounds", 3)?;
    let two_bit: Vec<tch::Tensor> = ops
        .iter()
        .map(|op| Ok(palettize_op(teacher, Some(&teacher_h), op, 2, default)?.dequantize(teacher.device())))
        .collect::<anyhow::Result<_>>()?;
    let sens_seqs = &sequences[..args.num::<usize>("sens-seqs", 2)?.clamp(1, sequences.len())];
    let sensitivities = sensitivities_of(teacher, &ops, &two_bit, sens_seqs, batch, &mut |_, _| {})?;
    let bits = allocate_bits(&ops, &sensitivities, default, 3.5)?;
    let uncompressed = compare(teacher, teacher, None, &eval, batch)?;
    log(&format!("uncompressed: ppl {:.2}, ce {:.4}", uncompressed.perplexity, uncompressed.cross_entropy));
    let recovery_minutes: Option<f64> = args.values.get("recovery-minutes").map(|v| v.parse()).transpose()?;
    let recovery = RecoverySpec {
        steps: 100_000,
        max_seconds: recovery_minutes.map(|m| m * 60.0),
        batch: args.num("recovery-batch", 4)?,
        learning_rate: args.num("recovery-lr", 1e-3)?,
        ..RecoverySpec::default()
    };
    println!("| method | linear bpw | perplexity | vs uncompressed | mean CE | top-1 agreement | recovery fraction |");
    println!("|---|---|---|---|---|---|---|");
    let refitted = Method { refit_rounds: refit, ..default };
    // (label, method, statistics from the uncompressed model, or sequences for layer-by-layer statistics)
    let mut variants = vec![
        ("GPTQ onto k-means tables (teacher-text statistics)", default, Some(&teacher_h), None),
        ("+ table/scale refit", refitted, Some(&teacher_h), None),
        ("+ table/scale refit, sequential statistics", refitted, None, Some(calib)),
    ];
    if let (Some(h), Some(seqs)) = (&user_h, &mixed) {
        variants.push(("GPTQ, statistics over teacher text + user corpus", default, Some(h), None));
        variants.push(("+ table/scale refit, teacher text + user corpus", refitted, Some(h), None));
        variants.push(("+ table/scale refit, sequential, teacher text + user corpus", refitted, None, Some(seqs)));
    }
    variants.push(("GPTQ, statistics over twice the teacher text (control)", default, Some(&doubled_h), None));
    // --only 2,5: just those variants (0-based, in the order above); --recover 0,5: recovery for those only
    let list = |name: &str| -> anyhow::Result<Option<Vec<usize>>> {
        match args.values.get(name) {
            Some(v) => {
                Ok(Some(v.split(',').map(|i| i.trim().parse()).collect::<Result<_, _>>().context(name.to_string())?))
            }
            None => Ok(None),
        }
    };
    let (only, recover_only) = (list("only")?, list("recover")?);
    for (index, (label, method, hessians, sequential)) in variants.into_iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&index)) {
            continue;
        }
        let t0 = Instant::now();
        let student = match (hessians, sequential) {
            (Some(hessians), _) => {
                let mut student = teacher.shallow_copy();
                for (op, &b) in ops.iter().zip(&bits) {
                    let p = palettize_op(teacher, Some(hessians), op, b, method)?;
                    student.set_linear_weight(op.layer, op.target, p.dequantize(teacher.device()))?;
                }
                student
            }
            (None, Some(seqs)) => palettize_sequential(teacher, &ops, &bits, method, seqs, batch, &mut |_, _| {})?.1,
            (None, None) => continue,
        };
        let a = compare(teacher, &student, None, &eval, batch)?;
        log(&format!("{label}: ppl {:.2} ({:.0}s)", a.perplexity, t0.elapsed().as_secs_f64()));
        let bpw = average_bpw(&ops, &bits, method);
        let line = |label: &str, r: &adapterci_engine::calibrate::Agreement, fraction: &str| {
            println!(
                "| {label} | {bpw:.3} | {:.2} | {:+.1}% | {:.4} | {:.3} | {fraction} |",
                r.perplexity,
                (r.perplexity / uncompressed.perplexity - 1.0) * 100.0,
                r.cross_entropy,
                r.top1_agreement
            )
        };
        line(label, &a, "");
        if recovery_minutes.is_some() && recover_only.as_ref().is_none_or(|o| o.contains(&index)) {
            let t0 = Instant::now();
            let (lora, report) = recover(teacher, &student, &sequences, &recovery, &mut |_| {})?;
            let r = compare(teacher, &student, Some(&lora), &eval, batch)?;
            let fraction = (a.cross_entropy - r.cross_entropy) / (a.cross_entropy - uncompressed.cross_entropy);
            log(&format!(
                "{label} + recovery: ppl {:.2}, {} steps, KL {:.4} -> {:.4} ({:.0}s)",
                r.perplexity,
                report.steps,
                report.kl_curve.first().map_or(f64::NAN, |p| p.1),
                report.kl_curve.last().map_or(f64::NAN, |p| p.1),
                t0.elapsed().as_secs_f64()
            ));
            line(
                &format!("{label} + recovery ({} steps of {})", report.steps, recovery.batch),
                &r,
                &format!("{fraction:.3}"),
            );
        }
    }
    Ok(())
}
