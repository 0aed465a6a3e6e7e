//! The base-release quality benchmark: palettize SmolLM2-135M several ways, train a recovery adapter for each,
//! and score every variant against the uncompressed model on held-out natural text (perplexity, mean
//! cross-entropy, top-1 agreement, KL). Writes `results.json`, `analysis.json`, `analysis.svg` and the eval
//! tokens with the teacher's top-1 ids (`eval_tokens.json`, for the llama.cpp peer rows) into `--out`.
//!
//! ```text
//! cargo run --release -p adapterci-engine --example base_bench -- --out target/base-bench \
//!     [--model M.gguf] [--eval-text F] [--user-corpus F] [--device cpu|cuda] [--threads 2] \
//!     [--teacher-seqs 256] [--seq-len 128] [--recovery-steps 150] [--recovery-batch 4] \
//!     [--recovery-minutes 8] [--target-bpw 3.5] [--group-rows 32] [--group-rows-2bit 8] [--sens-seqs N]
//!     [--quick | --only-sensitive] [--model tiny] [--teacher-batch 128] [--recovery-lr 1e-3]
//!     [--corpora teacher|user|both] [--user-share 0.5] [--refit-rounds N] [--sequential] [--palette-lr R|none]
//!     [--zero-init] [--sensitivity two-bit|corrected]
//! ```
//! The palettization is the product's default method (GPTQ onto activation-weighted k-means tables,
//! least-squares refit of tables and scales; `--refit-rounds`, `--sequential` change it); its
//! statistics are taken on a quarter of the teacher text plus as many sequences of the user corpus when given
//! (not with `--corpora teacher`, which keeps user text out of everything).
//! The sensitivities are measured on one-shot, unrefitted 2-bit palettizations (as `analyze` does), with each
//! one's calibrated low-rank correction added under `--sensitivity corrected` (default: the product's).
//! `--corpora` picks which recovery adapters the sensitive mix gets (teacher text only, teacher text + user
//! corpus, or both, one after the other); `--user-share` is the fraction of recovery sequences drawn from the
//! user corpus (default: in proportion to its size).
//! `--palette-lr` trains the palettes' table entries and row scales beside each recovery adapter at that peak
//! learning rate (`none`: frozen; default: the product's, `BuildOptions::default().recovery`). Each recovery
//! adapter starts at its calibrated low-rank correction (the product's default), or at zero with `--zero-init`.
//! Runs on CUDA when `--device cuda` (the same code); `--quick` scores fewer variants.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use adapterci_engine::allocate::{
    BitAnalysis, LinearOp, Method, Sensitivity, allocate_bits, arbitrary_bits, average_bpw, linear_ops, palettize_op,
    palettize_sequential, sensitivities_of, with_low_rank_corrections,
};
use adapterci_engine::calibrate::{
    Agreement, TeacherTextSpec, chunk_tokens, collect_hessians, compare, prompt_ids, teacher_text,
};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::llama::Llama;
use adapterci_engine::model::BaseModel;
use adapterci_engine::palettize::{Calibration, PaletteSpec, PalettizedTensor, palettize};
use adapterci_engine::recover::{RecoveryReport, RecoverySpec, RecoveryText, recover_palettized};
use adapterci_engine::release_build::{BuildOptions, calibration_sequences, recovery_text};
use anyhow::{Context, bail};
use serde_json::json;
use tch::Device;

#[path = "support/cli.rs"]
mod cli;
use cli::{Args, log};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

struct Variant {
    name: String,
    bits: Vec<u8>,
    method: Method,
}

/// Palettizations per (operation, bits) for one method, made once and shared by the variants.
struct Palettes {
    by_bits: BTreeMap<u8, Vec<PalettizedTensor>>,
}

impl Palettes {
    fn make(
        teacher: &Llama,
        hessians: &adapterci_engine::calibrate::Hessians,
        ops: &[LinearOp],
        method: Method,
        bits: &[u8],
    ) -> anyhow::Result<Palettes> {
        let mut by_bits = BTreeMap::new();
        for &b in bits {
            let t0 = Instant::now();
            let parts = ops
                .iter()
                .map(|op| Ok(palettize_op(teacher, Some(hessians), op, b, method)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            log(&format!(
                "palettized {} operations at {b} bits ({}) in {:.1}s",
                ops.len(),
                method.label(),
                t0.elapsed().as_secs_f64()
            ));
            by_bits.insert(b, parts);
        }
        Ok(Palettes { by_bits })
    }

    /// Every operation's palettization at its bits.
    fn parts(&self, bits: &[u8]) -> anyhow::Result<Vec<PalettizedTensor>> {
        bits.iter()
            .enumerate()
            .map(|(i, b)| Ok(self.by_bits.get(b).with_context(|| format!("no {b}-bit palettization made"))?[i].clone()))
            .collect()
    }
}

/// `teacher` with its linear operations replaced by `parts` (in [`linear_ops`] order).
fn student_of(teacher: &Llama, ops: &[LinearOp], parts: &[PalettizedTensor]) -> anyhow::Result<Llama> {
    let mut student = teacher.shallow_copy();
    for (op, p) in ops.iter().zip(parts) {
        student.set_linear_weight(op.layer, op.target, p.dequantize(teacher.device()))?;
    }
    Ok(student)
}

fn row(
    name: &str,
    linear_bpw: f64,
    whole_bpw: f64,
    a: &Agreement,
    base_ce: f64,
    extra: serde_json::Value,
) -> serde_json::Value {
    json!({
        "variant": name,
        "linear_bpw": linear_bpw,
        "whole_model_bpw": whole_bpw,
        "perplexity": a.perplexity,
        "cross_entropy": a.cross_entropy,
        "ce_gap": a.cross_entropy - base_ce,
        "top1_agreement": a.top1_agreement,
        "kl": a.kl_divergence,
        "positions": a.positions,
        "extra": extra,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse(&["quick", "tiny", "only-sensitive", "sequential", "zero-init"])?;
    let out = PathBuf::from(args.get("out", "target/base-bench"));
    std::fs::create_dir_all(&out)?;
    let threads: usize = args.num("threads", 2)?;
    adapterci_engine::device::set_threads(threads);
    let device = match args.get("device", "cpu").as_str() {
        "cuda" => DeviceChoice::Cuda(0),
        "cpu" => DeviceChoice::Cpu,
        other => bail!("--device {other:?}: use cpu or cuda"),
    };
    let mut model_path = args.get("model", &format!("{ROOT}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if args.values.get("model").map(String::as_str) == Some("tiny") {
        // a random-weight model of the same architecture: exercises every path in seconds
        let path = out.join("tiny.gguf");
        adapterci_engine::tiny::write_tiny_model(&path, 5)?;
        model_path = path.display().to_string();
    }
    let eval_path = args.get("eval-text", &format!("{ROOT}/scripts/oracles/data/natural_english.txt"));
    let quick = args.values.contains_key("quick");
    if !matches!(args.get("corpora", "both").as_str(), "teacher" | "user" | "both") {
        bail!("--corpora {:?}: use teacher, user or both", args.get("corpora", "both"));
    }
    let seq_len: usize = args.num("seq-len", 128)?;
    let teacher_seqs: usize = args.num("teacher-seqs", 256)?;
    let target_bpw: f64 = args.num("target-bpw", 3.5)?;
    let group_rows: usize = args.num("group-rows", Method::default().group_rows)?;
    let group_rows_2bit: usize = args.num("group-rows-2bit", Method::default().group_rows_2bit)?;
    let recovery = RecoverySpec {
        steps: args.num("recovery-steps", 150)?,
        batch: args.num("recovery-batch", 4)?,
        max_seconds: Some(args.num::<f64>("recovery-minutes", 8.0)? * 60.0),
        learning_rate: args.num("recovery-lr", 1e-3)?,
        palette_learning_rate: match args.values.get("palette-lr").map(String::as_str) {
            None => BuildOptions::default().recovery.palette_learning_rate,
            Some("none") => None,
            Some(rate) => Some(rate.parse().with_context(|| format!("--palette-lr {rate:?}: a number or none"))?),
        },
        calibrated_init: !args.values.contains_key("zero-init"),
        ..BuildOptions::default().recovery
    };
    let started = Instant::now();
    log(&format!("loading {model_path} on {device:?}, {threads} threads"));
    let base = BaseModel::load(std::path::Path::new(&model_path), device)?;
    let teacher = base.llama();
    let tokenizer = base.tokenizer();
    let eval_text = std::fs::read_to_string(&eval_path).with_context(|| format!("reading {eval_path}"))?;
    let eval = chunk_tokens(tokenizer, &eval_text, 256);
    log(&format!("eval: {} chunks of 256 tokens of held-out natural text ({eval_path})", eval.len()));
    let user_corpus = match args.values.get("user-corpus") {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?),
        None => None,
    };
    let eval_batch = if teacher.device() == Device::Cpu { 2 } else { 12 };

    // teacher text
    let t0 = Instant::now();
    let prompts = prompt_ids(tokenizer, None)?;
    let spec = TeacherTextSpec {
        sequences: teacher_seqs,
        seq_len,
        batch: args.num("teacher-batch", if teacher.device() == Device::Cpu { 16 } else { 128 })?,
        temperature: 1.0,
        seed: 11,
    };
    let sequences = teacher_text(teacher, &prompts, &spec, &mut |done, total| {
        eprint!("\r  teacher text {done}/{total} sequences");
    })?;
    eprintln!();
    log(&format!("teacher wrote {} x {seq_len} tokens in {:.1}s", sequences.len(), t0.elapsed().as_secs_f64()));
    let sample = tokenizer.decode(&sequences[sequences.len() / 2]);
    log(&format!("sample: {:?}", sample.chars().take(200).collect::<String>()));

    // calibration: Hessians on a quarter of the teacher text, sensitivities on 8 sequences of it
    let calib_count = (sequences.len() / 4).clamp(8, 256);
    // `--corpora teacher`: no user text anywhere, the statistics included
    let statistics_corpus = user_corpus.as_deref().filter(|_| args.get("corpora", "both") != "teacher");
    let calibration = calibration_sequences(&base, &sequences[..calib_count], statistics_corpus, seq_len)?;
    let t0 = Instant::now();
    let hessians = collect_hessians(teacher, &calibration, eval_batch)?;
    log(&format!("hessians from {} tokens in {:.1}s", hessians.tokens, t0.elapsed().as_secs_f64()));
    let ops = linear_ops(teacher.config());
    let method = Method {
        group_rows,
        group_rows_2bit,
        refit_rounds: args.num("refit-rounds", Method::default().refit_rounds)?,
        sequential: args.values.contains_key("sequential"),
        ..Method::default()
    };
    // one-shot, unrefitted palettizations at 2 and 4 bits: the sensitivities (and the arbitrary and uniform rows
    // when the method is the same)
    let one_shot = Method { refit_rounds: 0, sequential: false, low_rank_rounds: 0, ..method };
    let only_sensitive = args.values.contains_key("only-sensitive");
    // the sensitivities need every operation at 2 bits; the arbitrary and uniform rows at 4 too
    let one_shot_bits: &[u8] = if only_sensitive { &[2] } else { &[2, 4] };
    let palettes = Palettes::make(teacher, &hessians, &ops, one_shot, one_shot_bits)?;
    let t0 = Instant::now();
    let sens_count: usize = args.num("sens-seqs", if teacher.device() == Device::Cpu { 2 } else { 16 })?;
    let sens_seqs = &sequences[..sens_count.clamp(1, sequences.len())];
    let two_bit: Vec<tch::Tensor> = palettes.by_bits[&2].iter().map(|p| p.dequantize(teacher.device())).collect();
    let sensitivity = args.named("sensitivity", BuildOptions::default().sensitivity)?;
    let two_bit = match sensitivity {
        Sensitivity::Corrected => with_low_rank_corrections(teacher, &hessians, &ops, two_bit, recovery.rank)?,
        Sensitivity::TwoBit => two_bit,
    };
    let sensitivities = sensitivities_of(teacher, &ops, &two_bit, sens_seqs, eval_batch, &mut |d, t| {
        eprint!("\r  sensitivity {d}/{t}");
    })?;
    eprintln!();
    log(&format!("sensitivities of {} operations in {:.1}s", ops.len(), t0.elapsed().as_secs_f64()));

    let params_linear: usize = ops.iter().map(LinearOp::params).sum();
    let embed_params = teacher.config().vocab_size * teacher.config().hidden_size;
    let norm_params = teacher.config().hidden_size * (2 * teacher.config().num_layers + 1);
    // whole model: linear layers as stated + the tied embedding at fp16 + norms at fp16
    let whole = |linear_bpw: f64, embed_bits: f64| {
        (linear_bpw * params_linear as f64 + embed_bits * embed_params as f64 + 16.0 * norm_params as f64)
            / (params_linear + embed_params + norm_params) as f64
    };

    let sensitive_bits = allocate_bits(&ops, &sensitivities, method, target_bpw)?;
    let arbitrary = arbitrary_bits(&ops, method, target_bpw, 2026)?;
    let lm_head_bytes = (embed_params * 2) as u64;
    let analysis = BitAnalysis {
        sensitivity,
        ..BitAnalysis::new(&ops, &sensitive_bits, &sensitivities, method, target_bpw, lm_head_bytes)
    };
    std::fs::write(out.join("analysis.json"), serde_json::to_vec_pretty(&analysis)?)?;
    std::fs::write(out.join("analysis.svg"), analysis.to_svg())?;
    std::fs::write(out.join("analysis.txt"), analysis.to_table())?;
    let arbitrary_sens: f64 = arbitrary.iter().zip(&sensitivities).filter(|(b, _)| **b == 2).map(|(_, s)| s).sum();
    log(&format!(
        "allocation: sensitive {:.4} bpw (sum of sensitivities at 2 bits {:.4}), arbitrary {:.4} bpw ({:.4})",
        analysis.achieved_bpw,
        analysis.chosen_sensitivity,
        average_bpw(&ops, &arbitrary, method),
        arbitrary_sens
    ));

    // teacher tokens for the peer script
    let top1 = adapterci_engine::calibrate::top1_ids(teacher, &eval)?;
    std::fs::write(out.join("eval_tokens.json"), serde_json::to_vec(&json!({"chunks": eval, "teacher_top1": top1}))?)?;

    let base_agreement = compare(teacher, teacher, None, &eval, eval_batch)?;
    let base_ce = base_agreement.cross_entropy;
    log(&format!("uncompressed: ppl {:.2} ce {:.4}", base_agreement.perplexity, base_ce));
    let mut rows = vec![row("uncompressed (dequantized Q4_1, f32)", 32.0, 32.0, &base_agreement, base_ce, json!({}))];

    let naive = Method {
        group_rows: 16,
        group_rows_2bit: 16,
        weighted: false,
        compensate: false,
        rotation: None,
        ..Method::default()
    };
    let mut other_palettes: BTreeMap<String, Palettes> = BTreeMap::new();
    let mut variants = vec![
        Variant {
            name: format!("ours mixed 2/4, sensitivity allocation ({target_bpw} target)"),
            bits: sensitive_bits.clone(),
            method,
        },
        Variant {
            name: format!("ours mixed 2/4, arbitrary allocation ({target_bpw} target)"),
            bits: arbitrary.clone(),
            method,
        },
        Variant { name: "ours uniform 4-bit".into(), bits: vec![4; ops.len()], method },
    ];
    if only_sensitive {
        variants.truncate(1);
    }
    if !quick && !only_sensitive {
        variants.push(Variant {
            name: "ablation: naive 4-bit k-means, 16 rows/table, no calibration".into(),
            bits: vec![4; ops.len()],
            method: naive,
        });
        if one_shot != method {
            variants.push(Variant {
                name: "ablation: mixed 2/4 sensitivity, one-shot statistics, no refit".into(),
                bits: sensitive_bits.clone(),
                method: one_shot,
            });
        }
        if method.rotation.is_some() {
            variants.push(Variant {
                name: "ablation: mixed 2/4 sensitivity, same bits, unrotated".into(),
                bits: sensitive_bits.clone(),
                method: Method { rotation: None, ..method },
            });
        }
        variants.push(Variant {
            name: "ablation: mixed 2/4 sensitivity, no GPTQ".into(),
            bits: sensitive_bits.clone(),
            method: Method { compensate: false, ..one_shot },
        });
    }
    let mut recoveries: Vec<(String, RecoveryReport)> = Vec::new();
    let mut sensitive_student: Option<Llama> = None;
    for (index, v) in variants.iter().enumerate() {
        let t0 = Instant::now();
        let parts = if v.method.sequential {
            let mut last = Instant::now();
            palettize_sequential(teacher, &ops, &v.bits, v.method, &calibration, eval_batch, &mut |d, t| {
                if last.elapsed().as_secs_f64() > 5.0 || d == t {
                    eprint!("\r  palettizing layer by layer {d}/{t}   ");
                    last = Instant::now();
                }
            })?
            .0
        } else if v.method == one_shot {
            palettes.parts(&v.bits)?
        } else if variants.len() == 1 {
            // one variant (`--only-sensitive`): each operation at its own bits only, not every operation at both
            let t0 = Instant::now();
            let parts = ops
                .iter()
                .zip(&v.bits)
                .map(|(op, &b)| Ok(palettize_op(teacher, Some(&hessians), op, b, v.method)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            log(&format!(
                "palettized {} operations ({}) in {:.1}s",
                ops.len(),
                v.method.label(),
                t0.elapsed().as_secs_f64()
            ));
            parts
        } else {
            let key = v.method.label();
            if !other_palettes.contains_key(&key) {
                let mut wanted: Vec<u8> = v.bits.clone();
                wanted.sort_unstable();
                wanted.dedup();
                other_palettes.insert(key.clone(), Palettes::make(teacher, &hessians, &ops, v.method, &wanted)?);
            }
            other_palettes[&key].parts(&v.bits)?
        };
        let student = student_of(teacher, &ops, &parts)?;
        let bpw = average_bpw(&ops, &v.bits, v.method);
        let a = compare(teacher, &student, None, &eval, eval_batch)?;
        log(&format!(
            "{}: {:.4} bpw, ppl {:.2} (built+scored in {:.1}s)",
            v.name,
            bpw,
            a.perplexity,
            t0.elapsed().as_secs_f64()
        ));
        rows.push(row(&v.name, bpw, whole(bpw, 16.0), &a, base_ce, json!({"method": v.method.label()})));
        if index == 0 {
            sensitive_student = Some(student.shallow_copy());
        }
        let is_ablation = v.name.starts_with("ablation");
        if is_ablation {
            continue;
        }
        let which = args.get("corpora", "both");
        let mut corpora: Vec<(&str, RecoveryText)> = Vec::new();
        let held = recovery.validation_sequences;
        if index > 0 || which != "user" || user_corpus.is_none() {
            corpora.push(("teacher text", recovery_text(&base, &sequences, None, seq_len, None, held)?));
        }
        if index == 0
            && which != "teacher"
            && let Some(user) = &user_corpus
        {
            let share: Option<f64> = args.values.get("user-share").map(|v| v.parse()).transpose()?;
            let text = recovery_text(&base, &sequences, Some(user), seq_len, share, held)?;
            log(&text.describe(seq_len));
            corpora.push(("teacher text + user corpus", text));
        }
        for (label, data) in corpora {
            let t0 = Instant::now();
            let mut last_print = Instant::now();
            let done = recover_palettized(teacher, &student, &parts, Some(&hessians), &data, &recovery, &mut |p| {
                for point in &p.validation {
                    eprint!("\n  validation at step {}: {} KL {:.4}", point.step, point.set, point.kl);
                }
                if last_print.elapsed().as_secs_f64() > 5.0 || p.step == p.total_steps {
                    eprint!(
                        "\r  recovery step {}/{} KL {:.4} lr {:.2e} {:.0}s   ",
                        p.step, p.total_steps, p.kl, p.learning_rate, p.elapsed_seconds
                    );
                    last_print = Instant::now();
                }
            })?;
            eprintln!();
            let (lora, report) = (done.lora, done.report);
            let r = compare(teacher, &done.student, Some(&lora), &eval, eval_batch)?;
            let fraction = (a.cross_entropy - r.cross_entropy) / (a.cross_entropy - base_ce);
            let adapter_bits = 16.0 * lora.num_parameters() as f64;
            let name = format!("{} + recovery adapter ({label})", v.name);
            log(&format!(
                "{name}: ppl {:.2}, recovery fraction {:.3}, {} steps in {:.0}s",
                r.perplexity,
                fraction,
                report.steps,
                t0.elapsed().as_secs_f64()
            ));
            rows.push(row(
                &name,
                bpw,
                whole(bpw, 16.0),
                &r,
                base_ce,
                json!({
                    "recovery_fraction": fraction,
                    "linear_bpw_with_adapter": bpw + adapter_bits / params_linear as f64,
                    "recovery_steps": report.steps,
                    "recovery_seconds": report.seconds,
                    "recovery_tokens": report.tokens,
                    "stopped_by_time": report.stopped_by_time,
                    "device": report.device,
                    "corpus": label,
                }),
            ));
            recoveries.push((name, report));
            std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&json!({"rows": rows}))?)?;
        }
    }

    // options: palettized embedding and int8 activations, measured on the sensitive mix (no recovery)
    if !quick && !only_sensitive {
        let sensitive = sensitive_student.context("the sensitive mix was not built")?;
        let bpw = average_bpw(&ops, &sensitive_bits, method);
        for embed_bits in [8u8, 4] {
            let mut student = sensitive.shallow_copy();
            let spec = PaletteSpec { bits: embed_bits, group_rows: 64, row_scale: true, rotation: None };
            let p = palettize(teacher.embedding_weight(), spec, Calibration::default())?;
            student.set_embedding(p.dequantize(teacher.device()))?;
            let a = compare(teacher, &student, None, &eval, eval_batch)?;
            let embed_bpw = spec.bits_per_weight(p.rows, p.cols);
            let name = format!("option: sensitive mix + embedding palettized {embed_bits}-bit");
            log(&format!("{name}: ppl {:.2}", a.perplexity));
            rows.push(row(&name, bpw, whole(bpw, embed_bpw), &a, base_ce, json!({"embedding_bpw": embed_bpw})));
        }
        let mut student = sensitive.shallow_copy();
        student.set_activation_bits(Some(8));
        let a = compare(teacher, &student, None, &eval, eval_batch)?;
        log(&format!("option: int8 activations: ppl {:.2}", a.perplexity));
        rows.push(row(
            "option: sensitive mix + int8 per-token activations",
            bpw,
            whole(bpw, 16.0),
            &a,
            base_ce,
            json!({}),
        ));
    }

    let results = json!({
        "rows": rows,
        "setup": {
            "model": model_path, "eval_text": eval_path, "eval_chunks": eval.len(), "device": format!("{:?}", teacher.device()),
            "threads": threads, "teacher_sequences": sequences.len(), "seq_len": seq_len, "calibration_sequences": calibration.len(),
            "target_bpw": target_bpw, "method": method.label(), "recovery": recovery,
            "seconds": started.elapsed().as_secs_f64(),
        },
        "recovery_curves": recoveries.iter().map(|(n, r)| json!({"variant": n, "kl_curve": r.kl_curve})).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    let mut table = std::fs::File::create(out.join("results.md"))?;
    writeln!(
        table,
        "| variant | linear bpw | whole-model bpw | perplexity | mean CE | top-1 agreement | KL | recovery fraction |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|")?;
    for r in results["rows"].as_array().into_iter().flatten() {
        writeln!(
            table,
            "| {} | {:.3} | {:.3} | {:.2} | {:.4} | {:.3} | {:.4} | {} |",
            r["variant"].as_str().unwrap_or(""),
            r["linear_bpw"].as_f64().unwrap_or(f64::NAN),
            r["whole_model_bpw"].as_f64().unwrap_or(f64::NAN),
            r["perplexity"].as_f64().unwrap_or(f64::NAN),
            r["cross_entropy"].as_f64().unwrap_or(f64::NAN),
            r["top1_agreement"].as_f64().unwrap_or(f64::NAN),
            r["kl"].as_f64().unwrap_or(f64::NAN),
            r["extra"]["recovery_fraction"].as_f64().map_or("".to_string(), |f| format!("{f:.3}")),
        )?;
    }
    log(&format!("done in {:.0}s; results in {}", started.elapsed().as_secs_f64(), out.display()));
    print!("{}", std::fs::read_to_string(out.join("results.md"))?);
    Ok(())
}
